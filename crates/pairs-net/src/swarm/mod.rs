//! Swarms: join a topic, get an authenticated connection to every peer in it.
//!
//! ```no_run
//! # async fn demo(endpoint: pairs_net::Endpoint) -> Result<(), Box<dyn std::error::Error>> {
//! use pairs_base::Topic;
//! use pairs_net::swarm::{Swarm, SwarmConfig, TopicEvent, SWARM_ALPN};
//! use pairs_net::Router;
//!
//! let swarm = Swarm::new(endpoint.clone(), SwarmConfig::default())?;
//! let _router = Router::builder(endpoint).accept(SWARM_ALPN, swarm.handler()).spawn();
//! let mut topic = swarm.join(Topic::from_name("chat")).await?;
//! while let Some(event) = topic.next().await {
//!     if let TopicEvent::Joined(mut peer) = event {
//!         let _stream = peer.stream().await?; // one duplex stream per peer, like airswarm
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The parts:
//! - [`planner`] (sans-IO) decides whom to dial, which duplicate connection to drop, when to retry;
//! - [`membership`] (sans-IO) settles which topics two connected peers share without revealing the
//!   others;
//! - [`traversal`] (sans-IO) picks connected peers as NAT helpers and asks them to introduce us to
//!   members we cannot dial (a hole punch, or a relay circuit);
//! - this module is the driver: one task owning that state, fed by discovery, dials, connections
//!   and the control streams.

pub mod membership;
mod peer;
pub mod pex;
pub mod planner;
pub mod traversal;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pairs_base::{NodeAddr, NodeId, Topic};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, trace};

use self::membership::{Change, Frame, MAX_FRAME, MembershipError, RemoteMembership, Tag};
pub use self::peer::{TopicEvent, TopicPeer};
use self::pex::Pex;
use self::planner::{Action, CloseReason, ConnId, Planner, PlannerConfig};
use self::traversal::{Heard, LARGER_ID_WAITS, Traversal, TraversalConfig};
use crate::connection::{Connection, ConnectionError};
use crate::discovery::Discovered;
use crate::discovery::dht::{DhtConfig, DhtDiscovery};
use crate::discovery::mdns::{Mdns, MdnsError};
use crate::endpoint::{ConnectError, Endpoint};
use crate::nat::{self, Nat, Registration};
use crate::router::ProtocolHandler;
use crate::stream::BiStream;

/// The protocol (ALPN) swarm connections speak.
pub const SWARM_ALPN: &[u8] = b"pairs/swarm/1";

/// First byte of the control stream (unidirectional, one per side).
const CONTROL_STREAM: u8 = 0;

/// Close code for a peer that broke the membership protocol.
const PROTOCOL_VIOLATION: u32 = 20;

/// How long a peer has to send its hello and to name a stream's topic.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Streams a topic peer may have waiting to be accepted; more are refused.
const INCOMING_STREAMS: usize = 16;
/// A connection replaced by its duplicate closes once no bytes moved on it for this long...
const QUIET: Duration = Duration::from_secs(1);
/// ...or after this long in any case.
const DUPLICATE_GRACE: Duration = Duration::from_secs(60);

/// Closes `connection` once nothing moved on it for [`QUIET`] (at most [`DUPLICATE_GRACE`] after the
/// call), so that streams under way on a replaced connection finish.
async fn close_when_quiet(connection: Connection, reason: CloseReason) {
    let traffic = |c: &Connection| {
        let stats = c.quinn().stats();
        (stats.udp_rx.bytes, stats.udp_tx.bytes)
    };
    let deadline = tokio::time::Instant::now() + DUPLICATE_GRACE;
    let mut last = traffic(&connection);
    loop {
        tokio::time::sleep(QUIET).await;
        let now = traffic(&connection);
        if now == last || tokio::time::Instant::now() >= deadline {
            break;
        }
        last = now;
    }
    connection.close(reason.code(), reason.text());
}

/// Settings for [`Swarm::new`].
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Advertise and browse on the LAN with mDNS. Off in isolated runs (tests, benchmarks).
    pub mdns: bool,
    /// Dialing, retry and connection-cap tuning.
    pub planner: PlannerConfig,
    /// Announce and look up topics on the Mainline DHT, and publish our address record. `None`: no
    /// DHT (LAN-only, isolated runs).
    pub dht: Option<DhtConfig>,
    /// The node's NAT traversal service: with it, the swarm registers with a few connected peers
    /// as helpers and reaches members it cannot dial through them. Serve [`nat::wire::ALPN`] with
    /// [`Nat::handler`] on the router too, so that this node helps others in turn.
    pub nat: Option<Nat>,
    /// Limits on helpers and introductions.
    pub traversal: TraversalConfig,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        Self {
            mdns: true,
            planner: PlannerConfig::default(),
            dht: Some(DhtConfig::default()),
            nat: None,
            traversal: TraversalConfig::default(),
        }
    }
}

