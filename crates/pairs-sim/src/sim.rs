//! The simulator: nodes, connections and the event loop.
//!
//! What each node runs is the real code: a [`Planner`] (whom to dial, the connection cap, back-off),
//! a [`Pex`] per connection (peer exchange, its list size and rate limits), and per connection one
//! live log [`Session`] on the node's in-memory [`Log`], pushed new entries from the log's
//! announcement channel as `node::logs` does. What the simulator stands in for:
//!
//! - **Discovery**: each node starts knowing a few random nodes (what a DHT lookup would return);
//!   peer exchange does the rest.
//! - **QUIC**: a dial reaches the other side after one latency and completes after a round trip
//!   (the acceptor may refuse it at its cap); a dial to a node that is away or across a partition
//!   fails after the connect timeout (10 s). A connection whose peer vanished is noticed after the
//!   idle timeout (5 s). Streams are modelled by [`crate::link`].
//! - **Membership**: every node is in the one topic, so each side's hello settles the connection as
//!   sharing it (the tags' cryptography is not exercised here).
//! - **Sessions**: the connection's dialer opens each replication stream; a session that fails ends
//!   at both sides and is started again after a pause that doubles from 0.5 s to 30 s, as
//!   `node::logs` does while the peer stays connected.
//! - **Processing** takes no virtual time: delays are the network's alone.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use pairs_base::{NodeAddr, NodeId, SecretKey};
use pairs_log::entry::EntrySignature;
use pairs_log::store::{Applied, Verified};
use pairs_log::wire::{FrameDecoder, MAX_IDS, Message, WireBatch};
use pairs_log::{Entry, EntryBody, EntryId, Log, Payload, Session, SyncError};
use pairs_net::swarm::pex::{self, Pex};
use pairs_net::swarm::planner::{Action, CloseReason, ConnId, Planner, PlannerConfig};
use tokio::sync::broadcast;

use crate::link::{self, Direction, LinkConfig};
use crate::stats::Delivery;

/// How long a connection whose peer vanished lives on (the endpoint's idle timeout).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a dial that gets no answer takes to fail (the endpoint's connect timeout).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// First pause before a failed session starts again (`node::logs`).
pub const RETRY_FIRST: Duration = Duration::from_millis(500);
/// Longest pause before a failed session starts again (`node::logs`).
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// The entries' clock at virtual time zero (2026-01-01, milliseconds since the Unix epoch).
const EPOCH_MS: u64 = 1_767_225_600_000;
/// The peer-exchange tag of the one topic (its cryptography is not simulated).
const TAG: pex_tag::Tag = [7; 16];
/// Marks an arrival that did not happen.
const NEVER: u64 = u64::MAX;

mod pex_tag {
    pub(super) type Tag = pairs_net::swarm::membership::Tag;
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Runs the real code and nothing else.
    Honest,
    /// Sends entries with forged signatures in honest writers' names, entries it signs itself
    /// without being a writer, and unsigned entries whose seal never comes.
    Forger,
    /// A writer that signs two different entries with one sequence number and gives one to half its
    /// peers, the other to the rest.
    Equivocator,
    /// Sends junk frames, frames longer than the limit (by their length prefix) and floods of
    /// wants for entries that do not exist.
    Flooder,
    /// Takes part in the handshake, receives everything, and never sends anything more.
    Withholder,
}

impl Role {
    /// Whether the node follows the protocol.
    pub fn is_honest(self) -> bool {
        self == Role::Honest
    }
}

/// A simulation's parameters.
#[derive(Debug, Clone)]
pub struct Config {
    /// Number of nodes.
    pub nodes: usize,
    /// The seed of every random choice.
    pub seed: u64,
    /// The links.
    pub link: LinkConfig,
    /// Each node's connection planner (the swarm's defaults: 64 connections).
    pub planner: PlannerConfig,
    /// Nodes each node knows when it starts (what a DHT lookup returns).
    pub bootstrap: usize,
    /// Honest writers (admitted by the log's owner before the start).
    pub writers: usize,
    /// Share of the nodes that are Byzantine, split evenly among the four Byzantine roles.
    pub byzantine: f64,
    /// How often a forger or flooder attacks each of its sessions.
    pub attack_every: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nodes: 1000,
            seed: 1,
            link: LinkConfig::default(),
            planner: PlannerConfig::default(),
            bootstrap: 8,
            writers: 10,
            byzantine: 0.0,
            attack_every: Duration::from_secs(2),
        }
    }
}

/// Counters of a run.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Events processed.
    pub events: u64,
    /// Frames delivered on log streams.
    pub log_frames: u64,
    /// Bytes delivered on log streams.
    pub log_bytes: u64,
    /// Dials started.
    pub dials: u64,
    /// Dials that failed (nobody answered).
    pub dial_failures: u64,
    /// Connections established at both ends.
    pub connections: u64,
    /// Replication sessions started (each end counts).
    pub sessions: u64,
    /// Sessions that failed, by the error's kind.
    pub session_failures: BTreeMap<String, u64>,
    /// Entries received that the receiver had already (sessions that ended, plus live ones when read).
    pub duplicates: u64,
    /// New entries stored from sessions.
    pub received: u64,
    /// Peer-exchange lists sent.
    pub pex_lists: u64,
}

#[derive(Debug)]
enum Wire {
    /// The swarm's hello (membership settles when both sides have one).
    Hello,
    /// A peer-exchange list.
    Pex(Vec<NodeAddr>),
    /// Bytes of a log replication stream (session `generation` of this connection).
    Log { generation: u32, bytes: Vec<u8> },
    /// The sender ended that session's stream.
    LogEnd { generation: u32 },
    /// The sender closed the connection for this reason.
    Close(CloseReason),
}

