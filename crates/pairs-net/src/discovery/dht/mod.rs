//! Internet discovery on the BitTorrent Mainline DHT (BEP 5 and BEP 44), through `mainline`.
//!
//! - **Topics**: a topic is announced with `announce_peer` under the first 20 bytes of its
//!   [`DiscoveryKey`] (never the topic) and looked up with `get_peers`; every address found is
//!   reported as [`Discovered::Address`], and the handshake tells whose it is.
//! - **Dial by id**: the node's addresses are published as a BEP 44 mutable item signed by the node
//!   key (see [`record`]), so [`DhtDiscovery::resolve`] turns a bare [`NodeId`] into a [`NodeAddr`].
//! - **When**: the sans-IO [`schedule`] decides; this driver only runs what it says.
//!
//! The DHT speaks IPv4 on a UDP socket of its own (`mainline` owns its socket); the addresses it
//! announces and publishes are those of the node's QUIC socket.

pub mod record;
pub mod schedule;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::StreamExt;
use mainline::async_dht::AsyncDht;
use mainline::{Dht, Id, MutableItem};
use pairs_base::{DiscoveryKey, NodeAddr, NodeId, SecretKey};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::debug;

use self::record::{AddressRecord, SignedItem};
use self::schedule::{InfoHash, Schedule, ScheduleConfig, Task};
use super::Discovered;
use crate::endpoint::Endpoint;

/// How often our own addresses are compared with the published record, and a failed bootstrap is
/// tried again.
const ADDRS_CHECK: Duration = Duration::from_secs(30);
/// Distinct addresses remembered per topic (to tell new ones from known ones).
const MAX_SEEN_PER_TOPIC: usize = 1024;
/// Resolved records kept (the newest per node, so a replayed older one never wins).
const MAX_CACHED_RECORDS: usize = 1024;

/// Settings for [`DhtDiscovery::start`].
#[derive(Debug, Clone)]
pub struct DhtConfig {
    /// Bootstrap nodes (`host:port`). `None`: the public Mainline bootstrap nodes.
    pub bootstrap: Option<Vec<String>>,
    /// UDP port of the DHT socket; 0 lets the system pick.
    pub port: u16,
    /// Address the DHT socket binds; `None`: every IPv4 interface.
    pub bind: Option<Ipv4Addr>,
    /// Answer other nodes' queries from the start, rather than once found publicly reachable.
    pub server_mode: bool,
    /// Announce, lookup and publish timing.
    pub schedule: ScheduleConfig,
    /// How long one lookup or resolve may run.
    pub query_timeout: Duration,
}

impl Default for DhtConfig {
    fn default() -> Self {
        Self {
            bootstrap: None,
            port: 0,
            bind: None,
            server_mode: false,
            schedule: ScheduleConfig::default(),
            query_timeout: Duration::from_secs(20),
        }
    }
}

impl DhtConfig {
    /// A private network reached through `bootstrap` only (tests, labs, self-hosted DHTs).
    pub fn with_bootstrap(bootstrap: impl IntoIterator<Item = String>) -> Self {
        Self {
            bootstrap: Some(bootstrap.into_iter().collect()),
            ..Self::default()
        }
    }
}

/// Why resolving a node id failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No valid record was found.
    #[error(
        "no address record for node {} on the DHT{}",
        .node.short(),
        if *.refused > 0 { format!(" ({} forged or stale records ignored)", .refused) } else { String::new() }
    )]
    NotFound {
        /// The node asked for.
        node: NodeId,
        /// Records received and refused.
        refused: usize,
    },
    /// The DHT has no routing table yet: bootstrap nodes unreachable.
    #[error("the DHT is not bootstrapped: no bootstrap node answered")]
    NotBootstrapped,
}

/// What the DHT has done and found, for `pairs status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DhtStatus {
    /// Whether the last bootstrap filled the routing table.
    pub bootstrapped: bool,
    /// The first bootstrap is still running (`bootstrapped` is then false).
    pub bootstrapping: bool,
    /// The DHT socket.
    pub local_addr: Option<SocketAddr>,
    /// Our address as other DHT nodes see it, once they agree.
    pub public_addr: Option<SocketAddr>,
    /// Whether we answer other nodes' queries.
    pub server_mode: bool,
    /// Estimated number of DHT nodes.
    pub size_estimate: usize,
    /// Our last published address record: its addresses, and the outcome.
    pub record: Option<RecordStatus>,
    /// Per joined topic.
    pub topics: Vec<TopicStatus>,
}

/// The outcome of publishing our address record.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecordStatus {
    /// Addresses in the record.
    pub addrs: Vec<SocketAddr>,
    /// `None` while the first put runs; then the outcome of the last one.
    pub result: Option<Result<(), String>>,
}

