//! `pairs paste`: offer stdin to the LAN, or receive what someone offers. Only peers that know the
//! paste's name can fetch it, and every copy is verified end to end.

use std::io::IsTerminal as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use pairs::code::Code;
use pairs::paste::{self, Spool};
use pairs_base::{NodeId, Topic};
use pairs_net::swarm::TopicEvent;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cli::PasteArgs;
use crate::stdio::{StdoutSink, stdin_chunks};
use pairs::Node;

/// How long the sender keeps offering after the last copy was confirmed or the last peer joined,
/// so a receiver started a few seconds after another still gets its copy.
const LINGER: Duration = Duration::from_secs(5);

pub async fn run(data_dir: Option<&Path>, isolated: bool, args: PasteArgs) -> Result<()> {
    let by_code = args
        .name
        .as_deref()
        .filter(|name| Code::looks_like_one(name));
    if let Some(text) = by_code
        && (args.send || args.keep)
    {
        bail!(
            "'{text}' is a code, which receives what `pairs paste --code` offers; to offer stdin under a code run `pairs paste --code`"
        );
    }
    let code = by_code
        .map(|text| super::parse_code(text, "pairs paste --code"))
        .transpose()?;
    let sending = args.send || (!args.receive && !std::io::stdin().is_terminal());
    let name = args.name.clone().unwrap_or_default();
    let topic = Topic::from_name(&format!("pairs paste\0{name}"));
    let node = super::swarm_node(data_dir, isolated, &args.discovery).await?;
    if isolated {
        eprintln!(
            "pairs: isolated; peers reach this node with --peer {}",
            node.ticket().unwrap_or_default()
        );
    }
    let deadline = args
        .timeout
        .map(|s| Instant::now() + Duration::from_secs(s));
    let shown = if name.is_empty() {
        "the default paste".to_string()
    } else {
        format!("paste '{name}'")
    };
    let wait = args.timeout.map(Duration::from_secs);
    // Only the code's exchange takes signals: the name's paths end by the default action.
    let result = if let Some(code) = code {
        receive_by_code(&node, &code, wait, &mut super::stop_requested()).await
    } else if args.code {
        send_by_code(&node, wait, &mut super::stop_requested()).await
    } else if sending {
        send(
            &node,
            topic,
            &shown,
            deadline,
            args.keep,
            args.timeout.unwrap_or(0),
        )
        .await
    } else {
        receive(&node, topic, &shown, deadline, args.timeout.unwrap_or(0)).await
    };
    node.shutdown().await;
    result
}

async fn send(
    node: &Node,
    topic: Topic,
    shown: &str,
    deadline: Option<Instant>,
    keep: bool,
    timeout: u64,
) -> Result<()> {
    let spool = Spool::start(stdin_chunks().context("cannot read stdin")?)?;
    let mut peers = node.swarm()?.join(topic).await?;
    eprintln!("pairs: offering stdin as {shown} to this network");
    let (done_tx, mut done) = mpsc::unbounded_channel::<(NodeId, Result<u64, paste::PasteError>)>();
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let mut active = 0usize;
    let mut served = 0usize;
    let mut linger_until: Option<Instant> = None;
    loop {
        let wake = match (linger_until, deadline) {
            (Some(at), _) if active == 0 => Some(at),
            (_, Some(at)) if served == 0 => Some(at),
            _ => None,
        };
        let timer = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = peers.next() => match event {
                Some(TopicEvent::Joined(mut peer)) => {
                    // A receiver asks at once after joining: wait for it before leaving.
                    if let Some(at) = linger_until.as_mut() {
                        *at = (*at).max(Instant::now() + LINGER);
                    }
                    let spool = spool.clone();
                    let done = done_tx.clone();
                    let started = started_tx.clone();
                    tokio::spawn(async move {
                        let id = peer.node_id();
                        while let Some(mut stream) = peer.accept_bi().await {
                            let _ = started.send(());
                            let result = paste::serve(&mut stream, &spool).await;
                            let _ = done.send((id, result));
                        }
                    });
                }
                Some(TopicEvent::Left(_)) => {}
                None => bail!("the swarm stopped"),
            },
            Some(()) = started.recv() => active += 1,
            Some((peer, result)) = done.recv() => {
                active -= 1;
                match result {
                    Ok(bytes) => {
                        served += 1;
                        eprintln!("pairs: sent {bytes} bytes to {}", peer.short());
                        if !keep {
                            linger_until = Some(Instant::now() + LINGER);
                        }
                    }
                    Err(err) => eprintln!("pairs: sending to {} failed: {err}", peer.short()),
                }
            },
            () = timer => {
                if served == 0 {
                    bail!("nobody asked for {shown} within {timeout} s (--timeout); is a receiver running `pairs paste` with the same name on this network?");
                }
                break;
            }
        }
    }
    let (len, _) = spool.finished().await?;
    eprintln!("pairs: {shown} ({len} bytes) sent to {served} peer(s)");
    Ok(())
}

