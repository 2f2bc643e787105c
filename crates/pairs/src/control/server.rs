//! The node's side of the control API: the Unix socket, who may use it, and the requests.

use std::fs::File;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use pairs_base::{NodeAddr, Ticket as _};
use pairs_log::{Entry, EntryId, LogId};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;

use super::{
    BlobAdded, BlobRow, ENTRIES_PER_FRAME, FrameError, LOCK_FILE, LogInfo, LogStatus, MAX_REQUEST,
    NodeStatus, Request, Response, SOCKET_FILE, ShareFiles, ShareRow, WireEntry, read_frame,
    write_frame,
};
use crate::node::{GetProgress, LogHandle, Node};
use crate::share::ShareTicket;
use pairs_blobs::layer::GROUP_SIZE;
use pairs_blobs::store::ImportMode;
use pairs_blobs::ticket::BlobFormat;
use pairs_blobs::{BlobStatus, BlobTicket, Hash};

/// Control connections served at once; more wait in the socket's backlog.
const MAX_CLIENTS: usize = 64;
/// Largest [`Response::ReplicateData`] frame.
const REPLICATE_CHUNK: usize = 64 << 10;
/// How long a connection may sit without sending its next request.
const IDLE: Duration = Duration::from_secs(300);

/// The control socket of a running node. Dropping it stops serving and removes the socket.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
    /// Held while serving: one node per data directory.
    _lock: File,
}

impl ControlServer {
    /// Serves the control API for `node` on `SOCKET_FILE` in its data directory. Fails if another
    /// node serves that directory already.
    pub fn listen(node: &Node) -> Result<Self> {
        let dir = node
            .data_dir()
            .context("an in-memory node has no data directory for a control socket")?;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .with_context(|| format!("cannot open {}", dir.join(LOCK_FILE).display()))?;
        if lock.try_lock().is_err() {
            bail!(
                "another pairs node is running on {} (stop it, or give this one another --data-dir)",
                dir.display()
            );
        }
        let path = dir.join(SOCKET_FILE);
        // A socket left by a node that was killed: we hold the lock, so nobody serves it.
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
        let owner = std::fs::metadata(&path)?.uid();
        let task = tokio::spawn(accept_loop(listener, node.clone(), owner));
        Ok(Self {
            path,
            task,
            _lock: lock,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept_loop(listener: UnixListener, node: Node, owner: u32) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(%err, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // The file mode keeps other users out; the peer's credentials make sure of it.
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == owner || cred.uid() == 0 => {}
            Ok(cred) => {
                tracing::warn!(
                    uid = cred.uid(),
                    "control connection from another user refused"
                );
                continue;
            }
            Err(err) => {
                tracing::warn!(%err, "control connection without credentials refused");
                continue;
            }
        }
        let node = node.clone();
        tokio::spawn(async move {
            if let Err(err) = serve_connection(node, stream).await {
                tracing::debug!("control connection ended: {err:#}");
            }
            drop(slot);
        });
    }
}

/// Serves one control connection over any duplex stream (the Unix socket, or an in-process pipe).
pub async fn serve_connection<S>(node: Node, mut stream: S) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let request = match tokio::time::timeout(IDLE, read_frame(&mut stream, MAX_REQUEST)).await {
            Err(_) => return Ok(()),
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(request))) => request,
            Ok(Err(FrameError::Io(err))) => return Err(err.into()),
            Ok(Err(err)) => {
                // Say what was wrong, then hang up: the stream's framing cannot be trusted now.
                let _ = write_frame(&mut stream, &Response::Error(err.to_string())).await;
                return Ok(());
            }
        };
        match request {
            Request::Entries { log, follow } => {
                if let Err(err) = send_entries(&node, log, follow, &mut stream).await {
                    write_frame(&mut stream, &Response::Error(format!("{err:#}"))).await?;
                }
            }
            Request::Replicate { log, live } => {
                let log = match readable(&node, log).await {
                    Ok(log) => log,
                    Err(err) => {
                        write_frame(&mut stream, &Response::Error(format!("{err:#}"))).await?;
                        continue;
                    }
                };
                write_frame(&mut stream, &Response::Replicating).await?;
                return replicate(&log, live, stream).await;
            }
            Request::BlobGet {
                ticket,
                out,
                paths,
                version,
            } => {
                if let Err(err) =
                    send_blob_get(&node, &ticket, &out, &paths, version, &mut stream).await
                {
                    write_frame(&mut stream, &Response::Error(format!("{err:#}"))).await?;
                }
            }
            request => {
                let response = match answer(&node, request).await {
                    Ok(response) => response,
                    Err(err) => Response::Error(format!("{err:#}")),
                };
                write_frame(&mut stream, &response).await?;
            }
        }
    }
}

