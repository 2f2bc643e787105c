//! Blobs on the node: its store, and one task per blob in exchange that drives the sans-IO
//! [`BlobSwarm`] over the swarm's topic peers.
//!
//! Sharing a blob (or a collection) is joining the swarm under the blob's discovery key. Every peer met
//! there gets one stream per blob, opened by whoever wants the blob; the stream's first frame names it, so
//! the members of a collection all travel over the collection's topic. The per-blob task owns the core,
//! the partial blob being written and the reader being served; peer tasks only move frames.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use pairs_base::{NodeId, Topic};
use pairs_blobs::layer::GROUP_SIZE;
use pairs_blobs::store::{BlobReader, ImportMode, PartialBlob};
use pairs_blobs::ticket::BlobFormat;
use pairs_blobs::wire::{FrameDecoder, Message};
use pairs_blobs::{
    Action, Bitfield, BlobStatus, BlobSwarm, BlobTicket, Collection, CollectionEntry, Hash, Layer,
    Store, SwarmConfig,
};
use pairs_net::BiStream;
use pairs_net::swarm::{Swarm, TopicEvent, TopicHandle, TopicPeer};
use tokio::sync::{mpsc, watch};

/// Frames queued from peers to a blob's task at most (about 2 MiB of data).
const EVENT_QUEUE: usize = 128;

/// The swarm topic of a blob or collection.
pub fn blob_topic(hash: &Hash) -> Topic {
    Topic::from_bytes(pairs_blobs::ticket::discovery_key(hash))
}

/// Progress of one blob's exchange.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobProgress {
    /// Size in bytes, once known.
    pub size: Option<u64>,
    /// Bytes held and verified.
    pub held: u64,
    /// Peers exchanging this blob now.
    pub peers: usize,
    /// Bytes sent to peers.
    pub sent: u64,
    /// Verified bytes received from peers by this task.
    pub received: u64,
    /// Bytes held when this task started.
    pub resumed: u64,
    /// Bytes taken from an older version held here instead of the network (about: whole groups).
    pub local: u64,
    /// Whether every byte is here.
    pub complete: bool,
    /// The last failure, if the exchange stopped (disk full and the like).
    pub error: Option<String>,
}

enum Event {
    Stream {
        node: NodeId,
        /// The connection's QUIC stable id.
        connection: usize,
        stream: BiStream,
        hello: Option<Message>,
    },
    Frame(u64, Message),
    /// A group handed to a peer's writer went out (or was refused): the core picks the next.
    Sent(u64),
    Closed(u64),
    /// A reader waits for bytes `start..end`: fetch those groups first (empty: no reader waits).
    Window(u64, u64),
}

/// The node's blobs: the store and the exchanges under way.
#[derive(Clone)]
pub(crate) struct BlobService {
    dir: PathBuf,
    store: Arc<Mutex<Option<Store>>>,
    tasks: Arc<Mutex<HashMap<Hash, BlobTaskHandle>>>,
    topics: Arc<Mutex<HashMap<Hash, tokio::task::JoinHandle<()>>>>,
    /// Downloads under way (a finished blob leaves): what a peer loop opens streams for. Kept apart
    /// from `tasks`, which also holds every blob served, so a peer loop's work is the number of
    /// downloads, not of blobs held (a share of 10,000 files was quadratic).
    fetching: Arc<Mutex<HashMap<Hash, BlobTaskHandle>>>,
    /// Bumped whenever a fetch starts, so every peer loop opens its stream for it at once.
    wanted: Arc<watch::Sender<u64>>,
    /// Keeps an in-memory node's store alive until the node goes.
    _temp: Option<Arc<tempfile::TempDir>>,
}

#[derive(Clone)]
struct BlobTaskHandle {
    events: mpsc::Sender<Event>,
    progress: watch::Receiver<BlobProgress>,
    /// Where a download writes the bytes (None: into the store).
    wants: bool,
}

impl BlobService {
    pub(crate) fn open(data_dir: Option<&Path>) -> Result<Self> {
        let (dir, temp) = match data_dir {
            Some(dir) => (dir.join("blobs"), None),
            None => {
                let temp = tempfile::tempdir().context("creating a temporary blob store")?;
                (temp.path().to_path_buf(), Some(Arc::new(temp)))
            }
        };
        Ok(BlobService {
            dir,
            store: Default::default(),
            tasks: Default::default(),
            topics: Default::default(),
            fetching: Default::default(),
            wanted: Arc::new(watch::channel(0).0),
            _temp: temp,
        })
    }

    /// The store, opened on first use: a node that never touches blobs (a `pairs swarm` or `paste`
    /// next to a running node) never takes its lock.
    pub(crate) fn store(&self) -> Result<Store> {
        let mut store = self.store.lock().expect("store lock");
        if let Some(store) = &*store {
            return Ok(store.clone());
        }
        let opened = Store::open(&self.dir).with_context(|| {
            format!(
                "opening the blob store in {} (if another pairs process uses this data directory, run `pairs node` so that commands share it, or give this one its own --data-dir)",
                self.dir.display()
            )
        })?;
        *store = Some(opened.clone());
        Ok(opened)
    }

    /// Adds a file to the store (referenced in place or copied).
    pub(crate) async fn add_file(&self, path: PathBuf, mode: ImportMode) -> Result<(Hash, u64)> {
        let store = self.store()?;
        Ok(tokio::task::spawn_blocking(move || store.import_file(&path, mode)).await??)
    }

    /// Adds files where they are, hashed on every core and recorded in one commit: one result per
    /// path, in order.
    pub(crate) async fn add_in_place(
        &self,
        paths: Vec<PathBuf>,
    ) -> Result<Vec<Result<(Hash, u64), pairs_blobs::StoreError>>> {
        let store = self.store()?;
        Ok(tokio::task::spawn_blocking(move || store.import_files_in_place(&paths)).await?)
    }