/// `pairs paste --code`: offers stdin to the one peer that proves it knows the code printed.
async fn send_by_code(node: &Node, wait: Option<Duration>, stop: &mut super::Stop) -> Result<()> {
    let spool = Spool::start(stdin_chunks().context("cannot read stdin")?)?;
    let code = Code::generate();
    eprintln!("pairs: on the other side run:\n\n    pairs paste {code}\n");
    let super::Met {
        peer,
        mut stream,
        _topic,
    } = super::meet_by_code(node, &code, wait, "pairs paste --code", stop).await?;
    let who = peer.node_id().short();
    let sent = tokio::select! {
        sent = paste::serve(&mut stream, &spool) => {
            sent.with_context(|| format!("sending to {who}"))?
        }
        _ = &mut *stop => bail!("interrupted; the code {code} is spent"),
    };
    eprintln!("pairs: sent {sent} bytes to {who} (code {code})");
    Ok(())
}

/// `pairs paste CODE`: receives what the peer that made the code offers.
async fn receive_by_code(
    node: &Node,
    code: &Code,
    wait: Option<Duration>,
    stop: &mut super::Stop,
) -> Result<()> {
    let super::Met {
        peer,
        mut stream,
        _topic,
    } = super::meet_by_code(node, code, wait, "pairs paste --code", stop).await?;
    let who = peer.node_id().short();
    let output = StdoutSink::start().context("cannot write stdout")?;
    let out = output.sender().clone();
    let received = tokio::select! {
        received = paste::fetch(&mut stream, |chunk| to_stdout(&out, chunk)) => received,
        _ = &mut *stop => bail!("interrupted; the code {code} is spent"),
    };
    drop(out);
    output.finish().context("writing stdout failed")?;
    let len = received.with_context(|| format!("receiving from {who}"))?;
    eprintln!("pairs: received {len} bytes from {who}");
    Ok(())
}

async fn receive(
    node: &Node,
    topic: Topic,
    shown: &str,
    deadline: Option<Instant>,
    timeout: u64,
) -> Result<()> {
    let mut peers = node.swarm()?.join(topic).await?;
    eprintln!("pairs: waiting for {shown} on this network");
    let output = StdoutSink::start().context("cannot write stdout")?;
    // One copy at a time: a peer that offers waits its turn here. `true` once output was written,
    // after which no other copy may start (stdout cannot be taken back).
    let turn = Arc::new(tokio::sync::Mutex::new(false));
    let fetching = Arc::new(AtomicBool::new(false));
    let (result_tx, mut result) = mpsc::unbounded_channel();
    let timer = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timer);
    let mut timed_out = false;
    let not_found = || {
        anyhow::anyhow!(
            "found no sender of {shown} within {} s (--timeout); is `pairs paste` with the same name running on this network?",
            timeout
        )
    };
    let outcome = loop {
        tokio::select! {
            event = peers.next() => match event {
                Some(TopicEvent::Joined(mut peer)) => {
                    let turn = turn.clone();
                    let fetching = fetching.clone();
                    let out = output.sender().clone();
                    let result_tx = result_tx.clone();
                    tokio::spawn(async move {
                        let id = peer.node_id();
                        let Ok(mut stream) = peer.open_bi().await else { return };
                        let fetch = async {
                            if paste::request(&mut stream).await.is_err() {
                                return; // Another receiver: nothing to fetch from it.
                            }
                            let mut wrote = turn.lock().await;
                            if *wrote {
                                return; // Another sender's copy came in.
                            }
                            fetching.store(true, Ordering::SeqCst);
                            let mut written = 0u64;
                            let received = paste::receive(&mut stream, |chunk| {
                                written += chunk.len() as u64;
                                to_stdout(&out, chunk)
                            })
                            .await;
                            fetching.store(false, Ordering::SeqCst);
                            if received.is_err() && written == 0 {
                                // Broke off before any output (say, the connection was replaced):
                                // nothing is lost, so the next offer gets its turn.
                                eprintln!(
                                    "pairs: the copy from {} broke off; waiting for another",
                                    id.short()
                                );
                                let _ = result_tx.send(None);
                                return;
                            }
                            *wrote = true;
                            let _ = result_tx.send(Some((id, received)));
                        };
                        // A receiver offers nothing: other receivers asking it get a closed stream.
                        let refuse = async {
                            while let Some(stream) = peer.accept_bi().await {
                                drop(stream);
                            }
                            std::future::pending::<()>().await;
                        };
                        tokio::select! {
                            () = fetch => {}
                            () = refuse => {}
                        }
                    });
                }
                Some(TopicEvent::Left(_)) => {}
                None => break Err(anyhow::anyhow!("the swarm stopped")),
            },
            Some(copy) = result.recv() => match copy {
                Some((peer, received)) => {
                    break received
                        .map(|len| (peer, len))
                        .with_context(|| format!("receiving from {}", NodeId::short(&peer)));
                }
                None if timed_out => break Err(not_found()),
                None => {}
            },
            () = &mut timer, if !timed_out => {
                timed_out = true;
                if !fetching.load(Ordering::SeqCst) {
                    break Err(not_found());
                }
                // A copy is coming in: let it finish.
            }
        }
    };
    output.finish().context("writing stdout failed")?;
    let (peer, len) = outcome?;
    eprintln!("pairs: received {len} bytes from {}", peer.short());
    Ok(())
}

/// Hands a chunk to the stdout thread from inside an async task; waits (off the runtime's
/// scheduler) only when the thread is behind.
fn to_stdout(out: &mpsc::Sender<bytes::Bytes>, chunk: bytes::Bytes) -> std::io::Result<()> {
    let closed = || std::io::Error::other("stdout closed");
    match out.try_send(chunk) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(chunk)) => {
            tokio::task::block_in_place(|| out.blocking_send(chunk)).map_err(|_| closed())
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Err(closed()),
    }
}
