//! The replication protocol as a state machine: frames in, frames out, no I/O and no clock.
//!
//! 1. Both sides send `Hello` (version, nonce), then `Auth`: a keyed hash of both nonces under a key
//!    derived from the log id, proving each knows the log without revealing it, plus their heads.
//! 2. Equal heads end reconciliation at once. Otherwise heads the receiver lacks are wanted at once, and
//!    the side with the larger nonce starts range-based reconciliation ([`crate::reconcile`]).
//! 3. Entries flow in compact batches as differences are found; entries whose parents are missing, or
//!    unsigned entries awaiting their seal, wait in a bounded buffer; missing parents are asked for by id.
//!    Of each author's run of entries in a batch only the newest signature is checked (see `vouched`).
//! 4. Each side sends `Done` when it needs nothing more; the session is complete when both have.
//!    In live mode it continues: entries stored later are pushed, never back to the session they came from.
//!
//! Every message is checked against limits; anything malformed or useless beyond a budget ends the
//! session with a reason, and nothing from a rejected batch is stored.

use std::collections::{BTreeSet, VecDeque};

use crate::entry::{Entry, EntryId, OrderKey};
use crate::fast::{Map as HashMap, Set as HashSet};
use crate::pending::{self, Pending};
use crate::reconcile;
use crate::store::{Applied, Log, SEAL_SPAN, StoreError, Verified};
use crate::wire::{MAX_HEADS, MAX_IDS, Message, VERSION, WireBatch};

/// Most entries waiting for parents or seals.
const MAX_PENDING: usize = 200_000;
/// Most bytes of entries waiting for parents or seals (unsigned ones are not verified until sealed).
const MAX_PENDING_BYTES: usize = 256 << 20;
/// Entries a peer may ask for beyond the size of our log, in one session.
const WANT_ALLOWANCE: u64 = 100_000;
/// Most bytes of entries in one outgoing batch.
const BATCH_BYTES: usize = 2 << 20;
/// Most reconciliation rounds: log16 of any realistic log size, with a wide margin.
const MAX_ROUNDS: u32 = 64;
/// Duplicate entries tolerated beyond the useful ones.
const DUPLICATE_ALLOWANCE: u64 = 10_000;

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The peer broke the protocol; the session was closed with this reason.
    #[error("peer broke the protocol: {0}")]
    Protocol(String),
    /// The peer proved knowledge of another log than ours: both sides must name the same log.
    #[error("the other side replicates another log (both sides must name the same log ticket)")]
    OtherLog,
    /// The peer closed the session with this reason.
    #[error("peer closed the session: {0}")]
    Peer(String),
    /// Our store failed.
    #[error(transparent)]
    Store(StoreError),
    /// The stream failed or ended early.
    // Transparent: printing the cause and also returning it as the source would show it twice in
    // an error chain ("unexpected end of file: unexpected end of file").
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The reason sent to a peer that proved knowledge of another log.
pub(crate) const OTHER_LOG: &str = "not the same log on both sides";

fn violation(why: impl Into<String>) -> SyncError {
    SyncError::Protocol(why.into())
}

/// Counters of one session.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    /// Entries sent.
    pub entries_sent: u64,
    /// New entries received and stored.
    pub entries_received: u64,
    /// Entries received that we already had.
    pub duplicates_received: u64,
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Bytes sent, framing included.
    pub bytes_sent: u64,
    /// Bytes received, framing included.
    pub bytes_received: u64,
    /// Reconciliation messages answered.
    pub rounds: u32,
}

/// One replication session with one peer.
pub struct Session {
    log: Log,
    origin: u64,
    live: bool,
    nonce: [u8; 16],
    peer_nonce: Option<[u8; 16]>,
    authenticated: bool,
    reconciled: bool,
    sent_done: bool,
    peer_done: bool,
    out: VecDeque<Vec<u8>>,
    to_send: BTreeSet<OrderKey>,
    peer_has: HashSet<EntryId>,
    wanted: HashSet<EntryId>,
    pending: Pending,
    /// The heads and size we announced in our Auth: both sides must decide on the same facts.
    announced: (Vec<EntryId>, u64),
    /// Live announcements that arrived before authentication, sent once it completes.
    early_live: Vec<EntryId>,
    /// Entries the peer sent again after it had sent them or we had sent them to it.
    repeats_received: u64,
    wants_served: u64,
    stats: SyncStats,
}