/// Announce and lookup results of one topic.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TopicStatus {
    /// First bytes of the announced key, in hex (the key, not the topic).
    pub key: String,
    /// `None` before the first announce ends; then its outcome.
    pub announced: Option<Result<(), String>>,
    /// Lookups done.
    pub lookups: u32,
    /// Distinct addresses found.
    pub found: usize,
}

/// The DHT discovery source. Dropping it stops announcing and leaves the DHT.
#[derive(Debug)]
pub struct DhtDiscovery {
    dht: AsyncDht,
    commands: mpsc::UnboundedSender<Command>,
    status: Arc<Mutex<Shared>>,
    /// `None` while bootstrapping; then whether the routing table was filled.
    bootstrap: watch::Receiver<Option<bool>>,
    query_timeout: Duration,
}

#[derive(Debug)]
enum Command {
    Join(DiscoveryKey),
    Leave(InfoHash),
}

#[derive(Debug, Default)]
struct Shared {
    record: Option<RecordStatus>,
    topics: HashMap<InfoHash, TopicStatus>,
    records: HashMap<NodeId, AddressRecord>,
}

/// The 20 bytes a topic is announced under.
pub fn info_hash(key: &DiscoveryKey) -> InfoHash {
    let mut hash = [0u8; 20];
    hash.copy_from_slice(&key.as_bytes()[..20]);
    hash
}

impl DhtDiscovery {
    /// Joins the DHT and starts publishing `endpoint`'s addresses under its key; addresses found for
    /// joined topics go to `found`.
    pub fn start(
        config: DhtConfig,
        endpoint: &Endpoint,
        secret: &SecretKey,
        found: mpsc::UnboundedSender<Discovered>,
    ) -> io::Result<Self> {
        let mut builder = Dht::builder();
        builder.port(config.port);
        if let Some(bootstrap) = &config.bootstrap {
            builder.bootstrap(bootstrap);
        }
        if let Some(bind) = config.bind {
            builder.bind_address(bind);
        }
        if config.server_mode {
            builder.server_mode();
        }
        let dht = builder.build()?.as_async();
        let status = Arc::new(Mutex::new(Shared::default()));
        let (commands, rx) = mpsc::unbounded_channel();
        let (bootstrap_tx, bootstrap) = watch::channel(None);
        let driver = Driver {
            bootstrap: bootstrap_tx,
            bootstrapping: false,
            dht: dht.clone(),
            endpoint: endpoint.clone(),
            signer: mainline::SigningKey::from_bytes(&secret.to_bytes()),
            found,
            status: status.clone(),
            schedule: Schedule::new(config.schedule.clone()),
            seen: HashMap::new(),
            record_addrs: Vec::new(),
            last_seq: 0,
            query_timeout: config.query_timeout,
        };
        tokio::spawn(driver.run(rx));
        Ok(Self {
            dht,
            commands,
            status,
            bootstrap,
            query_timeout: config.query_timeout,
        })
    }

    /// Starts announcing and looking up a topic.
    pub fn join(&self, key: &DiscoveryKey) {
        let _ = self.commands.send(Command::Join(*key));
    }

    /// Stops announcing and looking up a topic (announcements expire on their own).
    pub fn leave(&self, key: &DiscoveryKey) {
        let _ = self.commands.send(Command::Leave(info_hash(key)));
    }

    /// Finds `node`'s current addresses from its signed record.
    pub async fn resolve(&self, node: NodeId) -> Result<NodeAddr, ResolveError> {
        let mut items = self
            .dht
            .get_mutable(node.as_bytes(), Some(record::SALT), None);
        let mut best = self.cached(&node);
        let mut refused = 0;
        let _ = tokio::time::timeout(self.query_timeout, async {
            while let Some(item) = items.next().await {
                match check(&node, &item) {
                    Ok(record) => best = Some(record::newest(best.take(), record)),
                    Err(err) => {
                        debug!(peer = %node.short(), %err, "address record refused");
                        refused += 1;
                    }
                }
            }
        })
        .await;
        match best {
            Some(record) => {
                self.remember(node, &record);
                Ok(record.node_addr(node))
            }
            None if !self.bootstrapped().await => Err(ResolveError::NotBootstrapped),
            None => Err(ResolveError::NotFound { node, refused }),
        }
    }

    /// Waits for the first bootstrap to end; returns whether it filled the routing table (a failed
    /// bootstrap is tried again in the background, and this then reports the latest outcome).
    pub async fn bootstrapped(&self) -> bool {
        let mut bootstrap = self.bootstrap.clone();
        match bootstrap.wait_for(Option::is_some).await {
            Ok(done) => done.unwrap_or(false),
            Err(_) => false, // the driver stopped
        }
    }

