//! Whom to dial and when, which of two connections to one peer to keep, when to retry.
//!
//! Sans-IO: fed discoveries, dial results, connection events and the time; answers with dials and
//! closes. The swarm's driver does the I/O.
//!
//! The rules:
//! - **One connection per peer pair.** When two exist (both sides dialed at once), both sides keep
//!   the one dialed by the smaller node id, so they agree without talking. To make the race rare,
//!   the larger id waits [`PlannerConfig::defer`] before dialing a peer it has just found.
//! - **Only peers worth dialing**: we must be in at least one topic, and the peer must not already
//!   have been found to share none of our current topics.
//! - **Retries back off** exponentially per peer, reset by a connection that found shared topics.
//! - **A cap** on connections, counting dials in flight.
//! - **Addresses without an id** (DHT lookups, seeds) are dialed once each, with their own backoff
//!   and a bound on how many are remembered; a dial that reaches a node turns the address into that
//!   node's, and one that reaches ourselves is never dialed again.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pairs_base::{NodeAddr, NodeId};

/// Identifies one connection inside the swarm.
pub type ConnId = u64;

/// Tuning of the planner.
#[derive(Debug, Clone)]
pub struct PlannerConfig {
    /// Most connections (established plus dialing) this node dials up to.
    pub max_connections: usize,
    /// Connections a peer dials to us that are accepted beyond `max_connections`. Without room
    /// above the cap, a swarm whose members have all reached it refuses every newcomer (each of
    /// its dials is answered "too many connections"), so a node that joins or comes back stays
    /// alone. A node over the cap dials nobody; the room a newcomer takes is given back when some
    /// peer leaves.
    pub incoming_headroom: usize,
    /// How long the larger node id waits before dialing a peer it just found.
    pub defer: Duration,
    /// First retry delay; doubles per failure.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Most addresses remembered per peer.
    pub max_addrs: usize,
    /// Most addresses without a known id waiting to be dialed.
    pub max_unknown_addrs: usize,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            max_connections: 64,
            incoming_headroom: 16,
            // Far above a LAN handshake (the smaller id's dial lands first), far below a human wait.
            defer: Duration::from_millis(100),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            max_addrs: 8,
            max_unknown_addrs: 256,
        }
    }
}

/// Why the planner wants a connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Another connection to the same peer wins.
    Duplicate,
    /// Too many connections.
    Busy,
    /// The peer shares none of our topics.
    NoSharedTopics,
}

impl CloseReason {
    /// Application close code on the wire.
    pub const fn code(self) -> u32 {
        match self {
            Self::Duplicate => 10,
            Self::Busy => 11,
            Self::NoSharedTopics => 12,
        }
    }

    /// Reason text on the wire.
    pub const fn text(self) -> &'static [u8] {
        match self {
            Self::Duplicate => b"duplicate connection",
            Self::Busy => b"too many connections",
            Self::NoSharedTopics => b"no shared topic",
        }
    }

    /// Reads a close code back.
    pub fn from_code(code: u64) -> Option<Self> {
        [Self::Duplicate, Self::Busy, Self::NoSharedTopics]
            .into_iter()
            .find(|r| u64::from(r.code()) == code)
    }
}

/// What the planner asks the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Dial this peer at these addresses.
    Dial(NodeAddr),
    /// Dial whoever is at this address (found without an id).
    DialAddr(SocketAddr),
    /// Close this connection.
    Close(ConnId, CloseReason),
}