impl Session {
    /// Starts a session on `log`. `origin` tags what this session stores, so live mode never echoes it.
    pub fn new(log: Log, live: bool, origin: u64) -> Self {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).expect("the operating system random source is unavailable");
        Self::with_nonce(log, live, origin, nonce)
    }

    /// [`Session::new`] with the handshake nonce given rather than drawn, so that a deterministic
    /// simulation replays exactly. The nonce decides which side starts reconciliation and goes into
    /// the knowledge proof: outside a simulation it must be fresh and random, as `new` makes it.
    pub fn with_nonce(log: Log, live: bool, origin: u64, nonce: [u8; 16]) -> Self {
        let mut session = Self {
            log,
            origin,
            live,
            nonce,
            peer_nonce: None,
            authenticated: false,
            reconciled: false,
            sent_done: false,
            peer_done: false,
            out: VecDeque::new(),
            to_send: BTreeSet::new(),
            peer_has: HashSet::default(),
            wanted: HashSet::default(),
            pending: Pending::default(),
            announced: (Vec::new(), 0),
            early_live: Vec::new(),
            repeats_received: 0,
            wants_served: 0,
            stats: SyncStats::default(),
        };
        session.queue(&Message::Hello {
            version: VERSION,
            nonce,
        });
        session
    }

    /// Counters so far.
    pub fn stats(&self) -> SyncStats {
        self.stats
    }

    /// Both sides hold the union (the initial sync is complete).
    pub fn is_synced(&self) -> bool {
        self.sent_done && self.peer_done && self.out.is_empty()
    }

    /// Nothing more to do: synced and not live.
    pub fn is_finished(&self) -> bool {
        self.is_synced() && !self.live
    }

    /// The next frame to send, if any.
    pub fn poll_transmit(&mut self) -> Result<Option<Vec<u8>>, SyncError> {
        if self.out.is_empty() && !self.to_send.is_empty() {
            self.queue_entries()?;
        }
        self.check_done()?;
        let frame = self.out.pop_front();
        if let Some(frame) = &frame {
            self.stats.frames_sent += 1;
            self.stats.bytes_sent += frame.len() as u64;
        }
        Ok(frame)
    }

    /// Builds the frame that tells the peer why we are closing.
    pub fn error_frame(reason: &str) -> Vec<u8> {
        Message::Error(reason.chars().take(200).collect()).to_frame()
    }

    /// Handles one received frame body.
    pub fn handle_frame(&mut self, body: &[u8]) -> Result<(), SyncError> {
        self.stats.frames_received += 1;
        self.stats.bytes_received += body.len() as u64 + 4;
        let message = Message::from_body(body).map_err(violation)?;
        match message {
            Message::Hello { version, nonce } => self.on_hello(version, nonce),
            Message::Error(reason) if reason == OTHER_LOG => Err(SyncError::OtherLog),
            Message::Error(reason) => Err(SyncError::Peer(reason)),
            _ if !self.authenticated && !matches!(message, Message::Auth { .. }) => {
                Err(violation("message before authentication"))
            }
            Message::Auth { proof, heads, len } => self.on_auth(proof, heads, len),
            Message::Ranges(ranges) => self.on_ranges(ranges),
            Message::Entries(batch) => self.on_entries(batch),
            Message::Want(ids) => self.on_want(ids),
            Message::Missing(ids) => self.on_missing(ids),
            Message::Done => {
                if self.peer_done {
                    return Err(violation("done twice"));
                }
                self.peer_done = true;
                Ok(())
            }
        }?;
        self.check_done()
    }

    /// Live mode: entries were stored; push those the peer may lack.
    pub fn on_applied(&mut self, applied: &Applied) -> Result<(), SyncError> {
        if !self.live || applied.origin == self.origin {
            return Ok(());
        }
        if !self.authenticated {
            // Our Auth may already be on its way without these; keep them for after the handshake.
            self.early_live.extend(applied.ids.iter().copied());
            return Ok(());
        }
        self.push_live(applied.ids.to_vec())
    }

    fn push_live(&mut self, ids: Vec<EntryId>) -> Result<(), SyncError> {
        let fresh: Vec<EntryId> = ids
            .into_iter()
            .filter(|id| !self.peer_has.contains(id))
            .collect();
        self.to_send.extend(self.log.order_keys(&fresh));
        Ok(())
    }

    fn queue(&mut self, message: &Message) {
        self.out.push_back(message.to_frame());
    }

    fn proof(&self, receiver_nonce: &[u8; 16], sender_nonce: &[u8; 16]) -> blake3::Hash {
        let key = blake3::derive_key("pairs log knowledge proof v1", self.log.id().as_bytes());
        let mut hasher = blake3::Hasher::new_keyed(&key);
        hasher.update(receiver_nonce);
        hasher.update(sender_nonce);
        hasher.finalize()
    }

    fn on_hello(&mut self, version: u8, nonce: [u8; 16]) -> Result<(), SyncError> {
        if version != VERSION {
            return Err(violation(format!(
                "protocol version {version}, we speak {VERSION}"
            )));
        }
        if self.peer_nonce.replace(nonce).is_some() {
            return Err(violation("hello twice"));
        }
        if nonce == self.nonce {
            return Err(violation("peer echoed our nonce"));
        }
        let heads = self.log.heads();
        let heads = if heads.len() <= MAX_HEADS {
            heads
        } else {
            Vec::new()
        };
        let len = self.log.len() as u64;
        self.announced = (heads.clone(), len);
        let message = Message::Auth {
            proof: *self.proof(&nonce, &self.nonce).as_bytes(),
            heads,
            len,
        };
        self.queue(&message);
        Ok(())
    }

    fn on_auth(&mut self, proof: [u8; 32], heads: Vec<EntryId>, len: u64) -> Result<(), SyncError> {
        let peer_nonce = self
            .peer_nonce
            .ok_or_else(|| violation("auth before hello"))?;
        if self.authenticated {
            return Err(violation("auth twice"));
        }
        // blake3::Hash compares in constant time.
        if self.proof(&self.nonce, &peer_nonce) != blake3::Hash::from_bytes(proof) {
            return Err(SyncError::OtherLog);
        }
        if heads.len() > MAX_HEADS {
            return Err(violation("too many heads"));
        }
        self.authenticated = true;
        let early = std::mem::take(&mut self.early_live);
        self.push_live(early)?;
        // Compare with what we announced, not with what we hold now: the peer decides on the same two
        // lists, so both skip reconciliation or neither does. Entries appended since go out live or at
        // the next sync.
        let (my_heads, my_len) = &self.announced;
        if heads == *my_heads && len == *my_len && (!heads.is_empty() || len == 0) {
            self.reconciled = true;
            return Ok(());
        }
        let unknown: Vec<EntryId> = heads
            .into_iter()
            .filter(|h| !self.log.contains(h))
            .collect();
        self.want(unknown)?;
        if self.nonce > peer_nonce {
            let ranges = self.log.with_index(reconcile::initiate);
            self.queue(&Message::Ranges(ranges));
        }
        Ok(())
    }

    fn on_ranges(&mut self, ranges: Vec<crate::wire::WireRange>) -> Result<(), SyncError> {
        if ranges.is_empty() {
            self.reconciled = true;
            return Ok(());
        }
        if self.reconciled {
            return Err(violation("reconciliation after it ended"));
        }
        self.stats.rounds += 1;
        if self.stats.rounds > MAX_ROUNDS {
            return Err(violation("reconciliation does not converge"));
        }
        let outcome = self
            .log
            .with_index(|index| reconcile::respond(index, &ranges))
            .map_err(violation)?;
        self.to_send.extend(
            outcome
                .send
                .into_iter()
                .filter(|k| !self.peer_has.contains(&k.id)),
        );
        self.want(outcome.want)?;
        if outcome.reply.is_empty() {
            self.reconciled = true;
        }
        self.queue(&Message::Ranges(outcome.reply));
        Ok(())
    }

    fn want(&mut self, ids: Vec<EntryId>) -> Result<(), SyncError> {
        let fresh: Vec<EntryId> = ids
            .into_iter()
            .filter(|id| !self.wanted.contains(id) && !self.pending.contains(id))
            .collect();
        if self.wanted.len() + fresh.len() > MAX_PENDING {
            return Err(violation(
                "peer offers more entries than we can ask for at once",
            ));
        }
        for chunk in fresh.chunks(MAX_IDS) {
            self.wanted.extend(chunk.iter().copied());
            self.queue(&Message::Want(chunk.to_vec()));
        }
        Ok(())
    }

    fn on_want(&mut self, ids: Vec<EntryId>) -> Result<(), SyncError> {
        if ids.len() > MAX_IDS {
            return Err(violation("want list too long"));
        }
        self.wants_served += ids.len() as u64;
        if self.wants_served > self.log.len() as u64 + WANT_ALLOWANCE {
            return Err(violation("peer keeps asking for entries"));
        }
        let entries = self.log.get_many(&ids).map_err(SyncError::Store)?;
        let found: HashSet<EntryId> = entries.iter().map(Entry::id).collect();
        let missing: Vec<EntryId> = ids.into_iter().filter(|id| !found.contains(id)).collect();
        for entry in entries {
            self.peer_has.remove(&entry.id());
            self.schedule_with_seal(entry)?;
        }
        if !missing.is_empty() {
            self.queue(&Message::Missing(missing));
        }
        Ok(())
    }

    /// Schedules an entry, and for an unsigned one the chain up to the entry that seals it. Every
    /// entry scheduled counts against what the peer may ask for.
    fn schedule_with_seal(&mut self, entry: Entry) -> Result<(), SyncError> {
        if self.to_send.contains(&entry.order_key()) {
            return Ok(());
        }
        self.to_send.insert(entry.order_key());
        if entry.signature().is_some() {
            return Ok(());
        }
        let Some(seal) = self.log.seal_of(&entry.id()).map_err(SyncError::Store)? else {
            return Ok(());
        };
        // Walk back from the seal along the author's chain (direct parents, previous sequence
        // number) to this entry: exactly the links the peer needs to verify it.
        let mut current = self.log.get(&seal).map_err(SyncError::Store)?;
        for _ in 0..=crate::store::SEAL_SPAN {
            let Some(link) = current else { break };
            if link.id() == entry.id() || !self.to_send.insert(link.order_key()) {
                break;
            }
            self.wants_served += 1;
            let body = link.body();
            let previous = self
                .log
                .get_many(&body.parents)
                .map_err(SyncError::Store)?
                .into_iter()
                .find(|p| p.body().author == body.author && p.body().seq + 1 == body.seq);
            current = previous;
        }
        if self.wants_served > self.log.len() as u64 + WANT_ALLOWANCE {
            return Err(violation("peer keeps asking for entries"));
        }
        Ok(())
    }

    fn on_missing(&mut self, ids: Vec<EntryId>) -> Result<(), SyncError> {
        for id in ids {
            if !self.wanted.remove(&id) {
                return Err(violation("missing an entry we did not ask for"));
            }
            if self.pending.waits_for(&id) {
                return Err(violation(
                    "peer sent entries whose parents it does not have",
                ));
            }
        }
        Ok(())
    }

    fn on_entries(&mut self, batch: WireBatch) -> Result<(), SyncError> {
        let log = &self.log;
        let entries = batch
            .decode_known(log.id(), |bytes| log.known_author(bytes))
            .map_err(violation)?;
        if entries.is_empty() {
            return Err(violation("empty batch"));
        }
        let mut released = Vec::new();
        // The batch's new entries, and where each is in it.
        let mut fresh: Vec<Entry> = Vec::with_capacity(entries.len());
        let mut position: HashMap<EntryId, usize> =
            HashMap::with_capacity_and_hasher(entries.len(), Default::default());
        for entry in entries {
            let id = entry.id();
            // Only what this peer already sent us, or we sent it, is its fault when it comes again;
            // an entry another session stored first is not.
            let repeated = !self.peer_has.insert(id);
            self.wanted.remove(&id);
            let known = self.log.contains(&id);
            if known || self.pending.contains(&id) || position.contains_key(&id) {
                self.stats.duplicates_received += 1;
                self.repeats_received += u64::from(repeated);
                if known {
                    self.pending.now_stored(&id, &mut released);
                }
                continue;
            }
            entry.body().check_limits().map_err(violation)?;
            position.insert(id, fresh.len());
            fresh.push(entry);
        }
        let log = &self.log;
        let pending = &self.pending;
        let vouched = vouched(&fresh, &position, |id| match pending.link(id) {
            Some(link) => Elsewhere::Waiting(link),
            None if log.contains(id) => Elsewhere::Stored,
            None => Elsewhere::Unknown,
        });
        // Every signature that vouches for something, or stands alone, is checked before anything of
        // the batch goes further: a forged one ends the session with nothing of the batch stored.
        for (entry, vouched) in fresh.iter().zip(&vouched) {
            if !vouched && entry.signature().is_some() && !entry.verify_signature() {
                return Err(violation(format!(
                    "forged signature on entry {}",
                    entry.id().short()
                )));
            }
        }
        let mut direct = Vec::new();
        match sealed_within(&fresh, &position, &vouched, |p| log.contains(p)) {
            // The usual bulk batch: complete in itself, so it skips the waiting room.
            Some(seals) => {
                direct = fresh.iter().map(Entry::id).collect();
                released.extend(fresh.into_iter().zip(seals).map(|(entry, seal)| {
                    let seal = seal.map(|s| direct[s]).filter(|s| *s != entry.id());
                    Verified { entry, seal }
                }));
            }
            None => {
                for (entry, vouched) in fresh.into_iter().zip(vouched) {
                    self.pending
                        .insert(entry, vouched, |p| log.contains(p), &mut released);
                }
            }
        }
        if self.repeats_received > DUPLICATE_ALLOWANCE + 2 * self.stats.entries_received {
            return Err(violation("peer keeps sending entries we have"));
        }
        if self.pending.len() > MAX_PENDING || self.pending.bytes() > MAX_PENDING_BYTES {
            return Err(violation("too many entries waiting for their parents"));
        }
        self.store(released)?;
        // Entries of an earlier batch may have waited for what was just stored directly.
        let mut released = Vec::new();
        for id in direct {
            if self.pending.waits_for(&id) {
                self.pending.now_stored(&id, &mut released);
            }
        }
        self.store(released)
    }

    /// Stores entries the waiting room released, parents first, in one transaction: a sealed chain is
    /// never split from its seal, and a rejected entry leaves nothing of the release stored.
    fn store(&mut self, mut released: Vec<Verified>) -> Result<(), SyncError> {
        if !released.is_empty() {
            settle_vouched(&mut released)?;
            // Every signature in the release was checked: on arrival, or just now.
            let stored = self
                .log
                .apply_checked(released, self.origin)
                .map_err(|e| match e {
                    StoreError::Rejected { .. } | StoreError::NotAWriter(_) => {
                        violation(e.to_string())
                    }
                    other => SyncError::Store(other),
                })?;
            self.stats.entries_received += stored.len() as u64;
        }
        self.pending.stored();
        Ok(())
    }

    fn queue_entries(&mut self) -> Result<(), SyncError> {
        let mut keys = Vec::new();
        while let Some(key) = self.to_send.pop_first() {
            if self.peer_has.insert(key.id) {
                keys.push(key.id);
            }
            if keys.len() >= 4096 {
                break;
            }
        }
        let entries = self.log.get_many(&keys).map_err(SyncError::Store)?;
        let mut start = 0;
        let mut size = 0;
        for (i, entry) in entries.iter().enumerate() {
            size += pending::size(entry);
            if size > BATCH_BYTES {
                self.queue_batch(&entries[start..=i]);
                start = i + 1;
                size = 0;
            }
        }
        if start < entries.len() {
            self.queue_batch(&entries[start..]);
        }
        Ok(())
    }

    fn queue_batch(&mut self, entries: &[Entry]) {
        self.stats.entries_sent += entries.len() as u64;
        self.queue(&Message::Entries(WireBatch::encode(entries)));
    }

    fn check_done(&mut self) -> Result<(), SyncError> {
        if self.sent_done && self.live {
            // Live entries whose parents never came (lost in transit): ask for them.
            let missing: Vec<EntryId> = self
                .pending
                .missing_parents()
                .filter(|p| !self.wanted.contains(p) && !self.log.contains(p))
                .copied()
                .collect();
            return self.want(missing);
        }
        if self.sent_done || !self.authenticated || !self.reconciled || !self.to_send.is_empty() {
            return Ok(());
        }
        if !self.pending.is_empty() {
            // Until the peer is done it may still be sending what these entries wait for.
            if !self.peer_done {
                return Ok(());
            }
            // Entries and parents that reached the store another way (another session) leave the
            // waiting room and free their waiters.
            let mut arrived: Vec<EntryId> = self
                .pending
                .missing_parents()
                .filter(|p| self.log.contains(p))
                .copied()
                .collect();
            arrived.extend(
                self.pending
                    .waiting_ids()
                    .into_iter()
                    .filter(|id| self.log.contains(id)),
            );
            let mut released = Vec::new();
            for id in arrived {
                self.pending.now_stored(&id, &mut released);
            }
            self.store(released)?;
            if self.pending.is_empty() {
                return self.check_done();
            }
            // The peer's store is closed under ancestry, so it has every parent it did not send.
            let missing: Vec<EntryId> = self
                .pending
                .missing_parents()
                .filter(|p| !self.wanted.contains(p))
                .copied()
                .collect();
            if missing.is_empty() && self.wanted.is_empty() {
                return Err(violation("entries that are never sealed or never complete"));
            }
            self.want(missing)?;
            return Ok(());
        }
        if !self.wanted.is_empty() {
            return Ok(());
        }
        self.sent_done = true;
        self.queue(&Message::Done);
        Ok(())
    }
}