    /// What the DHT has done and found so far (at once: bootstrapping may still be running).
    pub async fn status(&self) -> DhtStatus {
        let bootstrap = *self.bootstrap.borrow();
        let info = self.dht.info().await;
        let shared = self.status.lock().expect("status lock");
        let mut topics: Vec<_> = shared.topics.values().cloned().collect();
        topics.sort_by(|a, b| a.key.cmp(&b.key));
        DhtStatus {
            bootstrapped: bootstrap == Some(true),
            bootstrapping: bootstrap.is_none(),
            local_addr: Some(info.local_addr().into()),
            public_addr: info.public_address().map(Into::into),
            server_mode: info.server_mode(),
            size_estimate: info.dht_size_estimate().0,
            record: shared.record.clone(),
            topics,
        }
    }

    fn cached(&self, node: &NodeId) -> Option<AddressRecord> {
        let shared = self.status.lock().expect("status lock");
        let record = shared.records.get(node)?;
        // A cached record expires like any other.
        let still_fresh = record.issued_ms + record::RECORD_TTL.as_millis() as u64 >= now_ms();
        still_fresh.then(|| record.clone())
    }

    fn remember(&self, node: NodeId, record: &AddressRecord) {
        let mut shared = self.status.lock().expect("status lock");
        if shared.records.len() >= MAX_CACHED_RECORDS && !shared.records.contains_key(&node) {
            shared.records.clear();
        }
        shared.records.insert(node, record.clone());
    }
}