#[derive(Debug)]
struct Peer {
    addrs: Vec<SocketAddr>,
    conns: Vec<Conn>,
    dialing: bool,
    failures: u32,
    not_before: Instant,
    /// Topic-set version at which this peer was found to share none of our topics.
    nothing_shared_at: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Conn {
    id: ConnId,
    dialer: NodeId,
    /// Topic-set version when the connection came up (what our hello announced).
    version: u64,
    shared: bool,
}

/// An address found without a node id.
#[derive(Debug)]
struct UnknownAddr {
    dialing: bool,
    failures: u32,
    not_before: Instant,
}

/// The connection planner. See the module docs for its rules.
#[derive(Debug)]
pub struct Planner {
    me: NodeId,
    config: PlannerConfig,
    peers: HashMap<NodeId, Peer>,
    unknown: HashMap<SocketAddr, UnknownAddr>,
    /// Addresses that turned out to be ours.
    own: HashSet<SocketAddr>,
    topics: usize,
    version: u64,
    /// Connections held (every peer's together), kept as they change: the cap is checked after
    /// every event, and counting would walk every peer known.
    open: usize,
    /// Dials in flight (peers and addresses without an id).
    in_flight: usize,
}

impl Planner {
    /// A planner for node `me`.
    pub fn new(me: NodeId, config: PlannerConfig) -> Self {
        Self {
            me,
            config,
            peers: HashMap::new(),
            unknown: HashMap::new(),
            own: HashSet::new(),
            topics: 0,
            version: 0,
            open: 0,
            in_flight: 0,
        }
    }

    /// Our topic set changed; `count` topics now. Peers found to share nothing are worth another try.
    pub fn topics_changed(&mut self, count: usize) {
        self.topics = count;
        self.version += 1;
    }

    /// The current topic-set version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether `node` is known already (found, dialing, connected or backing off).
    pub fn knows(&self, node: &NodeId) -> bool {
        self.peers.contains_key(node)
    }

    /// The addresses known for `node`, newest first.
    pub fn addrs_of(&self, node: &NodeId) -> Vec<SocketAddr> {
        self.peers
            .get(node)
            .map(|peer| peer.addrs.clone())
            .unwrap_or_default()
    }

    /// A discovery source reported `addr`. Addresses merge, newest first, bounded.
    pub fn discovered(&mut self, addr: &NodeAddr, now: Instant) {
        if addr.node_id == self.me || addr.addrs.is_empty() {
            return;
        }
        let defer = if self.me < addr.node_id {
            Duration::ZERO
        } else {
            self.config.defer
        };
        let max = self.config.max_addrs;
        let peer = self.peers.entry(addr.node_id).or_insert_with(|| Peer {
            addrs: Vec::new(),
            conns: Vec::new(),
            dialing: false,
            failures: 0,
            not_before: now + defer,
            nothing_shared_at: None,
        });
        for a in addr.addrs.iter().rev() {
            peer.addrs.retain(|x| x != a);
            peer.addrs.insert(0, *a);
        }
        peer.addrs.truncate(max);
    }

    /// A source found `addr` without saying whose it is. Ignored if it is a known peer's, ours, or
    /// already waiting, and when too many are waiting.
    pub fn discovered_addr(&mut self, addr: SocketAddr, now: Instant) {
        if self.own.contains(&addr)
            || self.unknown.contains_key(&addr)
            || self.unknown.len() >= self.config.max_unknown_addrs
            || self.peers.values().any(|p| p.addrs.contains(&addr))
        {
            return;
        }
        self.unknown.insert(
            addr,
            UnknownAddr {
                dialing: false,
                failures: 0,
                not_before: now,
            },
        );
    }

    /// A dial of an address without an id reached `node` (the connection itself is reported with
    /// [`Planner::connected`]). The address is now that node's.
    pub fn addr_reached(&mut self, addr: SocketAddr, node: NodeId, now: Instant) {
        self.forget_unknown(&addr);
        if node == self.me {
            self.own.insert(addr);
            return;
        }
        self.discovered(&NodeAddr::new(node, [addr]), now);
    }

    /// A dial of an address without an id failed; `ours` if it reached this very node.
    pub fn addr_failed(&mut self, addr: SocketAddr, ours: bool, now: Instant) {
        if ours {
            self.forget_unknown(&addr);
            self.own.insert(addr);
            return;
        }
        if let Some(entry) = self.unknown.get_mut(&addr) {
            if entry.dialing {
                self.in_flight -= 1;
            }
            entry.dialing = false;
            entry.not_before = now + backoff(&self.config, entry.failures);
            entry.failures = entry.failures.saturating_add(1);
        }
    }

    /// The discovery source says `node` is gone: no more dials, connections stay.
    pub fn lost(&mut self, node: &NodeId) {
        if let Some(peer) = self.peers.get_mut(node) {
            peer.addrs.clear();
        }
        self.forget_if_idle(node);
    }