    /// Adds files, failing on the first that cannot be added.
    pub(crate) async fn add_files(
        &self,
        paths: Vec<PathBuf>,
        mode: ImportMode,
    ) -> Result<Vec<(Hash, u64)>> {
        match mode {
            ImportMode::Reference => self
                .add_in_place(paths)
                .await?
                .into_iter()
                .map(|added| Ok(added?))
                .collect(),
            ImportMode::Copy => {
                let mut added = Vec::with_capacity(paths.len());
                for path in paths {
                    added.push(self.add_file(path, mode).await?);
                }
                Ok(added)
            }
        }
    }

    /// Joins the swarm under `hash`'s topic and serves every stream peers open there.
    pub(crate) async fn share(&self, swarm: &Swarm, hash: Hash) -> Result<()> {
        self.serve_on(swarm, hash, blob_topic(&hash)).await
    }

    /// Joins `topic` and exchanges blobs with every peer found there: any blob this node fetches is
    /// asked of them, any blob it holds is served. `key` names the topic in [`BlobService::unshare`].
    pub(crate) async fn serve_on(&self, swarm: &Swarm, key: Hash, topic: Topic) -> Result<()> {
        let hash = key;
        if self.topics.lock().expect("topics lock").contains_key(&hash) {
            return Ok(());
        }
        let topic = match swarm.join(topic).await {
            Ok(topic) => topic,
            Err(pairs_net::swarm::SwarmError::AlreadyJoined) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let service = self.clone();
        let task = tokio::spawn(async move { service.serve_topic(topic).await });
        self.topics.lock().expect("topics lock").insert(hash, task);
        Ok(())
    }

    /// Stops sharing `hash` (its bytes stay in the store).
    pub(crate) fn unshare(&self, hash: &Hash) {
        if let Some(task) = self.topics.lock().expect("topics lock").remove(hash) {
            task.abort();
        }
        self.mark_shared(hash, false);
    }

    fn shared_file(&self) -> PathBuf {
        self.dir.join("shared")
    }

    /// Records (or forgets) that `hash` is shared, so a restarted node shares it again.
    fn mark_shared(&self, hash: &Hash, shared: bool) {
        if self._temp.is_some() {
            return;
        }
        let mut hashes = self.marked_shared();
        hashes.retain(|h| h != hash);
        if shared {
            hashes.push(*hash);
        }
        let text: String = hashes.iter().map(|h| format!("{h}\n")).collect();
        let tmp = self.shared_file().with_extension("tmp");
        if std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, self.shared_file()))
            .is_err()
        {
            tracing::warn!(
                "cannot record the shared blobs in {}",
                self.shared_file().display()
            );
        }
    }

    fn marked_shared(&self) -> Vec<Hash> {
        std::fs::read_to_string(self.shared_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.parse().ok())
            .collect()
    }

    async fn serve_topic(self, mut topic: TopicHandle) {
        let mut peers = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                event = topic.next() => match event {
                    Some(TopicEvent::Joined(peer)) => {
                        peers.spawn(self.clone().serve_peer(peer));
                    }
                    Some(TopicEvent::Left(_)) => {}
                    None => break,
                },
                Some(_) = peers.join_next(), if !peers.is_empty() => {}
            }
        }
    }

    /// One peer of a topic: opens a stream for each blob this node wants, routes the streams it opens.
    async fn serve_peer(self, mut peer: TopicPeer) {
        let node = peer.node_id();
        let connection = peer.connection().quinn().stable_id();
        let mut opened = std::collections::HashSet::new();
        let mut wanted_changed = self.wanted.subscribe();
        loop {
            // Every blob this node is fetching: a collection's members travel over its topic, and a peer
            // without one says so at once.
            let wanted: Vec<(Hash, BlobTaskHandle)> = {
                let fetching = self.fetching.lock().expect("fetching lock");
                // Forget finished downloads, so this set stays as small as the downloads.
                opened.retain(|h| fetching.contains_key(h));
                fetching
                    .iter()
                    .filter(|(h, _)| !opened.contains(*h))
                    .map(|(h, t)| (*h, t.clone()))
                    .collect()
            };
            for (hash, task) in wanted {
                opened.insert(hash);
                match peer.open_bi().await {
                    Ok(stream) => {
                        let _ = task
                            .events
                            .send(Event::Stream {
                                node,
                                connection,
                                stream,
                                hello: None,
                            })
                            .await;
                    }
                    Err(_) => return,
                }
            }
            tokio::select! {
                stream = peer.accept_bi() => {
                    let Some(mut stream) = stream else { return };
                    let service = self.clone();
                    tokio::spawn(async move {
                        let Some(hello) = read_hello(&mut stream).await else { return };
                        let Message::Hello { hash, .. } = hello else { return };
                        match service.task_for_serving(hash) {
                            Some(task) => {
                                let _ = task.events.send(Event::Stream { node, connection, stream, hello: Some(hello) }).await;
                            }
                            None => {
                                let mut frame = Vec::new();
                                Message::close("blob not held here").encode_into(&mut frame);
                                let _ = stream.send.write_all(&frame).await;
                                let _ = stream.send.finish();
                            }
                        }
                    });
                }
                changed = wanted_changed.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// The exchange task of a blob this node holds (started on demand to serve it).
    fn task_for_serving(&self, hash: Hash) -> Option<BlobTaskHandle> {
        if let Some(task) = self.tasks.lock().expect("tasks lock").get(&hash) {
            return Some(task.clone());
        }
        match self.store().ok()?.status(&hash).ok()? {
            BlobStatus::Absent => None,
            _ => self.start_task(hash, None, false, None).ok(),
        }
    }

    /// Starts fetching `hash` (into `dest` or the store); returns its progress. Resumes a partial blob.
    pub(crate) fn fetch(
        &self,
        hash: Hash,
        dest: Option<PathBuf>,
    ) -> Result<watch::Receiver<BlobProgress>> {
        self.fetch_with_hint(hash, dest, None)
    }

    /// [`BlobService::fetch`], taking every group that `hint` (an older version held here) has at the
    /// same place from it instead of from the network: a changed file moves only its changed groups.
    pub(crate) fn fetch_with_hint(
        &self,
        hash: Hash,
        dest: Option<PathBuf>,
        hint: Option<Hash>,
    ) -> Result<watch::Receiver<BlobProgress>> {
        let existing = match self.tasks.lock().expect("tasks lock").get_mut(&hash) {
            Some(task) => {
                task.wants = true;
                Some(task.clone())
            }
            None => None,
        };
        let task = match existing {
            Some(task) => task,
            None => self.start_task(hash, dest, true, hint)?,
        };
        let progress = task.progress.clone();
        let done = |p: &BlobProgress| p.complete || p.error.is_some();
        if !done(&progress.borrow()) {
            self.fetching
                .lock()
                .expect("fetching lock")
                .insert(hash, task);
            let fetching = self.fetching.clone();
            let mut watching = progress.clone();
            tokio::spawn(async move {
                let _ = watching.wait_for(done).await;
                fetching.lock().expect("fetching lock").remove(&hash);
            });
        }
        self.wanted.send_modify(|n| *n += 1);
        Ok(progress)
    }

    /// Tells the fetch of `hash` under way that a reader waits for bytes `start..end`, so their groups
    /// are asked for first (an empty range clears it). Nothing happens if no fetch is under way.
    pub(crate) async fn read_window(&self, hash: Hash, start: u64, end: u64) {
        let events = self
            .tasks
            .lock()
            .expect("tasks lock")
            .get(&hash)
            .map(|task| task.events.clone());
        if let Some(events) = events {
            let _ = events.send(Event::Window(start, end)).await;
        }
    }

    fn start_task(
        &self,
        hash: Hash,
        dest: Option<PathBuf>,
        wants: bool,
        hint: Option<Hash>,
    ) -> Result<BlobTaskHandle> {
        let store = self.store()?;
        // Bounded: a task that falls behind slows its peers' streams (QUIC flow control) instead of
        // buffering their data.
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (progress_tx, progress_rx) = watch::channel(BlobProgress::default());
        let config = SwarmConfig {
            seed: fastrand::u64(..),
            // Groups leave through QUIC's send buffer at once; a deeper hand-over queue keeps the
            // writers busy between the task's choices.
            upload_queue: 32,
            ..SwarmConfig::default()
        };
        let mut task = BlobTask {
            store: store.clone(),
            core: BlobSwarm::new(hash, config.clone()),
            partial: None,
            last_checkpoint: Instant::now(),
            reader: None,
            dest,
            hint,
            local_bytes: 0,
            banned: Default::default(),
            last_counts: HashMap::new(),
            peers: HashMap::new(),
            next_key: 1,
            events: events_tx.clone(),
            progress: progress_tx,
            started: Instant::now(),
            sent: 0,
            resumed: 0,
        };
        match store.status(&hash)? {
            BlobStatus::Complete { size } => {
                let layer = store.layer(&hash)?;
                task.core = BlobSwarm::with_layer(
                    hash,
                    layer,
                    Bitfield::full(size.div_ceil(GROUP_SIZE)),
                    config,
                );
                task.reader = Some(Arc::new(store.reader(&hash)?));
            }
            BlobStatus::Partial { .. } => {
                let layer = store.layer(&hash)?;
                task.open_partial(layer, config)?;
            }
            BlobStatus::Absent => {}
        }
        task.resumed = task.core.bytes_held();
        task.publish();
        let handle = BlobTaskHandle {
            events: events_tx,
            progress: progress_rx,
            wants,
        };
        self.tasks
            .lock()
            .expect("tasks lock")
            .insert(hash, handle.clone());
        let tasks = self.tasks.clone();
        tokio::spawn(async move {
            task.run(events_rx).await;
            tasks.lock().expect("tasks lock").remove(&hash);
        });
        Ok(handle)
    }
}

async fn read_hello(stream: &mut BiStream) -> Option<Message> {
    let mut decoder = FrameDecoder::default();
    let mut buf = [0u8; 256];
    let deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(deadline);
    loop {
        if let Ok(Some(message)) = decoder.next_message() {
            return matches!(message, Message::Hello { .. }).then_some(message);
        }
        // A hello is small: anything else first is not our protocol.
        if decoder.pending() > 256 {
            return None;
        }
        tokio::select! {
            n = stream.recv.read(&mut buf[..1]) => match n {
                Ok(Some(1)) => decoder.push(&buf[..1]),
                _ => return None,
            },
            _ = &mut deadline => return None,
        }
    }
}

struct PeerLink {
    node: NodeId,
    /// The connection the stream runs on (its QUIC stable id).
    connection: usize,
    frames: mpsc::UnboundedSender<Out>,
}

/// What a peer's writer sends next. Groups are read from the store only when their turn comes, so a
/// deep request queue costs a few bytes per group, not the group.
enum Out {
    Frame(Vec<u8>),
    Group(u64, Arc<BlobReader>),
}

struct BlobTask {
    store: Store,
    core: BlobSwarm,
    partial: Option<(PartialBlob, Bitfield)>,
    last_checkpoint: Instant,
    reader: Option<Arc<BlobReader>>,
    dest: Option<PathBuf>,
    /// An older version held here to take unchanged groups from.
    hint: Option<Hash>,
    /// Bytes taken from `hint`.
    local_bytes: u64,
    /// Peers banned from this blob for bad data or broken protocol (across reconnections).
    banned: std::collections::HashSet<NodeId>,
    /// Each peer's (received, sent) as last published, for the ledger when the core drops a peer.
    last_counts: HashMap<u64, (u64, u64)>,
    peers: HashMap<u64, PeerLink>,
    next_key: u64,
    events: mpsc::Sender<Event>,
    progress: watch::Sender<BlobProgress>,
    started: Instant,
    sent: u64,
    resumed: u64,
}

impl BlobTask {
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn open_partial(&mut self, layer: Layer, config: SwarmConfig) -> Result<()> {
        let hash = self.core.hash();
        let dest = self.dest.as_ref().map(|d| part_path(d));
        let (partial, have) = self.store.partial(&hash, &layer, dest.as_deref())?;
        self.core = BlobSwarm::with_layer(hash, layer, have.clone(), config);
        if self.core.is_complete() {
            self.finish_download(partial)?;
        } else {
            self.partial = Some((partial, have));
        }
        Ok(())
    }

    fn publish(&mut self) {
        let peers = self.core.peer_stats();
        self.last_counts = peers
            .iter()
            .map(|p| (p.peer, (p.received, p.sent)))
            .collect();
        self.progress.send_replace(BlobProgress {
            size: self.core.size(),
            held: self.core.bytes_held(),
            peers: peers.len(),
            sent: self.sent,
            received: self.core.bytes_received(),
            resumed: self.resumed,
            local: self.local_bytes,
            complete: self.core.is_complete(),
            error: None,
        });
    }

    fn fail(&self, error: String) {
        self.progress.send_modify(|p| p.error = Some(error));
    }

    async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A blob held whole that no peer is exchanging has nothing to time: its task sleeps
            // until a peer comes (a node seeding 10,000 files must not wake 100,000 times a second).
            let ticking = !self.peers.is_empty() || !self.core.is_complete();
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else { break };
                    self.on_event(event);
                    // Take whatever else is queued before acting, so actions are batched.
                    while let Ok(event) = events.try_recv() {
                        self.on_event(event);
                    }
                }
                _ = tick.tick(), if ticking => {
                    let now = self.now();
                    self.core.tick(now);
                }
            }
            if let Err(e) = self.drain() {
                tracing::warn!(blob = %self.core.hash().short(), "{e:#}");
                self.fail(format!("{e:#}"));
                break;
            }
            self.publish();
        }
        let keys: Vec<u64> = self.peers.keys().copied().collect();
        for key in keys {
            self.settle(key);
        }
    }

    fn on_event(&mut self, event: Event) {
        let now = self.now();
        match event {
            Event::Stream {
                node,
                connection,
                stream,
                hello,
            } => {
                if self.banned.contains(&node) {
                    return;
                }
                let existing = self
                    .peers
                    .iter()
                    .find(|(_, p)| p.node == node)
                    .map(|(&k, p)| (k, p.connection));
                match existing {
                    // One stream per peer and blob: the other side opened one too.
                    Some((_, on)) if on == connection => return,
                    // A newer connection (the peer restarted, or reconnected): the old stream
                    // is dead even if its connection has not timed out yet.
                    Some((old, _)) => {
                        self.settle(old);
                        self.peers.remove(&old);
                        self.core.remove_peer(old);
                    }
                    None => {}
                }
                let key = self.next_key;
                self.next_key += 1;
                let (tx, rx) = mpsc::unbounded_channel();
                self.peers.insert(
                    key,
                    PeerLink {
                        node,
                        connection,
                        frames: tx,
                    },
                );
                spawn_peer_io(key, stream, rx, self.events.clone());
                // Credit from earlier sessions: what it gave us beyond what we gave it, never negative.
                let credit = match self.store.ledger(node.as_bytes()) {
                    Ok((received, sent)) => received.saturating_sub(sent),
                    Err(_) => 0,
                };
                self.core.add_peer_with_history(key, now, credit);
                if let Some(hello) = hello {
                    self.core.on_message(key, hello, now);
                }
            }
            Event::Frame(key, message) => self.core.on_message(key, message, now),
            Event::Sent(key) => self.core.on_sent(key),
            Event::Closed(key) => {
                self.settle(key);
                self.peers.remove(&key);
                self.core.remove_peer(key);
            }
            Event::Window(start, end) => self.core.set_reader_window(start, end),
        }
    }

    fn drain(&mut self) -> Result<()> {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Send(key, message) => self.send(key, &message),
                Action::Serve(key, group) => {
                    let Some(reader) = self.reader_for_serving() else {
                        self.send(
                            key,
                            &Message::Reject {
                                start: group,
                                count: 1,
                            },
                        );
                        continue;
                    };
                    self.sent += pairs_blobs::layer::group_len(reader.size(), group) as u64;
                    if let Some(link) = self.peers.get(&key) {
                        let _ = link.frames.send(Out::Group(group, reader));
                    }
                }
                Action::Write(group, bytes) => {
                    let (partial, have) = self
                        .partial
                        .as_mut()
                        .context("data before a partial blob")?;
                    partial.write_group(group, &bytes)?;
                    have.set(group);
                    if self.last_checkpoint.elapsed() > Duration::from_secs(1) {
                        partial.checkpoint(have)?;
                        self.last_checkpoint = Instant::now();
                    }
                }
                Action::LayerReady(layer) => {
                    let hash = self.core.hash();
                    let dest = self.dest.as_ref().map(|d| part_path(d));
                    let (partial, mut have) = self.store.partial(&hash, &layer, dest.as_deref())?;
                    if let Some(hint) = self.hint.take() {
                        let local = self.copy_from_hint(hint, &layer, &partial, &mut have);
                        self.local_bytes = local.len() as u64 * GROUP_SIZE;
                        self.partial = Some((partial, have));
                        self.core.add_local_groups(&local);
                    } else {
                        self.partial = Some((partial, have));
                    }
                }
                Action::Complete => {
                    if let Some((partial, have)) = self.partial.take() {
                        partial.checkpoint(&have)?;
                        self.finish_download(partial)?;
                    }
                }
                Action::Drop { peer, reason, ban } => {
                    self.settled_by_core(peer);
                    if let Some(link) = self.peers.remove(&peer) {
                        tracing::info!(peer = %link.node.short(), blob = %self.core.hash().short(), ban, "dropped: {reason}");
                        if ban {
                            self.banned.insert(link.node);
                        }
                        let _ = link
                            .frames
                            .send(Out::Frame(Message::close(reason).to_frame()));
                    }
                }
            }
        }
        Ok(())
    }

    /// Copies into `partial` every group of `hint` that is the same as the new blob's at the same
    /// place (same chaining value, then checked against the new layer); returns those groups.
    fn copy_from_hint(
        &self,
        hint: Hash,
        layer: &Layer,
        partial: &PartialBlob,
        have: &mut Bitfield,
    ) -> Vec<u64> {
        let (old, reader) = match (self.store.layer(&hint), self.store.reader(&hint)) {
            (Ok(old), Ok(reader)) => (old, reader),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(from = %hint.short(), "no older version to take groups from: {e}");
                return Vec::new();
            }
        };
        let hash = self.core.hash();
        let mut copied = Vec::new();
        let mut buf = vec![0u8; GROUP_SIZE as usize];
        for (group, (new_cv, old_cv)) in (0u64..).zip(layer.cvs().iter().zip(old.cvs())) {
            if new_cv != old_cv || have.get(group) {
                continue;
            }
            let len = pairs_blobs::layer::group_len(layer.size(), group);
            // The old file may have changed on disk since: only checked bytes are taken.
            let Ok(read) = reader.read_group_into(group, &mut buf) else {
                break;
            };
            if read != len || !layer.check_group(&hash, group, &buf[..len]) {
                continue;
            }
            if partial.write_group(group, &buf[..len]).is_err() {
                break;
            }
            have.set(group);
            copied.push(group);
        }
        tracing::debug!(
            blob = %hash.short(),
            from = %hint.short(),
            groups = copied.len(),
            "took unchanged groups from the older version"
        );
        copied
    }

    /// Adds what was exchanged with a peer whose session ends to the ledger.
    fn settle(&mut self, key: u64) {
        if let (Some(link), Some(stats)) = (
            self.peers.get(&key),
            self.core.peer_stats().into_iter().find(|p| p.peer == key),
        ) && let Err(e) =
            self.store
                .add_to_ledger(link.node.as_bytes(), stats.received, stats.sent)
        {
            tracing::warn!("cannot record the exchange with {}: {e}", link.node.short());
        }
    }

    /// The core dropped a peer (and forgot its counts): record what the last progress saw.
    fn settled_by_core(&mut self, key: u64) {
        if let (Some(link), Some(&(received, sent))) =
            (self.peers.get(&key), self.last_counts.get(&key))
        {
            let _ = self
                .store
                .add_to_ledger(link.node.as_bytes(), received, sent);
        }
        self.last_counts.remove(&key);
    }

    fn reader_for_serving(&mut self) -> Option<Arc<BlobReader>> {
        if self.reader.is_none() {
            match self.store.reader(&self.core.hash()) {
                Ok(reader) => self.reader = Some(Arc::new(reader)),
                Err(e) => {
                    tracing::warn!("cannot serve {}: {e}", self.core.hash().short());
                    return None;
                }
            }
        }
        self.reader.clone()
    }

    fn finish_download(&mut self, partial: PartialBlob) -> Result<()> {
        let hash = self.core.hash();
        if let Some(dest) = &self.dest {
            std::fs::rename(partial.path(), dest)
                .with_context(|| format!("moving the download into {}", dest.display()))?;
            self.store.relocate(&hash, dest)?;
        }
        self.reader = None;
        Ok(())
    }

    fn send(&self, key: u64, message: &Message) {
        if let Some(link) = self.peers.get(&key) {
            let _ = link.frames.send(Out::Frame(message.to_frame()));
        }
    }
}