fn check(node: &NodeId, item: &MutableItem) -> Result<AddressRecord, record::RecordError> {
    record::verify(
        node,
        SignedItem {
            key: item.key(),
            salt: item.salt().unwrap_or_default(),
            seq: item.seq(),
            value: item.value(),
            signature: item.signature(),
        },
        now_ms(),
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a finished DHT task reports back.
enum Done {
    Bootstrapped(bool),
    Announced(InfoHash, Result<(), String>),
    LookedUp(InfoHash, Vec<SocketAddrV4>),
    Published(Result<(), String>),
}

struct Driver {
    dht: AsyncDht,
    bootstrap: watch::Sender<Option<bool>>,
    /// A bootstrap check is running.
    bootstrapping: bool,
    endpoint: Endpoint,
    signer: mainline::SigningKey,
    found: mpsc::UnboundedSender<Discovered>,
    status: Arc<Mutex<Shared>>,
    schedule: Schedule,
    seen: HashMap<InfoHash, HashSet<SocketAddrV4>>,
    /// The addresses the next (or last) record carries.
    record_addrs: Vec<SocketAddr>,
    last_seq: u64,
    query_timeout: Duration,
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut tasks: JoinSet<Done> = JoinSet::new();
        let mut addrs_check = tokio::time::interval(ADDRS_CHECK);
        self.check_bootstrap(&mut tasks);
        loop {
            let next = self.schedule.next_at();
            tokio::select! {
                command = commands.recv() => match command {
                    None => break,
                    Some(Command::Join(key)) => self.join(&key),
                    Some(Command::Leave(hash)) => self.leave(&hash),
                },
                Some(done) = tasks.join_next() => {
                    if let Ok(done) = done {
                        self.on_done(done);
                    }
                }
                _ = addrs_check.tick() => {
                    self.check_addrs().await;
                    if *self.bootstrap.borrow() == Some(false) {
                        self.check_bootstrap(&mut tasks);
                    }
                }
                () = sleep_until(next), if next.is_some() => {}
            }
            for task in self.schedule.poll(Instant::now()) {
                self.spawn(task, &mut tasks);
            }
        }
        tasks.abort_all();
    }

    /// Waits (in a task) for `mainline`'s bootstrap: a lookup of our own id that fills the table.
    fn check_bootstrap(&mut self, tasks: &mut JoinSet<Done>) {
        if self.bootstrapping {
            return;
        }
        self.bootstrapping = true;
        let dht = self.dht.clone();
        tasks.spawn(async move { Done::Bootstrapped(dht.bootstrapped().await) });
    }

    fn join(&mut self, key: &DiscoveryKey) {
        let hash = info_hash(key);
        self.schedule.join(hash, Instant::now());
        self.seen.entry(hash).or_default();
        self.status
            .lock()
            .expect("status lock")
            .topics
            .entry(hash)
            .or_insert_with(|| TopicStatus {
                key: key.to_string(),
                announced: None,
                lookups: 0,
                found: 0,
            });
    }

    fn leave(&mut self, hash: &InfoHash) {
        self.schedule.leave(hash);
        self.seen.remove(hash);
        self.status.lock().expect("status lock").topics.remove(hash);
    }

    /// Our QUIC socket's addresses, plus the public IPv4 the DHT observed with the QUIC port
    /// (right when the NAT keeps ports, as most do, and harmless otherwise).
    async fn own_addrs(&self) -> Vec<SocketAddr> {
        let mut addrs = self.endpoint.node_addr().addrs;
        let port = self.endpoint.local_addr().port();
        if let Some(public) = self.dht.info().await.public_address() {
            let guess = SocketAddr::from((*public.ip(), port));
            if !addrs.contains(&guess) {
                addrs.push(guess);
            }
        }
        addrs.truncate(record::MAX_ADDRS);
        addrs
    }

    async fn check_addrs(&mut self) {
        let addrs = self.own_addrs().await;
        if !addrs.is_empty() && addrs != self.record_addrs {
            debug!(?addrs, "publishing our addresses");
            self.record_addrs = addrs;
            self.schedule.addrs_changed(Instant::now());
        }
    }

    fn spawn(&mut self, task: Task, tasks: &mut JoinSet<Done>) {
        let dht = self.dht.clone();
        let timeout = self.query_timeout;
        match task {
            Task::Announce(hash) => {
                let port = self.endpoint.local_addr().port();
                tasks.spawn(async move {
                    let result = dht.announce_peer(id(&hash), Some(port)).await;
                    Done::Announced(hash, result.map(drop).map_err(|e| e.to_string()))
                });
            }
            Task::Lookup(hash) => {
                let found = self.found.clone();
                let own: HashSet<SocketAddr> =
                    self.endpoint.node_addr().addrs.into_iter().collect();
                tasks.spawn(async move {
                    let mut peers = dht.get_peers(id(&hash));
                    let mut all = Vec::new();
                    let _ = tokio::time::timeout(timeout, async {
                        while let Some(batch) = peers.next().await {
                            for addr in batch {
                                if all.contains(&addr) || own.contains(&SocketAddr::V4(addr)) {
                                    continue;
                                }
                                // Reported as they arrive: the first answer starts a dial.
                                all.push(addr);
                                let _ = found.send(Discovered::Address(addr.into()));
                            }
                        }
                    })
                    .await;
                    Done::LookedUp(hash, all)
                });
            }
            Task::Publish => {
                let seq = now_ms().max(self.last_seq + 1);
                self.last_seq = seq;
                let record = AddressRecord::new(self.record_addrs.iter().copied(), seq);
                self.status.lock().expect("status lock").record = Some(RecordStatus {
                    addrs: record.addrs.clone(),
                    result: None,
                });
                let item = MutableItem::new(
                    self.signer.clone(),
                    &record.encode(),
                    record.seq(),
                    Some(record::SALT),
                );
                tasks.spawn(async move {
                    let result = dht.put_mutable(item, None).await;
                    Done::Published(result.map(drop).map_err(|e| e.to_string()))
                });
            }
        }
    }

    fn on_done(&mut self, done: Done) {
        let now = Instant::now();
        let mut shared = self.status.lock().expect("status lock");
        match done {
            Done::Bootstrapped(ok) => {
                debug!(ok, "DHT bootstrap ended");
                self.bootstrapping = false;
                self.schedule.set_bootstrapped(ok);
                self.bootstrap.send_replace(Some(ok));
            }
            Done::Announced(hash, result) => {
                if let Err(err) = &result {
                    debug!(%err, "announce failed");
                }
                self.schedule.announced(&hash, result.is_ok(), now);
                if let Some(t) = shared.topics.get_mut(&hash) {
                    t.announced = Some(result);
                }
            }
            Done::LookedUp(hash, addrs) => {
                let Some(seen) = self.seen.get_mut(&hash) else {
                    return; // left meanwhile
                };
                let mut new = 0;
                for addr in addrs {
                    if seen.len() < MAX_SEEN_PER_TOPIC && seen.insert(addr) {
                        new += 1;
                    }
                }
                self.schedule.looked_up(&hash, new, now);
                if let Some(t) = shared.topics.get_mut(&hash) {
                    t.lookups += 1;
                    t.found = seen.len();
                }
            }
            Done::Published(result) => {
                if let Err(err) = &result {
                    debug!(%err, "publishing our address record failed");
                }
                self.schedule.published(result.is_ok(), now);
                if let Some(record) = &mut shared.record {
                    record.result = Some(result);
                }
            }
        }
    }
}

fn id(hash: &InfoHash) -> Id {
    Id::from_bytes(hash).expect("20 bytes make an id")
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
