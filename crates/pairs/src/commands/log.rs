//! `pairs log ...`: create, append to, read and share logs, through the running node's control
//! socket, or an offline node in this process when none runs.

use std::fmt::Write as _;
use std::io::{BufRead as _, Write as _};
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use data_encoding::BASE64;
use pairs::control::Client;
use pairs_base::{NodeAddr, NodeId, Ticket as _};
use pairs_log::entry::MAX_PAYLOAD;
use pairs_log::{Entry, EntryId, LogId, LogTicket, Op, Payload};
use tokio::sync::mpsc;

use crate::cli::{BindArgs, LogCommand, SourceArgs};

/// Lines sent to the node in one append (one commit, one signature) at most...
const BATCH_LINES: usize = 16 * 1024;
/// ...and bytes, well under the control API's request limit.
const BATCH_BYTES: usize = 4 << 20;
/// Ids (52 characters and a newline each) per write to stdout: under PIPE_BUF (4096 bytes).
const ATOMIC_IDS: usize = 64;

pub async fn run(data_dir: Option<&Path>, isolated: bool, command: LogCommand) -> Result<()> {
    match command {
        LogCommand::New => {
            let log = super::control(data_dir).await?.log_new().await?;
            println!("{}", LogTicket { log }.to_ticket());
            Ok(())
        }
        LogCommand::Append {
            ticket,
            data,
            lines,
        } => append(data_dir, parse_ticket(&ticket)?.log, &data, lines).await,
        LogCommand::Cat {
            ticket,
            follow,
            json,
        } => cat(data_dir, parse_ticket(&ticket)?.log, follow, json).await,
        LogCommand::Heads { ticket } => {
            let heads = super::control(data_dir)
                .await?
                .heads(parse_ticket(&ticket)?.log)
                .await?;
            for head in heads {
                println!("{head}");
            }
            Ok(())
        }
        LogCommand::Sync {
            ticket,
            peer,
            live,
            bind,
            sources,
        } => {
            let log = parse_ticket(&ticket)?.log;
            match peer {
                Some(peer) if !live => sync_once(data_dir, log, &peer, &bind).await,
                peer => share(data_dir, isolated, &ticket, log, peer, &bind, &sources).await,
            }
        }
        LogCommand::Replicate { ticket, live, .. } => {
            replicate_stdio(data_dir, parse_ticket(&ticket)?.log, live).await
        }
        LogCommand::AddWriter { ticket, node_id } => {
            membership(data_dir, &ticket, &node_id, true).await
        }
        LogCommand::RemoveWriter { ticket, node_id } => {
            membership(data_dir, &ticket, &node_id, false).await
        }
        LogCommand::Info { ticket } => info(data_dir, &ticket).await,
        LogCommand::Get { ticket, id } => get(data_dir, &ticket, &id).await,
    }
}

pub fn parse_ticket(ticket: &str) -> Result<LogTicket> {
    Ok(LogTicket::from_ticket(ticket)?)
}

async fn append(data_dir: Option<&Path>, log: LogId, data: &str, lines: bool) -> Result<()> {
    let mut client = super::control(data_dir).await?;
    if data != "-" {
        if data.len() > MAX_PAYLOAD {
            return Err(too_large(data.len() as u64));
        }
        let ids = client
            .append(log, vec![Payload::Data(data.as_bytes().to_vec())])
            .await?;
        println!("{}", ids[0]);
        return Ok(());
    }
    if !lines {
        // Read one byte past the limit at most: a huge input is refused without holding it.
        let bytes = tokio::task::spawn_blocking(|| {
            let mut bytes = Vec::new();
            let stdin = std::io::stdin().lock();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(stdin, MAX_PAYLOAD as u64 + 1),
                &mut bytes,
            )
            .map(|_| bytes)
        })
        .await?
        .context("reading stdin")?;
        if bytes.len() > MAX_PAYLOAD {
            return Err(too_large(bytes.len() as u64));
        }
        let ids = client.append(log, vec![Payload::Data(bytes)]).await?;
        println!("{}", ids[0]);
        return Ok(());
    }
    append_lines(&mut client, log).await
}

