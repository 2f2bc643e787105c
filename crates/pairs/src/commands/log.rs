//! `pairs log ...`: create, append to, read and replicate logs.

use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use pairs_base::{NodeAddr, NodeId, SecretKey, Ticket as _, keyfile};
use pairs_log::{Entry, Log, LogTicket, Payload};
use pairs_net::{Connection, Endpoint, EndpointConfig, Router};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

use crate::cli::{BindArgs, LogCommand};
use crate::home;

/// ALPN of log replication over pairs connections.
const ALPN: &[u8] = b"pairs/log/1";

pub async fn run(data_dir: Option<&Path>, command: LogCommand) -> Result<()> {
    match command {
        LogCommand::New => new(data_dir),
        LogCommand::Append {
            ticket,
            data,
            lines,
        } => append(data_dir, &ticket, &data, lines),
        LogCommand::Cat {
            ticket,
            follow,
            json,
        } => cat(data_dir, &ticket, follow, json).await,
        LogCommand::Heads { ticket } => {
            let log = open(data_dir, &ticket)?;
            for head in log.heads() {
                println!("{head}");
            }
            Ok(())
        }
        LogCommand::Sync {
            ticket,
            peer,
            live,
            bind,
        } => match peer {
            Some(peer) => sync_with(data_dir, &ticket, &peer, live, &bind).await,
            None => serve(data_dir, &ticket, live, &bind).await,
        },
        LogCommand::Replicate { ticket, live, .. } => {
            let log = open(data_dir, &ticket)?;
            let stdio = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
            let stats = log.replicate(stdio, live).await?;
            eprintln!(
                "pairs: replicated: {} entries received, {} sent",
                stats.entries_received, stats.entries_sent
            );
            Ok(())
        }
        LogCommand::AddWriter { ticket, node_id } => membership(data_dir, &ticket, &node_id, true),
        LogCommand::RemoveWriter { ticket, node_id } => {
            membership(data_dir, &ticket, &node_id, false)
        }
        LogCommand::Info { ticket } => info(data_dir, &ticket),
    }
}

pub fn parse_ticket(ticket: &str) -> Result<LogTicket> {
    Ok(LogTicket::from_ticket(ticket)?)
}

pub fn open(data_dir: Option<&Path>, ticket: &str) -> Result<Log> {
    home::open_log(data_dir, &parse_ticket(ticket)?.log)
}

fn new(data_dir: Option<&Path>) -> Result<()> {
    let owner = SecretKey::generate();
    let ticket = LogTicket {
        log: owner.node_id(),
    };
    let dir = home::log_dir(data_dir, &ticket.log)?;
    keyfile::create(&dir.join("owner.key"), &owner)?;
    home::open_log(data_dir, &ticket.log)?;
    println!("{}", ticket.to_ticket());
    Ok(())
}

fn append(data_dir: Option<&Path>, ticket: &str, data: &str, lines: bool) -> Result<()> {
    let log = open(data_dir, ticket)?;
    let key = home::writer_key(data_dir, &log.id())?;
    if data != "-" {
        println!(
            "{}",
            log.append(&key, Payload::Data(data.as_bytes().to_vec()))?
        );
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !lines {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut stdin.lock(), &mut bytes).context("reading stdin")?;
        println!("{}", log.append(&key, Payload::Data(bytes))?);
        return Ok(());
    }
    // One committed entry per line; each id is printed only after its commit.
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line.context("reading stdin")?;
        let id = log.append(&key, Payload::Data(line.into_bytes()))?;
        writeln!(out, "{id}")?;
        out.flush()?;
    }
    Ok(())
}

fn describe(entry: &Entry, json: bool) -> String {
    let body = entry.body();
    let (kind, content) = match &body.payload {
        Payload::Data(data) => ("data", String::from_utf8_lossy(data).into_owned()),
        Payload::AddWriter(w) => ("add-writer", w.to_string()),
        Payload::RemoveWriter { writer, .. } => ("remove-writer", writer.to_string()),
    };
    if json {
        serde_json::json!({
            "id": entry.id().to_string(),
            "author": body.author.to_string(),
            "seq": body.seq,
            "clock": body.clock,
            "parents": body.parents.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "timestamp": body.timestamp,
            "kind": kind,
            "payload": content,
        })
        .to_string()
    } else if kind == "data" {
        content
    } else {
        format!("[{kind} {content}]")
    }
}