/// Why a swarm operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    /// LAN discovery could not start.
    #[error(transparent)]
    Mdns(#[from] MdnsError),
    /// The DHT node could not start (its UDP socket).
    #[error("cannot start the DHT: {0}")]
    Dht(std::io::Error),
    /// The topic is already joined through another handle.
    #[error("topic already joined")]
    AlreadyJoined,
    /// The swarm has shut down.
    #[error("swarm has shut down")]
    Closed,
}

/// Finds peers, connects to those who share a topic, and hands the connections to the topics'
/// handles. Cheap to clone; stops when the last clone and the last topic handle are dropped.
#[derive(Debug, Clone)]
pub struct Swarm {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node_id: NodeId,
    commands: mpsc::UnboundedSender<Command>,
    /// Held for its lifetime: dropping it says goodbye on the LAN.
    _mdns: Option<Mdns>,
    dht: Option<Arc<DhtDiscovery>>,
}

impl Swarm {
    /// Starts a swarm on `endpoint`. Incoming swarm connections arrive through
    /// [`Swarm::handler`], which must be registered for [`SWARM_ALPN`] on the endpoint's router.
    pub fn new(endpoint: Endpoint, config: SwarmConfig) -> Result<Self, SwarmError> {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (discovered_tx, discovered_rx) = mpsc::unbounded_channel();
        let mdns = if config.mdns {
            Some(Mdns::start(
                endpoint.node_id(),
                endpoint.local_addr().port(),
                discovered_tx.clone(),
            )?)
        } else {
            None
        };
        let dht = match config.dht {
            Some(dht) => Some(Arc::new(
                DhtDiscovery::start(dht, &endpoint, endpoint.secret(), discovered_tx)
                    .map_err(SwarmError::Dht)?,
            )),
            None => None,
        };
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let actor = Actor {
            me: endpoint.node_id(),
            planner: Planner::new(endpoint.node_id(), config.planner),
            endpoint: endpoint.clone(),
            topics: HashMap::new(),
            conns: HashMap::new(),
            next_conn: 0,
            events_tx,
            dht: dht.clone(),
            nat: config.nat,
            traversal: Traversal::new(endpoint.node_id(), config.traversal),
            helpers: HashMap::new(),
        };
        tokio::spawn(actor.run(command_rx, events_rx, discovered_rx));
        Ok(Self {
            inner: Arc::new(Inner {
                node_id: endpoint.node_id(),
                commands,
                _mdns: mdns,
                dht,
            }),
        })
    }

    /// The DHT source, if the swarm runs one: resolve node ids, read its status.
    pub fn dht(&self) -> Option<&DhtDiscovery> {
        self.inner.dht.as_deref()
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The protocol handler for [`SWARM_ALPN`]. It does not keep the swarm alive.
    pub fn handler(&self) -> SwarmHandler {
        SwarmHandler {
            commands: self.inner.commands.downgrade(),
        }
    }

    /// Joins `topic`: every peer found that proves it knows the topic too is reported as
    /// [`TopicEvent::Joined`]. Dropping the handle leaves the topic.
    pub async fn join(&self, topic: Topic) -> Result<TopicHandle, SwarmError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Join { topic, reply })?;
        let events = rx.await.map_err(|_| SwarmError::Closed)??;
        Ok(TopicHandle {
            topic,
            events,
            commands: self.inner.commands.clone(),
        })
    }

    /// Adds an address to try without knowing whose it is (a static `host:port` peer, a DNS
    /// seed); the handshake tells.
    pub fn add_addr(&self, addr: SocketAddr) -> Result<(), SwarmError> {
        self.send(Command::Discovered(Discovered::Address(addr)))
    }

    /// Adds a peer to try, e.g. from a ticket, a config file or another discovery source.
    pub fn add_peer(&self, addr: NodeAddr) -> Result<(), SwarmError> {
        self.send(Command::Discovered(Discovered::Found(addr)))
    }

    /// The addresses the swarm knows for `node` from any source (LAN, peer exchange, static peers,
    /// a connection with it), newest first; empty if none.
    pub async fn addrs_of(&self, node: NodeId) -> Result<Vec<SocketAddr>, SwarmError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::AddrsOf(node, reply))?;
        rx.await.map_err(|_| SwarmError::Closed)
    }

    /// Live connections and joined topics, as the swarm task sees them now.
    pub async fn stats(&self) -> Result<SwarmStats, SwarmError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Stats(reply))?;
        rx.await.map_err(|_| SwarmError::Closed)
    }

    fn send(&self, command: Command) -> Result<(), SwarmError> {
        self.inner
            .commands
            .send(command)
            .map_err(|_| SwarmError::Closed)
    }
}

/// Membership in one topic. Yields [`TopicEvent`]s; leaves the topic when dropped.
#[derive(Debug)]
pub struct TopicHandle {
    topic: Topic,
    events: mpsc::UnboundedReceiver<TopicEvent>,
    commands: mpsc::UnboundedSender<Command>,
}

impl TopicHandle {
    /// The next peer joining or leaving. `None` once the swarm shut down.
    pub async fn next(&mut self) -> Option<TopicEvent> {
        self.events.recv().await
    }