/// Where a download to `dest` writes until it is complete.
pub(crate) fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".pairs-part");
    dest.with_file_name(name)
}

fn spawn_peer_io(
    key: u64,
    stream: BiStream,
    mut frames: mpsc::UnboundedReceiver<Out>,
    events: mpsc::Sender<Event>,
) {
    let BiStream { mut send, mut recv } = stream;
    let sent_events = events.clone();
    tokio::spawn(async move {
        let mut buf = Vec::with_capacity(GROUP_SIZE as usize + 64);
        while let Some(out) = frames.recv().await {
            let was_group = matches!(out, Out::Group(..));
            let frame = match out {
                Out::Frame(frame) => frame,
                Out::Group(group, reader) => {
                    // A 16 KiB read from the page cache: too short to be worth a blocking-pool hop.
                    let message = match reader.read_group(group) {
                        Ok(bytes) => Message::Data { group, bytes },
                        Err(e) => {
                            tracing::warn!("cannot serve group {group}: {e}");
                            Message::Reject {
                                start: group,
                                count: 1,
                            }
                        }
                    };
                    buf.clear();
                    message.encode_into(&mut buf);
                    std::mem::take(&mut buf)
                }
            };
            let closing = frame.len() > 4 && frame[4] == close_tag();
            if send.write_all(&frame).await.is_err() {
                break;
            }
            if was_group && sent_events.send(Event::Sent(key)).await.is_err() {
                break;
            }
            if closing {
                let _ = send.finish();
                break;
            }
        }
    });
    tokio::spawn(async move {
        let mut decoder = FrameDecoder::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match recv.read(&mut buf).await {
                Ok(Some(0)) | Ok(None) | Err(_) => break,
                Ok(Some(n)) => decoder.push(&buf[..n]),
            }
            loop {
                match decoder.next_message() {
                    Ok(Some(message)) => {
                        if events.send(Event::Frame(key, message)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!("blob stream broke the protocol: {e}");
                        let _ = events.send(Event::Closed(key)).await;
                        return;
                    }
                }
            }
        }
        let _ = events.send(Event::Closed(key)).await;
    });
}