/// Replicates `log` with the client: its bytes come raw, ours go in [`Response::ReplicateData`]
/// frames, and the last frame says how the replication ended.
async fn replicate<S>(log: &LogHandle, live: bool, stream: S) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (from_client, mut to_client) = tokio::io::split(stream);
    let (ours, outgoing) = tokio::io::duplex(REPLICATE_CHUNK);
    let replicating = async move {
        // The stream is dropped on return, which ends `outgoing` after its last bytes.
        log.replicate(tokio::io::join(from_client, ours), live)
            .await
    };
    let forwarding = async {
        // Owned here: if the client goes, the replication's writes fail instead of waiting.
        let mut outgoing = outgoing;
        let mut chunk = vec![0u8; REPLICATE_CHUNK];
        loop {
            let n = outgoing.read(&mut chunk).await?;
            if n == 0 {
                return std::io::Result::Ok(());
            }
            write_frame(
                &mut to_client,
                &Response::ReplicateData(chunk[..n].to_vec()),
            )
            .await?;
        }
    };
    let (outcome, forwarded) = tokio::join!(replicating, forwarding);
    forwarded?;
    let response = match outcome {
        Ok(stats) => Response::Synced {
            received: stats.entries_received,
            sent: stats.entries_sent,
            entries: log.len() as u64,
        },
        Err(err) => Response::Error(format!("{err:#}")),
    };
    write_frame(&mut to_client, &response).await?;
    Ok(())
}

/// A log this node holds, or an error that says how to get one.
async fn readable(node: &Node, log: LogId) -> Result<LogHandle> {
    node.existing_log(log).await?.with_context(|| {
        format!(
            "this node holds no replica of log {}: sync it first (pairs log sync TICKET)",
            log.short()
        )
    })
}