    /// The topic.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Leaves the topic (the same as dropping the handle).
    pub fn leave(self) {}
}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Leave(self.topic));
    }
}

/// Hands incoming [`SWARM_ALPN`] connections to the swarm; see [`Swarm::handler`].
#[derive(Debug, Clone)]
pub struct SwarmHandler {
    commands: mpsc::WeakUnboundedSender<Command>,
}

impl ProtocolHandler for SwarmHandler {
    fn accept(
        &self,
        connection: Connection,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>> {
        let commands = self.commands.upgrade();
        Box::pin(async move {
            match commands {
                Some(tx) => {
                    if let Err(mpsc::error::SendError(Command::Incoming(c))) =
                        tx.send(Command::Incoming(connection))
                    {
                        c.close(1, b"swarm closed");
                    }
                }
                None => connection.close(1, b"swarm closed"),
            }
        })
    }
}

#[derive(Debug)]
enum Command {
    Join {
        topic: Topic,
        reply: oneshot::Sender<Result<mpsc::UnboundedReceiver<TopicEvent>, SwarmError>>,
    },
    Leave(Topic),
    Discovered(Discovered),
    Incoming(Connection),
    Stats(oneshot::Sender<SwarmStats>),
    AddrsOf(NodeId, oneshot::Sender<Vec<SocketAddr>>),
}

/// A snapshot of a swarm, from [`Swarm::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmStats {
    /// Live connections (including ones whose membership is not settled yet).
    pub connections: usize,
    /// Peers connected, one per connection once duplicates are resolved.
    pub peers: Vec<NodeId>,
    /// Topics joined.
    pub topics: usize,
    /// Peers we are registered with as NAT helpers, and the address each sees us at.
    pub helpers: Vec<(NodeId, SocketAddr)>,
}

/// What the connection tasks report back to the swarm task.
#[derive(Debug)]
enum Event {
    Dialed(NodeId, Result<Connection, ConnectError>),
    /// Registering with a connected peer as our NAT helper ended.
    Registered(NodeId, Result<Registration, nat::ConnectError>),
    /// The connection behind a registration closed (the registration's id says which).
    HelperGone(NodeId, usize),
    /// An introduction through a helper ended: the member (with any addresses to fall back on).
    Introduced(NodeAddr, Result<(Connection, nat::Path), nat::ConnectError>),
    /// The larger id's wait for a member to reach it is over.
    IntroduceIfAlone(NodeId),
    DialedAddr(SocketAddr, Result<Connection, ConnectError>),
    Frame(ConnId, Result<Frame, String>),
    Stream(ConnId, Tag, BiStream),
    Closed(ConnId, ConnectionError),
}

struct TopicState {
    events: mpsc::UnboundedSender<TopicEvent>,
}

struct ConnState {
    connection: Connection,
    node: NodeId,
    we_dialed: bool,
    binding: [u8; 32],
    remote: RemoteMembership,
    control: mpsc::UnboundedSender<Frame>,
    /// Topics reported to their handles as shared with this peer, with the way in for its streams.
    joined: HashMap<Topic, mpsc::Sender<BiStream>>,
    settled: bool,
    /// Why we closed it, if we did.
    closing: Option<CloseReason>,
    pex: Pex,
    /// Streams whose topic the peer has not proven yet: its hello or join travels on the control
    /// stream and may arrive after a stream it opened right after. Held (at most
    /// [`INCOMING_STREAMS`], for [`HANDSHAKE_TIMEOUT`]) until it does.
    parked: Vec<(Tag, BiStream, Instant)>,
    /// A replaced connection's topics, no longer reported as joined, whose streams still reach the
    /// sessions that were using it until it closes.
    draining: HashMap<Topic, mpsc::Sender<BiStream>>,
}

struct Actor {
    me: NodeId,
    endpoint: Endpoint,
    planner: Planner,
    topics: HashMap<Topic, TopicState>,
    conns: HashMap<ConnId, ConnState>,
    next_conn: ConnId,
    events_tx: mpsc::UnboundedSender<Event>,
    dht: Option<Arc<DhtDiscovery>>,
    nat: Option<Nat>,
    traversal: Traversal,
    /// Our registrations with connected peers, as NAT helpers.
    helpers: HashMap<NodeId, Arc<Registration>>,
}