/// The postcard tag of [`Message::Close`] (its variant index).
fn close_tag() -> u8 {
    Message::close("").to_frame()[4]
}

/// Waits until a fetch completes or fails.
pub(crate) async fn wait_complete(
    mut progress: watch::Receiver<BlobProgress>,
) -> Result<BlobProgress> {
    loop {
        {
            let p = progress.borrow_and_update();
            if p.complete {
                return Ok(p.clone());
            }
            if let Some(e) = &p.error {
                bail!("{e}");
            }
        }
        progress
            .changed()
            .await
            .map_err(|_| anyhow!("the download stopped"))?;
    }
}

/// What [`Blobs::add`] added.
#[derive(Debug, Clone)]
pub struct Added {
    /// The blob's hash (the collection's, for a directory).
    pub hash: Hash,
    /// A file or a directory.
    pub format: BlobFormat,
    /// Bytes of content.
    pub size: u64,
    /// Files.
    pub files: usize,
}

/// Totals of a [`Blobs::get`] under way.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct GetProgress {
    /// Bytes received from peers in this run (verified; a resumed fetch does not receive again
    /// what it already held).
    pub received: u64,
    /// Bytes already held when this run started (an interrupted fetch resumed).
    pub resumed: u64,
    /// Bytes to fetch in all (known once the collection, or the blob's size, is).
    pub total: Option<u64>,
    /// Bytes held.
    pub held: u64,
    /// Peers exchanging with us.
    pub peers: usize,
    /// Files complete, of `files`.
    pub files_done: usize,
    /// Files in all.
    pub files: usize,
}

