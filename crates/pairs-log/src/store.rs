//! The log store: entries and their indexes in redb (a file) or in plain maps (memory), plus the
//! in-memory order index.
//!
//! Every change is one transaction: a batch of entries is validated and applied completely or not at
//! all, and an append returns only after its transaction committed. In a file, that is a durable redb
//! commit, and redb's copy-on-write commits mean a crash leaves the last committed state, never a torn
//! one. In memory, the writes are merged into the maps once the whole batch passed.
//!
//! Entries are keyed by (Lamport clock ‖ id), with the sealing entry stored inline (module `rows`).
//! In memory besides: the order index with its fingerprints, id -> clock, the heads, the membership and
//! each author's tip, all rebuilt from the entries when the store opens, so they can never disagree
//! with them.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use pairs_base::{NodeId, SecretKey};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::broadcast;

use crate::entry::{Entry, EntryBody, EntryId, LogId, MAX_PARENTS, OrderKey, Payload, now_millis};
use crate::fast::{Map as HashMap, Set as HashSet};
use crate::index::OrderIndex;
use crate::rows::{AUTHOR_SEQ, ENTRIES, EVIDENCE, Key, MemoryRows, MemoryTxn, RedbRows, Rows};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, read or written.
    #[error("log store: {0}")]
    Db(String),
    /// The store holds another log.
    #[error("this store holds log {found}, not {expected}")]
    WrongLog {
        /// The log asked for.
        expected: LogId,
        /// The log found.
        found: LogId,
    },
    /// An entry broke a rule; nothing of its batch was stored.
    #[error("rejected entry {id}: {why}")]
    Rejected {
        /// The entry.
        id: EntryId,
        /// The rule it broke.
        why: &'static str,
    },
    /// Another process has the store open.
    #[error("the log store {0} is in use by another pairs process")]
    Busy(String),
    /// The key may not write to this log.
    #[error("node {0} is not a writer of this log (ask the owner to add it)")]
    NotAWriter(NodeId),
}

/// Most entries one signature seals in a batch append.
pub const SEAL_SPAN: usize = 4096;

pub(crate) fn db_err(err: impl std::fmt::Display) -> StoreError {
    StoreError::Db(err.to_string())
}

/// Two entries by one author with the same sequence number: proof that the author forked its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Equivocation {
    /// The author.
    pub author: NodeId,
    /// The sequence number used twice.
    pub seq: u64,
    /// The entry seen first.
    pub first: EntryId,
    /// The other one.
    pub second: EntryId,
}

/// Entries newly stored, announced to live replication sessions.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The new entries' ids, in apply order.
    pub ids: Arc<[EntryId]>,
    /// The session they came from (0 for local appends), so it is not sent back there.
    pub origin: u64,
}

/// An entry ready to store, with the signed entry that seals it if it is unsigned.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The entry.
    pub entry: Entry,
    /// For an unsigned entry, the signed entry of the same author that vouches for it.
    pub seal: Option<EntryId>,
}

/// Whether [`Log::apply`] checks signatures itself or its caller already did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signatures {
    /// Check every signature (entries from outside the crate).
    Check,
    /// Every signed entry's signature was checked, or made, by the caller: a replication session
    /// verified it on arrival, or an append just signed it.
    Checked,
}

/// Author -> highest sequence number and the first entry stored with it.
type Tips = HashMap<NodeId, (u64, EntryId)>;

struct State {
    index: OrderIndex,
    clocks: HashMap<EntryId, u64>,
    heads: BTreeSet<EntryId>,
    /// Writer -> the AddWriter entry that admitted it.
    writers: HashMap<NodeId, EntryId>,
    /// Writer -> last sequence number that still counts (None: none count).
    removed: HashMap<NodeId, Option<u64>>,
    /// The owner's first `Open` entry: a new writer's first entry takes it as a parent.
    open: Option<EntryId>,
    /// Author -> their highest sequence number and the first entry stored with it: where their next
    /// append links, and proof that a higher number is new (no `author_seq` lookup needed).
    tips: Tips,
    /// The rows of a store in memory (empty for a file store).
    memory: MemoryRows,
}

impl State {
    fn new() -> Self {
        Self {
            index: OrderIndex::new(),
            clocks: HashMap::default(),
            heads: BTreeSet::new(),
            writers: HashMap::default(),
            removed: HashMap::default(),
            open: None,
            tips: HashMap::default(),
            memory: MemoryRows::default(),
        }
    }
}

/// A log replica: the store plus the live announcement channel. Cheap to clone.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

struct Inner {
    id: LogId,
    /// The database of a file store; None for a store in memory, whose rows are in the state.
    db: Option<Database>,
    state: Mutex<State>,
    live: broadcast::Sender<Applied>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("id", &self.inner.id).finish()
    }
}

