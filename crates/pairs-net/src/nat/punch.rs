//! One hole punch, sans-IO: both sides send signed STUN binding requests ("probes") to every candidate
//! address of the other, answer the other's probes, and the first candidate that answers a probe of ours
//! is a working direct path.
//!
//! Probes go from the node's one UDP socket, so each one opens (or keeps open) the very NAT mapping QUIC
//! will use. A probe that arrives from an address we did not know (a symmetric NAT's fresh mapping)
//! makes that address a candidate too, probed at once, as ICE's peer-reflexive candidates are. Probes
//! and answers carry a MESSAGE-INTEGRITY under the punch's key, which only the two sides (and the helper
//! that introduced them) know, so nobody else can fake a working path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::stun;

/// Time between rounds of probes.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long a punch goes on before it counts as failed.
pub const PUNCH_TIME: Duration = Duration::from_secs(3);
/// Candidates probed per punch, offered and learned together; more are ignored.
pub const MAX_PROBED: usize = 12;

/// How a punch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The other side answered a probe sent to this address.
    Direct(SocketAddr),
    /// No candidate answered within [`PUNCH_TIME`].
    Failed {
        /// Whether a signed probe from the other side arrived at all (a path half open: worth
        /// another try; none: the NATs do not let the probes through, a relay is needed).
        heard_from_peer: bool,
    },
}

#[derive(Debug)]
struct Candidate {
    addr: SocketAddr,
    /// The round in which this candidate was last probed.
    probed_in: Option<u32>,
}

/// The state of one punch on one side.
#[derive(Debug)]
pub struct Punch {
    id: u64,
    key: [u8; 16],
    username: String,
    candidates: Vec<Candidate>,
    /// Probes sent and not yet answered: transaction id → where it went.
    sent: HashMap<[u8; 12], SocketAddr>,
    sequence: u32,
    round: u32,
    next_round: Instant,
    deadline: Instant,
    outcome: Option<Outcome>,
    heard_from_peer: bool,
    transmits: Vec<(SocketAddr, Vec<u8>)>,
}

impl Punch {
    /// A punch named `id`, signed with `key`, probing `candidates` (best first) from `start` on.
    pub fn new(id: u64, key: [u8; 16], candidates: &[SocketAddr], start: Instant) -> Self {
        let mut punch = Self {
            id,
            key,
            username: username(id),
            candidates: Vec::new(),
            sent: HashMap::new(),
            sequence: 0,
            round: 0,
            next_round: start,
            deadline: start + PUNCH_TIME,
            outcome: None,
            heard_from_peer: false,
            transmits: Vec::new(),
        };
        for &addr in candidates {
            punch.add_candidate(addr);
        }
        punch
    }

    /// The punch's name, as it appears in its probes.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// How the punch ended, once it has.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// Whether the punch no longer needs to run: it ended and the time to answer the other side's
    /// probes is over.
    pub fn is_finished(&self, now: Instant) -> bool {
        now >= self.deadline
    }