/// An entry too large to append, refused before anything is sent.
fn too_large(len: u64) -> anyhow::Error {
    let at_least = if len > MAX_PAYLOAD as u64 {
        "over "
    } else {
        ""
    };
    anyhow::anyhow!(
        "an entry holds at most {} KiB and this one is {at_least}{len} bytes: split it (`--lines` makes one entry per line), or share files with `pairs send`",
        MAX_PAYLOAD / 1024
    )
}

/// One entry per stdin line. Lines are committed in batches of whatever has arrived while the
/// previous batch committed (group commit): a slow writer gets each line committed at once, a
/// fast one gets large batches. Each id is printed only after its commit.
async fn append_lines(client: &mut Client, log: LogId) -> Result<()> {
    let (tx, mut rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(BATCH_LINES);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        for number in 1.. {
            let mut line = Vec::new();
            // An entry and its line end at most: a longer line is refused without holding it.
            let limit = MAX_PAYLOAD as u64 + 2;
            match std::io::Read::take(&mut stdin, limit).read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    if line.len() > MAX_PAYLOAD {
                        let err = std::io::Error::other(format!(
                            "line {number}: {}",
                            too_large(line.len() as u64)
                        ));
                        let _ = tx.blocking_send(Err(err));
                        return;
                    }
                    if tx.blocking_send(Ok(line)).is_err() {
                        return;
                    }
                }
                Err(err) => {
                    let _ = tx.blocking_send(Err(err));
                    return;
                }
            }
        }
    });
    while let Some(first) = rx.recv().await {
        let mut batch = vec![Payload::Data(first.context("reading stdin")?)];
        let mut bytes = 0;
        while batch.len() < BATCH_LINES && bytes < BATCH_BYTES {
            match rx.try_recv() {
                Ok(line) => {
                    let line = line.context("reading stdin")?;
                    bytes += line.len();
                    batch.push(Payload::Data(line));
                }
                Err(_) => break,
            }
        }
        let ids = client.append(log, batch).await?;
        let mut out = std::io::stdout().lock();
        // Writes of at most PIPE_BUF bytes to a pipe are atomic, so a reader never sees half an id,
        // even if we are killed mid-batch.
        for chunk in ids.chunks(ATOMIC_IDS) {
            let mut text = String::with_capacity(chunk.len() * 53);
            for id in chunk {
                let _ = writeln!(text, "{id}");
            }
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(())
}

/// Bytes for JSON: the text if they are UTF-8, else `{"base64": ...}`, so nothing is lost.
fn json_bytes(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.into(),
        Err(_) => serde_json::json!({ "base64": BASE64.encode(bytes) }),
    }
}

/// Bytes for a person: the text if they are UTF-8, else their length.
fn text_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => format!("{text:?}"),
        Err(_) => format!("<{} bytes>", bytes.len()),
    }
}

/// A view operation as JSON fields: its type and operands.
fn op_json(op: &Op) -> serde_json::Value {
    let ids = |ids: &[pairs_log::EntryId]| ids.iter().map(ToString::to_string).collect::<Vec<_>>();
    match op {
        Op::MapSet { key, value } => {
            serde_json::json!({"type": "map-set", "key": json_bytes(key), "value": json_bytes(value)})
        }
        Op::MapDelete { key } => serde_json::json!({"type": "map-delete", "key": json_bytes(key)}),
        Op::RegisterSet {
            register,
            value,
            supersedes,
        } => serde_json::json!({
            "type": "register-set", "register": json_bytes(register), "value": json_bytes(value),
            "supersedes": ids(supersedes),
        }),
        Op::SetAdd { set, element } => {
            serde_json::json!({"type": "set-add", "set": json_bytes(set), "element": json_bytes(element)})
        }
        Op::SetRemove {
            set,
            element,
            observed,
        } => serde_json::json!({
            "type": "set-remove", "set": json_bytes(set), "element": json_bytes(element),
            "observed": ids(observed),
        }),
        Op::CounterAdd { counter, delta } => {
            serde_json::json!({"type": "counter-add", "counter": json_bytes(counter), "delta": delta})
        }
    }
}