    /// A dial we asked for failed.
    pub fn dial_failed(&mut self, node: &NodeId, now: Instant) {
        let backoff = self.backoff_after_failure(node);
        if let Some(peer) = self.peers.get_mut(node) {
            if peer.dialing {
                self.in_flight -= 1;
            }
            peer.dialing = false;
            peer.not_before = now + backoff;
        }
    }

    /// A connection came up, dialed by us or by the peer. Returns a close if it (or the one it
    /// replaces) must go.
    pub fn connected(
        &mut self,
        id: ConnId,
        node: NodeId,
        we_dialed: bool,
        now: Instant,
    ) -> Option<Action> {
        let dialer = if we_dialed { self.me } else { node };
        let established = self.established();
        let version = self.version;
        let max = self.config.max_connections + self.config.incoming_headroom;
        let preferred = self.me.min(node);
        let peer = self.peers.entry(node).or_insert_with(|| Peer {
            addrs: Vec::new(),
            conns: Vec::new(),
            dialing: false,
            failures: 0,
            not_before: now,
            nothing_shared_at: None,
        });
        if we_dialed && peer.dialing {
            peer.dialing = false;
            self.in_flight -= 1;
        }
        let conn = Conn {
            id,
            dialer,
            version,
            shared: false,
        };
        let Some(existing) = peer.conns.first().copied() else {
            if !we_dialed && established >= max {
                return Some(Action::Close(id, CloseReason::Busy));
            }
            peer.conns.push(conn);
            self.open += 1;
            return None;
        };
        // Two connections: keep the one dialed by the smaller id; between two from the same
        // dialer, the newer (the peer redialed because the old one died on its side).
        let keep_new = existing.dialer != preferred || dialer == preferred;
        if keep_new {
            self.open = self.open + 1 - peer.conns.len();
            peer.conns = vec![conn];
            Some(Action::Close(existing.id, CloseReason::Duplicate))
        } else {
            Some(Action::Close(id, CloseReason::Duplicate))
        }
    }

    /// Membership on connection `id` is settled: whether the peer shares any of our topics.
    /// Returns a close if it shares none.
    pub fn settled(&mut self, id: ConnId, node: &NodeId, shared: bool) -> Option<Action> {
        let peer = self.peers.get_mut(node)?;
        let conn = peer.conns.iter_mut().find(|c| c.id == id)?;
        conn.shared = shared;
        if shared {
            peer.failures = 0;
            peer.nothing_shared_at = None;
            None
        } else {
            peer.nothing_shared_at = Some(conn.version);
            Some(Action::Close(id, CloseReason::NoSharedTopics))
        }
    }

    /// Connection `id` closed, for `reason` if it was one of ours (either side's).
    pub fn closed(&mut self, id: ConnId, node: &NodeId, reason: Option<CloseReason>, now: Instant) {
        let Some(peer) = self.peers.get_mut(node) else {
            return;
        };
        let Some(pos) = peer.conns.iter().position(|c| c.id == id) else {
            return;
        };
        let conn = peer.conns.remove(pos);
        self.open -= 1;
        match reason {
            Some(CloseReason::Duplicate) => {}
            Some(CloseReason::NoSharedTopics) => {
                peer.nothing_shared_at = Some(conn.version);
            }
            Some(CloseReason::Busy) | None => {
                // Lost: retry after a backoff, the larger id a little later to avoid a dial race.
                let defer = if self.me < *node {
                    Duration::ZERO
                } else {
                    self.config.defer
                };
                let backoff = self.backoff_after_failure(node);
                if let Some(peer) = self.peers.get_mut(node) {
                    peer.not_before = now + backoff + defer;
                }
            }
        }
        self.forget_if_idle(node);
    }