/// The node's blobs; see [`crate::Node::blobs`].
#[derive(Clone)]
pub struct Blobs {
    pub(crate) node: crate::Node,
    pub(crate) service: BlobService,
}

/// Downloads of a collection's members at once.
const PARALLEL_FILES: usize = 16;

impl Blobs {
    /// The blob store (opened on first use).
    pub fn store(&self) -> Result<Store> {
        self.service.store()
    }

    /// Adds a file, or a directory as a collection of its files. Files are served where they are
    /// ([`ImportMode::Reference`]) or copied into the store.
    pub async fn add(&self, path: &Path, mode: ImportMode) -> Result<Added> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_file() {
            let (hash, size) = self.service.add_file(path.to_path_buf(), mode).await?;
            return Ok(Added {
                hash,
                format: BlobFormat::Raw,
                size,
                files: 1,
            });
        }
        let mut entries = Vec::new();
        let root = path.to_path_buf();
        let files = tokio::task::spawn_blocking(move || list_files(&root)).await??;
        for (relative, executable, (hash, size)) in self.add_listed(files, mode).await? {
            entries.push(CollectionEntry {
                path: relative,
                hash,
                size,
                executable,
            });
        }
        let collection = Collection { entries };
        let size = collection.total_size();
        let files = collection.entries.len();
        let store = self.store()?;
        let hash =
            tokio::task::spawn_blocking(move || store.import_bytes(&collection.encode())).await??;
        Ok(Added {
            hash,
            format: BlobFormat::Collection,
            size,
            files,
        })
    }

    /// Adds listed files (name, path, executable bit); each name comes back with its bit and what
    /// adding it gave (hash, size).
    async fn add_listed(
        &self,
        files: Vec<(String, PathBuf, bool)>,
        mode: ImportMode,
    ) -> Result<Vec<(String, bool, (Hash, u64))>> {
        let paths = files.iter().map(|(_, path, _)| path.clone()).collect();
        let added = self.service.add_files(paths, mode).await?;
        Ok(files
            .into_iter()
            .zip(added)
            .map(|((name, _, executable), added)| (name, executable, added))
            .collect())
    }

    /// Adds several files and directories as one collection (a file by its name, a directory's files
    /// under the directory's name); a single path is added as [`Blobs::add`] does.
    pub async fn add_paths(&self, paths: &[PathBuf], mode: ImportMode) -> Result<Added> {
        match paths {
            [] => bail!("nothing to add: name at least one file or directory"),
            [one] => self.add(one, mode).await,
            _ => self.add_named(paths, mode).await,
        }
    }

    /// Adds files and directories as one collection that keeps their names (a file by its name, a
    /// directory's files under the directory's name): what `pairs send` sends.
    pub async fn add_named(&self, paths: &[PathBuf], mode: ImportMode) -> Result<Added> {
        if paths.is_empty() {
            bail!("nothing to add: name at least one file or directory");
        }
        let mut entries = Vec::new();
        for path in paths {
            let name = path
                .canonicalize()
                .with_context(|| format!("cannot read {}", path.display()))?
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
                .with_context(|| format!("{} has no usable file name", path.display()))?;
            let meta = std::fs::metadata(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let files = if meta.is_dir() {
                let root = path.clone();
                tokio::task::spawn_blocking(move || list_files(&root)).await??
            } else {
                use std::os::unix::fs::PermissionsExt as _;
                vec![(
                    String::new(),
                    path.clone(),
                    meta.permissions().mode() & 0o111 != 0,
                )]
            };
            for (relative, executable, (hash, size)) in self.add_listed(files, mode).await? {
                let path = if relative.is_empty() {
                    name.clone()
                } else {
                    format!("{name}/{relative}")
                };
                entries.push(CollectionEntry {
                    path,
                    hash,
                    size,
                    executable,
                });
            }
        }
        let collection = Collection { entries };
        let encoded = collection.encode();
        Collection::decode(&encoded).context("these paths cannot be sent together")?;
        let (size, files) = (collection.total_size(), collection.entries.len());
        let store = self.store()?;
        let hash = tokio::task::spawn_blocking(move || store.import_bytes(&encoded)).await??;
        Ok(Added {
            hash,
            format: BlobFormat::Collection,
            size,
            files,
        })
    }

    /// Serves `hash` (and, for a collection, its members) to every peer found under its topic;
    /// remembered across restarts of a node with a data directory.
    pub async fn share(&self, hash: Hash) -> Result<()> {
        self.service.share(self.node.swarm()?, hash).await?;
        self.service.mark_shared(&hash, true);
        Ok(())
    }

    /// Peers exchanging blobs with this node now (the most on any one blob), and bytes sent in all.
    pub fn upload_totals(&self) -> (usize, u64) {
        let tasks = self.service.tasks.lock().expect("tasks lock");
        let peers = tasks
            .values()
            .map(|t| t.progress.borrow().peers)
            .max()
            .unwrap_or(0);
        let sent = tasks.values().map(|t| t.progress.borrow().sent).sum();
        (peers, sent)
    }

    /// Blobs shared on the swarm now.
    pub fn shared(&self) -> Vec<Hash> {
        self.service
            .topics
            .lock()
            .expect("topics lock")
            .keys()
            .copied()
            .collect()
    }

    /// Shares again what was shared when the node last ran.
    pub async fn reshare(&self) -> Result<usize> {
        let hashes = self.service.marked_shared();
        for hash in &hashes {
            self.service.share(self.node.swarm()?, *hash).await?;
        }
        Ok(hashes.len())
    }

    /// Stops sharing a blob and forgets it (a file it was served from is left alone).
    pub fn remove(&self, hash: &Hash) -> Result<bool> {
        self.unshare(hash);
        Ok(self.store()?.remove(hash)?)
    }

    /// Fetches a blob known only by its hash (from the peers found under its topic): a file is
    /// written to `out`, a collection under it.
    pub async fn get_hash(
        &self,
        hash: Hash,
        out: &Path,
        progress: impl Fn(&GetProgress),
    ) -> Result<GetProgress> {
        self.share(hash).await?;
        let rx = self.service.fetch(hash, None)?;
        let fetched = self.follow(vec![rx], 1, &progress).await?;
        let reader = self.store()?.reader(&hash)?;
        let mut head = vec![0u8; reader.size().min(64) as usize];
        reader.read_at(&mut head, 0)?;
        if head.starts_with(b"pairs-collection/") {
            let ticket = BlobTicket {
                hash,
                format: BlobFormat::Collection,
                providers: Vec::new(),
            };
            return self.get(&ticket, out, progress).await;
        }
        let store = self.store()?;
        let out_file = out.to_path_buf();
        tokio::task::spawn_blocking(move || store.export(&hash, &out_file)).await??;
        Ok(fetched)
    }

    /// Stops serving `hash` to the swarm (it stays in the store).
    pub fn unshare(&self, hash: &Hash) {
        self.service.unshare(hash);
    }

    /// A ticket for `hash` naming this node as provider.
    pub fn ticket(&self, hash: Hash, format: BlobFormat) -> BlobTicket {
        BlobTicket {
            hash,
            format,
            providers: self.node.node_addr().into_iter().collect(),
        }
    }

    /// Fetches what a ticket names into `out` (a file, or a directory for a collection) from the
    /// ticket's providers and every other peer found under its topic; resumes an interrupted fetch.
    /// `progress` is called as bytes arrive.
    pub async fn get(
        &self,
        ticket: &BlobTicket,
        out: &Path,
        progress: impl Fn(&GetProgress),
    ) -> Result<GetProgress> {
        let swarm = self.node.swarm()?;
        for provider in &ticket.providers {
            if provider.node_id != self.node.id() {
                swarm.add_peer(provider.clone())?;
            }
        }
        self.share(ticket.hash).await?;
        match ticket.format {
            BlobFormat::Raw => {
                if out.is_dir() {
                    bail!(
                        "{} is a directory: name the file to write, e.g. {}/FILE",
                        out.display(),
                        out.display()
                    );
                }
                let rx = self.service.fetch(ticket.hash, Some(out.to_path_buf()))?;
                let done = self.follow(vec![rx], 1, &progress).await?;
                Ok(done)
            }
            BlobFormat::Collection => {
                let rx = self.service.fetch(ticket.hash, None)?;
                wait_complete(rx)
                    .await
                    .context("fetching the collection's list of files")?;
                let bytes = self.store()?.reader(&ticket.hash)?;
                let mut encoded = vec![0u8; bytes.size() as usize];
                if bytes.size() > pairs_blobs::collection::MAX_ENCODED {
                    bail!("the collection's list of files is over the size limit");
                }
                bytes.read_at(&mut encoded, 0)?;
                let collection = Collection::decode(&encoded)?;
                self.fetch_entries(collection.entries, out, progress).await
            }
        }
    }

    /// Fetches files named by hash into `out` under their paths (checked: never outside `out`),
    /// several at once, each to a `.pairs-part` file renamed into place. A file already here with
    /// its blob complete in the store is skipped.
    pub(crate) async fn fetch_entries(
        &self,
        entries: Vec<CollectionEntry>,
        out: &Path,
        progress: impl Fn(&GetProgress),
    ) -> Result<GetProgress> {
        {
            {
                std::fs::create_dir_all(out)
                    .with_context(|| format!("creating {}", out.display()))?;
                let mut receivers = Vec::new();
                let files = entries.len();
                // Sizes come from the collection's author: add them without overflow.
                let total = entries
                    .iter()
                    .fold(0u64, |total, e| total.saturating_add(e.size));
                let mut pending = entries.into_iter();
                let mut done = GetProgress {
                    total: Some(total),
                    files,
                    ..GetProgress::default()
                };
                let mut finished_bytes = 0;
                let (mut received_done, mut resumed_done) = (0, 0);
                loop {
                    while receivers.len() < PARALLEL_FILES {
                        let Some(entry) = pending.next() else { break };
                        let dest = prepare_dest(out, &entry.path)?;
                        if matches!(
                            self.store()?.status(&entry.hash)?,
                            BlobStatus::Complete { .. }
                        ) && dest.exists()
                        {
                            finished_bytes += entry.size;
                            done.files_done += 1;
                            continue;
                        }
                        if entry.size == 0 {
                            std::fs::write(&dest, b"")
                                .with_context(|| format!("writing {}", dest.display()))?;
                            done.files_done += 1;
                            continue;
                        }
                        let rx = self.service.fetch(entry.hash, Some(dest.clone()))?;
                        receivers.push((entry, dest, rx));
                    }
                    if receivers.is_empty() {
                        break;
                    }
                    // Report and wait for any change.
                    let held: u64 = receivers.iter().map(|(_, _, rx)| rx.borrow().held).sum();
                    done.held = finished_bytes + held;
                    done.received = received_done
                        + receivers
                            .iter()
                            .map(|(_, _, rx)| rx.borrow().received)
                            .sum::<u64>();
                    done.resumed = resumed_done
                        + receivers
                            .iter()
                            .map(|(_, _, rx)| rx.borrow().resumed)
                            .sum::<u64>();
                    done.peers = receivers
                        .iter()
                        .map(|(_, _, rx)| rx.borrow().peers)
                        .max()
                        .unwrap_or(0);
                    progress(&done);
                    let mut finished = None;
                    for (i, (_, _, rx)) in receivers.iter().enumerate() {
                        let p = rx.borrow();
                        if let Some(e) = &p.error {
                            bail!("{e}");
                        }
                        if p.complete {
                            finished = Some(i);
                            break;
                        }
                    }
                    if let Some(i) = finished {
                        let (entry, dest, rx) = receivers.swap_remove(i);
                        received_done += rx.borrow().received;
                        resumed_done += rx.borrow().resumed;
                        set_executable(&dest, entry.executable)?;
                        finished_bytes += entry.size;
                        done.files_done += 1;
                        continue;
                    }
                    let changes = receivers
                        .iter_mut()
                        .map(|(_, _, rx)| Box::pin(rx.changed()));
                    let _ = futures_lite::future::or(
                        async {
                            let _ = futures_select_all(changes).await;
                        },
                        async {
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        },
                    )
                    .await;
                }
                done.held = finished_bytes;
                done.received = received_done;
                done.resumed = resumed_done;
                progress(&done);
                Ok(done)
            }
        }
    }

    async fn follow(
        &self,
        mut receivers: Vec<watch::Receiver<BlobProgress>>,
        files: usize,
        progress: &impl Fn(&GetProgress),
    ) -> Result<GetProgress> {
        let rx = &mut receivers[0];
        loop {
            let p = rx.borrow_and_update().clone();
            let report = GetProgress {
                received: p.received,
                resumed: p.resumed,
                total: p.size,
                held: p.held,
                peers: p.peers,
                files_done: usize::from(p.complete),
                files,
            };
            progress(&report);
            if let Some(e) = p.error {
                bail!("{e}");
            }
            if p.complete {
                return Ok(report);
            }
            let _ = tokio::time::timeout(Duration::from_millis(250), rx.changed()).await;
        }
    }
}

