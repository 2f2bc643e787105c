//! Logs held by a node: the registry of open replicas (one per log per process, so commands never
//! wait on a store lock), the handle applications use, sharing on the swarm, and `pairs/log/1` for
//! peers that dial a node directly.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use pairs_base::{NodeAddr, NodeId, SecretKey, Topic, keyfile};
use pairs_log::store::Applied;
use pairs_log::{Entry, EntryId, Log, LogId, LogTicket, Op, Payload, StoreError, SyncStats, Views};
use pairs_net::swarm::{SwarmError, TopicEvent, TopicHandle, TopicPeer};
use pairs_net::{Connection, ProtocolHandler};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::broadcast;
use tokio::task::JoinSet;

use super::Node;

/// ALPN of log replication with a node dialed directly (`pairs log sync TICKET PEER`): the stream
/// starts with the log's discovery key, then the log protocol.
pub const LOG_ALPN: &[u8] = b"pairs/log/1";

/// Close code of `pairs/log/1` when the peer named a log this node does not hold.
const UNKNOWN_LOG: u32 = 2;

/// How long a peer that dialed `pairs/log/1` has to open its stream and name its log.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait between replication sessions with a peer that is still connected.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The swarm topic of a log: derived from its id, so anyone with the log's ticket can join it, and
/// what discovery announces (the topic's discovery key) does not reveal the log.
pub fn log_topic(log: LogId) -> Topic {
    Topic::from_bytes(blake3::derive_key("pairs log topic v1", log.as_bytes()))
}

/// The logs a node holds: at most one open replica of each, shared by everyone in the process.
#[derive(Clone)]
pub(crate) struct LogRegistry {
    inner: Arc<RegistryInner>,
}

struct RegistryInner {
    /// `None`: logs live in memory.
    dir: Option<PathBuf>,
    open: Mutex<HashMap<LogId, Log>>,
    /// Owner keys: those of logs an in-memory node created, and those read from disk.
    owner_keys: Mutex<HashMap<LogId, SecretKey>>,
}

const OWNER_KEY: &str = "owner.key";
const STORE: &str = "log.redb";
const SHARED_MARK: &str = "shared";