    /// When [`Punch::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Instant {
        if self.outcome.is_some() {
            self.deadline
        } else {
            self.next_round.min(self.deadline)
        }
    }

    /// Advances time: sends the next round of probes, or ends the punch.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.deadline {
            let heard_from_peer = self.heard_from_peer;
            self.outcome
                .get_or_insert(Outcome::Failed { heard_from_peer });
            return;
        }
        if self.outcome.is_some() || now < self.next_round {
            return;
        }
        self.round += 1;
        for i in 0..self.candidates.len() {
            self.probe(i);
        }
        self.next_round = now + PROBE_INTERVAL;
    }

    /// The next datagram to send: destination and bytes.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        if self.transmits.is_empty() {
            None
        } else {
            Some(self.transmits.remove(0))
        }
    }

    /// A probe from the other side (a binding request naming this punch). If its signature holds, it is
    /// answered, and an unknown source becomes a candidate, probed at once.
    pub fn handle_request(&mut self, from: SocketAddr, request: &stun::Parsed, raw: &[u8]) {
        if request.username.as_deref() != Some(self.username.as_str())
            || !stun::verify_integrity(raw, &self.key)
        {
            return;
        }
        self.heard_from_peer = true;
        self.transmits.push((
            from,
            stun::binding_success(&request.transaction, from, Some(&self.key)),
        ));
        if self.outcome.is_none()
            && !self.candidates.iter().any(|c| c.addr == from)
            && let Some(i) = self.add_candidate(from)
        {
            self.probe(i);
        }
    }

    /// An answer to one of our probes. It counts only if it comes from where the probe went and its
    /// signature holds.
    pub fn handle_response(&mut self, from: SocketAddr, response: &stun::Parsed, raw: &[u8]) {
        if self.outcome.is_some() || self.sent.get(&response.transaction) != Some(&from) {
            return;
        }
        if !stun::verify_integrity(raw, &self.key) {
            return;
        }
        self.outcome = Some(Outcome::Direct(from));
        self.sent.clear();
    }

    /// Whether a transaction id is one this punch would have sent (its first 8 bytes are the id).
    pub fn owns_transaction(id: u64, transaction: &[u8; 12]) -> bool {
        transaction[..8] == id.to_be_bytes()
    }

    fn add_candidate(&mut self, addr: SocketAddr) -> Option<usize> {
        let addr = crate::socket::canonical(addr);
        if self.candidates.len() >= MAX_PROBED
            || self.candidates.iter().any(|c| c.addr == addr)
            || addr.port() == 0
            || addr.ip().is_unspecified()
            || addr.ip().is_multicast()
        {
            return None;
        }
        self.candidates.push(Candidate {
            addr,
            probed_in: None,
        });
        Some(self.candidates.len() - 1)
    }

    fn probe(&mut self, i: usize) {
        let candidate = &mut self.candidates[i];
        if candidate.probed_in == Some(self.round) && self.round > 0 {
            return;
        }
        candidate.probed_in = Some(self.round);
        let addr = candidate.addr;
        let mut transaction = [0; 12];
        transaction[..8].copy_from_slice(&self.id.to_be_bytes());
        transaction[8..].copy_from_slice(&self.sequence.to_be_bytes());
        self.sequence = self.sequence.wrapping_add(1);
        self.sent.insert(transaction, addr);
        self.transmits.push((
            addr,
            stun::binding_request(&transaction, Some((&self.username, &self.key))),
        ));
    }
}

/// The USERNAME a punch's probes carry.
pub fn username(id: u64) -> String {
    format!("pairs-punch:{id:016x}")
}