/// A view operation for a person, e.g. `[kv set "colour" = "blue"]`.
fn op_text(op: &Op) -> String {
    match op {
        Op::MapSet { key, value } => {
            format!("[kv set {} = {}]", text_bytes(key), text_bytes(value))
        }
        Op::MapDelete { key } => format!("[kv del {}]", text_bytes(key)),
        Op::RegisterSet {
            register, value, ..
        } => format!(
            "[register {} = {}]",
            text_bytes(register),
            text_bytes(value)
        ),
        Op::SetAdd { set, element } => {
            format!("[set {} add {}]", text_bytes(set), text_bytes(element))
        }
        Op::SetRemove { set, element, .. } => {
            format!("[set {} remove {}]", text_bytes(set), text_bytes(element))
        }
        Op::CounterAdd { counter, delta } => format!("[counter {} {delta:+}]", text_bytes(counter)),
    }
}

/// One entry as a line of `log cat`: data as text (binary data as a note saying how to get its
/// bytes), operations and membership changes in brackets; with `json`, one lossless JSON object.
fn describe(entry: &Entry, json: bool) -> String {
    let body = entry.body();
    if json {
        let mut object = serde_json::json!({
            "id": entry.id().to_string(),
            "author": body.author.to_string(),
            "seq": body.seq,
            "clock": body.clock,
            "parents": body.parents.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "timestamp": body.timestamp,
        });
        let fields = object.as_object_mut().expect("an object");
        let mut set = |key: &str, value: serde_json::Value| {
            fields.insert(key.to_owned(), value);
        };
        match (&body.payload, Op::from_payload(&body.payload)) {
            (_, Some(op)) => {
                set("kind", "op".into());
                set("op", op_json(&op));
            }
            (Payload::Data(data), None) => {
                set("kind", "data".into());
                match std::str::from_utf8(data) {
                    Ok(text) => {
                        set("encoding", "utf-8".into());
                        set("payload", text.into());
                    }
                    Err(_) => {
                        set("encoding", "base64".into());
                        set("payload", BASE64.encode(data).into());
                    }
                }
            }
            (Payload::AddWriter(writer), None) => {
                set("kind", "add-writer".into());
                set("writer", writer.to_string().into());
            }
            (Payload::RemoveWriter { writer, keep_until }, None) => {
                set("kind", "remove-writer".into());
                set("writer", writer.to_string().into());
                set("keep_until", (*keep_until).into());
            }
            (Payload::Open, None) => set("kind", "open".into()),
        }
        return object.to_string();
    }
    match (&body.payload, Op::from_payload(&body.payload)) {
        (_, Some(op)) => op_text(&op),
        (Payload::Data(data), None) => match std::str::from_utf8(data) {
            Ok(text) => text.to_owned(),
            Err(_) => format!(
                "[{} bytes of binary data: pairs log get TICKET {}]",
                data.len(),
                entry.id()
            ),
        },
        (Payload::AddWriter(writer), None) => format!("[add-writer {writer}]"),
        (Payload::RemoveWriter { writer, .. }, None) => format!("[remove-writer {writer}]"),
        (Payload::Open, None) => "[open to every writer]".to_owned(),
    }
}

/// `log get`: one entry's payload, exactly as appended.
async fn get(data_dir: Option<&Path>, ticket: &str, id: &str) -> Result<()> {
    let log = parse_ticket(ticket)?.log;
    let id = pairs_base::base32::decode(id.trim())
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .map(EntryId)
        .with_context(|| {
            format!("{id:?} is not an entry id (52 characters, as `pairs log append` prints)")
        })?;
    let entry = super::control(data_dir).await?.entry(log, id).await?;
    let Payload::Data(data) = &entry.body().payload else {
        bail!(
            "entry {} is a membership change, not data: `pairs log cat` shows it",
            id.short()
        );
    };
    let mut out = std::io::stdout().lock();
    out.write_all(data)?;
    out.flush()?;
    Ok(())
}

