//! The sans-IO core of one blob's swarm: every peer we exchange this blob with, both ways.
//!
//! The driver feeds it frames from peers ([`BlobSwarm::on_message`]), the passing of time
//! ([`BlobSwarm::tick`]) and peers coming and going; it answers with [`Action`]s: frames to send, groups to
//! read from or write to the store, peers to drop and ban. It fetches the piece layer from one peer and proves
//! the size with the last group, picks groups ([`crate::picker`]), keeps each peer's pipeline as deep as its
//! measured rate, takes groups off peers that stall, and serves the groups it holds to the peers it has
//! unchoked: reciprocation while downloading, round robin while seeding, plus one optimistic unchoke.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::bitfield::Bitfield;
use crate::hash::Hash;
use crate::layer::{GROUP_SIZE, Layer, group_count, group_len};
use crate::picker::{Holds, HoldsAll, Picker};
use crate::wire::{Holding, MAX_BITS_BYTES, MAX_LAYER_CVS, MAX_REQUEST_GROUPS, Message, VERSION};

/// A peer session, named by the driver (one per stream).
pub type PeerKey = u64;

/// Piece layer parts asked for ahead of those received (each [`MAX_LAYER_CVS`] values, 8 KiB).
const LAYER_WINDOW: u64 = 8;

/// Knobs of the swarm; the defaults follow libtorrent where it has one.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// Peers unchoked by reciprocation (libtorrent: 8).
    pub upload_slots: usize,
    /// Time between choke rounds (libtorrent: 15 s).
    pub rechoke: Duration,
    /// Rounds between optimistic unchoke rotations (libtorrent: 30 s, every other round).
    pub optimistic_every: u32,
    /// A request with no data for this long marks its peer as stalled; its groups go to others.
    pub stall: Duration,
    /// How much data to keep requested from a peer, in time at its measured rate.
    pub queue_time: Duration,
    /// Requests kept in flight to a peer whose rate is not known yet, in groups (few: a seed shared by a
    /// crowd should not be committed to the same pieces by everyone before anyone has a rate).
    pub initial_queue: usize,
    /// Most groups in flight to one peer.
    pub max_queue: usize,
    /// Most groups a peer may have asked us for and not yet received.
    pub max_served_queue: usize,
    /// Groups handed to the driver to send and not yet sent, all peers together: the choice of whom to
    /// serve next is made this late, so it follows contribution (FairTorrent's deficit).
    pub upload_queue: usize,
    /// Optimistic unchokes (libtorrent: 1); 0 with 0 upload slots serves nobody.
    pub optimistic_slots: usize,
    /// Requests for groups a peer said it had and then refused while unchoking us, before it is dropped.
    pub max_false_claims: u32,
    /// Seed for random choices (first pieces, ties, optimistic unchokes).
    pub seed: u64,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            upload_slots: 8,
            rechoke: Duration::from_secs(15),
            optimistic_every: 2,
            stall: Duration::from_secs(10),
            queue_time: Duration::from_millis(500),
            initial_queue: 8,
            max_queue: 1024,
            max_served_queue: 2048,
            max_false_claims: 8,
            upload_queue: 4,
            optimistic_slots: 1,
            seed: 0x5eed,
        }
    }
}

/// What the driver must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a frame to a peer.
    Send(PeerKey, Message),
    /// Read group `group` from the store and send it to the peer as [`Message::Data`].
    Serve(PeerKey, u64),
    /// Write a verified group to the store.
    Write(u64, Vec<u8>),
    /// The piece layer is verified (size proven): persist it with the blob.
    LayerReady(Layer),
    /// Every group is held.
    Complete,
    /// Close the peer's stream with a reason; `ban` if it sent provably bad data or broke the protocol.
    Drop {
        /// The peer.
        peer: PeerKey,
        /// Why, sent to it and logged.
        reason: String,
        /// Whether it must not be dealt with again for this blob.
        ban: bool,
    },
}

#[derive(Debug)]
enum PeerHolds {
    Unknown,
    Nothing,
    Some(Bitfield),
    All,
}

impl Holds for PeerHolds {
    fn holds(&self, group: u64) -> bool {
        match self {
            PeerHolds::All => true,
            PeerHolds::Some(bits) => bits.get(group),
            _ => false,
        }
    }
}

#[derive(Debug)]
struct Peer {
    holds: PeerHolds,
    claimed_size: Option<u64>,
    /// Groups we asked it for, with when.
    inflight: BTreeMap<u64, Duration>,
    /// Groups it asked us for, in order.
    asked: VecDeque<u64>,
    am_interested: bool,
    peer_interested: bool,
    am_choking: bool,
    peer_choking: bool,
    /// Bytes received from it since the last rate sample, and the smoothed rate (bytes/s).
    received_window: u64,
    rate: f64,
    /// Bytes received from / sent to it in the current choke round.
    received_round: u64,
    sent_round: u64,
    /// Totals, for reports.
    received_total: u64,
    sent_total: u64,
    last_unchoked: Duration,
    last_data: Duration,
    stalled: bool,
    false_claims: u32,
    /// What it gave us beyond what we gave it in earlier sessions (the driver's ledger; never negative).
    credit: i64,
    /// Groups handed to the driver for it and not yet sent.
    uploading: usize,
    last_served: Duration,
}

impl Peer {
    fn new(now: Duration) -> Self {
        Peer {
            holds: PeerHolds::Unknown,
            claimed_size: None,
            inflight: BTreeMap::new(),
            asked: VecDeque::new(),
            am_interested: false,
            peer_interested: false,
            am_choking: true,
            peer_choking: true,
            received_window: 0,
            rate: 0.0,
            received_round: 0,
            sent_round: 0,
            received_total: 0,
            sent_total: 0,
            last_unchoked: Duration::ZERO,
            last_data: now,
            stalled: false,
            false_claims: 0,
            credit: 0,
            uploading: 0,
            last_served: Duration::ZERO,
        }
    }
}

