//! `pairs swarm TOPIC`: every process that joins a topic gets a stream to every other; stdin lines
//! go to all of them, their lines come out on stdout.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use pairs_base::{NodeId, Topic};
use pairs_net::swarm::{TopicEvent, TopicPeer};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

use crate::cli::SwarmArgs;
use crate::stdio::StdoutSink;

/// Longest line passed on. A longer line from stdin is refused with a message; one from a peer
/// (only a peer that does not keep the limit sends one) is skipped. Neither ends a session.
const MAX_LINE: usize = 16 * 1024 * 1024;
/// Lines queued for one peer; a peer that falls further behind is dropped.
const PEER_QUEUE: usize = 1024;
/// Bytes queued for one peer; with lines up to [`MAX_LINE`], the line count alone bounds nothing.
const PEER_QUEUE_BYTES: usize = 4 * MAX_LINE;

pub async fn run(data_dir: Option<&Path>, isolated: bool, args: SwarmArgs) -> Result<()> {
    let node = super::swarm_node(data_dir, isolated, &args.discovery).await?;
    let mut topic = node.swarm()?.join(Topic::from_name(&args.topic)).await?;
    eprintln!(
        "pairs: joined '{}' as {}",
        args.topic,
        node.swarm()?.node_id().short()
    );
    if isolated {
        eprintln!(
            "pairs: isolated; peers reach this node with --peer {}",
            node.ticket().unwrap_or_default()
        );
    }
    let output = StdoutSink::start().context("cannot write stdout")?;
    let (line_tx, mut lines) = mpsc::channel::<Bytes>(PEER_QUEUE);
    tokio::spawn(read_stdin_lines(line_tx));
    let mut stdin_open = true;
    // Each peer's sender carries the number of its session, so the end of an old session (a
    // replaced connection) cannot remove the new one.
    let mut peers: HashMap<NodeId, (u64, Outbox)> = HashMap::new();
    let mut sessions = 0u64;
    let (gone_tx, mut gone) = mpsc::unbounded_channel::<(NodeId, u64)>();
    loop {
        tokio::select! {
            event = topic.next() => match event {
                Some(TopicEvent::Joined(peer)) => {
                    let id = peer.node_id();
                    eprintln!("pairs: + {} joined", id.short());
                    let (tx, rx) = mpsc::channel(PEER_QUEUE);
                    let queued = Arc::new(AtomicUsize::new(0));
                    sessions += 1;
                    peers.insert(id, (sessions, Outbox { tx, queued: queued.clone() }));
                    let (gone, session, stdout) = (gone_tx.clone(), sessions, output.sender().clone());
                    let raw = args.raw;
                    tokio::spawn(async move {
                        serve_peer(peer, rx, queued, stdout, raw).await;
                        let _ = gone.send((id, session));
                    });
                }
                Some(TopicEvent::Left(id)) => {
                    if peers.remove(&id).is_some() {
                        eprintln!("pairs: - {} left", id.short());
                    }
                }
                None => break,
            },
            Some((id, session)) = gone.recv() => {
                if peers.get(&id).is_some_and(|(current, _)| *current == session) {
                    peers.remove(&id);
                    eprintln!("pairs: - {} left", id.short());
                }
            }
            line = lines.recv(), if stdin_open => match line {
                Some(line) => {
                    peers.retain(|id, (_, outbox)| {
                        let kept = outbox.push(&line);
                        if !kept {
                            eprintln!("pairs: - {} dropped: not keeping up", id.short());
                        }
                        kept
                    });
                }
                None => stdin_open = false,
            },
            _ = super::stop_requested() => break,
        }
    }
    drop(peers);
    output.finish().context("writing stdout failed")?;
    node.shutdown().await;
    Ok(())
}

/// What is queued for one peer's session: its lines and their bytes.
struct Outbox {
    tx: mpsc::Sender<Bytes>,
    queued: Arc<AtomicUsize>,
}

impl Outbox {
    /// Queues `line`; false if the peer is too far behind to take it.
    fn push(&self, line: &Bytes) -> bool {
        if self.queued.load(Ordering::Relaxed) + line.len() > PEER_QUEUE_BYTES {
            return false;
        }
        self.queued.fetch_add(line.len(), Ordering::Relaxed);
        self.tx.try_send(line.clone()).is_ok()
    }
}

/// One line of at most `MAX_LINE` bytes, newline included.
enum Line {
    Whole(Vec<u8>),
    /// A line over the limit, read to its end and dropped: its length.
    TooLong(u64),
    End,
}

/// Reads the next line; a line longer than [`MAX_LINE`] is consumed and reported, not kept, so
/// memory stays bounded and the stream stays in step. The last line may lack its newline.
async fn next_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let n = (&mut *reader)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(Line::End);
    }
    if line.last() == Some(&b'\n') || n < MAX_LINE {
        return Ok(Line::Whole(line));
    }
    // Exactly MAX_LINE bytes and no newline: skip to the end of the line.
    let mut skipped = n as u64;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(Line::TooLong(skipped));
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(Line::TooLong(skipped + i as u64));
            }
            None => {
                let len = buf.len();
                reader.consume(len);
                skipped += len as u64;
            }
        }
    }
}

async fn read_stdin_lines(tx: mpsc::Sender<Bytes>) {
    let mut stdin = BufReader::with_capacity(256 * 1024, tokio::io::stdin());
    loop {
        match next_line(&mut stdin).await {
            Ok(Line::End) | Err(_) => return,
            Ok(Line::TooLong(len)) => eprintln!(
                "pairs: line of {len} bytes not sent: a swarm line is at most {} MiB",
                MAX_LINE >> 20
            ),
            Ok(Line::Whole(mut line)) => {
                if line.last() != Some(&b'\n') {
                    line.push(b'\n');
                }
                if tx.send(Bytes::from(line)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// One stream with one peer: our lines out, theirs in (prefixed with their short id).
async fn serve_peer(
    mut peer: TopicPeer,
    mut outgoing: mpsc::Receiver<Bytes>,
    queued: Arc<AtomicUsize>,
    stdout: mpsc::Sender<Bytes>,
    raw: bool,
) {
    let id = peer.node_id();
    let Ok(stream) = peer.stream().await else {
        return;
    };
    let (mut send, recv) = stream.split();
    let writer = async {
        while let Some(line) = outgoing.recv().await {
            if send.write_all(&line).await.is_err() {
                return;
            }
            queued.fetch_sub(line.len(), Ordering::Relaxed);
        }
        let _ = send.finish();
    };
    let prefix = format!("{} ", id.short());
    let reader = async {
        let mut recv = BufReader::new(recv);
        loop {
            match next_line(&mut recv).await {
                Ok(Line::End) | Err(_) => return,
                Ok(Line::TooLong(len)) => eprintln!(
                    "pairs: skipped a line of {len} bytes from {}: over the {} MiB limit",
                    id.short(),
                    MAX_LINE >> 20
                ),
                Ok(Line::Whole(line)) => {
                    let out = if raw {
                        Bytes::from(line)
                    } else {
                        let mut out = Vec::with_capacity(prefix.len() + line.len());
                        out.extend_from_slice(prefix.as_bytes());
                        out.extend_from_slice(&line);
                        Bytes::from(out)
                    };
                    if stdout.send(out).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    // The peer is done when it stops sending; our sending ends with our stdin or with it.
    tokio::select! {
        () = reader => {}
        () = async { writer.await; std::future::pending::<()>().await } => {}
    }
}
