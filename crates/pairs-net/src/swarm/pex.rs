//! Peer exchange: members of a topic tell each other about further members. Sans-IO bookkeeping
//! for one connection: what we told the peer (so nothing is sent twice), and what it told us
//! (bounded and rate-limited, so a peer cannot make us dial the world).
//!
//! A list travels in a [`Frame::Peers`](super::membership::Frame::Peers) carrying the sender's tag
//! for the topic, so only a peer that proved the topic can read which topic it is about.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pairs_base::{NodeAddr, NodeId};

use super::membership::Tag;

/// Most peers in one list; a longer list is a protocol violation.
pub const MAX_ENTRIES: usize = 16;
/// Most addresses kept per peer in a list.
pub const MAX_ADDRS: usize = 4;
/// Shortest time between two lists about one topic, each way. Lists that come sooner are ignored.
pub const INTERVAL: Duration = Duration::from_secs(30);
/// Most peers learned from one connection over its life.
pub const MAX_LEARNED: usize = 256;

/// Why a peer's list was refused: the connection is closed with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PexError {
    /// More than [`MAX_ENTRIES`] peers in one list.
    #[error("peer list of {0} entries is over the limit")]
    TooLong(usize),
}

#[derive(Debug, Default)]
struct Sent {
    told: HashSet<NodeId>,
    last: Option<Instant>,
}

/// Peer exchange state of one connection.
#[derive(Debug, Default)]
pub struct Pex {
    /// Per topic (keyed by our tag for it on this connection).
    sent: HashMap<Tag, Sent>,
    received: HashMap<Tag, Instant>,
    learned: usize,
}

impl Pex {
    /// The list to send now about one topic, if one is due: members in `candidates` not told
    /// before (never the peer itself), at most [`MAX_ENTRIES`], at most one list per
    /// [`INTERVAL`].
    pub fn to_send(
        &mut self,
        our_tag: Tag,
        peer: &NodeId,
        candidates: impl IntoIterator<Item = NodeAddr>,
        now: Instant,
    ) -> Option<Vec<NodeAddr>> {
        let sent = self.sent.entry(our_tag).or_default();
        if sent.last.is_some_and(|last| now < last + INTERVAL) {
            return None;
        }
        let list: Vec<NodeAddr> = candidates
            .into_iter()
            .filter(|c| c.node_id != *peer && !sent.told.contains(&c.node_id))
            .filter(|c| !c.addrs.is_empty())
            .take(MAX_ENTRIES)
            .map(|mut c| {
                c.addrs.truncate(MAX_ADDRS);
                c
            })
            .collect();
        if list.is_empty() {
            return None;
        }
        sent.told.extend(list.iter().map(|c| c.node_id));
        sent.last = Some(now);
        Some(list)
    }

    /// Forgets what we told the peer about a topic (it or we left it): a later join starts afresh.
    pub fn forget(&mut self, our_tag: &Tag) {
        self.sent.remove(our_tag);
    }

    /// A list arrived about the topic whose tag (the peer's) is `their_tag`. Returns the peers
    /// worth dialing: not us, not the sender, with usable addresses. Too soon after the last
    /// one, or past the lifetime budget, it yields nothing.
    pub fn received(
        &mut self,
        their_tag: Tag,
        me: &NodeId,
        sender: &NodeId,
        list: Vec<NodeAddr>,
        now: Instant,
    ) -> Result<Vec<NodeAddr>, PexError> {
        if list.len() > MAX_ENTRIES {
            return Err(PexError::TooLong(list.len()));
        }
        if let Some(last) = self.received.get(&their_tag)
            && now < *last + INTERVAL / 2
        {
            return Ok(Vec::new());
        }
        self.received.insert(their_tag, now);
        let budget = MAX_LEARNED.saturating_sub(self.learned);
        let mut seen = HashSet::new();
        let useful: Vec<NodeAddr> = list
            .into_iter()
            .filter(|p| p.node_id != *me && p.node_id != *sender && seen.insert(p.node_id))
            .filter_map(|mut p| {
                p.addrs.retain(dialable);
                p.addrs.truncate(MAX_ADDRS);
                (!p.addrs.is_empty()).then_some(p)
            })
            .take(budget)
            .collect();
        self.learned += useful.len();
        Ok(useful)
    }
}

