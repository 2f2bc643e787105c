//! `pairs swarm TOPIC`: every process that joins a topic gets a stream to every other; stdin lines
//! go to all of them, their lines come out on stdout.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use pairs_base::{NodeId, Topic};
use pairs_net::swarm::{TopicEvent, TopicPeer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

use crate::cli::SwarmArgs;
use crate::stdio::StdoutSink;

/// Longest line passed on; a peer sending a longer one is cut off.
const MAX_LINE: usize = 64 * 1024;
/// Lines queued for one peer; a peer that falls further behind is dropped.
const PEER_QUEUE: usize = 1024;

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
    let mut peers: HashMap<NodeId, (u64, mpsc::Sender<Bytes>)> = HashMap::new();
    let mut sessions = 0u64;
    let (gone_tx, mut gone) = mpsc::unbounded_channel::<(NodeId, u64)>();
    loop {
        tokio::select! {
            event = topic.next() => match event {
                Some(TopicEvent::Joined(peer)) => {
                    let id = peer.node_id();
                    eprintln!("pairs: + {} joined", id.short());
                    let (tx, rx) = mpsc::channel(PEER_QUEUE);
                    sessions += 1;
                    peers.insert(id, (sessions, tx));
                    let (gone, session, stdout) = (gone_tx.clone(), sessions, output.sender().clone());
                    let raw = args.raw;
                    tokio::spawn(async move {
                        serve_peer(peer, rx, stdout, raw).await;
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
                    peers.retain(|id, (_, tx)| match tx.try_send(line.clone()) {
                        Ok(()) => true,
                        Err(_) => {
                            eprintln!("pairs: - {} dropped: not keeping up", id.short());
                            false
                        }
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

async fn read_stdin_lines(tx: mpsc::Sender<Bytes>) {
    let mut stdin = BufReader::new(tokio::io::stdin());
    loop {
        let mut line = Vec::new();
        match (&mut stdin)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {
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
        }
        let _ = send.finish();
    };
    let prefix = format!("{} ", id.short());
    let reader = async {
        let mut recv = BufReader::new(recv);
        loop {
            let mut line = Vec::new();
            match (&mut recv)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line)
                .await
            {
                Ok(0) | Err(_) => return,
                Ok(_) if line.last() != Some(&b'\n') => {
                    // Over the limit (or cut short): refuse the rest of what this peer sends.
                    let mut recv = recv.into_inner();
                    let _ = recv.stop(1u32.into());
                    return;
                }
                Ok(_) => {
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