    /// The dials to start now.
    pub fn poll_dials(&mut self, now: Instant) -> Vec<Action> {
        if self.topics == 0 {
            return Vec::new();
        }
        let mut budget = self
            .config
            .max_connections
            .saturating_sub(self.established() + self.dialing());
        if budget == 0 {
            // At the cap (the usual state in a large swarm): nothing to look through.
            return Vec::new();
        }
        let mut dials = Vec::new();
        let mut due: Vec<(&NodeId, &mut Peer)> = self
            .peers
            .iter_mut()
            .filter(|(_, p)| Self::wants_dial(p, self.version) && p.not_before <= now)
            .collect();
        // Only the `budget` earliest are dialed: pick them without sorting everyone due (a node in a
        // large swarm knows hundreds of peers and asks after every event). Ties broken by id, so
        // that the same inputs always give the same dials (a simulation replays exactly; the map's
        // order is random).
        if due.len() > budget {
            due.select_nth_unstable_by_key(budget, |(node, p)| (p.not_before, **node));
            due.truncate(budget);
        }
        due.sort_unstable_by_key(|(node, p)| (p.not_before, **node));
        for (node, peer) in due {
            if budget == 0 {
                break;
            }
            budget -= 1;
            peer.dialing = true;
            self.in_flight += 1;
            dials.push(Action::Dial(NodeAddr::new(*node, peer.addrs.clone())));
        }
        let mut due: Vec<(&SocketAddr, &mut UnknownAddr)> = self
            .unknown
            .iter_mut()
            .filter(|(_, u)| !u.dialing && u.not_before <= now)
            .collect();
        due.sort_by_key(|(addr, u)| (u.not_before, **addr));
        for (addr, entry) in due {
            if budget == 0 {
                break;
            }
            budget -= 1;
            entry.dialing = true;
            self.in_flight += 1;
            dials.push(Action::DialAddr(*addr));
        }
        dials
    }

    /// When [`Planner::poll_dials`] may next have something to do. `None` while the cap leaves no
    /// room for a dial: a connection that closes or a dial that fails makes room, and the driver
    /// asks again then. (A due peer's time, already past, would otherwise wake the driver at once,
    /// over and over, while nothing could be dialed.)
    pub fn next_dial_at(&self) -> Option<Instant> {
        if self.topics == 0 || self.established() + self.dialing() >= self.config.max_connections {
            return None;
        }
        self.peers
            .values()
            .filter(|p| Self::wants_dial(p, self.version))
            .map(|p| p.not_before)
            .chain(
                self.unknown
                    .values()
                    .filter(|u| !u.dialing)
                    .map(|u| u.not_before),
            )
            .min()
    }

    /// Established connections.
    pub fn established(&self) -> usize {
        self.open
    }

    fn dialing(&self) -> usize {
        self.in_flight
    }

    fn forget_unknown(&mut self, addr: &SocketAddr) {
        if self.unknown.remove(addr).is_some_and(|u| u.dialing) {
            self.in_flight -= 1;
        }
    }

    /// The counts kept as they change, counted from scratch.
    #[cfg(test)]
    fn recount(&self) -> (usize, usize) {
        let open = self.peers.values().map(|p| p.conns.len()).sum();
        let in_flight = self.peers.values().filter(|p| p.dialing).count()
            + self.unknown.values().filter(|u| u.dialing).count();
        (open, in_flight)
    }

    fn wants_dial(peer: &Peer, version: u64) -> bool {
        !peer.addrs.is_empty()
            && peer.conns.is_empty()
            && !peer.dialing
            && peer.nothing_shared_at != Some(version)
    }

    fn backoff_after_failure(&mut self, node: &NodeId) -> Duration {
        let Some(peer) = self.peers.get_mut(node) else {
            return self.config.backoff_min;
        };
        let wait = backoff(&self.config, peer.failures);
        peer.failures = peer.failures.saturating_add(1);
        wait
    }

    fn forget_if_idle(&mut self, node: &NodeId) {
        if let Some(peer) = self.peers.get(node)
            && peer.addrs.is_empty()
            && peer.conns.is_empty()
            && !peer.dialing
        {
            self.peers.remove(node);
        }
    }
}

/// The wait after `failures` earlier failures: doubling from the minimum, capped.
fn backoff(config: &PlannerConfig, failures: u32) -> Duration {
    config
        .backoff_min
        .saturating_mul(1 << failures.min(16))
        .min(config.backoff_max)
}

#[cfg(test)]
mod tests {
    use pairs_base::SecretKey;

    use super::*;