async fn answer(node: &Node, request: Request) -> Result<Response> {
    Ok(match request {
        Request::Status => Response::Status(status(node).await),
        Request::LogNew => Response::Log(node.create_log().await?.id()),
        Request::Append { log, payloads } => {
            let handle = match node.existing_log(log).await? {
                Some(handle) => handle,
                None if node.owns_log(&log) => node.log_by_id(log).await?,
                None => bail!(
                    "node {} is not a writer of log {} (no replica of it here: ask its owner to add this node, then sync it)",
                    node.id().short(),
                    log.short()
                ),
            };
            Response::Appended(handle.append_payloads(payloads).await?)
        }
        Request::Heads { log } => Response::Heads(readable(node, log).await?.store().heads()),
        Request::Entry { log, id } => {
            let entry = readable(node, log)
                .await?
                .store()
                .get(&id)?
                .with_context(|| {
                    format!(
                        "log {} has no entry {id} (pairs log cat --json lists their ids)",
                        log.short()
                    )
                })?;
            Response::Entries(vec![WireEntry::from(&entry)])
        }
        Request::Info { log } => {
            let handle = readable(node, log).await?;
            let store = handle.store();
            Response::Info(LogInfo {
                log,
                entries: store.len() as u64,
                heads: store.heads(),
                writers: store.writers(),
                forks: store
                    .equivocations()?
                    .into_iter()
                    .map(|f| (f.author, f.seq, f.first, f.second))
                    .collect(),
                shared: handle.is_shared(),
                peers: handle.peers(),
            })
        }
        Request::MapGet { log, key } => {
            let views = readable(node, log).await?.views()?;
            Response::Value(views.map.get(&key).and_then(|v| v.value.clone()))
        }
        Request::MapList { log } => {
            let views = readable(node, log).await?.views()?;
            Response::Map(
                views
                    .map_entries()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
        }
        Request::Writer { log, writer, add } => {
            let handle = readable(node, log).await?;
            let id = if add {
                handle.add_writer(writer).await?
            } else {
                handle.remove_writer(writer).await?
            };
            Response::Appended(vec![id])
        }
        Request::Share { log, peers } => {
            let handle = node.log_by_id(log).await?;
            handle.share().await?;
            for peer in &peers {
                node.add_peer(peer).await?;
            }
            Response::Ok
        }
        Request::Unshare { log } => {
            readable(node, log).await?.unshare();
            Response::Ok
        }
        Request::SyncOnce { log, peer } => {
            let peer = NodeAddr::from_ticket(&peer)
                .context("the peer must be a node ticket (as printed by `pairs node`)")?;
            let handle = node.log_by_id(log).await?;
            let stats = handle.sync_with(&peer).await?;
            Response::Synced {
                received: stats.entries_received,
                sent: stats.entries_sent,
                entries: handle.len() as u64,
            }
        }
        Request::BlobAdd {
            paths,
            copy,
            share,
            named,
        } => {
            let mode = if copy {
                ImportMode::Copy
            } else {
                ImportMode::Reference
            };
            let blobs = node.blobs();
            let added = if named {
                blobs.add_named(&paths, mode).await?
            } else {
                blobs.add_paths(&paths, mode).await?
            };
            if share {
                blobs.share(added.hash).await?;
            }
            Response::BlobAdded(BlobAdded {
                hash: added.hash,
                collection: added.format == BlobFormat::Collection,
                size: added.size,
                files: added.files,
                ticket: blobs.ticket(added.hash, added.format).to_ticket(),
            })
        }
        Request::BlobList => {
            let blobs = node.blobs();
            let shared = blobs.shared();
            let rows = blobs
                .store()?
                .list()?
                .into_iter()
                .filter_map(|(hash, status)| {
                    let (size, held) = match status {
                        BlobStatus::Absent => return None,
                        BlobStatus::Complete { size } => (size, size),
                        BlobStatus::Partial { size, have } => {
                            (size, (have.count() * GROUP_SIZE).min(size))
                        }
                    };
                    Some(BlobRow {
                        hash,
                        size,
                        held,
                        shared: shared.contains(&hash),
                    })
                })
                .collect();
            Response::Blobs(rows)
        }
        Request::BlobRemove { hash } => {
            if !node.blobs().remove(&hash)? {
                bail!(
                    "blob {} is not in this node's store (see pairs blobs ls)",
                    hash.short()
                );
            }
            Response::Ok
        }
        Request::BlobExport { hash, out } => {
            let store = node.blobs().store()?;
            tokio::task::spawn_blocking(move || store.export(&hash, &out)).await??;
            Response::Ok
        }
        Request::ShareStart { dir, ticket, quota } => {
            let shares = node.shares();
            let handle = match ticket {
                None => shares.create(&dir).await?,
                Some(ticket) => {
                    shares
                        .sync_with(&ShareTicket::parse(&ticket)?, &dir, quota)
                        .await?
                }
            };
            Response::ShareStarted {
                log: handle.id(),
                ticket: handle.ticket().to_ticket(),
            }
        }
        Request::ShareList => {
            let providers: Vec<_> = node.node_addr().into_iter().collect();
            Response::Shares(
                node.shares()
                    .list()
                    .into_iter()
                    .map(|(log, status)| ShareRow {
                        log,
                        ticket: ShareTicket {
                            log,
                            providers: providers.clone(),
                        }
                        .to_ticket(),
                        status,
                    })
                    .collect(),
            )
        }
        Request::ShareStop { log } => {
            if !node.shares().stop(log) {
                bail!(
                    "no folder is kept in step with share {} here (see pairs share ls)",
                    log.short()
                );
            }
            Response::Ok
        }
        Request::ShareFiles { ticket, version } => {
            let tree = node
                .shares()
                .tree(&ShareTicket::parse(&ticket)?, version)
                .await?;
            Response::ShareFiles(ShareFiles::of(&tree))
        }
        Request::ShareHistory { ticket } => {
            Response::ShareHistory(node.shares().history(&ShareTicket::parse(&ticket)?).await?)
        }
        Request::ShareDiff { ticket, from, to } => Response::ShareDiff(
            node.shares()
                .diff(&ShareTicket::parse(&ticket)?, from, to)
                .await?,
        ),
        Request::Entries { .. } | Request::Replicate { .. } | Request::BlobGet { .. } => {
            unreachable!("streams are served by serve_connection")
        }
    })
}

async fn status(node: &Node) -> NodeStatus {
    let shared = node.shared_logs();
    let logs = node
        .logs()
        .into_iter()
        .map(|log| {
            let peers = shared
                .iter()
                .find(|(id, _)| *id == log)
                .map(|(_, peers)| peers.clone());
            LogStatus {
                log,
                entries: node.open_log_len(&log),
                shared: peers.is_some(),
                peers: peers.unwrap_or_default(),
            }
        })
        .collect();
    let (connections, peers) = node.connection_summary().await;
    NodeStatus {
        id: node.id(),
        ticket: node.ticket(),
        pid: std::process::id(),
        peers,
        connections,
        logs,
        gateway: node.gateway_addr(),
    }
}

/// Sends every entry, then `End`; with `follow`, then every entry committed later, until the
/// client hangs up.
async fn send_entries<S>(node: &Node, log: LogId, follow: bool, stream: &mut S) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handle = readable(node, log).await?;
    // Subscribe first, so nothing committed between the read and the subscription is missed.
    let mut updates = handle.subscribe();
    let entries = {
        let handle = handle.clone();
        tokio::task::spawn_blocking(move || handle.entries()).await??
    };
    let mut sent: std::collections::HashSet<EntryId> = std::collections::HashSet::new();
    send_new(stream, entries, follow.then_some(&mut sent)).await?;
    if !follow {
        write_frame(stream, &Response::End).await?;
        return Ok(());
    }
    // A follower learns where what was held ends (a script printing a room, an empty log).
    write_frame(stream, &Response::CaughtUp).await?;
    loop {
        // The client sends nothing more on a followed stream: a read ends only when it hangs up,
        // which must free this connection's slot even while the log is quiet.
        let mut probe = [0u8; 1];
        let update = tokio::select! {
            update = updates.next() => update,
            _ = stream.read(&mut probe) => return Ok(()),
        };
        let Some(update) = update else { break };
        let entries = match update {
            Ok(entries) => entries,
            // Announcements were missed: read the log again and send what was not sent.
            Err(_) => {
                updates = handle.subscribe();
                let handle = handle.clone();
                tokio::task::spawn_blocking(move || handle.entries()).await??
            }
        };
        send_new(stream, entries, Some(&mut sent)).await?;
    }
    Ok(())
}