/// What [`vouched`] needs to know of a parent outside the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Elsewhere {
    /// Stored already.
    Stored,
    /// Waiting in the pending room.
    Waiting(Link),
    /// Not known here.
    Unknown,
}

/// A parent as far as vouching is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Link {
    author: pairs_base::NodeId,
    seq: u64,
    /// Unsigned (or vouched) and not sealed yet: the next signed entry of its chain will seal it.
    unsealed: bool,
}

impl Link {
    pub(crate) fn of(entry: &Entry, unsealed: bool) -> Self {
        Self {
            author: entry.body().author,
            seq: entry.body().seq,
            unsealed,
        }
    }
}

/// Which of a batch's new entries are vouched for by a later one, so that their signatures need no
/// check.
///
/// An entry's id hashes its body, which names the author's previous entry as a direct parent; so a
/// valid signature on an author's newest entry authenticates every earlier link of that author's
/// chain as surely as their own signatures would. Walking the batch from its end, each signed entry
/// that nothing vouches for is checked (the caller does that), and it vouches for its predecessor in
/// the batch (same author, previous sequence number, a direct parent), which vouches for its own, and
/// so on. A run of entries appended one by one, each signed, thus costs one signature check per
/// batch.
///
/// A vouched entry is stored as sealed by the entry that vouched for it, so vouching keeps the shape
/// of a batch append's sealed chain, which every replica can store whatever order the entries reach
/// it in (the waiting room holds a sealed entry until its seal can be stored with it):
/// - only the lowest entry of a sealed run may have parents that are not stored already: a link
///   vouches for its predecessor only if all its other parents are stored. (Were another writer's
///   answer to the predecessor a parent of the link, predecessor, answer and seal could only be
///   stored together.) Writers taking turns thus cost a check per entry, as before;
/// - only signed entries are vouched for, and an entry whose predecessor waits unsigned for its seal
///   is checked itself, so the unsigned entries of a batch append stay sealed by their own seal;
/// - one entry vouches for at most `SEAL_SPAN - 1` predecessors, as in a batch append.
///
/// Only new entries are given (a duplicate vouches for nothing). `elsewhere` describes parents
/// outside the batch.
pub(crate) fn vouched(
    batch: &[Entry],
    position: &HashMap<EntryId, usize>,
    elsewhere: impl Fn(&EntryId) -> Elsewhere,
) -> Vec<bool> {
    // Links from each entry up to the checked signature that vouches for it, if one does.
    let mut reached: Vec<Option<usize>> = vec![None; batch.len()];
    for i in (0..batch.len()).rev() {
        let entry = &batch[i];
        let links = match reached[i] {
            Some(links) => links,
            None if entry.signature().is_some() => 0,
            None => continue,
        };
        let body = entry.body();
        // The chain predecessor (its index if in the batch), and whether every other parent is stored.
        let mut previous: Option<(Option<usize>, Link)> = None;
        let mut others_stored = true;
        for parent in &body.parents {
            let (index, link) = match position.get(parent) {
                Some(&j) => (Some(j), Link::of(&batch[j], batch[j].signature().is_none())),
                None => match elsewhere(parent) {
                    Elsewhere::Waiting(link) => (None, link),
                    Elsewhere::Stored => continue,
                    Elsewhere::Unknown => {
                        others_stored = false;
                        continue;
                    }
                },
            };
            if previous.is_none() && link.author == body.author && link.seq + 1 == body.seq {
                previous = Some((index, link));
            } else {
                others_stored = false;
            }
        }
        match previous {
            // This entry is what seals its predecessor: its signature must be checked.
            Some((_, link)) if link.unsealed => reached[i] = None,
            Some((Some(j), _))
                if j < i && reached[j].is_none() && others_stored && links + 1 < SEAL_SPAN =>
            {
                reached[j] = Some(links + 1);
            }
            _ => {}
        }
    }
    reached
        .iter()
        .map(|r| r.is_some_and(|links| links > 0))
        .collect()
}