    #[test]
    fn an_address_without_an_id_is_dialed_once_then_belongs_to_whom_it_reached() {
        let (me, other) = two_ids();
        let mut p = Planner::new(me, PlannerConfig::default());
        p.topics_changed(1);
        let now = Instant::now();
        let at: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        p.discovered_addr(at, now);
        p.discovered_addr(at, now);
        assert_eq!(p.poll_dials(now), vec![Action::DialAddr(at)]);
        assert!(p.poll_dials(now).is_empty(), "one dial in flight");
        p.addr_reached(at, other, now);
        assert!(p.connected(1, other, true, now).is_none());
        // The address is now the peer's: found again without an id, it is not dialed again.
        p.discovered_addr(at, now);
        assert!(p.poll_dials(now + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn our_own_address_is_never_dialed_again() {
        let (me, _) = two_ids();
        let mut p = Planner::new(me, PlannerConfig::default());
        p.topics_changed(1);
        let now = Instant::now();
        let own: SocketAddr = "192.0.2.8:4000".parse().unwrap();
        p.discovered_addr(own, now);
        assert_eq!(p.poll_dials(now), vec![Action::DialAddr(own)]);
        p.addr_failed(own, true, now);
        p.discovered_addr(own, now);
        assert!(p.poll_dials(now + Duration::from_secs(600)).is_empty());
    }

    #[test]
    fn unreachable_addresses_back_off_and_are_bounded() {
        let (me, _) = two_ids();
        let config = PlannerConfig {
            max_unknown_addrs: 4,
            ..PlannerConfig::default()
        };
        let mut p = Planner::new(me, config);
        p.topics_changed(1);
        let now = Instant::now();
        for port in 0..10 {
            p.discovered_addr(SocketAddr::from(([192, 0, 2, 9], 5000 + port)), now);
        }
        let dials = p.poll_dials(now);
        assert_eq!(dials.len(), 4, "only the first four are kept");
        for dial in &dials {
            let Action::DialAddr(addr) = dial else {
                panic!("{dial:?}")
            };
            p.addr_failed(*addr, false, now);
        }
        assert!(p.poll_dials(now + Duration::from_millis(400)).is_empty());
        assert_eq!(p.poll_dials(now + Duration::from_millis(500)).len(), 4);
    }

    fn two_ids() -> (NodeId, NodeId) {
        let a = SecretKey::generate().node_id();
        let b = SecretKey::generate().node_id();
        if a < b { (a, b) } else { (b, a) }
    }

    fn addr(node: NodeId, port: u16) -> NodeAddr {
        NodeAddr::new(node, [SocketAddr::from(([10, 0, 0, 1], port))])
    }

    fn planner(me: NodeId) -> Planner {
        let mut p = Planner::new(me, PlannerConfig::default());
        p.topics_changed(1);
        p
    }

    #[test]
    fn smaller_id_dials_at_once_larger_waits() {
        let (small, large) = two_ids();
        let t0 = Instant::now();
        let mut s = planner(small);
        let mut l = planner(large);
        s.discovered(&addr(large, 1), t0);
        l.discovered(&addr(small, 2), t0);
        assert_eq!(s.poll_dials(t0).len(), 1);
        assert!(l.poll_dials(t0).is_empty());
        assert_eq!(l.next_dial_at(), Some(t0 + PlannerConfig::default().defer));
    }

    #[test]
    fn no_topics_no_dials() {
        let (a, b) = two_ids();
        let mut p = Planner::new(a, PlannerConfig::default());
        let t0 = Instant::now();
        p.discovered(&addr(b, 1), t0);
        assert!(p.poll_dials(t0).is_empty());
        assert_eq!(p.next_dial_at(), None);
    }

    #[test]
    fn both_sides_keep_the_same_connection_whatever_the_arrival_order() {
        let (small, large) = two_ids();
        let mut s = planner(small);
        let mut l = planner(large);
        // Connection 1 dialed by the small side, connection 2 by the large side.
        // The small side sees 2 first, the large side sees 1 first.
        let now = Instant::now();
        assert_eq!(s.connected(2, large, false, now), None);
        assert_eq!(
            s.connected(1, large, true, now),
            Some(Action::Close(2, CloseReason::Duplicate))
        );
        assert_eq!(l.connected(1, small, false, now), None);
        assert_eq!(
            l.connected(2, small, true, now),
            Some(Action::Close(2, CloseReason::Duplicate))
        );
    }

    #[test]
    fn failures_back_off_exponentially_and_reset_on_shared_topics() {
        let (me, peer) = two_ids();
        let mut p = planner(me);
        let t0 = Instant::now();
        p.discovered(&addr(peer, 1), t0);
        let min = PlannerConfig::default().backoff_min;
        let mut now = t0;
        for i in 0..4 {
            assert_eq!(p.poll_dials(now).len(), 1, "dial {i}");
            p.dial_failed(&peer, now);
            assert!(p.poll_dials(now).is_empty());
            assert_eq!(p.next_dial_at(), Some(now + min * (1 << i)));
            now += min * (1 << i);
        }
        assert_eq!(p.poll_dials(now).len(), 1);
        assert_eq!(p.connected(7, peer, true, now), None);
        assert_eq!(p.settled(7, &peer, true), None);
        p.closed(7, &peer, None, now);
        assert_eq!(
            p.next_dial_at(),
            Some(now + min),
            "backoff reset by success"
        );
    }

    #[test]
    fn nothing_shared_is_not_redialed_until_our_topics_change() {
        let (me, peer) = two_ids();
        let mut p = planner(me);
        let t0 = Instant::now();
        p.discovered(&addr(peer, 1), t0);
        assert_eq!(p.poll_dials(t0).len(), 1);
        p.connected(1, peer, true, t0);
        assert_eq!(
            p.settled(1, &peer, false),
            Some(Action::Close(1, CloseReason::NoSharedTopics))
        );
        p.closed(1, &peer, Some(CloseReason::NoSharedTopics), t0);
        assert!(p.poll_dials(t0 + Duration::from_secs(3600)).is_empty());
        p.topics_changed(2);
        assert_eq!(p.poll_dials(t0).len(), 1);
    }

    #[test]
    fn the_cap_limits_dials_and_refuses_extra_incoming() {
        let me = SecretKey::generate().node_id();
        let config = PlannerConfig {
            max_connections: 2,
            incoming_headroom: 0,
            defer: Duration::ZERO,
            ..PlannerConfig::default()
        };
        let mut p = Planner::new(me, config);
        p.topics_changed(1);
        let t0 = Instant::now();
        let others: Vec<NodeId> = (0..4).map(|_| SecretKey::generate().node_id()).collect();
        for (i, o) in others.iter().enumerate() {
            p.discovered(&addr(*o, i as u16), t0);
        }
        let dials = p.poll_dials(t0);
        assert_eq!(dials.len(), 2);
        for (i, d) in dials.iter().enumerate() {
            let Action::Dial(a) = d else { panic!() };
            assert_eq!(p.connected(i as ConnId, a.node_id, true, t0), None);
        }
        assert!(p.poll_dials(t0).is_empty());
        let stranger = SecretKey::generate().node_id();
        assert_eq!(
            p.connected(99, stranger, false, t0),
            Some(Action::Close(99, CloseReason::Busy))
        );
    }

    #[test]
    fn the_counts_kept_match_the_peers_whatever_happens() {
        let me = SecretKey::generate().node_id();
        let config = PlannerConfig {
            max_connections: 6,
            ..PlannerConfig::default()
        };
        let mut p = Planner::new(me, config);
        p.topics_changed(1);
        let nodes: Vec<NodeId> = (0..10).map(|_| SecretKey::generate().node_id()).collect();
        let addrs: Vec<SocketAddr> = (0..6)
            .map(|i| SocketAddr::from(([192, 0, 2, 50], 6000 + i)))
            .collect();
        let mut now = Instant::now();
        let mut conns: Vec<(ConnId, NodeId)> = Vec::new();
        let mut next_conn = 0;
        // A fixed-seed linear congruential generator: the same sequence every run.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut roll = |n: usize| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (x >> 33) as usize % n
        };
        for _ in 0..5000 {
            let node = nodes[roll(nodes.len())];
            let at = addrs[roll(addrs.len())];
            match roll(10) {
                0 => p.discovered(&addr(node, 1), now),
                1 => p.discovered_addr(at, now),
                2 => {
                    p.poll_dials(now);
                }
                3 => {
                    next_conn += 1;
                    let close = p.connected(next_conn, node, roll(2) == 0, now);
                    conns.push((next_conn, node));
                    if let Some(Action::Close(id, reason)) = close {
                        let i = conns.iter().position(|c| c.0 == id).expect("known");
                        let (id, node) = conns.remove(i);
                        p.closed(id, &node, Some(reason), now);
                    }
                }
                4 => p.dial_failed(&node, now),
                5 if !conns.is_empty() => {
                    let (id, node) = conns.remove(roll(conns.len()));
                    p.closed(id, &node, None, now);
                }
                6 => p.addr_reached(at, node, now),
                7 => p.addr_failed(at, roll(8) == 0, now),
                8 => p.lost(&node),
                _ => now += Duration::from_millis(300),
            }
            assert_eq!(p.recount(), (p.open, p.in_flight));
        }
    }

    #[test]
    fn a_full_node_still_takes_newcomers_within_the_headroom() {
        let me = SecretKey::generate().node_id();
        let config = PlannerConfig {
            max_connections: 2,
            incoming_headroom: 1,
            defer: Duration::ZERO,
            ..PlannerConfig::default()
        };
        let mut p = Planner::new(me, config);
        p.topics_changed(1);
        let t0 = Instant::now();
        let others: Vec<NodeId> = (0..5).map(|_| SecretKey::generate().node_id()).collect();
        for (i, o) in others[..3].iter().enumerate() {
            p.discovered(&addr(*o, i as u16), t0);
        }
        for (i, d) in p.poll_dials(t0).iter().enumerate() {
            let Action::Dial(a) = d else { panic!() };
            assert_eq!(p.connected(i as ConnId, a.node_id, true, t0), None);
        }
        // At the cap: a newcomer dialing us gets in, one more does not, and we dial nobody.
        assert_eq!(p.connected(10, others[3], false, t0), None);
        assert_eq!(
            p.connected(11, others[4], false, t0),
            Some(Action::Close(11, CloseReason::Busy))
        );
        assert!(p.poll_dials(t0 + Duration::from_secs(60)).is_empty());
        assert_eq!(p.next_dial_at(), None);
    }

    #[test]
    fn a_full_planner_has_no_dial_time_until_room_is_made() {
        let me = SecretKey::generate().node_id();
        let config = PlannerConfig {
            max_connections: 1,
            defer: Duration::ZERO,
            ..PlannerConfig::default()
        };
        let mut p = Planner::new(me, config);
        p.topics_changed(1);
        let t0 = Instant::now();
        let (a, b) = two_ids();
        p.discovered(&addr(a, 1), t0);
        p.discovered(&addr(b, 2), t0);
        let dials = p.poll_dials(t0);
        assert_eq!(dials.len(), 1);
        let Action::Dial(dialed) = &dials[0] else {
            panic!("{dials:?}")
        };
        let dialed = dialed.node_id;
        // The other peer is due, but the cap is reached: no wake-up (it would come at once, forever).
        assert_eq!(p.next_dial_at(), None);
        assert_eq!(p.connected(1, dialed, true, t0), None);
        assert_eq!(p.next_dial_at(), None);
        p.closed(1, &dialed, None, t0);
        assert_eq!(
            p.next_dial_at(),
            Some(t0),
            "room again: the waiting peer is due"
        );
    }

    #[test]
    fn lost_peers_are_not_redialed_and_addresses_are_bounded() {
        let (me, peer) = two_ids();
        let mut p = planner(me);
        let t0 = Instant::now();
        for port in 0..20 {
            p.discovered(&addr(peer, port), t0);
        }
        let dials = p.poll_dials(t0);
        let Action::Dial(a) = &dials[0] else { panic!() };
        assert_eq!(a.addrs.len(), PlannerConfig::default().max_addrs);
        assert_eq!(a.addrs[0].port(), 19, "newest first");
        p.dial_failed(&peer, t0);
        p.lost(&peer);
        assert_eq!(p.next_dial_at(), None);
    }
}