/// The punch a USERNAME names, if it is one of ours.
pub fn id_from_username(username: &str) -> Option<u64> {
    let hex = username.strip_prefix("pairs-punch:")?;
    // Exactly what `username` writes: 16 lowercase hex digits (no sign, no capitals), so a
    // USERNAME routes to a punch only if that punch would accept it.
    if hex.len() != 16 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_username_names_a_punch() {
        // Found by the stun fuzz target: capitals (and a `+`) parsed as an id, so a probe was
        // routed to a punch that then ignored it.
        assert_eq!(id_from_username(&username(10)), Some(10));
        assert_eq!(id_from_username("pairs-punch:000000000000000A"), None);
        assert_eq!(id_from_username("pairs-punch:+00000000000000a"), None);
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Delivers every datagram one side sends to the other, if `reachable` says the path is open.
    fn exchange(
        from: &mut Punch,
        from_addr: SocketAddr,
        to: &mut Punch,
        reachable: impl Fn(SocketAddr) -> bool,
    ) -> usize {
        let mut delivered = 0;
        while let Some((dest, bytes)) = from.poll_transmit() {
            if !reachable(dest) {
                continue;
            }
            delivered += 1;
            let parsed = stun::parse(&bytes).expect("our own probes parse");
            match parsed.class {
                stun::Class::Request => to.handle_request(from_addr, &parsed, &bytes),
                stun::Class::Success => to.handle_response(from_addr, &parsed, &bytes),
                _ => panic!("unexpected class"),
            }
        }
        delivered
    }

    #[test]
    fn two_sides_find_the_path_that_answers() {
        let t0 = Instant::now();
        let a_addr = addr("198.51.100.1:4000");
        let b_addr = addr("203.0.113.7:5000");
        let mut a = Punch::new(9, [1; 16], &[addr("10.0.0.2:5000"), b_addr], t0);
        let mut b = Punch::new(9, [1; 16], &[a_addr], t0);
        a.handle_timeout(t0);
        b.handle_timeout(t0);
        // Only the public address of b works; the private one goes nowhere.
        assert_eq!(exchange(&mut a, a_addr, &mut b, |d| d == b_addr), 1);
        assert_eq!(exchange(&mut b, b_addr, &mut a, |d| d == a_addr), 2);
        assert_eq!(a.outcome(), Some(Outcome::Direct(b_addr)));
        exchange(&mut a, a_addr, &mut b, |d| d == b_addr);
        assert_eq!(b.outcome(), Some(Outcome::Direct(a_addr)));
    }

    #[test]
    fn a_probe_from_an_unknown_address_makes_it_a_candidate() {
        let t0 = Instant::now();
        // a is behind a symmetric NAT: b knows only a mapping that is wrong for this flow.
        let a_real = addr("198.51.100.1:4999");
        let b_addr = addr("203.0.113.7:5000");
        let mut a = Punch::new(3, [2; 16], &[b_addr], t0);
        let mut b = Punch::new(3, [2; 16], &[addr("198.51.100.1:4000")], t0);
        b.handle_timeout(t0);
        a.handle_timeout(t0);
        // b's probe to the stale mapping is lost; a's probe arrives from its fresh mapping.
        assert_eq!(exchange(&mut b, b_addr, &mut a, |_| false), 0);
        exchange(&mut a, a_real, &mut b, |_| true);
        // b answered and probed a_real at once; a answers that, and gets b's answer.
        exchange(&mut b, b_addr, &mut a, |d| d == a_real);
        exchange(&mut a, a_real, &mut b, |_| true);
        assert_eq!(a.outcome(), Some(Outcome::Direct(b_addr)));
        assert_eq!(b.outcome(), Some(Outcome::Direct(a_real)));
    }

    #[test]
    fn forged_or_misdirected_answers_do_not_count() {
        let t0 = Instant::now();
        let b_addr = addr("203.0.113.7:5000");
        let mut a = Punch::new(5, [3; 16], &[b_addr], t0);
        a.handle_timeout(t0);
        let (_, probe) = a.poll_transmit().unwrap();
        let request = stun::parse(&probe).unwrap();
        // Signed with the wrong key.
        let forged = stun::binding_success(&request.transaction, b_addr, Some(&[9; 16]));
        a.handle_response(b_addr, &stun::parse(&forged).unwrap(), &forged);
        // Right key, but from somewhere the probe did not go.
        let good = stun::binding_success(&request.transaction, b_addr, Some(&[3; 16]));
        a.handle_response(
            addr("203.0.113.8:5000"),
            &stun::parse(&good).unwrap(),
            &good,
        );
        // An answer to a transaction never sent.
        let stray = stun::binding_success(&[0; 12], b_addr, Some(&[3; 16]));
        a.handle_response(b_addr, &stun::parse(&stray).unwrap(), &stray);
        assert_eq!(a.outcome(), None);
        a.handle_response(b_addr, &request, &good);
        assert_eq!(a.outcome(), Some(Outcome::Direct(b_addr)));
    }

    #[test]
    fn probing_is_bounded_in_rate_and_time() {
        let t0 = Instant::now();
        let candidates: Vec<SocketAddr> = (0..40)
            .map(|i| SocketAddr::from(([192, 0, 2, i as u8], 1000)))
            .collect();
        let mut a = Punch::new(1, [0; 16], &candidates, t0);
        let mut sent = 0;
        let mut now = t0;
        while !a.is_finished(now) {
            a.handle_timeout(now);
            while a.poll_transmit().is_some() {
                sent += 1;
            }
            now = a.poll_timeout().max(now + Duration::from_millis(1));
        }
        a.handle_timeout(now);
        let rounds = (PUNCH_TIME.as_millis() / PROBE_INTERVAL.as_millis()) as usize;
        assert_eq!(sent, MAX_PROBED * rounds);
        assert_eq!(
            a.outcome(),
            Some(Outcome::Failed {
                heard_from_peer: false
            })
        );
        // Unknown senders cannot grow the list past the bound either.
        let mut b = Punch::new(2, [0; 16], &[], t0);
        for i in 0..100u16 {
            let probe = stun::binding_request(&[i as u8; 12], Some((&username(2), &[0; 16])));
            let from = SocketAddr::from(([192, 0, 2, 1], 2000 + i));
            b.handle_request(from, &stun::parse(&probe).unwrap(), &probe);
        }
        let probes = std::iter::from_fn(|| b.poll_transmit())
            .filter(|(_, bytes)| stun::parse(bytes).unwrap().class == stun::Class::Request)
            .count();
        assert_eq!(probes, MAX_PROBED);
    }

    #[test]
    fn usernames_round_trip() {
        assert_eq!(id_from_username(&username(0xdead_beef)), Some(0xdead_beef));
        assert_eq!(id_from_username("pairs-punch:xyz"), None);
        assert_eq!(id_from_username("someone-else"), None);
    }
}
