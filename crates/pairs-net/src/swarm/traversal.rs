//! Reaching members behind NATs through the members we are connected to (sans-IO).
//!
//! Peer exchange tells us of members we may not be able to dial: their address is a NAT's, which
//! drops what it was not expecting. The member that told us of them is connected to them, so it can
//! introduce us for a hole punch, or relay when no punch works (see [`crate::nat`]). This state
//! decides:
//! - which connected peers we register with as helpers: a few, and only those reached at an
//!   address that may lie outside our NAT (a peer on our own LAN cannot help across it);
//! - whom to ask for an introduction to a member: the helper that told us of it, if we are
//!   registered there;
//! - who asks: the smaller node id at once (peer exchange tells both sides of each other), the
//!   larger one only after [`LARGER_ID_WAITS`], in case the teller told the smaller id nothing;
//! - how often: a bounded number of attempts per member, and of punches at once.
//!
//! The driver (the swarm task) runs the registrations and punches and reports back.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use pairs_base::NodeId;

/// How long the larger id of two members that heard of each other waits for the smaller one to
/// arrange the introduction before it asks itself: longer than a punch that fails (3 s) followed
/// by a relay circuit, so that the two do not both ask. The teller tells the smaller id of us only
/// with its next peer-exchange list, which may be half a minute away.
pub const LARGER_ID_WAITS: Duration = Duration::from_secs(10);

/// What to do about a member a connected peer told us of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// Ask this helper (the teller) for an introduction now.
    Introduce(NodeId),
    /// Wait [`LARGER_ID_WAITS`], then ask ([`Traversal::want_introduction`]) if still alone.
    AskLater,
    /// Dial its addresses directly: the teller is no helper of ours.
    Dial,
    /// Nothing: the smaller id dials, and the teller is no helper of ours.
    Leave,
}

/// Limits for [`Traversal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraversalConfig {
    /// Connected peers we register with at most.
    pub max_helpers: usize,
    /// Introductions asked for one member before we leave it to direct dials.
    pub attempts_per_peer: u32,
    /// Punches (or relay set-ups) under way at once.
    pub max_in_flight: usize,
    /// Members remembered with the helper that told us of them.
    pub max_tellers: usize,
}