async fn send_new<S>(
    stream: &mut S,
    entries: Vec<Entry>,
    mut sent: Option<&mut std::collections::HashSet<EntryId>>,
) -> Result<()>
where
    S: AsyncWrite + Unpin,
{
    let fresh: Vec<WireEntry> = entries
        .iter()
        .filter(|e| sent.as_mut().is_none_or(|sent| sent.insert(e.id())))
        .map(WireEntry::from)
        .collect();
    for chunk in fresh.chunks(ENTRIES_PER_FRAME) {
        write_frame(stream, &Response::Entries(chunk.to_vec())).await?;
    }
    Ok(())
}

/// Fetches what a ticket or hash names, sending progress frames, then [`Response::BlobDone`].
async fn send_blob_get<S>(
    node: &Node,
    ticket: &str,
    out: &Path,
    paths: &[String],
    version: Option<usize>,
    stream: &mut S,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (progress_tx, mut progress_rx) = tokio::sync::watch::channel(GetProgress::default());
    let blobs = node.blobs();
    let report = move |p: &GetProgress| {
        progress_tx.send_replace(p.clone());
    };
    let fetch = async {
        if let Ok(share) = ShareTicket::parse(ticket) {
            return node.shares().get(&share, paths, out, version, report).await;
        }
        match parse_blob_ref(ticket)? {
            BlobRef::Ticket(ticket) => blobs.get(&ticket, out, report).await,
            BlobRef::Hash(hash) => blobs.get_hash(hash, out, report).await,
        }
    };
    tokio::pin!(fetch);
    loop {
        tokio::select! {
            done = &mut fetch => {
                let done = done?;
                write_frame(stream, &Response::BlobDone(done)).await?;
                return Ok(());
            }
            changed = progress_rx.changed() => {
                if changed.is_ok() {
                    let p = progress_rx.borrow_and_update().clone();
                    write_frame(stream, &Response::BlobProgress(p)).await?;
                }
            }
        }
    }
}

/// A blob ticket or a bare hash, as given on a command line.
pub enum BlobRef {
    /// A ticket: hash, format and providers.
    Ticket(BlobTicket),
    /// Only a hash: providers are found through the swarm.
    Hash(Hash),
}

/// Parses a blob ticket or a 64-character hash, with an error that says which was expected.
pub fn parse_blob_ref(text: &str) -> Result<BlobRef> {
    let text = text.trim();
    if let Ok(hash) = text.parse::<Hash>() {
        return Ok(BlobRef::Hash(hash));
    }
    BlobTicket::from_ticket(text).map(BlobRef::Ticket).map_err(|e| {
        anyhow::anyhow!("{e}: give the ticket `pairs send` printed (it starts with \"blob\"), or a 64-character hash")
    })
}