async fn cat(data_dir: Option<&Path>, ticket: &str, follow: bool, json: bool) -> Result<()> {
    let log_id = parse_ticket(ticket)?.log;
    let mut printed = std::collections::HashSet::new();
    loop {
        // Open per pass, so appenders and syncs in other processes get their turn with the store.
        let log = home::open_log(data_dir, &log_id)?;
        let mut out = std::io::stdout().lock();
        for entry in log.entries()? {
            if printed.insert(entry.id()) {
                writeln!(out, "{}", describe(&entry, json))?;
            }
        }
        out.flush()?;
        drop(log);
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn membership(data_dir: Option<&Path>, ticket: &str, node_id: &str, add: bool) -> Result<()> {
    let log = open(data_dir, ticket)?;
    let writer: NodeId = node_id.parse()?;
    let key = home::writer_key(data_dir, &log.id())?;
    if key.node_id() != log.id() {
        bail!(
            "only the log's owner can change its writers, and its owner key is not on this machine"
        );
    }
    let payload = if add {
        Payload::AddWriter(writer)
    } else {
        Payload::RemoveWriter {
            writer,
            keep_until: None,
        }
    };
    println!("{}", log.append(&key, payload)?);
    Ok(())
}

fn info(data_dir: Option<&Path>, ticket: &str) -> Result<()> {
    let log = open(data_dir, ticket)?;
    println!("log      {}", log.id());
    println!("entries  {}", log.len());
    for head in log.heads() {
        println!("head     {head}");
    }
    for (writer, removed) in log.writers() {
        println!(
            "writer   {writer}{}",
            if removed { " (removed)" } else { "" }
        );
    }
    for fork in log.equivocations()? {
        println!(
            "fork     {} signed {} and {} as entry {}",
            fork.author, fork.first, fork.second, fork.seq
        );
    }
    Ok(())
}

async fn endpoint(data_dir: Option<&Path>, bind: &BindArgs) -> Result<Endpoint> {
    let mut config = EndpointConfig::new(home::node_key(data_dir)?);
    config.bind = bind.bind;
    config.port = bind.port.unwrap_or(0);
    Ok(Endpoint::bind(config).await?)
}

async fn sync_with(
    data_dir: Option<&Path>,
    ticket: &str,
    peer: &str,
    live: bool,
    bind: &BindArgs,
) -> Result<()> {
    let ticket = parse_ticket(ticket)?;
    let peer = NodeAddr::from_ticket(peer)?;
    let log = home::open_log(data_dir, &ticket.log)?;
    let endpoint = endpoint(data_dir, bind).await?;
    let connection = endpoint.connect(&peer, ALPN).await?;
    let mut stream = connection.open_bi().await?;
    stream.write_all(&ticket.discovery_key()).await?;
    let stats = log
        .replicate(&mut stream, live)
        .await
        .with_context(|| format!("syncing with {}", peer.node_id.short()))?;
    finish(&connection, &mut stream).await;
    eprintln!(
        "pairs: synced with {}: {} entries received, {} sent; {} entries in the log",
        peer.node_id.short(),
        stats.entries_received,
        stats.entries_sent,
        log.len()
    );
    endpoint.close().await;
    Ok(())
}

async fn serve(data_dir: Option<&Path>, ticket: &str, live: bool, bind: &BindArgs) -> Result<()> {
    let log_ticket = parse_ticket(ticket)?;
    let log = home::open_log(data_dir, &log_ticket.log)?;
    let endpoint = endpoint(data_dir, bind).await?;
    let (tx, mut incoming) = mpsc::channel::<Connection>(64);
    let router = Router::builder(endpoint.clone()).accept(ALPN, tx).spawn();
    eprintln!(
        "pairs: serving log {}; on another node run:\n\n    pairs log sync {} {}\n",
        log.id().short(),
        ticket.trim(),
        endpoint.node_addr().to_ticket()
    );
    loop {
        tokio::select! {
            _ = super::stop_requested() => break,
            connection = incoming.recv() => {
                let Some(connection) = connection else { break };
                let log = log.clone();
                let expected = log_ticket.discovery_key();
                tokio::spawn(async move {
                    let peer = connection.remote_node_id().short();
                    match serve_one(&connection, &log, expected, live).await {
                        Ok(stats) => eprintln!(
                            "pairs: synced with {peer}: {} entries received, {} sent",
                            stats.entries_received, stats.entries_sent
                        ),
                        Err(err) => {
                            eprintln!("pairs: sync with {peer} failed: {err:#}");
                            connection.close(1, b"sync failed");
                        }
                    }
                });
            }
        }
    }
    router.shutdown().await;
    Ok(())
}

async fn serve_one(
    connection: &Connection,
    log: &Log,
    expected: [u8; 32],
    live: bool,
) -> Result<pairs_log::SyncStats> {
    let mut stream = connection.accept_bi().await?;
    let mut discovery = [0u8; 32];
    stream.read_exact(&mut discovery).await?;
    if discovery != expected {
        bail!("the peer asked for a log this node does not serve");
    }
    let stats = log.replicate(&mut stream, live).await?;
    finish(connection, &mut stream).await;
    Ok(stats)
}

/// Closes the connection only once the peer acknowledged everything we sent, so our last message is
/// never cut off by the close.
async fn finish(connection: &Connection, stream: &mut pairs_net::BiStream) {
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.send.stopped()).await;
    connection.close(0, b"done");
}