impl Actor {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::UnboundedReceiver<Event>,
        mut discovered: mpsc::UnboundedReceiver<Discovered>,
    ) {
        let mut pex_tick = tokio::time::interval(pex::INTERVAL);
        loop {
            let wake = self.planner.next_dial_at();
            let timer = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some(event) = events.recv() => self.on_event(event),
                Some(found) = discovered.recv() => self.on_discovered(found),
                _ = pex_tick.tick() => self.exchange_all(),
                () = timer => {}
            }
            self.dial_due();
        }
        for state in self.conns.values() {
            state.connection.close(0, b"swarm closed");
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Join { topic, reply } => {
                let _ = reply.send(self.join(topic));
            }
            Command::Leave(topic) => self.leave(topic),
            Command::Discovered(found) => self.on_discovered(found),
            Command::Incoming(connection) => self.add_connection(connection, false),
            Command::AddrsOf(node, reply) => {
                let mut addrs: Vec<SocketAddr> = self
                    .conns
                    .values()
                    .filter(|c| c.node == node && c.closing.is_none())
                    .map(|c| c.connection.remote_addr())
                    .collect();
                for addr in self.planner.addrs_of(&node) {
                    if !addrs.contains(&addr) {
                        addrs.push(addr);
                    }
                }
                let _ = reply.send(addrs);
            }
            Command::Stats(reply) => {
                // Connections on their way out (a replaced one's grace period) no longer count.
                let live = || self.conns.values().filter(|c| c.closing.is_none());
                let mut peers: Vec<NodeId> = live().map(|c| c.node).collect();
                peers.sort();
                let mut helpers: Vec<(NodeId, SocketAddr)> = self
                    .helpers
                    .iter()
                    .map(|(node, registration)| (*node, registration.observed()))
                    .collect();
                helpers.sort();
                let _ = reply.send(SwarmStats {
                    connections: live().count(),
                    peers,
                    topics: self.topics.len(),
                    helpers,
                });
            }
        }
    }

    fn on_discovered(&mut self, found: Discovered) {
        match found {
            Discovered::Found(addr) => {
                trace!(peer = %addr.node_id.short(), addrs = ?addr.addrs, "discovered");
                self.planner.discovered(&addr, Instant::now());
            }
            Discovered::Lost(node) => self.planner.lost(&node),
            Discovered::Address(addr) => {
                let addr = crate::socket::canonical(addr);
                // Already connected there (the address is that peer's): nothing to learn.
                if self
                    .conns
                    .values()
                    .any(|c| c.connection.remote_addr() == addr)
                {
                    return;
                }
                trace!(%addr, "discovered an address");
                self.planner.discovered_addr(addr, Instant::now());
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Dialed(node, Ok(connection)) => {
                debug_assert_eq!(connection.remote_node_id(), node);
                self.add_connection(connection, true);
            }
            Event::Dialed(node, Err(err)) => {
                debug!(peer = %node.short(), %err, "dial failed");
                self.planner.dial_failed(&node, Instant::now());
                self.maybe_introduce(node);
            }
            Event::Registered(helper, result) => self.on_registered(helper, result),
            Event::HelperGone(helper, registration) => {
                let same = self
                    .helpers
                    .get(&helper)
                    .is_some_and(|r| registration_id(r) == registration);
                if same {
                    debug!(helper = %helper.short(), "helper registration ended");
                    self.helpers.remove(&helper);
                    self.traversal.helper_gone(&helper);
                }
            }
            Event::Introduced(member, result) => self.on_introduced(member, result),
            Event::IntroduceIfAlone(member) => self.maybe_introduce(member),
            Event::DialedAddr(addr, Ok(connection)) => {
                let node = connection.remote_node_id();
                debug!(%addr, peer = %node.short(), "reached an address found without an id");
                self.planner.addr_reached(addr, node, Instant::now());
                self.add_connection(connection, true);
            }
            Event::DialedAddr(addr, Err(err)) => {
                debug!(%addr, %err, "dial of an address failed");
                let ours = matches!(err, ConnectError::SelfDial(_));
                self.planner.addr_failed(addr, ours, Instant::now());
            }
            Event::Frame(id, Ok(frame)) => self.on_frame(id, frame),
            Event::Frame(id, Err(reason)) => {
                if let Some(state) = self.conns.get(&id) {
                    debug!(peer = %state.node.short(), %reason, "control stream refused");
                    state
                        .connection
                        .close(PROTOCOL_VIOLATION, reason.as_bytes());
                }
            }
            Event::Stream(id, tag, stream) => self.on_stream(id, tag, stream),
            Event::Closed(id, err) => self.on_closed(id, err),
        }
    }

    fn dial_due(&mut self) {
        for action in self.planner.poll_dials(Instant::now()) {
            let endpoint = self.endpoint.clone();
            let events = self.events_tx.clone();
            match action {
                Action::Dial(addr) => {
                    tokio::spawn(async move {
                        let result = endpoint.connect(&addr, SWARM_ALPN).await;
                        let _ = events.send(Event::Dialed(addr.node_id, result));
                    });
                }
                Action::DialAddr(addr) => {
                    tokio::spawn(async move {
                        let result = endpoint.connect_unknown(addr, SWARM_ALPN).await;
                        let _ = events.send(Event::DialedAddr(addr, result));
                    });
                }
                Action::Close(..) => {}
            }
        }
    }

    fn join(&mut self, topic: Topic) -> Result<mpsc::UnboundedReceiver<TopicEvent>, SwarmError> {
        if self.topics.contains_key(&topic) {
            return Err(SwarmError::AlreadyJoined);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.topics.insert(topic, TopicState { events: tx });
        if let Some(dht) = &self.dht {
            dht.join(&topic.discovery_key());
        }
        self.planner.topics_changed(self.topics.len());
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let state = &self.conns[&id];
            let _ = state.control.send(Frame::Join(membership::tag(
                &topic,
                &state.binding,
                &self.me,
            )));
            if state.remote.proves(&topic) {
                self.report_joined(id, topic);
            }
        }
        Ok(rx)
    }

    fn leave(&mut self, topic: Topic) {
        if self.topics.remove(&topic).is_none() {
            return;
        }
        if let Some(dht) = &self.dht {
            dht.leave(&topic.discovery_key());
        }
        self.planner.topics_changed(self.topics.len());
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let Some(state) = self.conns.get_mut(&id) else {
                continue;
            };
            let our_tag = membership::tag(&topic, &state.binding, &self.me);
            let _ = state.control.send(Frame::Leave(our_tag));
            state.pex.forget(&our_tag);
            state.joined.remove(&topic);
            self.settle(id);
        }
    }

    fn add_connection(&mut self, connection: Connection, we_dialed: bool) {
        let id = self.next_conn;
        self.next_conn += 1;
        let node = connection.remote_node_id();
        let planned = self.planner.connected(id, node, we_dialed, Instant::now());
        if let Some(Action::Close(close_id, reason)) = planned {
            if close_id == id {
                debug!(peer = %node.short(), reason = ?reason, "dropping new connection");
                connection.close(reason.code(), reason.text());
                return;
            }
            self.close(close_id, reason);
        }
        debug!(peer = %node.short(), we_dialed, "connected");
        self.maybe_register(node, connection.remote_addr(), we_dialed);
        let binding = connection.channel_binding(membership::BINDING_LABEL);
        let (control, control_rx) = mpsc::unbounded_channel();
        let hello = Frame::Hello {
            version: membership::VERSION,
            tags: self
                .topics
                .keys()
                .map(|t| membership::tag(t, &binding, &self.me))
                .collect(),
        };
        let _ = control.send(hello);
        tokio::spawn(write_control(connection.clone(), control_rx));
        tokio::spawn(read_control(id, connection.clone(), self.events_tx.clone()));
        tokio::spawn(accept_streams(
            id,
            connection.clone(),
            self.events_tx.clone(),
        ));
        let events = self.events_tx.clone();
        let watched = connection.clone();
        tokio::spawn(async move {
            let err = watched.closed().await;
            let _ = events.send(Event::Closed(id, err));
        });
        self.conns.insert(
            id,
            ConnState {
                connection,
                node,
                we_dialed,
                binding,
                remote: RemoteMembership::new(binding, node),
                control,
                joined: HashMap::new(),
                settled: false,
                closing: None,
                pex: Pex::default(),
                parked: Vec::new(),
                draining: HashMap::new(),
            },
        );
    }

    fn on_frame(&mut self, id: ConnId, frame: Frame) {
        let Some(state) = self.conns.get_mut(&id) else {
            return;
        };
        if state.closing.is_some() {
            // A replaced connection in its grace period carries the streams it had, nothing more.
            return;
        }
        if let Frame::Peers { tag, peers } = frame {
            if state.remote.has_hello() {
                self.on_peers(id, tag, peers);
            } else {
                let err = MembershipError::OutOfOrder; // nothing but a hello comes first
                state
                    .connection
                    .close(PROTOCOL_VIOLATION, err.to_string().as_bytes());
            }
            return;
        }
        let changes = match state.remote.on_frame(frame) {
            Ok(changes) => changes,
            Err(err) => {
                debug!(peer = %state.node.short(), %err, "membership protocol violation");
                state
                    .connection
                    .close(PROTOCOL_VIOLATION, err.to_string().as_bytes());
                return;
            }
        };
        for change in changes {
            match change {
                Change::Joined(tag) => {
                    if let Some(topic) = self.topic_for_remote_tag(id, &tag) {
                        self.report_joined(id, topic);
                    }
                }
                Change::Left(tag) => {
                    if let Some(topic) = self.topic_for_remote_tag(id, &tag) {
                        self.report_left(id, topic);
                    }
                }
            }
        }
        if let Some(state) = self.conns.get_mut(&id) {
            state.settled = true;
        }
        self.settle(id);
    }

    /// Tells the planner whether connection `id` still shares a topic; closes it if not.
    fn settle(&mut self, id: ConnId) {
        let Some(state) = self.conns.get(&id) else {
            return;
        };
        if !state.settled || state.closing.is_some() {
            return;
        }
        let shared = !state.joined.is_empty();
        let node = state.node;
        if let Some(Action::Close(close_id, reason)) = self.planner.settled(id, &node, shared) {
            self.close(close_id, reason);
        }
    }

    /// A peer's list of further members of a topic: dial those we are not connected to.
    fn on_peers(&mut self, id: ConnId, their_tag: Tag, peers: Vec<NodeAddr>) {
        // Only about a topic we are in and the peer proved; anything else tells us nothing.
        let known = self
            .conns
            .get(&id)
            .is_some_and(|s| s.remote.holds(&their_tag));
        if !known || self.topic_for_remote_tag(id, &their_tag).is_none() {
            return;
        }
        let now = Instant::now();
        let Some(state) = self.conns.get_mut(&id) else {
            return;
        };
        let node = state.node;
        match state.pex.received(their_tag, &self.me, &node, peers, now) {
            Err(err) => {
                debug!(peer = %node.short(), %err, "peer exchange violation");
                state
                    .connection
                    .close(PROTOCOL_VIOLATION, err.to_string().as_bytes());
            }
            Ok(useful) => {
                for peer in useful {
                    // Only news: a peer known from another source is dialed (or not) on that
                    // source's terms, so hearsay never adds a second, racing dial.
                    // The relay tells both sides about each other; `traversal` has only the
                    // smaller id act at once, so the two do not race.
                    if self.planner.knows(&peer.node_id)
                        || self.conns.values().any(|c| c.node == peer.node_id)
                        || self.traversal.is_in_flight(&peer.node_id)
                    {
                        continue;
                    }
                    trace!(from = %node.short(), peer = %peer.node_id.short(), "learned a peer");
                    // Its address is likely a NAT's, which only lets us in after a punch: the
                    // peer that told us is connected to it and can arrange one. The punch dials
                    // that same address first, so a member that is reachable loses nothing.
                    match self.traversal.heard_of(peer.node_id, node) {
                        Heard::Introduce(helper) => self.introduce(peer, helper),
                        Heard::AskLater => {
                            let events = self.events_tx.clone();
                            let member = peer.node_id;
                            tokio::spawn(async move {
                                tokio::time::sleep(LARGER_ID_WAITS).await;
                                let _ = events.send(Event::IntroduceIfAlone(member));
                            });
                        }
                        Heard::Dial => self.planner.discovered(&peer, now),
                        Heard::Leave => {}
                    }
                }
            }
        }
    }

    /// Sends every connection, for every topic it shares, the members it has not heard of.
    fn exchange_all(&mut self) {
        let shared: Vec<(ConnId, Topic)> = self
            .conns
            .iter()
            .flat_map(|(id, s)| s.joined.keys().map(move |t| (*id, *t)))
            .collect();
        for (id, topic) in shared {
            self.exchange(id, topic);
        }
    }

    /// Tells the peer on connection `id` about the other members of `topic` we are connected to,
    /// if a list is due (see [`pex`]).
    fn exchange(&mut self, id: ConnId, topic: Topic) {
        let mut members: Vec<NodeAddr> = Vec::new();
        for (other, s) in &self.conns {
            if *other == id || s.closing.is_some() || !s.joined.contains_key(&topic) {
                continue;
            }
            if members.iter().all(|m| m.node_id != s.node) {
                let addr = crate::socket::canonical(s.connection.remote_addr());
                members.push(NodeAddr::new(s.node, [addr]));
            }
        }
        let me = self.me;
        let Some(state) = self.conns.get_mut(&id) else {
            return;
        };
        let our_tag = membership::tag(&topic, &state.binding, &me);
        if let Some(peers) = state
            .pex
            .to_send(our_tag, &state.node, members, Instant::now())
        {
            let _ = state.control.send(Frame::Peers {
                tag: our_tag,
                peers,
            });
        }
    }

    fn topic_for_remote_tag(&self, id: ConnId, tag: &Tag) -> Option<Topic> {
        let state = self.conns.get(&id)?;
        self.topics
            .keys()
            .find(|t| &state.remote.expected_tag(t) == tag)
            .copied()
    }

    fn report_joined(&mut self, id: ConnId, topic: Topic) {
        let Some(state) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(topic_state) = self.topics.get(&topic) else {
            return;
        };
        if state.joined.contains_key(&topic) || state.closing.is_some() {
            return;
        }
        let (tx, rx) = mpsc::channel(INCOMING_STREAMS);
        // Streams the peer opened under this topic before its proof arrived go in first.
        let theirs = state.remote.expected_tag(&topic);
        let parked = std::mem::take(&mut state.parked);
        for (tag, stream, at) in parked {
            if tag == theirs {
                if let Err(err) = tx.try_send(stream) {
                    let (mpsc::error::TrySendError::Full(s) | mpsc::error::TrySendError::Closed(s)) =
                        err;
                    refuse_stream(s, b"too many streams waiting");
                }
            } else {
                state.parked.push((tag, stream, at));
            }
        }
        state.joined.insert(topic, tx);
        debug!(peer = %state.node.short(), ?topic, "peer joined topic");
        let _ = topic_state.events.send(TopicEvent::Joined(TopicPeer {
            connection: state.connection.clone(),
            our_tag: membership::tag(&topic, &state.binding, &self.me),
            initiator: state.we_dialed,
            incoming: rx,
        }));
        // A newcomer hears about the other members at once, and they about it (within their
        // rate limits).
        self.exchange(id, topic);
        let others: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(other, c)| **other != id && c.joined.contains_key(&topic))
            .map(|(other, _)| *other)
            .collect();
        for other in others {
            self.exchange(other, topic);
        }
    }

    fn report_left(&mut self, id: ConnId, topic: Topic) {
        let Some(state) = self.conns.get_mut(&id) else {
            return;
        };
        state
            .pex
            .forget(&membership::tag(&topic, &state.binding, &self.me));
        if state.joined.remove(&topic).is_some()
            && let Some(topic_state) = self.topics.get(&topic)
        {
            let _ = topic_state.events.send(TopicEvent::Left(state.node));
        }
    }

    fn on_stream(&mut self, id: ConnId, tag: Tag, stream: BiStream) {
        let topic = self.topic_for_remote_tag(id, &tag);
        let Some(state) = self.conns.get_mut(&id) else {
            return;
        };
        let sender = topic.and_then(|t| state.joined.get(&t).or_else(|| state.draining.get(&t)));
        if sender.is_none() && state.closing.is_none() {
            // Maybe the proof of its topic is still on its way: wait for it, within bounds.
            let now = Instant::now();
            let expired: Vec<usize> = (0..state.parked.len())
                .filter(|&i| now.duration_since(state.parked[i].2) >= HANDSHAKE_TIMEOUT)
                .collect();
            for i in expired.into_iter().rev() {
                let (_, stale, _) = state.parked.remove(i);
                refuse_stream(stale, b"no such topic");
            }
            if state.parked.len() < INCOMING_STREAMS {
                state.parked.push((tag, stream, now));
            } else {
                refuse_stream(stream, b"too many streams waiting");
            }
            return;
        }
        match sender {
            Some(sender) => {
                if let Err(err) = sender.try_send(stream) {
                    let stream = match err {
                        mpsc::error::TrySendError::Full(s)
                        | mpsc::error::TrySendError::Closed(s) => s,
                    };
                    refuse_stream(stream, b"too many streams waiting");
                }
            }
            None => refuse_stream(stream, b"no such topic"),
        }
    }

    /// Closes connection `id` and reports its peer gone from every topic right away, so that a
    /// replacement connection's `Joined` always comes after this one's `Left`.
    fn close(&mut self, id: ConnId, reason: CloseReason) {
        if let Some(state) = self.conns.get_mut(&id) {
            state.closing = Some(reason);
            if reason == CloseReason::Duplicate && !state.joined.is_empty() {
                // The application may have data in flight on streams of this connection (written
                // before either side knew of the other connection, or a transfer under way): the
                // topics hear `Left` now, the connection closes once it has gone quiet.
                tokio::spawn(close_when_quiet(state.connection.clone(), reason));
            } else {
                state.connection.close(reason.code(), reason.text());
            }
            let graceful = reason == CloseReason::Duplicate;
            for (topic, incoming) in state.joined.drain() {
                if let Some(topic_state) = self.topics.get(&topic) {
                    let _ = topic_state.events.send(TopicEvent::Left(state.node));
                }
                if graceful {
                    state.draining.insert(topic, incoming);
                }
            }
        }
    }

    fn on_closed(&mut self, id: ConnId, err: ConnectionError) {
        let Some(state) = self.conns.remove(&id) else {
            return;
        };
        let reason = state.closing.or_else(|| match &err {
            ConnectionError::ApplicationClosed(close) => {
                CloseReason::from_code(close.error_code.into_inner())
            }
            _ => None,
        });
        debug!(peer = %state.node.short(), %err, "connection closed");
        for topic in state.joined.keys() {
            if let Some(topic_state) = self.topics.get(topic) {
                let _ = topic_state.events.send(TopicEvent::Left(state.node));
            }
        }
        self.planner.closed(id, &state.node, reason, Instant::now());
        if !self.conns.values().any(|c| c.node == state.node)
            && self.helpers.remove(&state.node).is_some()
        {
            self.traversal.helper_gone(&state.node);
        }
    }

    /// Registers with a newly connected peer as a NAT helper, if traversal is on and it may help.
    fn maybe_register(&mut self, node: NodeId, addr: SocketAddr, we_dialed: bool) {
        let Some(nat) = self.nat.clone() else {
            return;
        };
        if !self.traversal.connected(node, addr, we_dialed) {
            return;
        }
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let result = nat.register(&NodeAddr::new(node, [addr])).await;
            let _ = events.send(Event::Registered(node, result));
        });
    }

    fn on_registered(&mut self, helper: NodeId, result: Result<Registration, nat::ConnectError>) {
        let registration = match result {
            Ok(registration) => registration,
            Err(err) => {
                debug!(helper = %helper.short(), %err, "cannot register with the peer");
                self.traversal.registered(helper, false);
                return;
            }
        };
        if !self.conns.values().any(|c| c.node == helper) {
            // The peer left while we registered.
            self.traversal.registered(helper, false);
            return;
        }
        debug!(helper = %helper.short(), observed = %registration.observed(), "registered with a peer");
        let told = self.traversal.registered(helper, true);
        let registration = Arc::new(registration);
        let id = registration_id(&registration);
        let watched = registration.connection().clone();
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            watched.closed().await;
            let _ = events.send(Event::HelperGone(helper, id));
        });
        self.helpers.insert(helper, registration);
        // Members it told us of while we registered, and that no dial has reached yet.
        for member in told {
            self.maybe_introduce(member);
        }
    }

    /// Asks for an introduction to `member` if it is not connected and a helper told us of it.
    fn maybe_introduce(&mut self, member: NodeId) {
        if self.conns.values().any(|c| c.node == member) {
            return;
        }
        if let Some(helper) = self.traversal.want_introduction(member) {
            self.introduce(NodeAddr::new(member, []), helper);
        }
    }

    /// Asks `helper` to introduce us to `member` (a hole punch, or a relay circuit at the helper).
    fn introduce(&mut self, member: NodeAddr, helper: NodeId) {
        let (Some(nat), Some(registration)) =
            (self.nat.clone(), self.helpers.get(&helper).cloned())
        else {
            self.traversal.attempt_ended(member.node_id, false);
            return;
        };
        debug!(peer = %member.node_id.short(), helper = %helper.short(), "asking for an introduction");
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let result = nat
                .connect_through(member.node_id, SWARM_ALPN, &registration)
                .await;
            let _ = events.send(Event::Introduced(member, result));
        });
    }

    fn on_introduced(
        &mut self,
        member: NodeAddr,
        result: Result<(Connection, nat::Path), nat::ConnectError>,
    ) {
        let node = member.node_id;
        match result {
            Ok((connection, path)) => {
                self.traversal.attempt_ended(node, true);
                debug!(peer = %node.short(), ?path, "reached through a helper");
                self.add_connection(connection, true);
            }
            Err(err) => {
                self.traversal.attempt_ended(node, false);
                debug!(peer = %node.short(), %err, "introduction failed");
                // Left to direct dials, with their back-off (a failure may ask again).
                if !member.addrs.is_empty() && !self.planner.knows(&node) {
                    self.planner.discovered(&member, Instant::now());
                }
            }
        }
    }
}