async fn cat(data_dir: Option<&Path>, log: LogId, follow: bool, json: bool) -> Result<()> {
    let mut client = super::control(data_dir).await?;
    client.start_entries(log, follow).await?;
    while let Some(entries) = client.next_entries().await? {
        let mut text = String::new();
        for entry in &entries {
            text.push_str(&describe(entry, json));
            text.push('\n');
        }
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}

async fn membership(data_dir: Option<&Path>, ticket: &str, node_id: &str, add: bool) -> Result<()> {
    let log = parse_ticket(ticket)?.log;
    let writer: NodeId = node_id.parse()?;
    let id = super::control(data_dir)
        .await?
        .writer(log, writer, add)
        .await?;
    println!("{id}");
    Ok(())
}

async fn info(data_dir: Option<&Path>, ticket: &str) -> Result<()> {
    let info = super::control(data_dir)
        .await?
        .info(parse_ticket(ticket)?.log)
        .await?;
    println!("log      {}", info.log);
    println!("entries  {}", info.entries);
    for head in &info.heads {
        println!("head     {head}");
    }
    for (writer, removed) in &info.writers {
        println!(
            "writer   {writer}{}",
            if *removed { " (removed)" } else { "" }
        );
    }
    for (author, seq, first, second) in &info.forks {
        println!("fork     {author} signed {first} and {second} as entry {seq}");
    }
    if info.shared {
        println!("shared   with {} peers now", info.peers.len());
        for peer in &info.peers {
            println!("peer     {peer}");
        }
    }
    Ok(())
}

/// Syncs once with the node `peer` names: through the running node, or from a node of our own.
async fn sync_once(data_dir: Option<&Path>, log: LogId, peer: &str, bind: &BindArgs) -> Result<()> {
    let addr = NodeAddr::from_ticket(peer)
        .context("PEER must be a node ticket (printed by `pairs node` or `pairs log sync`)")?;
    let dir = pairs::home::data_dir(data_dir)?;
    let (received, sent, entries) = match Client::connect(&dir).await? {
        Some(mut client) => client.sync_once(log, peer.to_owned()).await?,
        None => {
            // Only the peer named is dialed: no discovery.
            let node = pairs::Node::builder()
                .data_dir(&dir)
                .isolated(true)
                .bind(bind.bind)
                .port(bind.port)
                .spawn()
                .await?;
            let handle = node.log_by_id(log).await?;
            let stats = handle.sync_with(&addr).await;
            node.shutdown().await;
            let stats = stats?;
            (
                stats.entries_received,
                stats.entries_sent,
                handle.len() as u64,
            )
        }
    };
    eprintln!(
        "pairs: synced with {}: {received} entries received, {sent} sent; {entries} entries in the log",
        addr.node_id.short()
    );
    Ok(())
}

/// Shares the log: asks the running node to, or runs a node of our own until stopped.
async fn share(
    data_dir: Option<&Path>,
    isolated: bool,
    ticket: &str,
    log: LogId,
    peer: Option<String>,
    bind: &BindArgs,
    sources: &SourceArgs,
) -> Result<()> {
    let dir = pairs::home::data_dir(data_dir)?;
    let mut peers = sources.peers.clone();
    peers.extend(peer);
    if let Some(mut client) = Client::connect(&dir).await? {
        client.share(log, peers).await?;
        eprintln!(
            "pairs: the running node shares log {} from now on (`pairs node status` shows its peers)",
            log.short()
        );
        return Ok(());
    }
    let mut sources = SourceArgs {
        peers,
        ..sources.clone()
    };
    sources.peers.dedup();
    let (node, control) = super::node::start(data_dir, isolated, bind, &sources, false).await?;
    let handle = node.log_by_id(log).await?;
    handle.share().await?;
    eprintln!(
        "pairs: sharing log {} ({} entries); on another node run:\n\n    pairs log sync {} {}\n",
        log.short(),
        handle.len(),
        ticket.trim(),
        node.ticket().unwrap_or_default()
    );
    super::stop_requested().await;
    drop(control);
    node.shutdown().await;
    Ok(())
}

/// Speaks the log protocol on stdin/stdout (through ssh, socat, a pipe).
async fn replicate_stdio(data_dir: Option<&Path>, log: LogId, live: bool) -> Result<()> {
    let dir = pairs::home::data_dir(data_dir)?;
    let (received, sent) = match Client::connect(&dir).await? {
        Some(client) => {
            client
                .replicate(log, live, tokio::io::stdin(), tokio::io::stdout())
                .await?
        }
        None => {
            let node = pairs::Node::builder()
                .data_dir(&dir)
                .offline()
                .spawn()
                .await?;
            let stdio = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
            let stats = node.log_by_id(log).await?.replicate(stdio, live).await?;
            (stats.entries_received, stats.entries_sent)
        }
    };
    eprintln!("pairs: replicated: {received} entries received, {sent} sent");
    Ok(())
}