/// For a batch that can be stored as it is, the entry that seals each one (its own index for one
/// whose signature was checked); None if some entry needs a parent from elsewhere that is not stored, or
/// waits for a seal the batch does not hold: then the batch goes through the waiting room. Seals are
/// found as the waiting room finds them: the nearest checked signature up the author's chain, through
/// unsigned and vouched links.
fn sealed_within(
    batch: &[Entry],
    position: &HashMap<EntryId, usize>,
    vouched: &[bool],
    stored: impl Fn(&EntryId) -> bool,
) -> Option<Vec<Option<usize>>> {
    let mut seals: Vec<Option<usize>> = vec![None; batch.len()];
    for i in (0..batch.len()).rev() {
        let entry = &batch[i];
        if entry.signature().is_some() && !vouched[i] {
            seals[i] = Some(i);
        }
        let seal = seals[i]?;
        let body = entry.body();
        let previous = body
            .parents
            .iter()
            .filter_map(|p| position.get(p))
            .find(|&&j| {
                let p = batch[j].body();
                p.author == body.author && p.seq + 1 == body.seq
            });
        if let Some(&j) = previous
            && j < i
            && seals[j].is_none()
            && (batch[j].signature().is_none() || vouched[j])
        {
            seals[j] = Some(seal);
        }
    }
    for (i, entry) in batch.iter().enumerate() {
        let complete = entry.body().parents.iter().all(|p| match position.get(p) {
            Some(&j) => j < i,
            None => stored(p),
        });
        if !complete {
            return None;
        }
    }
    Some(seals)
}