/// Tells one registration's connection from a later one to the same helper.
fn registration_id(registration: &Registration) -> usize {
    registration.connection().quinn().stable_id()
}

fn refuse_stream(stream: BiStream, why: &[u8]) {
    trace!(reason = %String::from_utf8_lossy(why), "refusing stream");
    let (mut send, mut recv) = stream.split();
    let _ = send.reset(1u32.into());
    let _ = recv.stop(1u32.into());
}

async fn write_control(connection: Connection, mut frames: mpsc::UnboundedReceiver<Frame>) {
    let Ok(mut send) = connection.open_uni().await else {
        return;
    };
    if send.write_all(&[CONTROL_STREAM]).await.is_err() {
        return;
    }
    while let Some(frame) = frames.recv().await {
        if send.write_all(&frame.encode()).await.is_err() {
            return;
        }
    }
}

async fn read_control(id: ConnId, connection: Connection, events: mpsc::UnboundedSender<Event>) {
    let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, connection.accept_uni()).await;
    let mut recv = match result {
        Err(_) => {
            let _ = events.send(Event::Frame(id, Err("no control stream in time".into())));
            return;
        }
        Ok(Err(_)) => return,
        Ok(Ok(recv)) => recv,
    };
    let mut kind = [0u8; 1];
    if recv.read_exact(&mut kind).await.is_err() || kind[0] != CONTROL_STREAM {
        let _ = events.send(Event::Frame(id, Err("bad control stream".into())));
        return;
    }
    let mut body = Vec::new();
    loop {
        let mut len = [0u8; 2];
        if recv.read_exact(&mut len).await.is_err() {
            // The peer closed its control stream or the connection ended.
            return;
        }
        let len = usize::from(u16::from_be_bytes(len));
        if len > MAX_FRAME {
            let err = MembershipError::TooLarge(len);
            let _ = events.send(Event::Frame(id, Err(err.to_string())));
            return;
        }
        body.resize(len, 0);
        if recv.read_exact(&mut body).await.is_err() {
            return;
        }
        let frame = Frame::decode(&body).map_err(|e| e.to_string());
        let failed = frame.is_err();
        if events.send(Event::Frame(id, frame)).is_err() || failed {
            return;
        }
    }
}

async fn accept_streams(id: ConnId, connection: Connection, events: mpsc::UnboundedSender<Event>) {
    while let Ok(mut stream) = connection.accept_bi().await {
        let events = events.clone();
        tokio::spawn(async move {
            let mut header = [0u8; 1 + membership::TAG_LEN];
            let read =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut header)).await;
            match read {
                Ok(Ok(_)) if header[0] == peer::TOPIC_STREAM => {
                    let mut tag = [0u8; membership::TAG_LEN];
                    tag.copy_from_slice(&header[1..]);
                    let _ = events.send(Event::Stream(id, tag, stream));
                }
                _ => refuse_stream(stream, b"bad stream header"),
            }
        });
    }
}