#[derive(Debug)]
enum Event {
    Deliver { conn: ConnId, to: usize, wire: Wire },
    Up { conn: ConnId, node: usize },
    DialFailed { conn: ConnId, node: usize },
    TimedOut { conn: ConnId, node: usize },
    PlannerWake { node: usize, life: u32 },
    PexTick { node: usize, life: u32 },
    Resume { conn: ConnId, node: usize },
    Attack { node: usize, life: u32 },
}

struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// One simulated connection.
struct Conn {
    /// [dialer, acceptor].
    ends: [usize; 2],
    latency: u64,
    /// Cut (partition, a node gone): nothing more gets through.
    severed: bool,
    /// Per sending side.
    dirs: [Direction; 2],
}

/// A node's end of a connection.
struct End {
    peer: usize,
    /// 0: we dialed; 1: we accepted.
    side: usize,
    hello: bool,
    joined: bool,
    pex: Pex,
    /// When the last peer-exchange list went out.
    pex_sent: Option<u64>,
    session: Option<Session>,
    /// The newest session generation started here (0: none yet).
    generation: u32,
    decoder: FrameDecoder,
    /// Frames of a later generation that arrived before this end started it.
    parked: Vec<Vec<u8>>,
    parked_generation: u32,
    resume_at: u64,
    pause: u64,
    started: u64,
    /// Frames this end's current session sent.
    sent: u32,
}

struct Node {
    key: SecretKey,
    id: NodeId,
    addr: SocketAddr,
    role: Role,
    online: bool,
    /// Bumped when the node leaves: its timers from before are stale.
    life: u32,
    log: Log,
    applied: broadcast::Receiver<Applied>,
    planner: Planner,
    wake: Option<u64>,
    ends: BTreeMap<ConnId, End>,
    dialing: BTreeMap<ConnId, usize>,
    next_origin: u64,
    attacks: u64,
}

/// The whole simulated network. See the module docs.
pub struct Sim {
    config: Config,
    rng: fastrand::Rng,
    now: u64,
    base: Instant,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    nodes: Vec<Node>,
    index: HashMap<NodeId, usize>,
    conns: HashMap<ConnId, Conn>,
    next_conn: ConnId,
    partition: Option<Vec<u8>>,
    owner: SecretKey,
    genesis: Vec<Verified>,
    /// Entry -> tracking slot, for entries appended by honest writers.
    tracked: HashMap<EntryId, usize>,
    appended: Vec<(u64, usize)>,
    /// Per tracked entry, per node: when it was stored there.
    arrivals: Vec<Vec<u64>>,
    /// Writer -> its last entry (seq, id), for forgers to aim at.
    tips: BTreeMap<usize, (u64, EntryId)>,
    forged: HashSet<EntryId>,
    /// Per node, the intervals it was away (the last one open while it is).
    away: Vec<Vec<(u64, u64)>>,
    equivocations: Vec<(EntryId, EntryId)>,
    attacks_from: u64,
    digest: u64,
    /// What happened so far.
    pub counters: Counters,
}