/// Settles the vouched entries of a release (those that still carry an unchecked signature next to
/// their seal). Stored in the same transaction as the entry that vouched for them, they are stored as
/// sealed by it, without the unchecked signature. Released without it (it waits for another parent),
/// they cannot be sealed by an entry not yet stored, so their own signature is checked now and they
/// are stored with it; a forged one ends the session.
fn settle_vouched(released: &mut [Verified]) -> Result<(), SyncError> {
    if !released
        .iter()
        .any(|v| v.seal.is_some() && v.entry.signature().is_some())
    {
        return Ok(());
    }
    let signed: HashSet<EntryId> = released
        .iter()
        .filter(|v| v.seal.is_none())
        .map(|v| v.entry.id())
        .collect();
    for v in released.iter_mut() {
        let Some(seal) = v.seal else { continue };
        if v.entry.signature().is_none() {
            continue;
        }
        if signed.contains(&seal) {
            v.entry.drop_signature();
        } else if v.entry.verify_signature() {
            v.seal = None;
        } else {
            return Err(violation(format!(
                "forged signature on entry {}",
                v.entry.id().short()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use pairs_base::SecretKey;

    use super::*;
    use crate::entry::{EntryBody, Payload};

    /// Builds entries on top of each other as `Log::append` would, for several authors.
    struct History {
        log: crate::entry::LogId,
        entries: Vec<Entry>,
    }

    impl History {
        fn new() -> Self {
            Self {
                log: SecretKey::generate().node_id(),
                entries: Vec::new(),
            }
        }

        /// A signed entry by `key` with these parents (indices into the history).
        fn add(&mut self, key: &SecretKey, seq: u64, parents: &[usize]) -> usize {
            let mut ids: Vec<EntryId> = parents.iter().map(|&p| self.entries[p].id()).collect();
            ids.sort();
            let clock = parents
                .iter()
                .map(|&p| self.entries[p].body().clock + 1)
                .max()
                .unwrap_or(0);
            let body = EntryBody {
                log: self.log,
                author: key.node_id(),
                seq,
                clock,
                parents: ids,
                timestamp: 0,
                payload: Payload::Data(vec![self.entries.len() as u8]),
            };
            self.entries.push(Entry::signed(body, key));
            self.entries.len() - 1
        }

        fn vouched(&self, elsewhere: impl Fn(&EntryId) -> Elsewhere) -> Vec<bool> {
            let position = self
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.id(), i))
                .collect();
            vouched(&self.entries, &position, elsewhere)
        }
    }

    #[test]
    fn the_newest_of_a_run_vouches_for_the_rest() {
        let a = SecretKey::generate();
        let mut h = History::new();
        let mut previous = h.add(&a, 0, &[]);
        for seq in 1..5 {
            previous = h.add(&a, seq, &[previous]);
        }
        assert_eq!(
            h.vouched(|_| Elsewhere::Unknown),
            [true, true, true, true, false]
        );
    }

    #[test]
    fn writers_taking_turns_are_each_checked() {
        // a0 <- b0 <- a1 <- b1: each link's other parent is new, and answers its predecessor.
        let (a, b) = (SecretKey::generate(), SecretKey::generate());
        let mut h = History::new();
        let a0 = h.add(&a, 0, &[]);
        let b0 = h.add(&b, 0, &[a0]);
        let a1 = h.add(&a, 1, &[a0, b0]);
        h.add(&b, 1, &[b0, a1]);
        assert_eq!(h.vouched(|_| Elsewhere::Unknown), [false; 4]);
    }

    #[test]
    fn a_run_stops_at_a_link_with_a_parent_not_stored() {
        // b0 is new: a1 may not vouch for a0. a2 and a3 have only their predecessor.
        let (a, b) = (SecretKey::generate(), SecretKey::generate());
        let mut h = History::new();
        let a0 = h.add(&a, 0, &[]);
        let b0 = h.add(&b, 0, &[]);
        let a1 = h.add(&a, 1, &[a0, b0]);
        let a2 = h.add(&a, 2, &[a1]);
        h.add(&a, 3, &[a2]);
        assert_eq!(
            h.vouched(|_| Elsewhere::Unknown),
            [false, false, true, true, false]
        );
        // A parent that is stored does not stop it.
        let stored = h.entries[b0].id();
        let mut h2 = History::new();
        h2.log = h.log;
        h2.entries = h.entries.clone();
        h2.entries.remove(b0);
        assert_eq!(
            h2.vouched(|id| if *id == stored {
                Elsewhere::Stored
            } else {
                Elsewhere::Unknown
            }),
            [true, true, true, false]
        );
    }

    #[test]
    fn the_seal_of_waiting_unsigned_entries_is_checked_itself() {
        let a = SecretKey::generate();
        let mut h = History::new();
        let a0 = h.add(&a, 0, &[]);
        let a1 = h.add(&a, 1, &[a0]);
        h.add(&a, 2, &[a1]);
        // a0 arrived earlier, unsigned, and waits for its seal: a1 seals it and must be checked.
        let first = h.entries.remove(0);
        let waiting = Link::of(&first, true);
        let id = first.id();
        let vouched = h.vouched(|p| {
            if *p == id {
                Elsewhere::Waiting(waiting)
            } else {
                Elsewhere::Unknown
            }
        });
        assert_eq!(vouched, [false, false]);
    }

    #[test]
    fn one_signature_vouches_for_at_most_a_seal_span() {
        let a = SecretKey::generate();
        let mut h = History::new();
        let mut previous = h.add(&a, 0, &[]);
        let n = SEAL_SPAN + 10;
        for seq in 1..n as u64 {
            previous = h.add(&a, seq, &[previous]);
        }
        let vouched = h.vouched(|_| Elsewhere::Unknown);
        let checked: Vec<usize> = (0..n).filter(|&i| !vouched[i]).collect();
        // The newest covers SEAL_SPAN - 1 predecessors; the next one down is checked itself.
        assert_eq!(checked, [n - 1 - SEAL_SPAN, n - 1]);
    }
}

#[cfg(test)]
mod replay {
    use pairs_base::SecretKey;

    use super::*;
    use crate::entry::Payload;

    /// Runs two sessions against each other until neither has anything to send; returns every
    /// frame, in order.
    fn exchange(a: &mut Session, b: &mut Session) -> Vec<Vec<u8>> {
        fn pump(from: &mut Session, to: &mut Session, frames: &mut Vec<Vec<u8>>) -> bool {
            let mut any = false;
            while let Some(frame) = from.poll_transmit().expect("sends") {
                to.handle_frame(&frame[4..]).expect("handles");
                frames.push(frame);
                any = true;
            }
            any
        }
        let mut frames = Vec::new();
        loop {
            let sent = pump(a, b, &mut frames);
            if !(pump(b, a, &mut frames) || sent) {
                return frames;
            }
        }
    }

    #[test]
    fn given_nonces_and_timestamps_a_sync_replays_exactly() {
        let owner = SecretKey::from_bytes(&[1; 32]);
        let run = || {
            let (x, y) = (
                Log::in_memory(owner.node_id()),
                Log::in_memory(owner.node_id()),
            );
            x.append_batch_at(&owner, vec![Payload::Data(b"a".to_vec())], 1000)
                .expect("append");
            y.append_batch_at(&owner, vec![Payload::Data(b"b".to_vec())], 2000)
                .expect("append");
            let mut a = Session::with_nonce(x.clone(), false, 1, [3; 16]);
            let mut b = Session::with_nonce(y.clone(), false, 1, [4; 16]);
            let frames = exchange(&mut a, &mut b);
            assert!(a.is_finished() && b.is_finished());
            assert_eq!(x.heads(), y.heads());
            (frames, x.heads())
        };
        assert_eq!(
            run(),
            run(),
            "the same inputs give the same frames and entries"
        );
    }
}