impl Default for TraversalConfig {
    fn default() -> Self {
        Self {
            max_helpers: 3,
            attempts_per_peer: 2,
            // Members that left without a word stay in peer exchange lists until their
            // connections time out; introductions to them must not hold up the live ones.
            max_in_flight: 8,
            max_tellers: 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Helper {
    Registering,
    Registered,
}

/// Which helpers to use and which members to reach through them.
#[derive(Debug)]
pub struct Traversal {
    me: NodeId,
    config: TraversalConfig,
    helpers: HashMap<NodeId, Helper>,
    /// Member -> the connected peer that told us of it.
    tellers: HashMap<NodeId, NodeId>,
    /// Introductions asked per member (only members in `tellers`).
    attempts: HashMap<NodeId, u32>,
    in_flight: HashSet<NodeId>,
}

impl Traversal {
    /// No helpers yet; `me` is this node.
    pub fn new(me: NodeId, config: TraversalConfig) -> Self {
        Self {
            me,
            config,
            helpers: HashMap::new(),
            tellers: HashMap::new(),
            attempts: HashMap::new(),
            in_flight: HashSet::new(),
        }
    }

    /// A swarm connection to `node` at `addr` is up. True: register with it now (then report
    /// [`Traversal::registered`]). Only a peer we dialed can be a helper: one that dialed us is
    /// reachable without help.
    pub fn connected(&mut self, node: NodeId, addr: SocketAddr, we_dialed: bool) -> bool {
        self.attempts.remove(&node);
        if !we_dialed
            || !maybe_outside_our_nat(addr)
            || self.helpers.contains_key(&node)
            || self.helpers.len() >= self.config.max_helpers
        {
            return false;
        }
        self.helpers.insert(node, Helper::Registering);
        true
    }

    /// How registering with `helper` ended. On success, the members it told us of meanwhile whose
    /// introduction is ours to ask for (we are the smaller id): ask for those not yet connected
    /// ([`Traversal::want_introduction`]).
    pub fn registered(&mut self, helper: NodeId, ok: bool) -> Vec<NodeId> {
        if !ok {
            self.helper_gone(&helper);
            return Vec::new();
        }
        match self.helpers.get_mut(&helper) {
            Some(state) => *state = Helper::Registered,
            None => return Vec::new(),
        }
        self.tellers
            .iter()
            .filter(|(member, teller)| **teller == helper && self.me < **member)
            .map(|(member, _)| *member)
            .collect()
    }

    /// The helper's connection (or our registration with it) ended.
    pub fn helper_gone(&mut self, helper: &NodeId) {
        self.helpers.remove(helper);
        self.tellers.retain(|_, teller| teller != helper);
        // Attempts are counted only for members some helper told us of, so they stay bounded.
        let tellers = &self.tellers;
        self.attempts
            .retain(|member, _| tellers.contains_key(member));
    }

    /// Whether we are registered with `helper`.
    pub fn is_helper(&self, helper: &NodeId) -> bool {
        self.helpers.get(helper) == Some(&Helper::Registered)
    }

    /// `teller` told us of `member`, which no other source knows and we are not connected to.
    /// On [`Heard::Introduce`], report [`Traversal::attempt_ended`] later. A teller we are still
    /// registering with is remembered, so the introduction can follow the registration.
    pub fn heard_of(&mut self, member: NodeId, teller: NodeId) -> Heard {
        let helps = self.helpers.contains_key(&teller);
        if helps
            && (self.tellers.len() < self.config.max_tellers || self.tellers.contains_key(&member))
        {
            self.tellers.insert(member, teller);
        }
        match (self.me < member, helps) {
            (true, true) => self
                .want_introduction(member)
                .map_or(Heard::Dial, Heard::Introduce),
            (true, false) => Heard::Dial,
            (false, true) => Heard::AskLater,
            (false, false) => Heard::Leave,
        }
    }

    /// `member` is not connected (a direct dial failed, or a helper just took our registration).
    /// `Some(helper)`: ask that helper for an introduction now (then report
    /// [`Traversal::attempt_ended`]).
    pub fn want_introduction(&mut self, member: NodeId) -> Option<NodeId> {
        let helper = *self.tellers.get(&member)?;
        let tried = self.attempts.get(&member).copied().unwrap_or(0);
        if !self.is_helper(&helper)
            || self.in_flight.contains(&member)
            || self.in_flight.len() >= self.config.max_in_flight
            || tried >= self.config.attempts_per_peer
        {
            return None;
        }
        self.attempts.insert(member, tried + 1);
        self.in_flight.insert(member);
        Some(helper)
    }
    /// Whether an introduction to `member` is under way.
    pub fn is_in_flight(&self, member: &NodeId) -> bool {
        self.in_flight.contains(member)
    }

    /// An introduction (punch or relay) for `member` ended; `ok` if it gave a connection.
    pub fn attempt_ended(&mut self, member: NodeId, ok: bool) {
        self.in_flight.remove(&member);
        if ok {
            self.attempts.remove(&member);
        }
    }
}

/// Whether a peer reached at `addr` may sit outside our NAT: not loopback, link-local, private,
/// shared (CGNAT) or unique-local, and not a relayed path.
pub fn maybe_outside_our_nat(addr: SocketAddr) -> bool {
    if crate::socket::is_virtual(addr) {
        return false;
    }
    match addr.ip().to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            let shared = a == 100 && (64..128).contains(&b);
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || shared)
        }
        IpAddr::V6(v6) => {
            let unique_local = (v6.segments()[0] & 0xfe00) == 0xfc00;
            !(v6.is_loopback() || v6.is_unicast_link_local() || v6.is_unspecified() || unique_local)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pairs_base::SecretKey;

    fn node() -> NodeId {
        SecretKey::generate().node_id()
    }

    fn public() -> SocketAddr {
        "203.0.113.10:4000".parse().unwrap()
    }

    /// A node id larger than `me`: a member whose introduction `me` asks for.
    fn larger_than(me: NodeId) -> NodeId {
        loop {
            let n = node();
            if n > me {
                return n;
            }
        }
    }

    fn smaller_than(me: NodeId) -> NodeId {
        loop {
            let n = node();
            if n < me {
                return n;
            }
        }
    }

    fn with_helper() -> (Traversal, NodeId, NodeId) {
        let me = node();
        let mut t = Traversal::new(me, TraversalConfig::default());
        let helper = node();
        assert!(t.connected(helper, public(), true));
        assert!(t.registered(helper, true).is_empty());
        (t, helper, me)
    }

    #[test]
    fn registers_only_with_peers_we_dialed_that_may_be_outside_our_nat() {
        let mut t = Traversal::new(node(), TraversalConfig::default());
        for lan in [
            "192.168.1.12:4000",
            "10.0.0.2:1",
            "100.64.0.1:1",
            "[fe80::1%2]:1",
        ] {
            assert!(!t.connected(node(), lan.parse().unwrap(), true), "{lan}");
        }
        assert!(
            !t.connected(node(), "[100::5]:1".parse().unwrap(), true),
            "relayed"
        );
        assert!(!t.connected(node(), public(), false), "it dialed us");
        assert!(t.connected(node(), public(), true));
        assert!(t.connected(node(), "[2001:db8::1]:1".parse().unwrap(), true));
    }

    #[test]
    fn helpers_are_bounded_and_a_failed_registration_frees_a_slot() {
        let mut t = Traversal::new(
            node(),
            TraversalConfig {
                max_helpers: 2,
                ..TraversalConfig::default()
            },
        );
        let (a, b, c) = (node(), node(), node());
        assert!(t.connected(a, public(), true));
        assert!(t.connected(b, public(), true));
        assert!(!t.connected(c, public(), true), "a third helper");
        assert!(!t.connected(a, public(), true), "the same helper twice");
        assert!(t.registered(b, false).is_empty());
        assert!(t.connected(c, public(), true));
    }

    #[test]
    fn a_member_told_of_by_a_helper_is_introduced_through_it() {
        let (mut t, helper, me) = with_helper();
        let member = larger_than(me);
        assert_eq!(t.heard_of(member, helper), Heard::Introduce(helper));
        assert_eq!(
            t.heard_of(member, helper),
            Heard::Dial,
            "one attempt at a time"
        );
        t.attempt_ended(member, false);
        assert_eq!(t.want_introduction(member), Some(helper), "second attempt");
        t.attempt_ended(member, false);
        assert_eq!(t.want_introduction(member), None, "attempts are bounded");
    }

    #[test]
    fn the_larger_id_asks_later_and_only_when_told_by_a_helper() {
        let (mut t, helper, me) = with_helper();
        let member = smaller_than(me);
        assert_eq!(t.heard_of(member, helper), Heard::AskLater);
        assert_eq!(t.want_introduction(member), Some(helper), "its turn");
        assert_eq!(t.heard_of(smaller_than(me), node()), Heard::Leave);
    }

    #[test]
    fn a_member_told_of_by_a_non_helper_is_dialed_directly() {
        let (mut t, _, me) = with_helper();
        let stranger = node();
        assert_eq!(t.heard_of(larger_than(me), stranger), Heard::Dial);
    }

    #[test]
    fn members_told_of_while_registering_are_introduced_once_registered() {
        let me = node();
        let mut t = Traversal::new(me, TraversalConfig::default());
        let helper = node();
        assert!(t.connected(helper, public(), true));
        let (member, larger_id_asks) = (larger_than(me), smaller_than(me));
        assert_eq!(
            t.heard_of(member, helper),
            Heard::Dial,
            "not registered yet"
        );
        assert_eq!(t.heard_of(larger_id_asks, helper), Heard::AskLater);
        assert_eq!(t.registered(helper, true), vec![member], "ours to ask only");
        assert_eq!(t.want_introduction(member), Some(helper));
    }

    #[test]
    fn a_helper_that_leaves_takes_its_introductions_with_it() {
        let (mut t, helper, me) = with_helper();
        let member = larger_than(me);
        assert_eq!(t.heard_of(member, helper), Heard::Introduce(helper));
        t.attempt_ended(member, false);
        t.helper_gone(&helper);
        assert!(!t.is_helper(&helper));
        assert_eq!(t.want_introduction(member), None);
    }

    #[test]
    fn a_connection_resets_the_attempts() {
        let (mut t, helper, me) = with_helper();
        let member = larger_than(me);
        assert_eq!(t.heard_of(member, helper), Heard::Introduce(helper));
        t.attempt_ended(member, false);
        assert_eq!(t.want_introduction(member), Some(helper));
        t.attempt_ended(member, false);
        assert_eq!(t.want_introduction(member), None);
        assert!(!t.connected(member, "192.168.1.5:1".parse().unwrap(), false));
        assert_eq!(
            t.want_introduction(member),
            Some(helper),
            "attempts start over"
        );
    }

    #[test]
    fn punches_at_once_are_bounded() {
        let (mut t, helper, me) = with_helper();
        for _ in 0..8 {
            assert_eq!(
                t.heard_of(larger_than(me), helper),
                Heard::Introduce(helper)
            );
        }
        assert_eq!(t.heard_of(larger_than(me), helper), Heard::Dial);
    }
}