impl LogRegistry {
    pub(crate) fn new(data_dir: Option<PathBuf>) -> Self {
        Self {
            inner: Arc::new(RegistryInner {
                dir: data_dir.map(|d| d.join("logs")),
                open: Mutex::new(HashMap::new()),
                owner_keys: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn log_dir(&self, id: &LogId) -> Option<PathBuf> {
        self.inner.dir.as_ref().map(|d| d.join(id.to_string()))
    }

    /// Creates a log owned by `owner`, keeping the owner key beside its store.
    pub(crate) fn create(&self, owner: &SecretKey) -> Result<Log> {
        let id = owner.node_id();
        match self.log_dir(&id) {
            Some(dir) => keyfile::create(&dir.join(OWNER_KEY), owner)?,
            None => {
                self.inner
                    .owner_keys
                    .lock()
                    .expect("owner keys lock")
                    .insert(id, owner.clone());
            }
        }
        self.open(id)
    }

    /// The open replica of `id`, opening (or creating) its store first if needed. Blocks while
    /// another process has the store open, up to 10 s.
    pub(crate) fn open(&self, id: LogId) -> Result<Log> {
        let mut open = self.inner.open.lock().expect("registry lock");
        if let Some(log) = open.get(&id) {
            return Ok(log.clone());
        }
        let log = match self.log_dir(&id) {
            Some(dir) => open_waiting(&dir.join(STORE), id)?,
            None => Log::in_memory(id),
        };
        open.insert(id, log.clone());
        Ok(log)
    }

    /// Entries of `id` if it is open.
    pub(crate) fn open_len(&self, id: &LogId) -> Option<u64> {
        self.inner
            .open
            .lock()
            .expect("registry lock")
            .get(id)
            .map(|log| log.len() as u64)
    }

    /// Whether this node holds a replica of `id` (open, or stored).
    pub(crate) fn exists(&self, id: &LogId) -> bool {
        self.inner
            .open
            .lock()
            .expect("registry lock")
            .contains_key(id)
            || self.log_dir(id).is_some_and(|dir| dir.join(STORE).exists())
    }

    /// Every log held: open ones and those stored in the data directory.
    pub(crate) fn list(&self) -> Vec<LogId> {
        let mut ids: Vec<LogId> = self
            .inner
            .open
            .lock()
            .expect("registry lock")
            .keys()
            .copied()
            .collect();
        if let Some(dir) = &self.inner.dir
            && let Ok(read) = std::fs::read_dir(dir)
        {
            for entry in read.flatten() {
                if let Some(id) = entry
                    .file_name()
                    .to_str()
                    .and_then(|name| name.parse::<LogId>().ok())
                    && entry.path().join(STORE).exists()
                {
                    ids.push(id);
                }
            }
        }
        ids.sort();
        ids.dedup();
        ids
    }

    /// The log whose discovery key is `key`, among those held.
    pub(crate) fn find_by_discovery(&self, key: &[u8; 32]) -> Option<LogId> {
        self.list()
            .into_iter()
            .find(|id| LogTicket { log: *id }.discovery_key() == *key)
    }

    /// The owner key of `id`, if this node created the log.
    /// Keys read from disk stay in memory: every append through the node asks for it.
    pub(crate) fn owner_key(&self, id: &LogId) -> Result<Option<SecretKey>> {
        let mut keys = self.inner.owner_keys.lock().expect("owner keys lock");
        if let Some(key) = keys.get(id) {
            return Ok(Some(key.clone()));
        }
        let Some(path) = self.log_dir(id).map(|dir| dir.join(OWNER_KEY)) else {
            return Ok(None);
        };
        if !path.exists() {
            return Ok(None);
        }
        let key = keyfile::load(&path)?;
        keys.insert(*id, key.clone());
        Ok(Some(key))
    }

    /// Remembers (or forgets) that `id` is shared, for the next start.
    fn mark_shared(&self, id: &LogId, shared: bool) {
        let Some(mark) = self.log_dir(id).map(|d| d.join(SHARED_MARK)) else {
            return;
        };
        let result = if shared {
            std::fs::write(&mark, b"")
        } else {
            std::fs::remove_file(&mark).or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
        };
        if let Err(err) = result {
            tracing::warn!(path = %mark.display(), %err, "cannot record whether the log is shared");
        }
    }

    /// Logs marked as shared.
    pub(crate) fn marked_shared(&self) -> Vec<LogId> {
        self.list()
            .into_iter()
            .filter(|id| {
                self.log_dir(id)
                    .is_some_and(|dir| dir.join(SHARED_MARK).exists())
            })
            .collect()
    }
}

/// Opens a store, waiting a little while another process has it open.
fn open_waiting(path: &std::path::Path, id: LogId) -> Result<Log> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Log::open(path, id) {
            Err(StoreError::Busy(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return Ok(other?),
        }
    }
}

/// A log held by a node: append, read, follow, share. Cheap to clone.
#[derive(Clone)]
pub struct LogHandle {
    node: Node,
    log: Log,
    writer: SecretKey,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle")
            .field("log", &self.log.id())
            .field("writer", &self.writer.node_id())
            .finish()
    }
}

impl LogHandle {
    pub(crate) fn new(node: Node, log: Log, writer: SecretKey) -> Self {
        Self { node, log, writer }
    }

    /// The log's id (its owner's key).
    pub fn id(&self) -> LogId {
        self.log.id()
    }

    /// The log's ticket: what another node needs to replicate it.
    pub fn ticket(&self) -> LogTicket {
        LogTicket { log: self.id() }
    }

    /// The replica itself (the store), for what this handle does not cover.
    pub fn store(&self) -> &Log {
        &self.log
    }

    /// Who this node writes as: the owner key if it created the log, else its node key.
    pub fn writer(&self) -> NodeId {
        self.writer.node_id()
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.log.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }

    /// Appends one entry; returns once it is committed.
    pub async fn append(&self, data: impl Into<Vec<u8>>) -> Result<EntryId> {
        Ok(self
            .append_payloads(vec![Payload::Data(data.into())])
            .await?[0])
    }

    /// Appends several entries in one commit (one signature seals them all).
    pub async fn append_batch<I, D>(&self, data: I) -> Result<Vec<EntryId>>
    where
        I: IntoIterator<Item = D>,
        D: Into<Vec<u8>>,
    {
        self.append_payloads(data.into_iter().map(|d| Payload::Data(d.into())).collect())
            .await
    }

    /// Appends entries of any kind in one commit.
    pub async fn append_payloads(&self, payloads: Vec<Payload>) -> Result<Vec<EntryId>> {
        let (log, key) = (self.log.clone(), self.writer.clone());
        // A commit waits for the disk: keep it off the async workers.
        Ok(tokio::task::spawn_blocking(move || log.append_batch(&key, payloads)).await??)
    }

    /// Appends a CRDT operation (see [`Views`]).
    pub async fn apply(&self, op: Op) -> Result<EntryId> {
        Ok(self.append_payloads(vec![op.to_payload()]).await?[0])
    }

    /// Admits a writer (owner only).
    pub async fn add_writer(&self, writer: NodeId) -> Result<EntryId> {
        self.check_owner()?;
        if writer == self.id() {
            bail!("{} owns this log: the owner always writes", writer.short());
        }
        if self.log.writers().iter().any(|(w, _)| *w == writer) {
            bail!("{} is already a writer of this log", writer.short());
        }
        Ok(self
            .append_payloads(vec![Payload::AddWriter(writer)])
            .await?[0])
    }

    /// Removes a writer: its entries from now on no longer count in views (owner only).
    pub async fn remove_writer(&self, writer: NodeId) -> Result<EntryId> {
        self.check_owner()?;
        match self.log.writers().iter().find(|(w, _)| *w == writer) {
            None => bail!("{} is not a writer of this log", writer.short()),
            Some((_, true)) => bail!("{} was already removed", writer.short()),
            Some(_) => {}
        }
        Ok(self
            .append_payloads(vec![Payload::RemoveWriter {
                writer,
                keep_until: None,
            }])
            .await?[0])
    }

    fn check_owner(&self) -> Result<()> {
        if self.writer.node_id() != self.id() {
            bail!(
                "only the log's owner can change its writers, and its owner key is not on this node"
            );
        }
        Ok(())
    }

    /// Writers besides the owner, and whether each was removed.
    pub fn writers(&self) -> Vec<(NodeId, bool)> {
        self.log.writers()
    }

    /// Every entry in causal order (Lamport clock, then id).
    pub fn entries(&self) -> Result<Vec<Entry>> {
        Ok(self.log.entries()?)
    }

    /// The CRDT views (map, registers, sets, counters) folded over every entry.
    pub fn views(&self) -> Result<Views> {
        Ok(Views::of(&self.log)?)
    }

    /// New entries as they are committed, local appends and replicated ones alike.
    pub fn subscribe(&self) -> EntryBatches {
        EntryBatches {
            log: self.log.clone(),
            applied: self.log.subscribe(),
        }
    }

    /// Replicates with the peer at the other end of any duplex byte stream (a pipe, a socket, a
    /// child's stdio); with `live`, until the stream ends.
    pub async fn replicate<S>(&self, stream: S, live: bool) -> Result<SyncStats>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        Ok(self.log.replicate(stream, live).await?)
    }

    /// Dials a node and syncs the log with it once (`pairs/log/1`): both end with the union.
    pub async fn sync_with(&self, peer: &NodeAddr) -> Result<SyncStats> {
        let endpoint = self.node.endpoint()?;
        let connection = match endpoint.connect(peer, LOG_ALPN).await {
            Ok(connection) => connection,
            Err(pairs_net::ConnectError::NotServed { .. }) => bail!(
                "node {} serves no logs (a `pairs listen` ticket?); give the ticket that \
                 `pairs node` or `pairs log sync` printed",
                peer.node_id.short()
            ),
            Err(err) => return Err(err.into()),
        };
        let mut stream = connection.open_bi().await?;
        stream.write_all(&self.ticket().discovery_key()).await?;
        let stats = match self.log.replicate(&mut stream, false).await {
            Ok(stats) => stats,
            Err(err) => {
                if let Some(pairs_net::ConnectionError::ApplicationClosed(close)) =
                    connection.quinn().close_reason()
                    && close.error_code == UNKNOWN_LOG.into()
                {
                    bail!(
                        "node {} does not hold log {} (is it the right node? `pairs log sync \
                         TICKET` there makes it share the log)",
                        peer.node_id.short(),
                        self.id().short()
                    );
                }
                return Err(anyhow::Error::new(err)
                    .context(format!("syncing with {}", peer.node_id.short())));
            }
        };
        finish(&connection, &mut stream).await;
        Ok(stats)
    }

    /// Shares the log on the swarm: joins the topic derived from its id, and replicates live with
    /// every peer found there (LAN, DHT, static peers, seeds, peer exchange; punched or relayed like
    /// any swarm connection). All logs shared with one peer use one connection. Remembered across
    /// restarts of a node with a data directory. Sharing twice is sharing once.
    pub async fn share(&self) -> Result<()> {
        let swarm = self.node.swarm()?.clone();
        let id = self.id();
        if self
            .node
            .shared()
            .lock()
            .expect("shared lock")
            .contains_key(&id)
        {
            return Ok(());
        }
        let topic = match swarm.join(log_topic(id)).await {
            Ok(topic) => topic,
            Err(SwarmError::AlreadyJoined) => return Ok(()),
            Err(err) => return Err(err.into()),
        };
        let peers = PeerSessions::default();
        let task = tokio::spawn(serve_topic(topic, self.log.clone(), peers.clone()));
        self.node
            .shared()
            .lock()
            .expect("shared lock")
            .insert(id, Sharing { task, peers });
        self.node.registry().mark_shared(&id, true);
        Ok(())
    }

    /// Stops sharing the log (its replica stays).
    pub fn unshare(&self) {
        let sharing = self
            .node
            .shared()
            .lock()
            .expect("shared lock")
            .remove(&self.id());
        drop(sharing);
        self.node.registry().mark_shared(&self.id(), false);
    }

    /// Whether the log is shared on the swarm.
    pub fn is_shared(&self) -> bool {
        self.node
            .shared()
            .lock()
            .expect("shared lock")
            .contains_key(&self.id())
    }

    /// Peers the log is replicating with now.
    pub fn peers(&self) -> Vec<NodeId> {
        self.node
            .shared()
            .lock()
            .expect("shared lock")
            .get(&self.id())
            .map(Sharing::peers)
            .unwrap_or_default()
    }
}

/// New entries of a log as they commit; see [`LogHandle::subscribe`].
pub struct EntryBatches {
    log: Log,
    applied: broadcast::Receiver<Applied>,
}

/// A subscriber fell behind and missed announcements: re-read the log to catch up.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("fell behind by {0} batches of new entries")]
pub struct Lagged(pub u64);

impl EntryBatches {
    /// The next batch of newly committed entries, in commit order; `None` once the log is closed.
    pub async fn next(&mut self) -> Option<Result<Vec<Entry>, Lagged>> {
        match self.applied.recv().await {
            Ok(applied) => Some(Ok(self.log.get_many(&applied.ids).unwrap_or_default())),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(Err(Lagged(missed))),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// Live replication sessions per peer (a peer can briefly have two, across a reconnection).
#[derive(Clone, Default)]
struct PeerSessions(Arc<Mutex<HashMap<NodeId, usize>>>);

impl PeerSessions {
    fn enter(&self, peer: NodeId) -> SessionGuard {
        *self.0.lock().expect("peers lock").entry(peer).or_default() += 1;
        SessionGuard {
            sessions: self.clone(),
            peer,
        }
    }
}

struct SessionGuard {
    sessions: PeerSessions,
    peer: NodeId,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut map = self.sessions.0.lock().expect("peers lock");
        if let Some(count) = map.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.peer);
            }
        }
    }
}

/// A log being shared: the task that serves its topic. Dropping it stops sharing.
pub(crate) struct Sharing {
    task: tokio::task::JoinHandle<()>,
    peers: PeerSessions,
}

impl Sharing {
    pub(crate) fn peers(&self) -> Vec<NodeId> {
        let mut peers: Vec<NodeId> = self
            .peers
            .0
            .lock()
            .expect("peers lock")
            .keys()
            .copied()
            .collect();
        peers.sort();
        peers
    }
}

impl Drop for Sharing {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Replicates `log` with every peer that joins its topic, for as long as the topic is held.
async fn serve_topic(mut topic: TopicHandle, log: Log, peers: PeerSessions) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            event = topic.next() => match event {
                Some(TopicEvent::Joined(peer)) => {
                    sessions.spawn(replicate_with(log.clone(), peer, peers.clone()));
                }
                // A session ends with its connection (a replaced one lingers until quiet, so
                // what was under way on it arrives).
                Some(TopicEvent::Left(_)) => {}
                None => break,
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

/// Live replication with one peer: reconciles, then pushes and receives new entries. A session
/// that fails while the peer stays connected (a protocol error, falling behind) starts again after
/// a pause; a new session reconciles whatever was missed.
async fn replicate_with(log: Log, mut peer: TopicPeer, peers: PeerSessions) {
    let id = peer.node_id();
    let _session = peers.enter(id);
    let mut pause = RETRY_FIRST;
    loop {
        let Ok(stream) = peer.stream().await else {
            return;
        };
        let started = Instant::now();
        match log.replicate(stream, true).await {
            Ok(stats) => {
                tracing::debug!(peer = %id.short(), log = %log.id().short(), ?stats, "replication ended");
                return;
            }
            Err(err) => {
                tracing::debug!(peer = %id.short(), log = %log.id().short(), %err, "replication failed");
            }
        }
        if peer.connection().quinn().close_reason().is_some() {
            return;
        }
        if started.elapsed() > RETRY_MAX * 2 {
            pause = RETRY_FIRST;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
    }
}

/// Serves `pairs/log/1`: a peer that dialed this node names a log by its discovery key and
/// replicates it (live, until the peer ends the stream).
pub(crate) struct LogServer {
    logs: LogRegistry,
}

impl LogServer {
    pub(crate) fn new(logs: LogRegistry) -> Self {
        Self { logs }
    }
}

impl ProtocolHandler for LogServer {
    fn accept(&self, connection: Connection) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let logs = self.logs.clone();
        Box::pin(async move {
            let peer = connection.remote_node_id().short();
            match serve_direct(&connection, logs).await {
                Ok(Some(stats)) => tracing::info!(%peer, ?stats, "log sync served"),
                Ok(None) => {
                    tracing::info!(%peer, "asked for a log this node does not hold");
                    connection.close(UNKNOWN_LOG, b"no such log here");
                }
                Err(err) => {
                    tracing::info!(%peer, "log sync failed: {err:#}");
                    connection.close(1, b"sync failed");
                }
            }
        })
    }
}

/// `None` when the peer named a log this node does not hold.
async fn serve_direct(connection: &Connection, logs: LogRegistry) -> Result<Option<SyncStats>> {
    let mut stream = tokio::time::timeout(HEADER_TIMEOUT, connection.accept_bi())
        .await
        .context("no stream in time")??;
    let mut key = [0u8; 32];
    tokio::time::timeout(HEADER_TIMEOUT, stream.read_exact(&mut key))
        .await
        .context("no log named in time")??;
    let Some(id) = logs.find_by_discovery(&key) else {
        return Ok(None);
    };
    let log = tokio::task::spawn_blocking(move || logs.open(id)).await??;
    let stats = log.replicate(&mut stream, true).await?;
    finish(connection, &mut stream).await;
    Ok(Some(stats))
}

/// Closes the connection only once the peer acknowledged everything we sent, so our last message is
/// never cut off by the close.
pub(crate) async fn finish(connection: &Connection, stream: &mut pairs_net::BiStream) {
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.send.stopped()).await;
    connection.close(0, b"done");
}