impl Sim {
    /// Builds the network: keys, roles, the log's genesis (the owner admits the writers) on every
    /// node, and each node's first known peers. Nothing runs until [`Sim::run_until`].
    pub fn new(config: Config) -> Self {
        let mut rng = fastrand::Rng::with_seed(config.seed);
        let mut key = || {
            let mut bytes = [0u8; 32];
            rng.fill(&mut bytes);
            SecretKey::from_bytes(&bytes)
        };
        let owner = key();
        let keys: Vec<SecretKey> = (0..config.nodes).map(|_| key()).collect();
        let mut roles = vec![Role::Honest; config.nodes];
        let byzantine = (config.nodes as f64 * config.byzantine).round() as usize;
        let mut order: Vec<usize> = (0..config.nodes).collect();
        rng.shuffle(&mut order);
        let kinds = [
            Role::Forger,
            Role::Equivocator,
            Role::Flooder,
            Role::Withholder,
        ];
        for (i, &n) in order.iter().take(byzantine).enumerate() {
            roles[n] = kinds[i % kinds.len()];
        }
        // Honest writers: the first honest nodes in the shuffled order; equivocators write too.
        let writers: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&n| roles[n] == Role::Honest)
            .take(config.writers)
            .chain((0..config.nodes).filter(|&n| roles[n] == Role::Equivocator))
            .collect();
        let log_id = owner.node_id();
        let template = Log::in_memory(log_id);
        template
            .append_batch_at(
                &owner,
                writers
                    .iter()
                    .map(|&w| Payload::AddWriter(keys[w].node_id()))
                    .collect(),
                EPOCH_MS,
            )
            .expect("genesis");
        let genesis: Vec<Verified> = template
            .entries()
            .expect("genesis")
            .into_iter()
            .map(|entry| {
                let seal = template.seal_of(&entry.id()).expect("genesis");
                Verified { entry, seal }
            })
            .collect();
        let base = Instant::now();
        let mut nodes = Vec::with_capacity(config.nodes);
        let mut index = HashMap::new();
        for (n, key) in keys.into_iter().enumerate() {
            let id = key.node_id();
            let log = Log::in_memory(log_id);
            log.apply(genesis.clone(), 0).expect("genesis applies");
            let applied = log.subscribe();
            index.insert(id, n);
            nodes.push(Node {
                key,
                id,
                addr: addr_of(n),
                role: roles[n],
                online: true,
                life: 0,
                log,
                applied,
                planner: Planner::new(id, config.planner.clone()),
                wake: None,
                ends: BTreeMap::new(),
                dialing: BTreeMap::new(),
                next_origin: 1,
                attacks: 0,
            });
        }
        let nodes_len = nodes.len();
        let mut sim = Self {
            config,
            rng,
            now: 0,
            base,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            index,
            conns: HashMap::new(),
            next_conn: 1,
            partition: None,
            owner,
            genesis,
            tracked: HashMap::new(),
            appended: Vec::new(),
            arrivals: Vec::new(),
            tips: BTreeMap::new(),
            forged: HashSet::new(),
            away: vec![Vec::new(); nodes_len],
            equivocations: Vec::new(),
            attacks_from: u64::MAX,
            digest: 0xcbf2_9ce4_8422_2325,
            counters: Counters::default(),
        };
        for n in 0..sim.nodes.len() {
            sim.start_node(n);
        }
        sim
    }

    /// The current virtual time.
    pub fn now(&self) -> Duration {
        Duration::from_micros(self.now)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A node's role.
    pub fn role(&self, node: usize) -> Role {
        self.nodes[node].role
    }

    /// Whether a node is online.
    pub fn is_online(&self, node: usize) -> bool {
        self.nodes[node].online
    }

    /// The honest writers (they may append).
    pub fn writers(&self) -> Vec<usize> {
        let ids: HashSet<NodeId> = self
            .genesis
            .iter()
            .filter_map(|v| match v.entry.body().payload {
                Payload::AddWriter(w) => Some(w),
                _ => None,
            })
            .collect();
        (0..self.nodes.len())
            .filter(|&n| self.nodes[n].role.is_honest() && ids.contains(&self.nodes[n].id))
            .collect()
    }

    /// A node's log replica.
    pub fn log(&self, node: usize) -> &Log {
        &self.nodes[node].log
    }

    /// The log's owner key (it admitted the writers).
    pub fn owner(&self) -> NodeId {
        self.owner.node_id()
    }

    /// Established connections of a node.
    pub fn degree(&self, node: usize) -> usize {
        self.nodes[node].ends.values().filter(|e| e.joined).count()
    }

    /// The seeded generator, for a scenario's own random choices.
    pub fn rng(&mut self) -> &mut fastrand::Rng {
        &mut self.rng
    }

    /// A digest of everything delivered so far (which entry reached which node when): two runs with
    /// the same seed give the same digest.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Ids of the forged entries Byzantine nodes sent.
    pub fn forged(&self) -> &HashSet<EntryId> {
        &self.forged
    }

    /// The pairs of entries equivocators signed with one sequence number.
    pub fn equivocations(&self) -> &[(EntryId, EntryId)] {
        &self.equivocations
    }

    /// Forgers, flooders and equivocators start attacking at `at`.
    pub fn attack_from(&mut self, at: Duration) {
        self.attacks_from = us(at);
        for n in 0..self.nodes.len() {
            if matches!(
                self.nodes[n].role,
                Role::Forger | Role::Flooder | Role::Equivocator
            ) {
                let life = self.nodes[n].life;
                let jitter = self.rng.u64(0..us(self.config.attack_every).max(1));
                self.push(
                    self.attacks_from.max(self.now) + jitter,
                    Event::Attack { node: n, life },
                );
            }
        }
    }

    /// Runs every event up to `at` (virtual time).
    pub fn run_until(&mut self, at: Duration) {
        let end = us(at);
        while let Some(Reverse(next)) = self.queue.peek() {
            if next.at > end {
                break;
            }
            let Reverse(Scheduled { at, event, .. }) = self.queue.pop().expect("peeked");
            self.now = at;
            self.counters.events += 1;
            self.dispatch(event);
        }
        self.now = self.now.max(end);
    }

    /// `node` (an honest writer) appends one entry now; it is tracked for delivery.
    pub fn append(&mut self, node: usize) -> EntryId {
        let n = &self.nodes[node];
        assert!(n.online, "node {node} is away");
        let payload = Payload::Data(format!("entry from {node} at {} us", self.now).into_bytes());
        let id = n
            .log
            .append_batch_at(&n.key, vec![payload], EPOCH_MS + self.now / 1000)
            .expect("append")[0];
        let seq = n.log.get(&id).expect("read").expect("stored").body().seq;
        self.tips.insert(node, (seq, id));
        self.tracked.insert(id, self.appended.len());
        self.appended.push((self.now, node));
        self.arrivals.push(vec![NEVER; self.nodes.len()]);
        self.settle(node, None);
        id
    }

    /// Splits the network: nodes with `side(n)` true on one side, the rest on the other. Links
    /// across are cut; connections across time out.
    pub fn partition(&mut self, side: impl Fn(usize) -> bool) {
        self.partition = Some((0..self.nodes.len()).map(|n| u8::from(side(n))).collect());
        let cut: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| self.is_cut(c.ends[0], c.ends[1]))
            .map(|(id, _)| *id)
            .collect();
        let mut cut = cut;
        cut.sort_unstable();
        for conn in cut {
            self.sever(conn);
        }
    }

    /// Ends the partition: dials across succeed again.
    pub fn heal(&mut self) {
        self.partition = None;
    }

    /// `node` leaves: its connections go silent (its peers notice after the idle timeout). With
    /// `keep_store` false, it comes back with an empty replica.
    pub fn leave(&mut self, node: usize, keep_store: bool) {
        let n = &mut self.nodes[node];
        if !n.online {
            return;
        }
        n.online = false;
        n.life += 1;
        self.away[node].push((self.now, u64::MAX));
        n.wake = None;
        let mut conns: Vec<ConnId> = n.ends.keys().copied().collect();
        conns.extend(n.dialing.keys().copied());
        n.ends.clear();
        n.dialing.clear();
        if !keep_store {
            n.log = Log::in_memory(self.owner.node_id());
            n.applied = n.log.subscribe();
        }
        for conn in conns {
            self.sever(conn);
        }
    }

    /// `node` comes back: a fresh planner that knows a few random nodes, as at the start.
    pub fn rejoin(&mut self, node: usize) {
        if self.nodes[node].online {
            return;
        }
        self.nodes[node].online = true;
        if let Some(last) = self.away[node].last_mut() {
            last.1 = self.now;
        }
        self.start_node(node);
    }

    /// The delivery of tracked entries to the nodes `counted` selects (never the entry's author).
    pub fn delivery(&self, counted: impl Fn(usize) -> bool) -> Delivery {
        self.delivery_if(|n, _| counted(n))
    }

    fn delivery_if(&self, counted: impl Fn(usize, u64) -> bool) -> Delivery {
        let mut out = Delivery {
            entries: self.appended.len(),
            nodes: (0..self.nodes.len()).filter(|&n| counted(n, 0)).count(),
            ..Delivery::default()
        };
        for (k, (at, author)) in self.appended.iter().enumerate() {
            for (n, &arrival) in self.arrivals[k].iter().enumerate() {
                if n == *author || !counted(n, *at) {
                    continue;
                }
                if arrival == NEVER {
                    out.misses += 1;
                } else {
                    out.delivered += 1;
                    out.delays.push(Duration::from_micros(arrival - at));
                }
            }
        }
        out.delays.sort_unstable();
        out
    }

    /// The delivery of tracked entries to the nodes `counted` selects that were online from the
    /// append until `window` after it (churn: what a node that stayed sees).
    pub fn delivery_present(&self, counted: impl Fn(usize) -> bool, window: Duration) -> Delivery {
        let window = us(window);
        self.delivery_if(|n, at| {
            counted(n)
                && self.away[n]
                    .iter()
                    .all(|&(left, back)| back <= at || left >= at + window)
        })
    }

    /// Adds the live sessions' duplicate and received counts to the counters (call once, at the end).
    pub fn collect_session_stats(&mut self) {
        for node in &self.nodes {
            for end in node.ends.values() {
                if let Some(session) = &end.session {
                    let stats = session.stats();
                    self.counters.duplicates += stats.duplicates_received;
                    self.counters.received += stats.entries_received;
                }
            }
        }
    }

    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            event,
        }));
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_micros(self.now)
    }

    fn is_cut(&self, a: usize, b: usize) -> bool {
        self.partition.as_ref().is_some_and(|p| p[a] != p[b])
    }

    fn start_node(&mut self, n: usize) {
        let now = self.instant();
        let count = self.nodes.len();
        let node = &mut self.nodes[n];
        node.planner = Planner::new(node.id, self.config.planner.clone());
        node.planner.topics_changed(1);
        let mut known = 0;
        while known < self.config.bootstrap.min(count - 1) {
            let other = self.rng.usize(0..count);
            let other_id = self.index_id(other);
            if other == n || self.nodes[n].planner.knows(&other_id) {
                continue;
            }
            let addr = NodeAddr::new(self.index_id(other), [addr_of(other)]);
            self.nodes[n].planner.discovered(&addr, now);
            known += 1;
        }
        let life = self.nodes[n].life;
        self.push(self.now, Event::PlannerWake { node: n, life });
        let tick = self.now + self.rng.u64(0..us(pex::INTERVAL));
        self.push(tick, Event::PexTick { node: n, life });
    }

    fn index_id(&self, n: usize) -> NodeId {
        self.nodes[n].id
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Deliver { conn, to, wire } => self.deliver(conn, to, wire),
            Event::Up { conn, node } => self.up(conn, node),
            Event::DialFailed { conn, node } => {
                if let Some(peer) = self.nodes[node].dialing.remove(&conn) {
                    self.counters.dial_failures += 1;
                    let (id, now) = (self.nodes[peer].id, self.instant());
                    self.nodes[node].planner.dial_failed(&id, now);
                    self.drive_planner(node);
                }
            }
            Event::TimedOut { conn, node } => {
                if self.nodes[node].ends.contains_key(&conn) {
                    self.remove_end(node, conn, None);
                }
            }
            Event::PlannerWake { node, life } => {
                if self.nodes[node].life == life && self.nodes[node].online {
                    self.nodes[node].wake = None;
                    self.drive_planner(node);
                }
            }
            Event::PexTick { node, life } => {
                if self.nodes[node].life == life && self.nodes[node].online {
                    let conns: Vec<ConnId> = self.nodes[node].ends.keys().copied().collect();
                    for conn in conns {
                        self.exchange(node, conn);
                    }
                    self.push(self.now + us(pex::INTERVAL), Event::PexTick { node, life });
                }
            }
            Event::Resume { conn, node } => self.resume(node, conn),
            Event::Attack { node, life } => {
                if self.nodes[node].life == life && self.nodes[node].online {
                    self.attack(node);
                    let next = self.now + us(self.config.attack_every);
                    self.push(next, Event::Attack { node, life });
                }
            }
        }
    }

    fn drive_planner(&mut self, n: usize) {
        if !self.nodes[n].online {
            return;
        }
        let now = self.instant();
        let actions = self.nodes[n].planner.poll_dials(now);
        for action in actions {
            match action {
                Action::Dial(addr) => {
                    let target = self.index[&addr.node_id];
                    self.dial(n, target);
                }
                Action::DialAddr(_) | Action::Close(..) => {}
            }
        }
        if let Some(at) = self.nodes[n].planner.next_dial_at() {
            // A due time already past would wake the node again at once, forever.
            let at = us(at.saturating_duration_since(self.base)).max(self.now + 1);
            if self.nodes[n].wake.is_none_or(|w| at < w) {
                self.nodes[n].wake = Some(at);
                let life = self.nodes[n].life;
                self.push(at, Event::PlannerWake { node: n, life });
            }
        }
    }

    fn dial(&mut self, n: usize, target: usize) {
        self.counters.dials += 1;
        let conn = self.next_conn;
        self.next_conn += 1;
        self.nodes[n].dialing.insert(conn, target);
        if !self.nodes[target].online || self.is_cut(n, target) {
            self.push(
                self.now + us(CONNECT_TIMEOUT),
                Event::DialFailed { conn, node: n },
            );
            return;
        }
        let latency = self.config.link.latency_us(self.config.seed, n, target);
        self.conns.insert(
            conn,
            Conn {
                ends: [n, target],
                latency,
                severed: false,
                dirs: [Direction::default(), Direction::default()],
            },
        );
        // The acceptor sees the handshake after one latency; the dialer has its answer after two.
        self.push(self.now + latency, Event::Up { conn, node: target });
        self.push(self.now + 2 * latency, Event::Up { conn, node: n });
    }

    fn up(&mut self, conn: ConnId, n: usize) {
        let now = self.instant();
        let dialed = self.nodes[n].dialing.remove(&conn);
        let c = self.conns.get(&conn);
        if let Some(target) = dialed {
            // The acceptor refused, vanished or was cut off during the handshake.
            if c.is_none_or(|c| c.severed) {
                self.counters.dial_failures += 1;
                let id = self.nodes[target].id;
                self.nodes[n].planner.dial_failed(&id, now);
                if c.is_some_and(|c| {
                    c.ends
                        .iter()
                        .all(|&e| !self.nodes[e].ends.contains_key(&conn))
                }) {
                    self.conns.remove(&conn);
                }
                self.drive_planner(n);
                return;
            }
        }
        let Some(c) = c else {
            return;
        };
        let side = usize::from(dialed.is_none());
        let peer = c.ends[1 - side];
        if c.ends[side] != n || (side == 1 && (c.severed || !self.nodes[n].online)) {
            return;
        }
        let peer_id = self.nodes[peer].id;
        let outcome = self.nodes[n]
            .planner
            .connected(conn, peer_id, side == 0, now);
        let mut refused = false;
        if let Some(Action::Close(close, reason)) = outcome {
            if close == conn {
                refused = true;
            } else {
                self.close(n, close, reason);
            }
        }
        self.nodes[n].ends.insert(
            conn,
            End {
                peer,
                side,
                hello: false,
                joined: false,
                pex: Pex::default(),
                pex_sent: None,
                session: None,
                generation: 0,
                decoder: FrameDecoder::default(),
                parked: Vec::new(),
                parked_generation: 0,
                resume_at: 0,
                pause: us(RETRY_FIRST),
                started: 0,
                sent: 0,
            },
        );
        if refused {
            let reason = match outcome {
                Some(Action::Close(_, reason)) => reason,
                _ => unreachable!(),
            };
            self.close(n, conn, reason);
            return;
        }
        if side == 1 {
            self.counters.connections += 1;
        }
        self.send(n, conn, link::CONTROL, Wire::Hello, 16);
        self.maybe_join(n, conn);
    }

    /// Closes our end of `conn` for `reason` and tells the peer.
    fn close(&mut self, n: usize, conn: ConnId, reason: CloseReason) {
        if !self.nodes[n].ends.contains_key(&conn) {
            return;
        }
        self.send(n, conn, link::CONTROL, Wire::Close(reason), 16);
        // Nothing more gets through once the close is on its way.
        self.remove_end(n, conn, Some(reason));
        if let Some(c) = self.conns.get_mut(&conn) {
            c.severed = true;
        }
    }

    fn remove_end(&mut self, n: usize, conn: ConnId, reason: Option<CloseReason>) {
        let Some(end) = self.nodes[n].ends.remove(&conn) else {
            return;
        };
        if let Some(session) = &end.session {
            let stats = session.stats();
            self.counters.duplicates += stats.duplicates_received;
            self.counters.received += stats.entries_received;
        }
        let (peer, now) = (self.nodes[end.peer].id, self.instant());
        self.nodes[n].planner.closed(conn, &peer, reason, now);
        if let Some(c) = self.conns.get(&conn)
            && c.ends
                .iter()
                .all(|&e| !self.nodes[e].ends.contains_key(&conn))
        {
            self.conns.remove(&conn);
        }
        self.drive_planner(n);
    }

    /// Cuts a connection: nothing more gets through, and each end that is still there notices after
    /// the idle timeout.
    fn sever(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.severed = true;
        let ends = c.ends;
        for n in ends {
            if self.nodes[n].ends.contains_key(&conn) {
                self.push(
                    self.now + us(IDLE_TIMEOUT),
                    Event::TimedOut { conn, node: n },
                );
            }
        }
    }

    fn send(&mut self, n: usize, conn: ConnId, stream: usize, wire: Wire, len: usize) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.severed {
            return;
        }
        let side = usize::from(c.ends[1] == n);
        let to = c.ends[1 - side];
        let at = c.dirs[side].send(
            &self.config.link,
            c.latency,
            &mut self.rng,
            self.now,
            stream,
            len,
        );
        self.push(at, Event::Deliver { conn, to, wire });
    }

    fn deliver(&mut self, conn: ConnId, n: usize, wire: Wire) {
        match self.conns.get(&conn) {
            Some(c) if !c.severed || matches!(wire, Wire::Close(_)) => {}
            _ => return,
        }
        if !self.nodes[n].ends.contains_key(&conn) {
            return;
        }
        match wire {
            Wire::Hello => {
                self.nodes[n].ends.get_mut(&conn).expect("checked").hello = true;
                self.maybe_join(n, conn);
            }
            Wire::Pex(list) => self.on_pex(n, conn, list),
            Wire::Log { generation, bytes } => {
                self.counters.log_frames += 1;
                self.counters.log_bytes += bytes.len() as u64;
                self.on_log(n, conn, generation, bytes);
            }
            Wire::LogEnd { generation } => {
                let end = self.nodes[n].ends.get_mut(&conn).expect("checked");
                if end.generation == generation && end.session.is_some() {
                    let err = SyncError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the other side ended the session",
                    ));
                    self.fail(n, conn, err, false);
                }
            }
            Wire::Close(reason) => self.remove_end(n, conn, Some(reason)),
        }
    }

    fn maybe_join(&mut self, n: usize, conn: ConnId) {
        let end = self.nodes[n].ends.get_mut(&conn).expect("end");
        if !end.hello || end.joined {
            return;
        }
        end.joined = true;
        let (side, peer) = (end.side, end.peer);
        let peer = self.nodes[peer].id;
        if let Some(Action::Close(close, reason)) = self.nodes[n].planner.settled(conn, &peer, true)
        {
            self.close(n, close, reason);
            return;
        }
        // The newcomer hears about the other members at once, and they about it.
        let conns: Vec<ConnId> = self.nodes[n].ends.keys().copied().collect();
        self.exchange(n, conn);
        for other in conns {
            if other != conn {
                self.exchange(n, other);
            }
        }
        if side == 0 {
            self.start_session(n, conn, 1);
        } else {
            self.resume(n, conn);
        }
    }

    fn exchange(&mut self, n: usize, conn: ConnId) {
        let node = &self.nodes[n];
        let Some(end) = node.ends.get(&conn) else {
            return;
        };
        // `Pex::to_send` sends at most one list per interval: skip building one it would refuse.
        if !end.joined
            || end
                .pex_sent
                .is_some_and(|t| self.now < t + us(pex::INTERVAL))
        {
            return;
        }
        let members: Vec<NodeAddr> = node
            .ends
            .iter()
            .filter(|(c, e)| **c != conn && e.joined)
            .map(|(_, e)| NodeAddr::new(self.nodes[e.peer].id, [self.nodes[e.peer].addr]))
            .collect();
        let peer = self.nodes[end.peer].id;
        let now = self.instant();
        let end = self.nodes[n].ends.get_mut(&conn).expect("checked");
        if let Some(list) = end.pex.to_send(TAG, &peer, members, now) {
            end.pex_sent = Some(self.now);
            self.counters.pex_lists += 1;
            let len = 24 + list.len() * 40;
            self.send(n, conn, link::CONTROL, Wire::Pex(list), len);
        }
    }

    fn on_pex(&mut self, n: usize, conn: ConnId, list: Vec<NodeAddr>) {
        let now = self.instant();
        let me = self.nodes[n].id;
        let end = &self.nodes[n].ends[&conn];
        if !end.joined {
            return;
        }
        let sender = self.nodes[end.peer].id;
        let end = self.nodes[n].ends.get_mut(&conn).expect("checked");
        let useful = match end.pex.received(TAG, &me, &sender, list, now) {
            Ok(useful) => useful,
            Err(_) => return,
        };
        for peer in useful {
            let connected = self.nodes[n]
                .ends
                .values()
                .any(|e| self.nodes[e.peer].id == peer.node_id);
            if !self.nodes[n].planner.knows(&peer.node_id) && !connected {
                self.nodes[n].planner.discovered(&peer, now);
            }
        }
        self.drive_planner(n);
    }

    fn start_session(&mut self, n: usize, conn: ConnId, generation: u32) {
        let mut nonce = [0u8; 16];
        self.rng.fill(&mut nonce);
        let node = &mut self.nodes[n];
        let origin = node.next_origin;
        node.next_origin += 1;
        let session = Session::with_nonce(node.log.clone(), true, origin, nonce);
        let end = node.ends.get_mut(&conn).expect("end");
        end.session = Some(session);
        end.generation = generation;
        end.decoder = FrameDecoder::default();
        end.started = self.now;
        end.sent = 0;
        self.counters.sessions += 1;
        let parked = if end.parked_generation == generation {
            std::mem::take(&mut end.parked)
        } else {
            Vec::new()
        };
        self.flush(n, conn);
        for bytes in parked {
            self.on_log(n, conn, generation, bytes);
        }
    }

    /// After a pause: the dialer starts the next session; the acceptor takes one the dialer started.
    fn resume(&mut self, n: usize, conn: ConnId) {
        let Some(end) = self.nodes[n].ends.get(&conn) else {
            return;
        };
        if end.session.is_some() || !end.joined || self.now < end.resume_at {
            return;
        }
        if end.side == 0 {
            let generation = end.generation + 1;
            self.start_session(n, conn, generation);
        } else if end.parked_generation > end.generation {
            let generation = end.parked_generation;
            self.start_session(n, conn, generation);
        }
    }

    fn on_log(&mut self, n: usize, conn: ConnId, generation: u32, bytes: Vec<u8>) {
        let end = self.nodes[n].ends.get_mut(&conn).expect("checked");
        if generation < end.generation || (generation == end.generation && end.session.is_none()) {
            return;
        }
        if generation > end.generation {
            if end.side == 0 {
                return;
            }
            // A new session from the dialer: taken once joined and our pause is over.
            if end.parked_generation != generation {
                end.parked.clear();
                end.parked_generation = generation;
            }
            end.parked.push(bytes);
            if end.joined && self.now >= end.resume_at {
                end.session = None;
                self.start_session(n, conn, generation);
            }
            return;
        }
        end.decoder.push(&bytes);
        let mut result = Ok(());
        loop {
            let end = self.nodes[n].ends.get_mut(&conn).expect("checked");
            let frame = match end.decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(why) => {
                    result = Err(SyncError::Protocol(why.into()));
                    break;
                }
            };
            let session = end.session.as_mut().expect("checked");
            if let Err(err) = session.handle_frame(&frame) {
                result = Err(err);
                break;
            }
        }
        match result {
            Ok(()) => self.settle(n, Some(conn)),
            Err(err) => {
                self.fail(n, conn, err, true);
                self.settle(n, None);
            }
        }
    }

    /// Hands what the node's log stored since the last call to every live session, records
    /// arrivals, and sends what the sessions have to send.
    fn settle(&mut self, n: usize, touched: Option<ConnId>) {
        let mut announced = false;
        let mut failed: Vec<(ConnId, SyncError)> = Vec::new();
        loop {
            let applied = match self.nodes[n].applied.try_recv() {
                Ok(applied) => applied,
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    panic!("node {n} fell behind its log's announcements by {missed}")
                }
                Err(_) => break,
            };
            announced = true;
            for id in applied.ids.iter() {
                if let Some(&k) = self.tracked.get(id)
                    && self.arrivals[k][n] == NEVER
                {
                    self.arrivals[k][n] = self.now;
                    for b in id.as_bytes()[..8].iter().chain(&(n as u64).to_le_bytes()) {
                        self.digest = (self.digest ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
                    }
                    self.digest ^= self.now;
                }
            }
            for (conn, end) in self.nodes[n].ends.iter_mut() {
                if let Some(session) = end.session.as_mut()
                    && let Err(err) = session.on_applied(&applied)
                {
                    failed.push((*conn, err));
                }
            }
        }
        for (conn, err) in failed {
            self.fail(n, conn, err, true);
        }
        if announced {
            let conns: Vec<ConnId> = self.nodes[n].ends.keys().copied().collect();
            for conn in conns {
                self.flush(n, conn);
            }
        } else if let Some(conn) = touched {
            self.flush(n, conn);
        }
    }

    fn flush(&mut self, n: usize, conn: ConnId) {
        let Some(end) = self.nodes[n].ends.get_mut(&conn) else {
            return;
        };
        let Some(session) = end.session.as_mut() else {
            return;
        };
        let mut frames = Vec::new();
        let mut error = None;
        loop {
            match session.poll_transmit() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(err) => {
                    error = Some(err);
                    break;
                }
            }
        }
        let generation = end.generation;
        for frame in frames {
            self.send_log(n, conn, generation, frame);
        }
        if let Some(err) = error {
            self.fail(n, conn, err, true);
        }
    }

    fn send_log(&mut self, n: usize, conn: ConnId, generation: u32, bytes: Vec<u8>) {
        let withholder = self.nodes[n].role == Role::Withholder;
        let end = self.nodes[n].ends.get_mut(&conn).expect("end");
        end.sent += 1;
        // A withholder completes the handshake (hello, auth) and sends nothing after it.
        if withholder && end.sent > 2 {
            return;
        }
        let len = bytes.len();
        self.send(n, conn, link::LOG, Wire::Log { generation, bytes }, len);
    }

    /// The session on `conn` failed: tell the peer (its reason, then the end of the stream), and
    /// start again after the pause.
    fn fail(&mut self, n: usize, conn: ConnId, err: SyncError, tell: bool) {
        let Some(end) = self.nodes[n].ends.get_mut(&conn) else {
            return;
        };
        let Some(session) = end.session.take() else {
            return;
        };
        let stats = session.stats();
        self.counters.duplicates += stats.duplicates_received;
        self.counters.received += stats.entries_received;
        if self.now.saturating_sub(end.started) > 2 * us(RETRY_MAX) {
            end.pause = us(RETRY_FIRST);
        }
        end.resume_at = self.now + end.pause;
        end.pause = (end.pause * 2).min(us(RETRY_MAX));
        let generation = end.generation;
        let resume_at = end.resume_at;
        if tell {
            // Counted at the side that found the fault (the other side only hears of it).
            *self
                .counters
                .session_failures
                .entry(kind(&err))
                .or_default() += 1;
            let reason = match &err {
                SyncError::Protocol(reason) => Some(reason.clone()),
                SyncError::OtherLog => Some("not the same log on both sides".to_string()),
                _ => None,
            };
            if let Some(reason) = reason {
                let bytes = Session::error_frame(&reason);
                let len = bytes.len();
                self.send(n, conn, link::LOG, Wire::Log { generation, bytes }, len);
            }
            self.send(n, conn, link::LOG, Wire::LogEnd { generation }, 8);
        }
        self.push(resume_at, Event::Resume { conn, node: n });
    }

    /// A Byzantine node's attack on each of its sessions.
    fn attack(&mut self, n: usize) {
        let role = self.nodes[n].role;
        let count = self.nodes[n].attacks;
        self.nodes[n].attacks += 1;
        let conns: Vec<(ConnId, u32)> = self.nodes[n]
            .ends
            .iter()
            .filter(|(_, e)| e.session.is_some())
            .map(|(c, e)| (*c, e.generation))
            .collect();
        match role {
            Role::Forger => {
                for (i, (conn, generation)) in conns.into_iter().enumerate() {
                    let entry = self.forge(n, (i as u64 + count) % 3);
                    self.forged.insert(entry.id());
                    let bytes = Message::Entries(WireBatch::encode(&[entry])).to_frame();
                    let len = bytes.len();
                    self.send(n, conn, link::LOG, Wire::Log { generation, bytes }, len);
                }
            }
            Role::Flooder => {
                for (i, (conn, generation)) in conns.into_iter().enumerate() {
                    let frames: Vec<Vec<u8>> = match (i as u64 + count) % 3 {
                        // Junk: a valid length prefix, then noise.
                        0 => {
                            let mut junk = vec![0u8; 4 + 256];
                            self.rng.fill(&mut junk[4..]);
                            junk[..4].copy_from_slice(&256u32.to_be_bytes());
                            vec![junk]
                        }
                        // A frame claiming 64 MiB: refused from its prefix.
                        1 => {
                            let mut big = (64u32 << 20).to_be_bytes().to_vec();
                            big.extend_from_slice(&[0; 60]);
                            vec![big]
                        }
                        // Wants for entries that do not exist, as many as a message holds.
                        _ => (0..1)
                            .map(|_| {
                                let ids = (0..MAX_IDS / 8)
                                    .map(|_| {
                                        let mut id = [0u8; 32];
                                        self.rng.fill(&mut id);
                                        EntryId(id)
                                    })
                                    .collect();
                                Message::Want(ids).to_frame()
                            })
                            .collect(),
                    };
                    for bytes in frames {
                        let len = bytes.len();
                        self.send(n, conn, link::LOG, Wire::Log { generation, bytes }, len);
                    }
                }
            }
            Role::Equivocator if count == 0 => {
                let (first, second) = (self.forge(n, 3), self.forge(n, 4));
                self.equivocations.push((first.id(), second.id()));
                for (i, (conn, generation)) in conns.into_iter().enumerate() {
                    let entry = if i % 2 == 0 { &first } else { &second };
                    let bytes =
                        Message::Entries(WireBatch::encode(std::slice::from_ref(entry))).to_frame();
                    let len = bytes.len();
                    self.send(n, conn, link::LOG, Wire::Log { generation, bytes }, len);
                }
            }
            _ => {}
        }
    }

    /// An entry on top of node `n`'s heads. Kinds: 0, an honest writer's next entry with a forged
    /// signature; 1, an entry `n` signs without being a writer; 2, an honest writer's entry without
    /// a signature, whose seal never comes; 3 and 4, two different entries `n` signs with its next
    /// sequence number (equivocation).
    fn forge(&mut self, n: usize, kind: u64) -> Entry {
        let log = self.nodes[n].log.clone();
        let writers = self.writers();
        let victim = writers[self.rng.usize(0..writers.len())];
        let author = match kind {
            0 | 2 => victim,
            _ => n,
        };
        let mut parents = log.heads();
        let mut seq = 0;
        if author == victim
            && let Some((tip_seq, tip)) = self.tips.get(&victim)
        {
            seq = tip_seq + 1;
            if log.contains(tip) {
                parents.push(*tip);
            }
        }
        if kind >= 3 {
            // The equivocator's first entry must name its admission.
            let me = self.nodes[n].id;
            if let Some(admission) = self
                .genesis
                .iter()
                .find(|v| v.entry.body().payload == Payload::AddWriter(me))
            {
                parents.push(admission.entry.id());
            }
        }
        parents.sort();
        parents.dedup();
        let clock = log
            .get_many(&parents)
            .expect("read")
            .iter()
            .map(|e| e.body().clock + 1)
            .max()
            .unwrap_or(0);
        let body = EntryBody {
            log: log.id(),
            author: self.nodes[author].id,
            seq,
            clock,
            parents,
            timestamp: EPOCH_MS + self.now / 1000,
            payload: Payload::Data(format!("forged by {n}, kind {kind}").into_bytes()),
        };
        match kind {
            0 => {
                let mut halves = ([0u8; 32], [0u8; 32]);
                self.rng.fill(&mut halves.0);
                self.rng.fill(&mut halves.1);
                Entry::from_parts(body, Some(EntrySignature(halves.0, halves.1)))
            }
            2 => Entry::unsigned(body),
            _ => Entry::signed(body, &self.nodes[n].key),
        }
    }
}

/// The kind of a session error, without the ids and numbers it names.
fn kind(err: &SyncError) -> String {
    let text = err.to_string();
    let text = text
        .strip_prefix("peer broke the protocol: ")
        .unwrap_or(&text);
    let cut = text
        .find(" on entry")
        .or_else(|| text.find(" entry "))
        .or_else(|| text.find(':'))
        .unwrap_or(text.len());
    let mut kind = String::new();
    for c in text[..cut].chars().take(60) {
        let c = if c.is_ascii_digit() { 'N' } else { c };
        if !(c == 'N' && kind.ends_with('N')) {
            kind.push(c);
        }
    }
    kind
}

/// A node's (made-up) address.
fn addr_of(n: usize) -> SocketAddr {
    let n = n as u32 + 1;
    SocketAddr::from((
        Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8),
        4433,
    ))
}
