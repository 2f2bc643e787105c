//! Where a log's rows live: redb tables for a store in a file, plain maps for a store in memory.
//!
//! Both hold the same rows in the same encoding: entries keyed (Lamport clock ‖ id), the first entry
//! seen for each (author ‖ sequence number), and equivocation evidence. [`Rows`] is what validating and
//! storing a batch needs of them, so the store's rules are written once for both. A store in memory
//! has nothing to survive, so it does without redb's transactions, which cost more than signing an
//! entry: its writes are collected and merged once the whole batch passed.

use std::collections::BTreeMap;

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use crate::entry::EntryId;
use crate::fast::Map as HashMap;
use crate::store::{StoreError, db_err};

/// (Lamport clock ‖ id) -> entry: the log's order *is* this table's order, and appends, whose clocks
/// grow, land on the right edge of the tree instead of dirtying a random page per entry.
pub(crate) const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
/// (author ‖ sequence number) -> id of the first entry seen with it.
pub(crate) const AUTHOR_SEQ: TableDefinition<&[u8], &[u8]> = TableDefinition::new("author_seq");
/// (author ‖ sequence number) -> the two ids an author used it for.
pub(crate) const EVIDENCE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("evidence");

/// A row key: (clock ‖ id) for entries, (author ‖ sequence number) for the others.
pub(crate) type Key = [u8; 40];

/// The rows as one application of a batch sees them. Reads see what was committed before, and, for
/// `author_seq` and evidence, what this application wrote already. Entries are read only once they
/// are known to be committed (the store checks its clocks first).
pub(crate) trait Rows {
    /// Runs `f` on the stored bytes of the entry at `key`.
    fn entry<T>(&self, key: &Key, f: impl FnOnce(&[u8]) -> T) -> Result<Option<T>, StoreError>;
    fn insert_entry(&mut self, key: &Key, value: &[u8]) -> Result<(), StoreError>;
    fn author_seq(&self, key: &Key) -> Result<Option<EntryId>, StoreError>;
    fn insert_author_seq(&mut self, key: &Key, id: &EntryId) -> Result<(), StoreError>;
    fn has_evidence(&self, key: &Key) -> Result<bool, StoreError>;
    fn insert_evidence(&mut self, key: &Key, proof: &[u8; 64]) -> Result<(), StoreError>;
}

/// The tables of a redb write transaction.
pub(crate) struct RedbRows<'t> {
    entries: Table<'t, &'static [u8], &'static [u8]>,
    author_seq: Table<'t, &'static [u8], &'static [u8]>,
    evidence: Table<'t, &'static [u8], &'static [u8]>,
}

impl<'t> RedbRows<'t> {
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            entries: txn.open_table(ENTRIES).map_err(db_err)?,
            author_seq: txn.open_table(AUTHOR_SEQ).map_err(db_err)?,
            evidence: txn.open_table(EVIDENCE).map_err(db_err)?,
        })
    }
}

impl Rows for RedbRows<'_> {
    fn entry<T>(&self, key: &Key, f: impl FnOnce(&[u8]) -> T) -> Result<Option<T>, StoreError> {
        Ok(self
            .entries
            .get(key.as_slice())
            .map_err(db_err)?
            .map(|v| f(v.value())))
    }

    fn insert_entry(&mut self, key: &Key, value: &[u8]) -> Result<(), StoreError> {
        self.entries.insert(key.as_slice(), value).map_err(db_err)?;
        Ok(())
    }

    fn author_seq(&self, key: &Key) -> Result<Option<EntryId>, StoreError> {
        match self.author_seq.get(key.as_slice()).map_err(db_err)? {
            Some(v) => Ok(Some(EntryId(
                v.value()
                    .try_into()
                    .map_err(|_| db_err("corrupt author_seq"))?,
            ))),
            None => Ok(None),
        }
    }

    fn insert_author_seq(&mut self, key: &Key, id: &EntryId) -> Result<(), StoreError> {
        self.author_seq
            .insert(key.as_slice(), id.0.as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    fn has_evidence(&self, key: &Key) -> Result<bool, StoreError> {
        Ok(self.evidence.get(key.as_slice()).map_err(db_err)?.is_some())
    }

    fn insert_evidence(&mut self, key: &Key, proof: &[u8; 64]) -> Result<(), StoreError> {
        self.evidence
            .insert(key.as_slice(), proof.as_slice())
            .map_err(db_err)?;
        Ok(())
    }
}

/// The rows of a store in memory.
#[derive(Default)]
pub(crate) struct MemoryRows {
    pub(crate) entries: BTreeMap<Key, Box<[u8]>>,
    author_seq: HashMap<Key, EntryId>,
    pub(crate) evidence: BTreeMap<Key, [u8; 64]>,
}

impl MemoryRows {
    /// Merges what an application wrote, once it passed.
    pub(crate) fn commit(&mut self, writes: MemoryWrites) {
        self.entries.extend(writes.entries);
        self.author_seq.extend(writes.author_seq);
        self.evidence.extend(writes.evidence);
    }
}

/// One application's view of [`MemoryRows`]: the committed rows and its own writes.
pub(crate) struct MemoryTxn<'a> {
    base: &'a MemoryRows,
    writes: MemoryWrites,
}

/// What an application to a store in memory wrote.
#[derive(Default)]
pub(crate) struct MemoryWrites {
    entries: Vec<(Key, Box<[u8]>)>,
    author_seq: HashMap<Key, EntryId>,
    evidence: BTreeMap<Key, [u8; 64]>,
}

impl<'a> MemoryTxn<'a> {
    pub(crate) fn new(base: &'a MemoryRows) -> Self {
        Self {
            base,
            writes: MemoryWrites::default(),
        }
    }

    pub(crate) fn into_writes(self) -> MemoryWrites {
        self.writes
    }
}

impl Rows for MemoryTxn<'_> {
    fn entry<T>(&self, key: &Key, f: impl FnOnce(&[u8]) -> T) -> Result<Option<T>, StoreError> {
        Ok(self.base.entries.get(key).map(|v| f(v)))
    }

    fn insert_entry(&mut self, key: &Key, value: &[u8]) -> Result<(), StoreError> {
        self.writes.entries.push((*key, value.into()));
        Ok(())
    }

    fn author_seq(&self, key: &Key) -> Result<Option<EntryId>, StoreError> {
        Ok(self
            .writes
            .author_seq
            .get(key)
            .or_else(|| self.base.author_seq.get(key))
            .copied())
    }

    fn insert_author_seq(&mut self, key: &Key, id: &EntryId) -> Result<(), StoreError> {
        self.writes.author_seq.insert(*key, *id);
        Ok(())
    }

    fn has_evidence(&self, key: &Key) -> Result<bool, StoreError> {
        Ok(self.writes.evidence.contains_key(key) || self.base.evidence.contains_key(key))
    }

    fn insert_evidence(&mut self, key: &Key, proof: &[u8; 64]) -> Result<(), StoreError> {
        self.writes.evidence.insert(*key, *proof);
        Ok(())
    }
}