#[derive(Debug)]
enum LayerState {
    /// Size unknown: waiting for a peer that has the blob.
    Unknown,
    /// Fetching the layer from one peer.
    Fetching {
        from: PeerKey,
        size: u64,
        /// The values received so far, in order.
        bytes: Vec<u8>,
        /// Values asked for so far (at most [`LAYER_WINDOW`] parts ahead of `bytes`).
        requested: u64,
        /// When the last part arrived (or the fetch started).
        since: Duration,
    },
    /// Layer hashes to the root; the size is proven once the last group from `from` checks.
    Proving { from: PeerKey, layer: Layer },
    /// Verified.
    Ready,
}

/// A peer's share of the exchange, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer.
    pub peer: PeerKey,
    /// Bytes of verified data received from it.
    pub received: u64,
    /// Bytes of data sent to it.
    pub sent: u64,
    /// Its smoothed rate to us, bytes per second.
    pub rate: u64,
    /// Whether it unchokes us.
    pub unchoking_us: bool,
}

/// One blob's swarm state.
#[derive(Debug)]
pub struct BlobSwarm {
    hash: Hash,
    config: SwarmConfig,
    layer: Option<Layer>,
    layer_state: LayerState,
    picker: Option<Picker>,
    peers: BTreeMap<PeerKey, Peer>,
    banned: BTreeSet<PeerKey>,
    actions: VecDeque<Action>,
    pending_have: Vec<u64>,
    next_rechoke: Duration,
    rounds: u32,
    optimistic: Option<PeerKey>,
    rng: fastrand::Rng,
    last_rate_sample: Duration,
    complete_announced: bool,
    /// The latest time the driver told us.
    now: Duration,
    /// Verified bytes received from peers that are gone.
    received_gone: u64,
    /// Groups handed to the driver to send and not yet sent.
    uploading: usize,
    /// Times each group was sent to anyone.
    served: Vec<u16>,
    /// Bytes a reader waits for ([`BlobSwarm::set_reader_window`]), kept until the layer is known.
    reader_window: Option<(u64, u64)>,
}

impl BlobSwarm {
    /// A swarm for a blob we do not hold at all yet.
    pub fn new(hash: Hash, config: SwarmConfig) -> Self {
        let rng = fastrand::Rng::with_seed(config.seed);
        let mut swarm = BlobSwarm {
            hash,
            layer: None,
            layer_state: LayerState::Unknown,
            picker: None,
            peers: BTreeMap::new(),
            banned: BTreeSet::new(),
            actions: VecDeque::new(),
            pending_have: Vec::new(),
            next_rechoke: Duration::ZERO,
            rounds: 0,
            optimistic: None,
            rng,
            last_rate_sample: Duration::ZERO,
            complete_announced: false,
            now: Duration::ZERO,
            received_gone: 0,
            uploading: 0,
            served: Vec::new(),
            reader_window: None,
            config,
        };
        if hash == Hash::of(b"") {
            swarm.accept_layer(Layer::of(b"").1, Bitfield::new(0));
        }
        swarm
    }

    /// A swarm for a blob whose layer we hold, with the groups in `have` (all of them for a seeder).
    pub fn with_layer(hash: Hash, layer: Layer, have: Bitfield, config: SwarmConfig) -> Self {
        let mut swarm = BlobSwarm::new(hash, config);
        if swarm.layer.is_none() {
            swarm.accept_layer(layer, have);
        }
        swarm.actions.clear();
        swarm.complete_announced = swarm.is_complete();
        swarm
    }

    fn accept_layer(&mut self, layer: Layer, have: Bitfield) {
        debug_assert_eq!(have.len(), layer.groups());
        self.served = vec![0; have.len() as usize];
        self.picker = Some(Picker::new(have, self.config.seed));
        self.layer = Some(layer);
        self.layer_state = LayerState::Ready;
        // A reader that came before the layer: its groups are the first asked for.
        if let Some((start, end)) = self.reader_window {
            self.apply_reader_window(start, end);
        }
        // Peers were told we hold nothing; from now on we can trade, so say what we hold.
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for key in keys {
            self.send_status(key);
        }
        if self.is_complete() && !self.complete_announced {
            self.complete_announced = true;
            self.actions.push_back(Action::Complete);
        }
    }

    /// The blob.
    pub fn hash(&self) -> Hash {
        self.hash
    }

    /// The blob's size, once proven.
    pub fn size(&self) -> Option<u64> {
        self.layer.as_ref().map(|l| l.size())
    }

    /// The verified layer, once there is one.
    pub fn layer(&self) -> Option<&Layer> {
        self.layer.as_ref()
    }

    /// Groups held, once the layer is known.
    pub fn have(&self) -> Option<&Bitfield> {
        self.picker.as_ref().map(|p| p.have())
    }

    /// Bytes held.
    pub fn bytes_held(&self) -> u64 {
        match (&self.layer, &self.picker) {
            (Some(layer), Some(picker)) => {
                // From the count of groups (a popcount), not a walk over them: asked after every
                // batch of events.
                let have = picker.have();
                let Some(last) = layer.groups().checked_sub(1) else {
                    return 0;
                };
                let mut bytes = have.count() * GROUP_SIZE;
                if have.get(last) {
                    bytes -= GROUP_SIZE - group_len(layer.size(), last) as u64;
                }
                bytes
            }
            _ => 0,
        }
    }

    /// Verified bytes received from peers, all of them together (including peers gone since).
    pub fn bytes_received(&self) -> u64 {
        self.received_gone + self.peers.values().map(|p| p.received_total).sum::<u64>()
    }