async fn futures_select_all<F: std::future::Future + Unpin>(futures: impl Iterator<Item = F>) {
    let mut futures: Vec<F> = futures.collect();
    std::future::poll_fn(|cx| {
        for f in futures.iter_mut() {
            if std::pin::Pin::new(f).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Files under `root`, with their `/`-separated relative paths and executable bits. Symlinks are not
/// followed (a shared folder never leaks what lies outside it).
fn list_files(root: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let relative = path.strip_prefix(root).expect("under root");
                let relative = relative
                    .to_str()
                    .with_context(|| {
                        format!(
                            "{} is not valid UTF-8: rename it to share it",
                            path.display()
                        )
                    })?
                    .to_string();
                let executable = entry.metadata()?.permissions().mode() & 0o111 != 0;
                out.push((relative, path, executable));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The file a collection member is written to: inside `out`, with its directories created and none of
/// them a symlink (which could lead outside).
fn prepare_dest(out: &Path, relative: &str) -> Result<PathBuf> {
    let dest = pairs_blobs::collection::safe_join(out, relative)?;
    let mut dir = out.to_path_buf();
    let parts: Vec<&str> = relative.split('/').collect();
    for part in &parts[..parts.len() - 1] {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_symlink() => {
                bail!(
                    "{} is a symlink: refusing to write {relative} through it",
                    dir.display()
                )
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => bail!("{} exists and is not a directory", dir.display()),
            Err(_) => {
                std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?
            }
        }
    }
    if std::fs::symlink_metadata(&dest).is_ok_and(|m| m.file_type().is_symlink()) {
        bail!(
            "{} is a symlink: refusing to write through it",
            dest.display()
        );
    }
    Ok(dest)
}

fn set_executable(path: &Path, executable: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if executable {
        let mut perms = std::fs::metadata(path)?.permissions();
        perms.set_mode(perms.mode() | 0o111);
        std::fs::set_permissions(path, perms)?;
    }
    Ok(())
}