/// Whether an address from a peer's list is worth a dial: not unspecified, multicast, broadcast,
/// or port 0.
fn dialable(addr: &SocketAddr) -> bool {
    let ip = addr.ip();
    let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
    addr.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}

#[cfg(test)]
mod tests {
    use pairs_base::SecretKey;

    use super::*;

    const TAG: Tag = [1; 16];

    fn peer(port: u16) -> NodeAddr {
        NodeAddr::new(
            SecretKey::generate().node_id(),
            [SocketAddr::from(([127, 0, 0, 1], port))],
        )
    }

    fn id() -> NodeId {
        SecretKey::generate().node_id()
    }

    #[test]
    fn a_peer_is_told_about_each_member_once_and_never_about_itself() {
        let mut pex = Pex::default();
        let to = peer(1);
        let (b, c) = (peer(2), peer(3));
        let now = Instant::now();
        let list = pex
            .to_send(TAG, &to.node_id, [to.clone(), b.clone()], now)
            .unwrap();
        assert_eq!(list, vec![b.clone()]);
        let later = now + INTERVAL;
        let list = pex
            .to_send(TAG, &to.node_id, [b.clone(), c.clone()], later)
            .unwrap();
        assert_eq!(list, vec![c], "only the new member");
        assert_eq!(pex.to_send(TAG, &to.node_id, [b], later + INTERVAL), None);
    }

    #[test]
    fn lists_are_rate_limited_and_bounded() {
        let mut pex = Pex::default();
        let to = id();
        let now = Instant::now();
        let many: Vec<NodeAddr> = (0..40).map(|i| peer(1000 + i)).collect();
        assert_eq!(
            pex.to_send(TAG, &to, many.clone(), now).unwrap().len(),
            MAX_ENTRIES
        );
        assert_eq!(
            pex.to_send(TAG, &to, many.clone(), now + INTERVAL / 2),
            None
        );
        assert_eq!(
            pex.to_send(TAG, &to, many, now + INTERVAL).unwrap().len(),
            MAX_ENTRIES
        );
    }

    #[test]
    fn an_overlong_list_is_a_violation_and_a_hasty_one_is_ignored() {
        let mut pex = Pex::default();
        let (me, sender) = (id(), id());
        let now = Instant::now();
        let long: Vec<NodeAddr> = (0..=MAX_ENTRIES as u16).map(|i| peer(2000 + i)).collect();
        assert_eq!(
            pex.received(TAG, &me, &sender, long, now),
            Err(PexError::TooLong(MAX_ENTRIES + 1))
        );
        assert_eq!(
            pex.received(TAG, &me, &sender, vec![peer(1)], now)
                .unwrap()
                .len(),
            1
        );
        assert!(
            pex.received(
                TAG,
                &me,
                &sender,
                vec![peer(2)],
                now + Duration::from_secs(1)
            )
            .unwrap()
            .is_empty(),
            "too soon"
        );
    }

    #[test]
    fn useless_entries_are_dropped_and_the_lifetime_budget_holds() {
        let mut pex = Pex::default();
        let (me, sender) = (id(), id());
        let mut now = Instant::now();
        let junk = vec![
            NodeAddr::new(me, [SocketAddr::from(([127, 0, 0, 1], 9))]),
            NodeAddr::new(sender, [SocketAddr::from(([127, 0, 0, 1], 9))]),
            NodeAddr::new(id(), [SocketAddr::from(([0, 0, 0, 0], 9))]),
            NodeAddr::new(id(), [SocketAddr::from(([224, 0, 0, 251], 5353))]),
            NodeAddr::new(id(), [SocketAddr::from(([127, 0, 0, 1], 0))]),
            NodeAddr::new(id(), []),
        ];
        assert!(
            pex.received(TAG, &me, &sender, junk, now)
                .unwrap()
                .is_empty()
        );
        let mut learned = 0;
        for round in 0..40u16 {
            now += INTERVAL;
            let list = (0..MAX_ENTRIES as u16)
                .map(|i| peer(3000 + round * 16 + i))
                .collect();
            learned += pex.received(TAG, &me, &sender, list, now).unwrap().len();
        }
        assert_eq!(learned, MAX_LEARNED);
    }
}