    /// Whether every group is held.
    pub fn is_complete(&self) -> bool {
        self.picker.as_ref().is_some_and(|p| p.is_complete())
    }

    /// Peers in the swarm and what each gave and took.
    pub fn peer_stats(&self) -> Vec<PeerStats> {
        self.peers
            .iter()
            .map(|(&peer, p)| PeerStats {
                peer,
                received: p.received_total,
                sent: p.sent_total,
                rate: p.rate as u64,
                unchoking_us: !p.peer_choking,
            })
            .collect()
    }

    /// Whether the driver banned this peer key (kept so a late frame cannot revive it).
    pub fn is_banned(&self, peer: PeerKey) -> bool {
        self.banned.contains(&peer)
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// A reader waits for bytes `start..end` (video, a file opened on demand): those groups come first.
    /// Set before the layer is known, it applies from the first requests on. An empty window
    /// (`start >= end`) clears it.
    pub fn set_reader_window(&mut self, start: u64, end: u64) {
        self.reader_window = (start < end).then_some((start, end));
        self.apply_reader_window(start, end);
        self.request_all(None);
    }

    fn apply_reader_window(&mut self, start: u64, end: u64) {
        if let Some(picker) = &mut self.picker {
            let first = start / GROUP_SIZE;
            let last = end.div_ceil(GROUP_SIZE).min(picker.have().len());
            picker.set_deadlines(if first < last {
                vec![(first, last)]
            } else {
                Vec::new()
            });
        }
    }

    /// A stream to a peer opened (either side): send our hello and what we hold.
    pub fn add_peer(&mut self, peer: PeerKey, now: Duration) {
        self.add_peer_with_history(peer, now, 0);
    }

    /// Like [`BlobSwarm::add_peer`], with the peer's credit from earlier sessions: what it gave us
    /// beyond what we gave it (from a ledger kept across sessions). Credit is never negative, so a peer
    /// gains nothing by coming back under a fresh identity: a newcomer starts at zero, like a peer
    /// that took as much as it gave.
    pub fn add_peer_with_history(&mut self, peer: PeerKey, now: Duration, credit: u64) {
        self.now = self.now.max(now);
        if self.banned.contains(&peer) || self.peers.contains_key(&peer) {
            return;
        }
        let mut p = Peer::new(now);
        p.credit = credit.min(i64::MAX as u64) as i64;
        self.peers.insert(peer, p);
        self.send(
            peer,
            Message::Hello {
                version: VERSION,
                hash: self.hash,
            },
        );
        self.send_status(peer);
    }

    fn send_status(&mut self, peer: PeerKey) {
        let (Some(layer), Some(picker)) = (&self.layer, &self.picker) else {
            self.send(peer, Message::Status(Holding::Nothing));
            return;
        };
        let size = layer.size();
        if picker.is_complete() {
            self.send(peer, Message::Status(Holding::All { size }));
            return;
        }
        let bits = picker.have().as_bytes().to_vec();
        self.send(peer, Message::Status(Holding::Some { size }));
        for (i, part) in bits.chunks(MAX_BITS_BYTES).enumerate() {
            let first = (i * MAX_BITS_BYTES * 8) as u64;
            self.send(
                peer,
                Message::Bits {
                    first,
                    bits: part.to_vec(),
                },
            );
        }
    }

    /// The peer's stream ended or failed.
    pub fn remove_peer(&mut self, peer: PeerKey) {
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        self.received_gone += p.received_total;
        self.uploading = self.uploading.saturating_sub(p.uploading);
        if let Some(picker) = &mut self.picker {
            for &group in p.inflight.keys() {
                picker.release(group);
            }
            forget_availability(picker, &p.holds, -1);
        }
        if let LayerState::Fetching { from, .. } | LayerState::Proving { from, .. } =
            &self.layer_state
            && *from == peer
        {
            self.layer_state = LayerState::Unknown;
        }
        if self.optimistic == Some(peer) {
            self.optimistic = None;
        }
        self.fill_slots();
        self.start_layer_fetch();
        self.request_all(None);
    }

    fn drop_peer(&mut self, peer: PeerKey, reason: impl Into<String>, ban: bool) {
        let reason = reason.into();
        if ban {
            self.banned.insert(peer);
        }
        if self.peers.contains_key(&peer) {
            self.remove_peer(peer);
            self.actions.push_back(Action::Drop { peer, reason, ban });
        }
    }

    fn send(&mut self, peer: PeerKey, message: Message) {
        self.actions.push_back(Action::Send(peer, message));
    }

    /// A frame from a peer.
    pub fn on_message(&mut self, peer: PeerKey, message: Message, now: Duration) {
        self.now = self.now.max(now);
        if !self.peers.contains_key(&peer) {
            return;
        }
        match message {
            Message::Hello { version, hash } => {
                if version != VERSION || hash != self.hash {
                    self.drop_peer(peer, "hello for another blob or version", false);
                }
            }
            Message::Status(holding) => self.on_status(peer, holding),
            Message::Bits { first, bits } => self.on_bits(peer, first, bits),
            Message::Have { start, end } => self.on_have(peer, start, end),
            Message::Interested => {
                self.peer_mut(peer).peer_interested = true;
                self.fill_slots();
            }
            Message::NotInterested => {
                let p = self.peer_mut(peer);
                p.peer_interested = false;
                if !p.am_choking {
                    p.am_choking = true;
                    p.asked.clear();
                    self.send(peer, Message::Choke);
                    self.fill_slots();
                }
            }
            Message::Choke => {
                let p = self.peer_mut(peer);
                p.peer_choking = true;
                // BitTorrent: a choke drops the outstanding requests.
                let groups: Vec<u64> = std::mem::take(&mut p.inflight).into_keys().collect();
                if let Some(picker) = &mut self.picker {
                    for g in groups {
                        picker.release(g);
                    }
                }
                self.request_all(Some(peer));
            }
            Message::Unchoke => {
                let p = self.peer_mut(peer);
                p.peer_choking = false;
                p.last_data = now;
                self.request_from(peer, now);
            }
            Message::Request { start, count } => self.on_request(peer, start, count),
            Message::Cancel { start, count } => {
                let p = self.peer_mut(peer);
                p.asked
                    .retain(|g| !(start..start + u64::from(count)).contains(g));
            }
            Message::Reject { start, count } => self.on_reject(peer, start, count, now),
            Message::Data { group, bytes } => self.on_data(peer, group, bytes, now),
            Message::LayerRequest { start, count } => self.on_layer_request(peer, start, count),
            Message::LayerPart { start, cvs } => self.on_layer_part(peer, start, cvs, now),
            Message::Close { reason } => {
                self.remove_peer(peer);
                self.actions.push_back(Action::Drop {
                    peer,
                    reason: format!("peer closed: {reason}"),
                    ban: false,
                });
            }
        }
    }

    fn peer_mut(&mut self, peer: PeerKey) -> &mut Peer {
        self.peers
            .get_mut(&peer)
            .expect("caller checked the peer exists")
    }

    fn on_status(&mut self, peer: PeerKey, holding: Holding) {
        let (holds, size) = match holding {
            Holding::Nothing => (PeerHolds::Nothing, None),
            Holding::All { size } => (PeerHolds::All, Some(size)),
            Holding::Some { size } => (
                PeerHolds::Some(Bitfield::new(group_count(size))),
                Some(size),
            ),
        };
        if let (Some(size), Some(ours)) = (size, self.size())
            && size != ours
        {
            self.drop_peer(
                peer,
                format!("claims the blob is {size} bytes; it is {ours}"),
                true,
            );
            return;
        }
        if size == Some(0) && self.hash != Hash::of(b"") {
            self.drop_peer(peer, "claims a non-empty blob is empty", true);
            return;
        }
        let p = self.peer_mut(peer);
        // A status comes first, and once more when a peer that held nothing got the layer.
        if !matches!(p.holds, PeerHolds::Unknown | PeerHolds::Nothing) {
            self.drop_peer(peer, "sent its status twice", true);
            return;
        }
        p.holds = holds;
        p.claimed_size = size;
        if let (Some(picker), PeerHolds::All) = (&mut self.picker, &self.peers[&peer].holds) {
            for piece in 0..picker.pieces() {
                picker.piece_availability(piece, 1);
            }
        }
        self.update_interest(peer);
        self.start_layer_fetch();
        self.close_if_done(peer);
    }

    fn on_bits(&mut self, peer: PeerKey, first: u64, bits: Vec<u8>) {
        let p = self.peer_mut(peer);
        let PeerHolds::Some(field) = &mut p.holds else {
            self.drop_peer(peer, "bitfield without a partial status", true);
            return;
        };
        if first + bits.len() as u64 * 8 > field.len().div_ceil(8) * 8 {
            self.drop_peer(peer, "bitfield past the blob's end", true);
            return;
        }
        let mut newly = Vec::new();
        for (i, byte) in bits.iter().enumerate() {
            for bit in 0..8 {
                let group = first + i as u64 * 8 + bit;
                if byte & (0x80 >> bit) != 0 {
                    if group >= field.len() {
                        self.drop_peer(peer, "bitfield past the blob's end", true);
                        return;
                    }
                    if field.set(group) {
                        newly.push(group);
                    }
                }
            }
        }
        self.note_new_groups(peer, &newly);
    }

    fn on_have(&mut self, peer: PeerKey, start: u64, end: u64) {
        let size = self.size();
        let p = self.peer_mut(peer);
        let field = match &mut p.holds {
            PeerHolds::Some(field) => field,
            PeerHolds::Nothing | PeerHolds::Unknown => {
                let Some(size) = size else {
                    // Before we know the size we cannot use partial holders; their status comes again later.
                    return;
                };
                p.holds = PeerHolds::Some(Bitfield::new(group_count(size)));
                p.claimed_size = Some(size);
                let PeerHolds::Some(field) = &mut p.holds else {
                    unreachable!()
                };
                field
            }
            PeerHolds::All => return,
        };
        if end > field.len() {
            self.drop_peer(peer, "have past the blob's end", true);
            return;
        }
        let newly: Vec<u64> = (start..end).filter(|&g| field.set(g)).collect();
        if let PeerHolds::Some(field) = &self.peers[&peer].holds
            && field.is_full()
        {
            self.peer_mut(peer).holds = PeerHolds::All;
        }
        self.note_new_groups(peer, &newly);
        self.close_if_done(peer);
    }

    fn note_new_groups(&mut self, peer: PeerKey, groups: &[u64]) {
        if let Some(picker) = &mut self.picker {
            let holds = &self.peers[&peer].holds;
            let mut pieces: Vec<u64> = groups.iter().map(|&g| picker.piece_of(g)).collect();
            pieces.dedup();
            for piece in pieces {
                // Counted once, when the peer's first group of the piece arrives.
                let new_here = groups
                    .iter()
                    .filter(|&&g| picker.piece_of(g) == piece)
                    .count() as u64;
                if !matches!(holds, PeerHolds::All)
                    && picker.held_in_piece(holds, piece) == new_here
                {
                    picker.piece_availability(piece, 1);
                }
            }
            let wanted = groups.iter().any(|&g| !picker.have().get(g));
            if wanted && !self.peers[&peer].am_interested {
                self.peer_mut(peer).am_interested = true;
                self.send(peer, Message::Interested);
            }
            if wanted {
                self.request_from(peer, self.now);
            }
        }
    }

    /// Ends the session with a peer when neither side can give the other anything: both hold the
    /// whole blob. (Streams are a bounded resource: a collection of thousands of files must not keep
    /// one open per finished file.)
    fn close_if_done(&mut self, peer: PeerKey) {
        if self.is_complete()
            && self
                .peers
                .get(&peer)
                .is_some_and(|p| matches!(p.holds, PeerHolds::All))
        {
            self.drop_peer(peer, "both hold the whole blob", false);
        }
    }

    fn update_interest(&mut self, peer: PeerKey) {
        let want = match &self.picker {
            Some(picker) => !picker.is_complete() && picker.wants_from(&self.peers[&peer].holds),
            // Without the layer we want anything from anyone who has the blob.
            None => matches!(self.peers[&peer].holds, PeerHolds::All | PeerHolds::Some(_)),
        };
        let p = self.peer_mut(peer);
        if want != p.am_interested {
            p.am_interested = want;
            self.send(
                peer,
                if want {
                    Message::Interested
                } else {
                    Message::NotInterested
                },
            );
        }
    }

    fn start_layer_fetch(&mut self) {
        if !matches!(self.layer_state, LayerState::Unknown) {
            return;
        }
        // Prefer a peer with everything; any peer with a size has the layer.
        let candidate = self
            .peers
            .iter()
            .filter(|(_, p)| p.claimed_size.is_some())
            .min_by_key(|(_, p)| !matches!(p.holds, PeerHolds::All))
            .map(|(&k, p)| (k, p.claimed_size.expect("filtered")));
        let Some((from, size)) = candidate else {
            return;
        };
        if size <= GROUP_SIZE {
            // No layer: the single group is checked against the root itself.
            let layer = Layer::verified(&self.hash, size, Vec::new()).expect("an empty layer fits");
            self.layer_state = LayerState::Proving { from, layer };
            self.send(from, Message::Request { start: 0, count: 1 });
            let now = self.now;
            self.peer_mut(from).inflight.insert(0, now);
            return;
        }
        self.layer_state = LayerState::Fetching {
            from,
            size,
            bytes: Vec::new(),
            requested: 0,
            since: self.now,
        };
        self.request_layer_parts();
    }

    /// Keeps [`LAYER_WINDOW`] layer parts asked for ahead of those received: what a peer's claimed
    /// size makes us queue and hold is bounded by what it actually sends, not by the claim.
    fn request_layer_parts(&mut self) {
        let LayerState::Fetching {
            from,
            size,
            bytes,
            requested,
            ..
        } = &mut self.layer_state
        else {
            return;
        };
        let (from, groups) = (*from, group_count(*size));
        let received = bytes.len() as u64 / 32;
        let window_end = groups.min(received + LAYER_WINDOW * u64::from(MAX_LAYER_CVS));
        let mut asks = Vec::new();
        while *requested < window_end {
            let start = *requested;
            let count = (groups - start).min(u64::from(MAX_LAYER_CVS));
            asks.push(Message::LayerRequest {
                start,
                count: count as u32,
            });
            *requested += count;
        }
        for ask in asks {
            self.send(from, ask);
        }
    }

    fn on_layer_request(&mut self, peer: PeerKey, start: u64, count: u32) {
        let Some(layer) = &self.layer else {
            self.drop_peer(peer, "asked for a layer we never announced", true);
            return;
        };
        let end = start + u64::from(count);
        if end > layer.cvs().len() as u64 {
            self.drop_peer(peer, "asked for layer values past the end", true);
            return;
        }
        let cvs = layer.cvs()[start as usize..end as usize].concat();
        self.send(peer, Message::LayerPart { start, cvs });
    }

    fn on_layer_part(&mut self, peer: PeerKey, start: u64, cvs: Vec<u8>, now: Duration) {
        let LayerState::Fetching {
            from,
            size,
            bytes,
            requested,
            since,
        } = &mut self.layer_state
        else {
            self.drop_peer(peer, "sent a layer nobody asked for", true);
            return;
        };
        // Parts come in the order they were asked for (one stream, answered in turn), each whole.
        let received = bytes.len() as u64 / 32;
        let expected = (*requested - received).min(u64::from(MAX_LAYER_CVS));
        if *from != peer || start != received || cvs.len() as u64 != expected * 32 {
            self.drop_peer(peer, "sent a layer part nobody asked for", true);
            return;
        }
        bytes.extend_from_slice(&cvs);
        *since = now;
        let size = *size;
        if (bytes.len() as u64 / 32) < group_count(size) {
            self.request_layer_parts();
            return;
        }
        let bytes = std::mem::take(bytes);
        let cvs = bytes
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32 bytes"))
            .collect();
        match Layer::verified(&self.hash, size, cvs) {
            Ok(layer) => {
                // The root does not pin the size within the last group: prove it with that group.
                let last = layer.groups() - 1;
                self.layer_state = LayerState::Proving { from: peer, layer };
                self.send(
                    peer,
                    Message::Request {
                        start: last,
                        count: 1,
                    },
                );
                self.peer_mut(peer).inflight.insert(last, now);
            }
            Err(e) => {
                self.layer_state = LayerState::Unknown;
                self.drop_peer(peer, format!("bad piece layer: {e}"), true);
                self.start_layer_fetch();
            }
        }
    }

    fn on_request(&mut self, peer: PeerKey, start: u64, count: u32) {
        let end = start + u64::from(count);
        let p = &self.peers[&peer];
        // The last group proves the size of the layer a peer just fetched: served even while choking.
        let proof = count == 1
            && self
                .size()
                .is_some_and(|size| start + 1 == group_count(size));
        if p.am_choking && !proof {
            self.send(peer, Message::Reject { start, count });
            return;
        }
        let holds = |g: u64| self.picker.as_ref().is_some_and(|pk| pk.have().get(g));
        if !(start..end).all(holds) {
            self.send(peer, Message::Reject { start, count });
            return;
        }
        let max_queue = self.config.max_served_queue;
        let p = self.peer_mut(peer);
        if p.asked.len() + count as usize > max_queue {
            self.drop_peer(peer, "too many requests outstanding", true);
            return;
        }
        for group in start..end {
            p.asked.push_back(group);
        }
        self.pump_serving();
    }

    /// A peer's standing (FairTorrent's deficit): its credit from earlier sessions plus what it gave
    /// minus what it took in this one. The next group goes to the best standing, so a peer that only
    /// takes is served from what the others leave.
    fn standing(&self, p: &Peer) -> i64 {
        p.credit + p.received_total as i64 - p.sent_total as i64
    }

    /// Hands queued requests to the driver while its upload queue has room. While downloading, the
    /// next group goes to the peer with the best standing (FairTorrent: what it gave minus what it
    /// took), so a peer that only takes gets what the others leave. A seed, to whom everyone only
    /// takes, sends first the group it sent least often (its upload goes to what nobody has yet; a
    /// group already sent spreads from its first receiver), then by standing. Ties go to the peer
    /// unserved longest.
    fn pump_serving(&mut self) {
        let size = self.size().unwrap_or(0);
        let seeding = self.is_complete();
        while self.uploading < self.config.upload_queue {
            let served = &self.served;
            let times = |g: u64| served.get(g as usize).copied().unwrap_or(0);
            let Some((peer, index)) = self
                .peers
                .iter()
                .filter_map(|(&k, p)| {
                    let (index, group) =
                        p.asked.iter().enumerate().min_by_key(|(_, g)| times(**g))?;
                    Some((k, p, index, times(*group)))
                })
                .max_by_key(|(k, p, _, sent)| {
                    (
                        std::cmp::Reverse(if seeding { *sent } else { 0 }),
                        self.standing(p),
                        std::cmp::Reverse(p.last_served),
                        std::cmp::Reverse(*k),
                    )
                })
                .map(|(k, _, index, _)| (k, index))
            else {
                return;
            };
            let now = self.now;
            let p = self.peer_mut(peer);
            let group = p.asked.remove(index).expect("index from the queue");
            let len = group_len(size, group) as u64;
            p.sent_round += len;
            p.sent_total += len;
            p.uploading += 1;
            p.last_served = now;
            self.uploading += 1;
            if let Some(count) = self.served.get_mut(group as usize) {
                *count = count.saturating_add(1);
            }
            self.actions.push_back(Action::Serve(peer, group));
        }
    }

    /// The driver sent a group it was handed for `peer` (or gave up on it): room for the next.
    pub fn on_sent(&mut self, peer: PeerKey) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.uploading = p.uploading.saturating_sub(1);
            self.uploading = self.uploading.saturating_sub(1);
        }
        self.pump_serving();
    }

    fn on_reject(&mut self, peer: PeerKey, start: u64, count: u32, now: Duration) {
        let p = self.peer_mut(peer);
        let mut released = Vec::new();
        for g in start..start + u64::from(count) {
            if p.inflight.remove(&g).is_some() {
                released.push(g);
                if !p.peer_choking && p.holds.holds(g) {
                    p.false_claims += 1;
                }
            }
        }
        let liar = p.false_claims > self.config.max_false_claims;
        if let LayerState::Proving { from, .. } = self.layer_state
            && from == peer
            && released.contains(&self.proof_group())
        {
            self.layer_state = LayerState::Unknown;
            self.drop_peer(peer, "refused to prove the size it claimed", true);
            self.start_layer_fetch();
            return;
        }
        if let Some(picker) = &mut self.picker {
            for g in released {
                picker.release(g);
            }
        }
        if liar {
            self.drop_peer(peer, "refuses groups it says it has", true);
            return;
        }
        self.request_all(Some(peer));
        let _ = now;
    }

    fn proof_group(&self) -> u64 {
        match &self.layer_state {
            LayerState::Proving { layer, .. } => layer.groups().max(1) - 1,
            _ => u64::MAX,
        }
    }

    fn on_data(&mut self, peer: PeerKey, group: u64, bytes: Vec<u8>, now: Duration) {
        // A proof of size in progress: this group decides whether the layer is accepted.
        if let LayerState::Proving { from, layer } = &self.layer_state
            && *from == peer
            && group == self.proof_group()
        {
            if layer.check_group(&self.hash, group, &bytes) {
                let layer = layer.clone();
                let size = layer.size();
                self.actions.push_back(Action::LayerReady(layer.clone()));
                self.accept_layer(layer, Bitfield::new(group_count(size)));
                // Peers that claimed another size lied.
                let liars: Vec<PeerKey> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| p.claimed_size.is_some_and(|s| s != size))
                    .map(|(&k, _)| k)
                    .collect();
                for liar in liars {
                    self.drop_peer(liar, "claimed another size for the blob", true);
                }
                // Now that the layer is known, availability and interest can be counted.
                let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
                for key in &keys {
                    if let Some(picker) = &mut self.picker {
                        let holds = &self.peers[key].holds;
                        for piece in 0..picker.pieces() {
                            if picker.holds_any(holds, piece) {
                                picker.piece_availability(piece, 1);
                            }
                        }
                    }
                    self.update_interest(*key);
                }
                // The proving group counts as requested so that `received` accounts it.
                self.peer_mut(peer).inflight.remove(&group);
                self.accept_group(peer, group, bytes, now);
                self.request_all(None);
            } else {
                self.layer_state = LayerState::Unknown;
                self.drop_peer(peer, "corrupt data or a false size in its last group", true);
                self.start_layer_fetch();
            }
            return;
        }
        let Some(layer) = &self.layer else {
            self.drop_peer(peer, "sent data before any layer", true);
            return;
        };
        if !self.peers[&peer].inflight.contains_key(&group) {
            // Late data after a cancel, a choke or a stall: useful if still missing and good, else ignored.
            if !layer.check_group(&self.hash, group, &bytes) {
                self.drop_peer(peer, format!("corrupt data in group {group}"), true);
                return;
            }
            if !self
                .picker
                .as_ref()
                .expect("layer implies picker")
                .have()
                .get(group)
            {
                self.accept_group(peer, group, bytes, now);
            }
            return;
        }
        if !layer.check_group(&self.hash, group, &bytes) {
            self.drop_peer(peer, format!("corrupt data in group {group}"), true);
            return;
        }
        self.peer_mut(peer).inflight.remove(&group);
        self.accept_group(peer, group, bytes, now);
        self.request_from(peer, now);
    }

    fn accept_group(&mut self, peer: PeerKey, group: u64, bytes: Vec<u8>, now: Duration) {
        let len = bytes.len() as u64;
        let p = self.peer_mut(peer);
        p.received_window += len;
        p.received_round += len;
        p.received_total += len;
        p.last_data = now;
        p.stalled = false;
        let picker = self.picker.as_mut().expect("layer implies picker");
        let (new, _) = picker.received(group);
        if !new {
            return;
        }
        self.actions.push_back(Action::Write(group, bytes));
        self.now_held(group, Some(peer));
    }

    /// Groups the driver verified from data it already had (an older version of the file whose
    /// groups match the new layer at the same place): held from now on, announced, never asked for.
    /// Call after [`Action::LayerReady`]; the driver has written them itself (no [`Action::Write`]).
    pub fn add_local_groups(&mut self, groups: &[u64]) {
        for &group in groups {
            let Some(picker) = self.picker.as_mut() else {
                return;
            };
            if picker.received(group).0 {
                self.now_held(group, None);
            }
        }
        self.flush_have();
        // Queues shrank: fill them with what is still missing.
        self.request_all(None);
    }

    /// A group became held: announce it, cancel its other requests, finish if it was the last.
    fn now_held(&mut self, group: u64, from: Option<PeerKey>) {
        self.pending_have.push(group);
        // Cancel the duplicates of an endgame request.
        let others: Vec<PeerKey> = self
            .peers
            .iter_mut()
            .filter(|(k, _)| Some(**k) != from)
            .filter_map(|(k, p)| p.inflight.remove(&group).map(|_| *k))
            .collect();
        for other in others {
            self.send(
                other,
                Message::Cancel {
                    start: group,
                    count: 1,
                },
            );
        }
        if self.pending_have.len() >= 16 {
            self.flush_have();
        }
        if self.is_complete() && !self.complete_announced {
            self.complete_announced = true;
            self.flush_have();
            self.actions.push_back(Action::Complete);
            let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
            for key in keys {
                self.update_interest(key);
                self.close_if_done(key);
            }
        }
    }

    /// Announces the groups verified since the last announcement, as ranges.
    fn flush_have(&mut self) {
        if self.pending_have.is_empty() {
            return;
        }
        let mut groups = std::mem::take(&mut self.pending_have);
        groups.sort_unstable();
        let mut ranges = Vec::new();
        for g in groups {
            match ranges.last_mut() {
                Some((_, end)) if *end == g => *end += 1,
                _ => ranges.push((g, g + 1)),
            }
        }
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for key in keys {
            for &(start, end) in &ranges {
                self.send(key, Message::Have { start, end });
            }
        }
    }

    /// Target number of groups in flight to a peer: its rate times the queue time.
    fn queue_target(&self, p: &Peer) -> usize {
        if p.rate <= 0.0 {
            return self.config.initial_queue;
        }
        let groups = p.rate * self.config.queue_time.as_secs_f64() / GROUP_SIZE as f64;
        (groups.ceil() as usize).clamp(4, self.config.max_queue)
    }

    fn request_all(&mut self, except: Option<PeerKey>) {
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        let now = self.now;
        for key in keys {
            if Some(key) != except {
                self.request_from(key, now);
            }
        }
    }

    fn request_from(&mut self, peer: PeerKey, now: Duration) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        if p.peer_choking || p.stalled || self.picker.is_none() || self.is_complete() {
            return;
        }
        let target = self.queue_target(p);
        let room = target.saturating_sub(p.inflight.len());
        if room == 0 {
            return;
        }
        let best_rate = self.peers.values().map(|p| p.rate).fold(0.0, f64::max);
        let fast = p.rate == 0.0 || p.rate * 4.0 >= best_rate;
        let seeds = self
            .peers
            .values()
            .filter(|o| matches!(o.holds, PeerHolds::All))
            .count() as u32;
        // A seed is asked only for pieces no other peer has started, while other peers can give the
        // rest; once nothing of the kind is left, or this seed would sit idle, anything goes.
        let seed_limit = (matches!(p.holds, PeerHolds::All)
            && self.peers.len() as u32 > seeds
            && !p.inflight.is_empty())
        .then_some(seeds);
        let picker = self.picker.as_mut().expect("checked");
        let holds: &dyn Holds = match &p.holds {
            PeerHolds::All => &HoldsAll,
            other => other,
        };
        let inflight = &p.inflight;
        // Endgame duplicates are worth asking only for groups stuck at a peer clearly slower than this one.
        let my_rate = p.rate;
        let stuck: BTreeSet<u64> = self
            .peers
            .iter()
            .filter(|(k, o)| **k != peer && (o.stalled || o.rate * 2.0 < my_rate))
            .flat_map(|(_, o)| o.inflight.keys().copied())
            .collect();
        let picked = picker.pick_with(
            holds,
            room,
            &|g| inflight.contains_key(&g) || !stuck.contains(&g),
            fast,
            seed_limit,
        );
        if picked.is_empty() {
            return;
        }
        let p = self.peer_mut(peer);
        for &g in &picked {
            p.inflight.insert(g, now);
        }
        // Adjacent groups go in one request.
        let mut start = picked[0];
        let mut count = 1u32;
        for &g in &picked[1..] {
            if g == start + u64::from(count) && count < MAX_REQUEST_GROUPS {
                count += 1;
            } else {
                self.send(peer, Message::Request { start, count });
                start = g;
                count = 1;
            }
        }
        self.send(peer, Message::Request { start, count });
    }

    /// Time passes: rates, stalls, choke rounds, pending announcements.
    pub fn tick(&mut self, now: Duration) {
        self.now = self.now.max(now);
        self.flush_have();
        // Rates, sampled at most every 250 ms and smoothed.
        let elapsed = now.saturating_sub(self.last_rate_sample);
        if elapsed >= Duration::from_millis(250) {
            self.last_rate_sample = now;
            for p in self.peers.values_mut() {
                let sample = p.received_window as f64 / elapsed.as_secs_f64();
                p.rate = if p.rate == 0.0 {
                    sample
                } else {
                    p.rate * 0.7 + sample * 0.3
                };
                p.received_window = 0;
            }
        }
        // Stalls: a peer with requests and no data for too long loses them to the others.
        let stall = self.config.stall;
        let stalled: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                let oldest = p.inflight.values().min().copied();
                !p.stalled
                    && oldest.is_some_and(|t| now.saturating_sub(t) > stall)
                    && now.saturating_sub(p.last_data) > stall
            })
            .map(|(&k, _)| k)
            .collect();
        if let LayerState::Fetching { from, since, .. } = self.layer_state
            && now.saturating_sub(since) > stall * 2
        {
            self.drop_peer(from, "stalled while sending the piece layer", false);
        }
        for key in stalled {
            if let LayerState::Proving { from, .. } | LayerState::Fetching { from, .. } =
                self.layer_state
                && from == key
            {
                self.drop_peer(key, "stalled while sending the piece layer", false);
                continue;
            }
            let p = self.peer_mut(key);
            p.stalled = true;
            p.rate = 0.0;
            let groups: Vec<u64> = std::mem::take(&mut p.inflight).into_keys().collect();
            for &g in &groups {
                self.send(key, Message::Cancel { start: g, count: 1 });
            }
            if let Some(picker) = &mut self.picker {
                for g in groups {
                    picker.release(g);
                }
            }
            self.request_all(Some(key));
        }
        // A stalled peer gets one probe request per stall period.
        let probes: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.stalled && now.saturating_sub(p.last_data) > stall * 2)
            .map(|(&k, _)| k)
            .collect();
        for key in probes {
            let p = self.peer_mut(key);
            p.stalled = false;
            p.last_data = now;
            self.request_from(key, now);
        }
        if now >= self.next_rechoke {
            self.next_rechoke = now + self.config.rechoke;
            self.rechoke(now);
        }
        self.request_all(None);
    }

    /// A choke round: the best reciprocators (round robin when seeding) plus one optimistic unchoke.
    fn rechoke(&mut self, now: Duration) {
        self.rounds += 1;
        let seeding = self.is_complete();
        let mut candidates: Vec<(PeerKey, u64, Duration)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.peer_interested)
            .map(|(&k, p)| (k, p.received_round, p.last_unchoked))
            .collect();
        if seeding {
            // Longest waiting first: every interested peer gets its turn.
            candidates.sort_by_key(|&(k, _, last)| (last, k));
        } else {
            candidates.sort_by_key(|&(k, got, last)| (std::cmp::Reverse(got), last, k));
        }
        let mut unchoke: BTreeSet<PeerKey> = candidates
            .iter()
            .take(self.config.upload_slots)
            .map(|&(k, _, _)| k)
            .collect();
        let rotate = self.optimistic.is_none()
            || self
                .rounds
                .is_multiple_of(self.config.optimistic_every.max(1));
        if rotate {
            let rest: Vec<PeerKey> = candidates
                .iter()
                .map(|&(k, _, _)| k)
                .filter(|k| !unchoke.contains(k))
                .collect();
            self.optimistic = if rest.is_empty() {
                None
            } else {
                Some(rest[self.rng.usize(..rest.len())])
            };
        }
        if let Some(o) = self.optimistic
            && self.config.optimistic_slots > 0
            && self.peers.get(&o).is_some_and(|p| p.peer_interested)
        {
            unchoke.insert(o);
        }
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for key in keys {
            let p = self.peer_mut(key);
            p.received_round = 0;
            p.sent_round = 0;
            let want_unchoked = unchoke.contains(&key);
            if want_unchoked && p.am_choking {
                p.am_choking = false;
                p.last_unchoked = now;
                self.send(key, Message::Unchoke);
            } else if !want_unchoked && !p.am_choking {
                p.am_choking = true;
                p.asked.clear();
                self.send(key, Message::Choke);
            }
        }
    }

    /// Unchokes interested peers at once while slots are free (no wait for the next round).
    fn fill_slots(&mut self) {
        let unchoked = self.peers.values().filter(|p| !p.am_choking).count();
        let free =
            (self.config.upload_slots + self.config.optimistic_slots).saturating_sub(unchoked);
        let waiting: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.peer_interested && p.am_choking)
            .map(|(&k, _)| k)
            .take(free)
            .collect();
        for key in waiting {
            let p = self.peer_mut(key);
            p.am_choking = false;
            p.last_unchoked = p.last_data;
            self.send(key, Message::Unchoke);
        }
    }
}

fn forget_availability(picker: &mut Picker, holds: &PeerHolds, delta: i32) {
    for piece in 0..picker.pieces() {
        if picker.holds_any(holds, piece) {
            picker.piece_availability(piece, delta);
        }
    }
}