impl Log {
    /// Opens (or creates) the store at `path` for log `id`.
    pub fn open(path: &Path, id: LogId) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(db_err)?;
        }
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                StoreError::Busy(path.display().to_string())
            }
            other => db_err(other),
        })?;
        Self::init(db, id)
    }

    /// A replica held in memory only (tests, one-off pipes). Its rows are plain maps, with the same
    /// rules and encoding as a file store's.
    pub fn in_memory(id: LogId) -> Self {
        Self::with(None, id, State::new())
    }

    fn with(db: Option<Database>, id: LogId, state: State) -> Self {
        let (live, _) = broadcast::channel(1024);
        Self {
            inner: Arc::new(Inner {
                id,
                db,
                state: Mutex::new(state),
                live,
            }),
        }
    }

    fn init(db: Database, id: LogId) -> Result<Self, StoreError> {
        let txn = db.begin_write().map_err(db_err)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let stored = meta.get("log").map_err(db_err)?.map(|v| v.value().to_vec());
            match stored {
                Some(bytes) => {
                    let found = <[u8; 32]>::try_from(bytes.as_slice())
                        .ok()
                        .and_then(|b| NodeId::from_bytes(&b).ok())
                        .ok_or_else(|| db_err("corrupt log id"))?;
                    if found != id {
                        return Err(StoreError::WrongLog {
                            expected: id,
                            found,
                        });
                    }
                }
                None => {
                    meta.insert("log", id.as_bytes().as_slice())
                        .map_err(db_err)?;
                }
            }
            txn.open_table(ENTRIES).map_err(db_err)?;
            txn.open_table(AUTHOR_SEQ).map_err(db_err)?;
            txn.open_table(EVIDENCE).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        let state = Self::load_state(&db, id)?;
        Ok(Self::with(Some(db), id, state))
    }

    fn load_state(db: &Database, log: LogId) -> Result<State, StoreError> {
        let txn = db.begin_read().map_err(db_err)?;
        let entries = txn.open_table(ENTRIES).map_err(db_err)?;
        let mut keys = Vec::new();
        let mut state = State::new();
        let mut parents = HashSet::default();
        let mut top_seqs: HashMap<NodeId, u64> = HashMap::default();
        for row in entries.iter().map_err(db_err)? {
            let (key, value) = row.map_err(db_err)?;
            let (key, entry) = decode_row(log, key.value(), value.value())?;
            let body = entry.body();
            parents.extend(body.parents.iter().copied());
            let top = top_seqs.entry(body.author).or_insert(body.seq);
            *top = (*top).max(body.seq);
            note_membership(&mut state, &entry);
            state.clocks.insert(key.id, key.clock);
            keys.push(key);
        }
        // With a fork at the top, the entry stored first with that number is the tip, as it was
        // before the store was closed.
        let author_seq = txn.open_table(AUTHOR_SEQ).map_err(db_err)?;
        for (author, seq) in top_seqs {
            let id = author_seq
                .get(author_seq_key(&author, seq).as_slice())
                .map_err(db_err)?
                .and_then(|v| Some(EntryId(v.value().try_into().ok()?)))
                .ok_or_else(|| db_err("author_seq does not match the entries"))?;
            state.tips.insert(author, (seq, id));
        }
        state.heads = keys
            .iter()
            .map(|k| k.id)
            .filter(|id| !parents.contains(id))
            .collect();
        state.index = OrderIndex::from_sorted(keys);
        Ok(state)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().expect("log state lock poisoned")
    }

    /// The log's id (its owner's key).
    pub fn id(&self) -> LogId {
        self.inner.id
    }

    /// Number of entries stored.
    pub fn len(&self) -> usize {
        self.state().index.len()
    }

    /// Whether the log has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current heads: entries no other entry names as a parent.
    pub fn heads(&self) -> Vec<EntryId> {
        self.state().heads.iter().copied().collect()
    }

    /// Whether the entry is stored.
    pub fn contains(&self, id: &EntryId) -> bool {
        self.state().clocks.contains_key(id)
    }

    /// The order keys of the stored entries among `ids`, from memory.
    pub fn order_keys(&self, ids: &[EntryId]) -> Vec<OrderKey> {
        let state = self.state();
        ids.iter()
            .filter_map(|id| state.clocks.get(id).map(|c| OrderKey::new(*c, *id)))
            .collect()
    }

    /// Reads one entry.
    pub fn get(&self, id: &EntryId) -> Result<Option<Entry>, StoreError> {
        Ok(self.get_many(std::slice::from_ref(id))?.pop())
    }

    /// Reads several entries (missing ones are skipped).
    pub fn get_many(&self, ids: &[EntryId]) -> Result<Vec<Entry>, StoreError> {
        Ok(self
            .get_with_seals(ids)?
            .into_iter()
            .map(|(entry, _)| entry)
            .collect())
    }

    fn get_with_seals(&self, ids: &[EntryId]) -> Result<Vec<(Entry, Option<EntryId>)>, StoreError> {
        let state = self.state();
        let keys = ids
            .iter()
            .filter_map(|id| state.clocks.get(id).map(|c| OrderKey::new(*c, *id)));
        let decode = |key: OrderKey, bytes: &[u8]| {
            Entry::from_stored(self.id(), key.id, bytes).ok_or_else(|| db_err("corrupt entry"))
        };
        let mut out = Vec::with_capacity(ids.len());
        match &self.inner.db {
            Some(db) => {
                let keys: Vec<OrderKey> = keys.collect();
                // Most of a run of the order, as a bulk send asks for, is read in one scan rather
                // than a tree descent per key.
                let run = match (keys.first(), keys.last()) {
                    (Some(first), Some(last)) if keys.len() > 1 && keys.is_sorted() => {
                        let span = state.index.rank(Some(last)) - state.index.rank(Some(first)) + 1;
                        span <= 2 * keys.len()
                    }
                    _ => false,
                };
                // Reading needs no lock: a read transaction is a snapshot.
                drop(state);
                let txn = db.begin_read().map_err(db_err)?;
                let table = txn.open_table(ENTRIES).map_err(db_err)?;
                if run {
                    let wanted: Vec<[u8; 40]> = keys.iter().map(OrderKey::to_bytes).collect();
                    let range = wanted[0].as_slice()..=wanted[wanted.len() - 1].as_slice();
                    let mut next = 0;
                    for row in table.range(range).map_err(db_err)? {
                        let (key, value) = row.map_err(db_err)?;
                        while next < wanted.len() && wanted[next].as_slice() < key.value() {
                            next += 1;
                        }
                        if next == wanted.len() {
                            break;
                        }
                        if wanted[next].as_slice() == key.value() {
                            out.push(decode(keys[next], value.value())?);
                            next += 1;
                        }
                    }
                } else {
                    for key in keys {
                        if let Some(bytes) = table.get(key.to_bytes().as_slice()).map_err(db_err)? {
                            out.push(decode(key, bytes.value())?);
                        }
                    }
                }
            }
            None => {
                for key in keys {
                    if let Some(bytes) = state.memory.entries.get(&key.to_bytes()) {
                        out.push(decode(key, bytes)?);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every entry in (Lamport, id) order: parents always before children.
    pub fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        match &self.inner.db {
            Some(db) => {
                let txn = db.begin_read().map_err(db_err)?;
                let table = txn.open_table(ENTRIES).map_err(db_err)?;
                for row in table.iter().map_err(db_err)? {
                    let (key, value) = row.map_err(db_err)?;
                    out.push(decode_row(self.id(), key.value(), value.value())?.1);
                }
            }
            None => {
                for (key, value) in &self.state().memory.entries {
                    out.push(decode_row(self.id(), key, value)?.1);
                }
            }
        }
        Ok(out)
    }

    /// The signed entry that seals an unsigned one.
    pub fn seal_of(&self, id: &EntryId) -> Result<Option<EntryId>, StoreError> {
        Ok(self
            .get_with_seals(std::slice::from_ref(id))?
            .pop()
            .and_then(|(_, seal)| seal))
    }

    /// Recorded forks.
    pub fn equivocations(&self) -> Result<Vec<Equivocation>, StoreError> {
        let mut out = Vec::new();
        match &self.inner.db {
            Some(db) => {
                let txn = db.begin_read().map_err(db_err)?;
                let table = txn.open_table(EVIDENCE).map_err(db_err)?;
                for row in table.iter().map_err(db_err)? {
                    let (key, value) = row.map_err(db_err)?;
                    out.push(decode_evidence(key.value(), value.value())?);
                }
            }
            None => {
                for (key, value) in &self.state().memory.evidence {
                    out.push(decode_evidence(key, value)?);
                }
            }
        }
        Ok(out)
    }

    /// `bytes` as the owner's or an admitted writer's key, which this store checked when it stored
    /// the entry naming it; `None` for anyone else (whose key the caller must check itself).
    pub fn known_author(&self, bytes: &[u8; 32]) -> Option<NodeId> {
        if bytes == self.id().as_bytes() {
            return Some(self.id());
        }
        let candidate = NodeId::from_verified_bytes(*bytes);
        self.state()
            .writers
            .contains_key(&candidate)
            .then_some(candidate)
    }

    /// Current writers besides the owner, and whether each has been removed.
    pub fn writers(&self) -> Vec<(NodeId, bool)> {
        let state = self.state();
        let mut out: Vec<_> = state
            .writers
            .keys()
            .map(|w| (*w, state.removed.contains_key(w)))
            .collect();
        out.sort();
        out
    }

    /// Whether the owner opened the log to every writer (`Payload::Open`).
    pub fn is_open(&self) -> bool {
        self.state().open.is_some()
    }

    /// Whether `author`'s entry with sequence number `seq` counts in views (not cut off by a removal).
    pub fn counts(&self, author: &NodeId, seq: u64) -> bool {
        match self.state().removed.get(author) {
            None => true,
            Some(None) => false,
            Some(Some(keep_until)) => seq <= *keep_until,
        }
    }

    /// Announcements of newly stored entries, for live replication.
    pub fn subscribe(&self) -> broadcast::Receiver<Applied> {
        self.inner.live.subscribe()
    }

    /// Runs `f` on the order index.
    pub fn with_index<T>(&self, f: impl FnOnce(&OrderIndex) -> T) -> T {
        f(&self.state().index)
    }

    /// Appends one signed entry by `key`, which must be the owner or a writer.
    pub fn append(&self, key: &SecretKey, payload: Payload) -> Result<EntryId, StoreError> {
        Ok(self.append_batch(key, vec![payload])?[0])
    }

    /// Appends entries by `key` in one transaction. They form a chain, and only the last is signed: its
    /// signature seals the others. Returns once committed.
    pub fn append_batch(
        &self,
        key: &SecretKey,
        payloads: Vec<Payload>,
    ) -> Result<Vec<EntryId>, StoreError> {
        self.append_batch_at(key, payloads, now_millis())
    }

    /// [`Log::append_batch`] with the entries' timestamp (milliseconds since the Unix epoch) given
    /// rather than read from the clock: history imported from earlier, or a simulation in virtual
    /// time that makes the same entries each run. The timestamp is informational; no rule checks it.
    pub fn append_batch_at(
        &self,
        key: &SecretKey,
        payloads: Vec<Payload>,
        timestamp: u64,
    ) -> Result<Vec<EntryId>, StoreError> {
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let author = key.node_id();
        // One lock from reading the author's tip to committing: two appends by one key from two
        // threads cannot both take the same sequence number.
        let mut state = self.state();
        let (mut parents, prev_seq) = self.chain_start(&state, &author)?;
        let first_clock = parents
            .iter()
            .filter_map(|id| state.clocks.get(id))
            .max()
            .map_or(0, |c| c + 1);
        let first_seq = prev_seq.map_or(0, |s| s + 1);
        // Each body is hashed once: its id links the next entry and names the entry itself.
        let mut chain: Vec<Entry> = Vec::with_capacity(payloads.len());
        for (i, payload) in (0u64..).zip(payloads) {
            let entry = Entry::unsigned(EntryBody {
                log: self.id(),
                author,
                seq: first_seq + i,
                clock: first_clock + i,
                parents: std::mem::take(&mut parents),
                timestamp,
                payload,
            });
            parents = vec![entry.id()];
            chain.push(entry);
        }
        // Sign every SEAL_SPAN-th entry and the last: a receiver holds at most that many unverified
        // entries while it waits for their seal.
        let count = chain.len();
        let mut batch: Vec<Verified> = Vec::with_capacity(count);
        let mut seal = None;
        for (i, mut entry) in chain.into_iter().enumerate().rev() {
            if i + 1 == count || (i + 1) % SEAL_SPAN == 0 {
                entry.sign(key);
                seal = Some(entry.id());
                batch.push(Verified { entry, seal: None });
            } else {
                batch.push(Verified { entry, seal });
            }
        }
        batch.reverse();
        let ids = batch.iter().map(|v| v.entry.id()).collect();
        // Signed just now with the author's own key: checking the signatures again would only
        // cost time.
        let added = self.apply_locked(&mut state, batch, Signatures::Checked)?;
        drop(state);
        self.announce(added, 0);
        Ok(ids)
    }

    /// Parents for `author`'s next entry: the heads plus what the chain rule requires, and the
    /// author's last sequence number.
    fn chain_start(
        &self,
        state: &State,
        author: &NodeId,
    ) -> Result<(Vec<EntryId>, Option<u64>), StoreError> {
        let mut parents: BTreeSet<EntryId> = state.heads.iter().copied().collect();
        let last = state.tips.get(author).copied();
        let required = match last {
            Some((_, id)) => Some(id),
            None if *author == self.id() => None,
            None => Some(
                *state
                    .writers
                    .get(author)
                    .or(state.open.as_ref())
                    .ok_or(StoreError::NotAWriter(*author))?,
            ),
        };
        if let Some(required) = required {
            // Keep the newest heads if there are too many, but never drop the required parent.
            while parents.len() >= MAX_PARENTS {
                let oldest = *parents.iter().next().expect("non-empty");
                parents.remove(&oldest);
            }
            parents.insert(required);
        }
        Ok((parents.into_iter().collect(), last.map(|(seq, _)| seq)))
    }

    /// Validates and stores entries, given in an order where parents come first, in one transaction.
    /// Entries already stored are skipped. Every signature is checked. Returns the ids newly stored.
    pub fn apply(&self, batch: Vec<Verified>, origin: u64) -> Result<Vec<EntryId>, StoreError> {
        self.apply_with(batch, origin, Signatures::Check)
    }

    /// [`Log::apply`] for entries whose signatures the caller has verified (a replication session
    /// checks them on arrival); every other rule is still checked here.
    pub(crate) fn apply_checked(
        &self,
        batch: Vec<Verified>,
        origin: u64,
    ) -> Result<Vec<EntryId>, StoreError> {
        self.apply_with(batch, origin, Signatures::Checked)
    }

    fn apply_with(
        &self,
        batch: Vec<Verified>,
        origin: u64,
        signatures: Signatures,
    ) -> Result<Vec<EntryId>, StoreError> {
        let mut state = self.state();
        let added = self.apply_locked(&mut state, batch, signatures)?;
        drop(state);
        let ids = added.to_vec();
        self.announce(added, origin);
        Ok(ids)
    }

    /// Tells live sessions about stored entries.
    fn announce(&self, ids: Arc<[EntryId]>, origin: u64) {
        if !ids.is_empty() {
            let _ = self.inner.live.send(Applied { ids, origin });
        }
    }

    fn apply_locked(
        &self,
        state: &mut State,
        batch: Vec<Verified>,
        signatures: Signatures,
    ) -> Result<Arc<[EntryId]>, StoreError> {
        let (added, tips) = match &self.inner.db {
            Some(db) => {
                let txn = db.begin_write().map_err(db_err)?;
                let checked = {
                    let mut rows = RedbRows::open(&txn)?;
                    self.check_and_write(state, &mut rows, batch, signatures)?
                };
                if checked.0.is_empty() {
                    return Ok(Arc::new([]));
                }
                // Durable when it returns: an append is committed once `append` returns.
                txn.commit().map_err(db_err)?;
                checked
            }
            None => {
                let mut rows = MemoryTxn::new(&state.memory);
                let checked = self.check_and_write(state, &mut rows, batch, signatures)?;
                let writes = rows.into_writes();
                state.memory.commit(writes);
                checked
            }
        };
        for entry in &added {
            for parent in &entry.body().parents {
                state.heads.remove(parent);
            }
            state.heads.insert(entry.id());
            state.clocks.insert(entry.id(), entry.body().clock);
            state.index.insert(entry.order_key());
            note_membership(state, entry);
        }
        state.tips.extend(tips);
        Ok(added.iter().map(Entry::id).collect())
    }

    /// Validates a batch against the rules and writes its new entries to `rows`; the first error
    /// leaves the caller to drop the writes. Returns the new entries and the authors' tips they move.
    fn check_and_write(
        &self,
        state: &State,
        rows: &mut impl Rows,
        batch: Vec<Verified>,
        signatures: Signatures,
    ) -> Result<(Vec<Entry>, Tips), StoreError> {
        let mut added: Vec<Entry> = Vec::new();
        let mut tips = Tips::default();
        // What rule checks need of this batch's entries, before they are committed.
        let mut fresh: HashMap<EntryId, ParentFacts> =
            HashMap::with_capacity_and_hasher(batch.len(), Default::default());
        // Writers this batch admits.
        let mut admitted: HashSet<NodeId> = HashSet::default();
        // Signed entries of this batch and their authors, for checking seals before the sealing
        // entry's own turn comes.
        let batch_signers: HashMap<EntryId, NodeId> = batch
            .iter()
            .filter(|v| v.entry.signature().is_some())
            .map(|v| (v.entry.id(), v.entry.body().author))
            .collect();
        for Verified { entry, mut seal } in batch {
            let id = entry.id();
            if fresh.contains_key(&id) || state.clocks.contains_key(&id) {
                continue;
            }
            let reject = |why| StoreError::Rejected { id, why };
            let body = entry.body();
            body.check_limits().map_err(reject)?;
            if body.log != self.id() {
                return Err(reject("entry of another log"));
            }
            match (entry.signature(), seal) {
                (Some(_), None)
                    if signatures == Signatures::Checked || entry.verify_signature() => {}
                (None, Some(sealing)) => {
                    // The seal must be a signed entry of the same author, committed with this one
                    // (it is validated in its own turn below) or stored already.
                    let author = body.author;
                    seal = if batch_signers.get(&sealing) == Some(&author) {
                        Some(sealing)
                    } else {
                        self.stored_seal(rows, state, &sealing, &author)?
                    };
                    if seal.is_none() {
                        return Err(reject("unsigned entry without its seal"));
                    }
                }
                _ => return Err(reject("bad signature")),
            }
            let mut parents = Vec::with_capacity(body.parents.len());
            for parent in &body.parents {
                let facts = match fresh.get(parent) {
                    Some(facts) => facts.clone(),
                    None => {
                        let clock = *state
                            .clocks
                            .get(parent)
                            .ok_or_else(|| reject("missing parent"))?;
                        let key = OrderKey::new(clock, *parent).to_bytes();
                        rows.entry(&key, |b| Entry::from_stored(self.id(), *parent, b))?
                            .flatten()
                            .map(|(parent_entry, _)| ParentFacts::of(&parent_entry))
                            .ok_or_else(|| db_err("corrupt entry"))?
                    }
                };
                parents.push(facts);
            }
            let expected_clock = parents.iter().map(|p| p.clock + 1).max().unwrap_or(0);
            if body.clock != expected_clock {
                return Err(reject("Lamport clock is not one more than its parents'"));
            }
            let is_writer = |w: &NodeId| state.writers.contains_key(w) || admitted.contains(w);
            authorize(self.id(), body, &parents, is_writer).map_err(reject)?;
            if let (true, Payload::AddWriter(writer)) = (body.author == self.id(), &body.payload) {
                admitted.insert(*writer);
            }
            let seq_key = author_seq_key(&body.author, body.seq);
            let tip = tips
                .get(&body.author)
                .or_else(|| state.tips.get(&body.author))
                .copied();
            // Above the author's highest number the slot is free without looking.
            let first = match tip {
                Some((top, _)) if body.seq <= top => rows.author_seq(&seq_key)?,
                _ => None,
            };
            match first {
                Some(first) => {
                    if !rows.has_evidence(&seq_key)? {
                        let mut proof = [0u8; 64];
                        proof[..32].copy_from_slice(&first.0);
                        proof[32..].copy_from_slice(&id.0);
                        rows.insert_evidence(&seq_key, &proof)?;
                    }
                }
                None => {
                    rows.insert_author_seq(&seq_key, &id)?;
                    if tip.is_none_or(|(top, _)| body.seq > top) {
                        tips.insert(body.author, (body.seq, id));
                    }
                }
            }
            rows.insert_entry(&entry.order_key().to_bytes(), &entry.to_stored(seal))?;
            fresh.insert(id, ParentFacts::of(&entry));
            added.push(entry);
        }
        Ok((added, tips))
    }

    /// The signed entry that vouches for `author`'s entries below stored entry `id` on their chain:
    /// `id` itself if it is signed, else the seal it was stored with (sealed in its turn, it is
    /// covered by that seal's signature, and so is everything below it). None if `id` is not stored
    /// or is another author's.
    fn stored_seal(
        &self,
        rows: &impl Rows,
        state: &State,
        id: &EntryId,
        author: &NodeId,
    ) -> Result<Option<EntryId>, StoreError> {
        let Some(clock) = state.clocks.get(id) else {
            return Ok(None);
        };
        let key = OrderKey::new(*clock, *id).to_bytes();
        Ok(rows
            .entry(&key, |b| Entry::from_stored(self.id(), *id, b))?
            .flatten()
            .filter(|(e, _)| e.body().author == *author)
            .and_then(|(e, seal)| match e.signature() {
                Some(_) => Some(*id),
                None => seal,
            }))
    }
}

/// What the write rules need to know about a parent.
#[derive(Debug, Clone)]
struct ParentFacts {
    clock: u64,
    author: NodeId,
    seq: u64,
    admits: Option<NodeId>,
    /// An owner's `Open`: admits anyone.
    opens: bool,
}

impl ParentFacts {
    fn of(entry: &Entry) -> Self {
        let body = entry.body();
        Self {
            clock: body.clock,
            author: body.author,
            seq: body.seq,
            admits: match (&body.payload, body.author == body.log) {
                (Payload::AddWriter(writer), true) => Some(*writer),
                _ => None,
            },
            opens: body.author == body.log && body.payload == Payload::Open,
        }
    }
}

/// The write rules: the owner manages membership; everyone else needs to have been added, and each
/// author's entries form a chain through direct parents.
fn authorize(
    owner: LogId,
    body: &EntryBody,
    parents: &[ParentFacts],
    is_writer: impl Fn(&NodeId) -> bool,
) -> Result<(), &'static str> {
    let is_owner = body.author == owner;
    if !is_owner && !matches!(body.payload, Payload::Data(_)) {
        return Err("only the owner changes membership");
    }
    let previous = |seq: u64| {
        parents
            .iter()
            .any(|p| p.author == body.author && p.seq == seq)
    };
    match body.seq {
        0 if is_owner => Ok(()),
        0 => {
            let admitted = parents.iter().any(|p| p.admits == Some(body.author));
            let opened = parents.iter().any(|p| p.opens);
            if (admitted && is_writer(&body.author)) || opened {
                Ok(())
            } else {
                Err("author is not a writer of this log")
            }
        }
        seq if previous(seq - 1) => Ok(()),
        _ => Err("author's previous entry is not a parent"),
    }
}

fn note_membership(state: &mut State, entry: &Entry) {
    let body = entry.body();
    if body.author != body.log {
        // A writer who came in through an open log is a writer from its first entry on.
        if body.seq == 0 && state.open.is_some() {
            state.writers.entry(body.author).or_insert(entry.id());
        }
        return;
    }
    match &entry.body().payload {
        Payload::AddWriter(writer) => {
            state.writers.entry(*writer).or_insert(entry.id());
        }
        Payload::RemoveWriter { writer, keep_until } => {
            // Several removals: the strictest cut-off wins, whatever the order they arrive in.
            let cut = state.removed.entry(*writer).or_insert(*keep_until);
            *cut = match (*cut, *keep_until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                _ => None,
            };
        }
        Payload::Open => {
            state.open.get_or_insert(entry.id());
        }
        Payload::Data(_) => {}
    }
}

/// Decodes one row of the entries table.
fn decode_row(log: LogId, key: &[u8], value: &[u8]) -> Result<(OrderKey, Entry), StoreError> {
    let key = OrderKey::from_bytes(key.try_into().map_err(db_err)?);
    let (entry, _) =
        Entry::from_stored(log, key.id, value).ok_or_else(|| db_err("corrupt entry"))?;
    Ok((key, entry))
}

/// Decodes one row of the evidence table.
fn decode_evidence(key: &[u8], value: &[u8]) -> Result<Equivocation, StoreError> {
    let corrupt = || db_err("corrupt evidence");
    let (author, seq) = key.split_at_checked(32).ok_or_else(corrupt)?;
    let (first, second) = value.split_at_checked(32).ok_or_else(corrupt)?;
    Ok(Equivocation {
        author: NodeId::from_bytes(&author.try_into().map_err(|_| corrupt())?).map_err(db_err)?,
        seq: u64::from_be_bytes(seq.try_into().map_err(|_| corrupt())?),
        first: EntryId(first.try_into().map_err(|_| corrupt())?),
        second: EntryId(second.try_into().map_err(|_| corrupt())?),
    })
}

fn author_seq_key(author: &NodeId, seq: u64) -> Key {
    let mut key = [0u8; 40];
    key[..32].copy_from_slice(author.as_bytes());
    key[32..].copy_from_slice(&seq.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sealed and single appends, a writer, and a fork by that writer (recorded as evidence).
    fn history(log: &Log, owner: &SecretKey, writer: &SecretKey) {
        log.append_batch(owner, (0..3u8).map(|i| Payload::Data(vec![i])).collect())
            .unwrap();
        let add = log
            .append(owner, Payload::AddWriter(writer.node_id()))
            .unwrap();
        let w0 = log.append(writer, Payload::Data(b"w0".to_vec())).unwrap();
        log.append(writer, Payload::Data(b"w1".to_vec())).unwrap();
        log.append(owner, Payload::Data(b"o".to_vec())).unwrap();
        let clock = log.order_keys(&[add])[0].clock + 1;
        let fork = Entry::signed(
            EntryBody {
                log: log.id(),
                author: writer.node_id(),
                seq: 0,
                clock,
                parents: vec![add],
                timestamp: 0,
                payload: Payload::Data(b"fork".to_vec()),
            },
            writer,
        );
        assert_ne!(fork.id(), w0);
        log.apply(
            vec![Verified {
                entry: fork,
                seal: None,
            }],
            0,
        )
        .unwrap();
    }

    fn with_seals(log: &Log) -> Vec<Verified> {
        log.entries()
            .unwrap()
            .into_iter()
            .map(|entry| {
                let seal = log.seal_of(&entry.id()).unwrap();
                Verified { entry, seal }
            })
            .collect()
    }

    type Summary = (
        Vec<(Entry, Option<EntryId>)>,
        Vec<EntryId>,
        Vec<Equivocation>,
        Vec<(NodeId, bool)>,
    );

    fn summary(log: &Log) -> Summary {
        (
            with_seals(log)
                .into_iter()
                .map(|v| (v.entry, v.seal))
                .collect::<Vec<_>>(),
            log.heads(),
            // Which fork was seen first depends on arrival order: compare the pairs.
            log.equivocations()
                .unwrap()
                .into_iter()
                .map(|mut e| {
                    if e.first > e.second {
                        std::mem::swap(&mut e.first, &mut e.second);
                    }
                    e
                })
                .collect(),
            log.writers(),
        )
    }

    #[test]
    fn a_file_store_and_a_memory_store_keep_the_same_rows() {
        let (owner, writer) = (SecretKey::generate(), SecretKey::generate());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        let file = Log::open(&path, owner.node_id()).unwrap();
        history(&file, &owner, &writer);
        assert_eq!(file.equivocations().unwrap().len(), 1);
        let memory = Log::in_memory(owner.node_id());
        memory.apply(with_seals(&file), 0).unwrap();
        assert_eq!(summary(&memory), summary(&file));
        // A reopened file store rebuilds the same state, and appends continue each author's chain.
        let before = summary(&file);
        drop(file);
        let file = Log::open(&path, owner.node_id()).unwrap();
        assert_eq!(summary(&file), before);
        for log in [&file, &memory] {
            let id = log.append(&writer, Payload::Data(b"w2".to_vec())).unwrap();
            assert_eq!(log.get(&id).unwrap().unwrap().body().seq, 2);
        }
    }

    #[test]
    fn an_open_log_takes_anyone_whose_first_entry_follows_the_opening() {
        let (owner, stranger, early) = (
            SecretKey::generate(),
            SecretKey::generate(),
            SecretKey::generate(),
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        let log = Log::open(&path, owner.node_id()).unwrap();
        assert!(matches!(
            log.append(&early, Payload::Data(b"too soon".to_vec())),
            Err(StoreError::NotAWriter(_))
        ));
        assert!(!log.is_open());
        log.append(&owner, Payload::Open).unwrap();
        assert!(log.is_open());
        let first = log
            .append(&stranger, Payload::Data(b"hello".to_vec()))
            .unwrap();
        log.append(&stranger, Payload::Data(b"again".to_vec()))
            .unwrap();
        assert_eq!(log.writers(), vec![(stranger.node_id(), false)]);
        // Only the owner opens a log or changes its writers.
        assert!(log.append(&stranger, Payload::Open).is_err());
        // The owner still removes a writer it never admitted.
        log.append(
            &owner,
            Payload::RemoveWriter {
                writer: stranger.node_id(),
                keep_until: Some(0),
            },
        )
        .unwrap();
        assert!(log.counts(&stranger.node_id(), 0));
        assert!(!log.counts(&stranger.node_id(), 1));
        // Another replica takes the same entries; a reopened store is still open.
        let copy = Log::in_memory(owner.node_id());
        copy.apply(with_seals(&log), 0).unwrap();
        assert!(copy.is_open());
        assert!(copy.get(&first).unwrap().is_some());
        drop(log);
        let log = Log::open(&path, owner.node_id()).unwrap();
        assert!(log.is_open());
        assert_eq!(log.writers(), vec![(stranger.node_id(), true)]);
    }

    #[test]
    fn a_rejected_batch_leaves_either_store_as_it_was() {
        let owner = SecretKey::generate();
        let dir = tempfile::tempdir().unwrap();
        let file = Log::open(&dir.path().join("log.redb"), owner.node_id()).unwrap();
        let memory = Log::in_memory(owner.node_id());
        for log in [&file, &memory] {
            log.append(&owner, Payload::Data(b"first".to_vec()))
                .unwrap();
        }
        let stranger = SecretKey::generate();
        for log in [&file, &memory] {
            let head = log.heads()[0];
            let good = Entry::signed(
                EntryBody {
                    log: log.id(),
                    author: owner.node_id(),
                    seq: 1,
                    clock: 1,
                    parents: vec![head],
                    timestamp: 0,
                    payload: Payload::Data(b"good".to_vec()),
                },
                &owner,
            );
            let bad = Entry::signed(
                EntryBody {
                    log: log.id(),
                    author: stranger.node_id(),
                    seq: 0,
                    clock: 2,
                    parents: vec![good.id()],
                    timestamp: 0,
                    payload: Payload::Data(b"bad".to_vec()),
                },
                &stranger,
            );
            let before = summary(log);
            let batch = [good, bad].map(|entry| Verified { entry, seal: None });
            let err = log.apply(batch.to_vec(), 0).unwrap_err();
            assert!(err.to_string().contains("not a writer"), "{err}");
            assert_eq!(summary(log), before);
            assert_eq!(log.len(), 1);
        }
    }
}
