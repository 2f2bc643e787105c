//! CRDT views: deterministic folds over a log's entries.
//!
//! View operations travel as [`Payload::Data`] starting with a marker, so a log can mix application
//! data and view operations. Every fold depends only on the *set* of entries, never on the order they
//! arrived in: the map breaks ties by (Lamport clock, author, id); the register and the set name, in
//! each operation, the earlier operations it overwrites or observed (as Automerge's `pred` does), so
//! concurrency is decided by the operations themselves. Entries by removed writers past their cut-off
//! are left out.

use std::collections::{BTreeMap, BTreeSet};

use pairs_base::NodeId;
use serde::{Deserialize, Serialize};

use crate::entry::{Entry, EntryId, Payload};
use crate::store::{Log, StoreError};

const OP_MARKER: &[u8] = b"\0pairs-op1";

/// An operation on a view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Last-writer-wins map: set `key`.
    MapSet {
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Last-writer-wins map: delete `key`.
    MapDelete {
        /// Key.
        key: Vec<u8>,
    },
    /// Multi-value register: write `value`, replacing the writes named in `supersedes`.
    RegisterSet {
        /// Register name.
        register: Vec<u8>,
        /// Value.
        value: Vec<u8>,
        /// The writes this one replaces (the values the writer saw).
        supersedes: Vec<EntryId>,
    },
    /// Observed-remove set: add `element`.
    SetAdd {
        /// Set name.
        set: Vec<u8>,
        /// Element.
        element: Vec<u8>,
    },
    /// Observed-remove set: remove the additions of `element` named in `observed`.
    SetRemove {
        /// Set name.
        set: Vec<u8>,
        /// Element.
        element: Vec<u8>,
        /// The additions the remover saw; concurrent additions survive.
        observed: Vec<EntryId>,
    },
    /// Counter: add `delta`.
    CounterAdd {
        /// Counter name.
        counter: Vec<u8>,
        /// Amount (may be negative).
        delta: i64,
    },
}

impl Op {
    /// The payload carrying this operation.
    pub fn to_payload(&self) -> Payload {
        let mut bytes = OP_MARKER.to_vec();
        bytes.extend(postcard::to_stdvec(self).expect("ops always serialize"));
        Payload::Data(bytes)
    }

    /// The operation in a payload, if it carries one.
    pub fn from_payload(payload: &Payload) -> Option<Op> {
        match payload {
            Payload::Data(bytes) => postcard::from_bytes(bytes.strip_prefix(OP_MARKER)?).ok(),
            _ => None,
        }
    }
}

/// A map value with what decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapValue {
    /// The value, or `None` if the winning write was a delete.
    pub value: Option<Vec<u8>>,
    /// The winning write's position: (clock, author, id).
    pub winner: (u64, NodeId, EntryId),
}

/// All views of a log, folded from its entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Views {
    /// Last-writer-wins map.
    pub map: BTreeMap<Vec<u8>, MapValue>,
    /// Multi-value registers: register -> (write id -> value). More than one value is a conflict.
    pub registers: BTreeMap<Vec<u8>, BTreeMap<EntryId, Vec<u8>>>,
    /// Observed-remove sets: set -> element -> ids of the additions still in force.
    pub sets: BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, BTreeSet<EntryId>>>,
    /// Counters.
    pub counters: BTreeMap<Vec<u8>, i64>,
}

impl Views {
    /// Folds every counted entry of `log`.
    pub fn of(log: &Log) -> Result<Self, StoreError> {
        let entries = log.entries()?;
        Ok(Self::fold(
            entries
                .iter()
                .filter(|e| log.counts(&e.body().author, e.body().seq)),
        ))
    }

    /// Folds entries (in any order).
    pub fn fold<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Self {
        let mut views = Views::default();
        let mut superseded: BTreeSet<EntryId> = BTreeSet::new();
        let mut removed: BTreeSet<EntryId> = BTreeSet::new();
        for entry in entries {
            let Some(op) = Op::from_payload(&entry.body().payload) else {
                continue;
            };
            let position = (entry.body().clock, entry.body().author, entry.id());
            match op {
                Op::MapSet { key, value } => views.map_write(key, Some(value), position),
                Op::MapDelete { key } => views.map_write(key, None, position),
                Op::RegisterSet {
                    register,
                    value,
                    supersedes,
                } => {
                    superseded.extend(supersedes);
                    views
                        .registers
                        .entry(register)
                        .or_default()
                        .insert(entry.id(), value);
                }
                Op::SetAdd { set, element } => {
                    views
                        .sets
                        .entry(set)
                        .or_default()
                        .entry(element)
                        .or_default()
                        .insert(entry.id());
                }
                Op::SetRemove { observed, .. } => removed.extend(observed),
                Op::CounterAdd { counter, delta } => {
                    let total = views.counters.entry(counter).or_default();
                    *total = total.wrapping_add(delta);
                }
            }
        }
        for values in views.registers.values_mut() {
            values.retain(|id, _| !superseded.contains(id));
        }
        for set in views.sets.values_mut() {
            for adds in set.values_mut() {
                adds.retain(|id| !removed.contains(id));
            }
            set.retain(|_, adds| !adds.is_empty());
        }
        views
    }

    fn map_write(
        &mut self,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        position: (u64, NodeId, EntryId),
    ) {
        match self.map.get(&key) {
            Some(current) if current.winner >= position => {}
            _ => {
                self.map.insert(
                    key,
                    MapValue {
                        value,
                        winner: position,
                    },
                );
            }
        }
    }

    /// The map's live entries (deleted keys left out).
    pub fn map_entries(&self) -> impl Iterator<Item = (&Vec<u8>, &Vec<u8>)> {
        self.map
            .iter()
            .filter_map(|(k, v)| v.value.as_ref().map(|value| (k, value)))
    }

    /// The operation that overwrites every value `register` has now.
    pub fn register_set(&self, register: &[u8], value: Vec<u8>) -> Op {
        Op::RegisterSet {
            register: register.to_vec(),
            value,
            supersedes: self
                .registers
                .get(register)
                .map(|v| v.keys().copied().collect())
                .unwrap_or_default(),
        }
    }

    /// The operation that removes `element` as it is now in `set`.
    pub fn set_remove(&self, set: &[u8], element: &[u8]) -> Op {
        Op::SetRemove {
            set: set.to_vec(),
            element: element.to_vec(),
            observed: self
                .sets
                .get(set)
                .and_then(|s| s.get(element))
                .map(|adds| adds.iter().copied().collect())
                .unwrap_or_default(),
        }
    }

    /// Whether `set` contains `element`.
    pub fn set_contains(&self, set: &[u8], element: &[u8]) -> bool {
        self.sets.get(set).is_some_and(|s| s.contains_key(element))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pairs_base::SecretKey;

    #[test]
    fn concurrent_register_writes_are_kept_then_resolved() {
        let owner = SecretKey::generate();
        let writer = SecretKey::generate();
        let a = Log::in_memory(owner.node_id());
        a.append(&owner, Payload::AddWriter(writer.node_id()))
            .unwrap();
        let b = Log::in_memory(owner.node_id());
        b.apply(
            a.entries()
                .unwrap()
                .into_iter()
                .map(|entry| crate::store::Verified { entry, seal: None })
                .collect(),
            0,
        )
        .unwrap();
        // Both write the register without seeing each other.
        let op_a = Views::of(&a)
            .unwrap()
            .register_set(b"title", b"from a".to_vec());
        a.append(&owner, op_a.to_payload()).unwrap();
        let op_b = Views::of(&b)
            .unwrap()
            .register_set(b"title", b"from b".to_vec());
        b.append(&writer, op_b.to_payload()).unwrap();
        // Merge b into a.
        let missing: Vec<_> = b
            .entries()
            .unwrap()
            .into_iter()
            .filter(|e| !a.contains(&e.id()))
            .map(|entry| crate::store::Verified { entry, seal: None })
            .collect();
        a.apply(missing, 0).unwrap();
        let views = Views::of(&a).unwrap();
        assert_eq!(views.registers[b"title".as_slice()].len(), 2, "a conflict");
        // A write that saw both resolves it.
        a.append(
            &owner,
            views
                .register_set(b"title", b"merged".to_vec())
                .to_payload(),
        )
        .unwrap();
        let values: Vec<_> = Views::of(&a).unwrap().registers[b"title".as_slice()]
            .values()
            .cloned()
            .collect();
        assert_eq!(values, vec![b"merged".to_vec()]);
    }

    #[test]
    fn set_remove_only_removes_what_it_observed() {
        let owner = SecretKey::generate();
        let log = Log::in_memory(owner.node_id());
        let add = |log: &Log| {
            log.append(
                &owner,
                Op::SetAdd {
                    set: b"s".to_vec(),
                    element: b"x".to_vec(),
                }
                .to_payload(),
            )
            .unwrap()
        };
        add(&log);
        let remove = Views::of(&log).unwrap().set_remove(b"s", b"x");
        add(&log); // a later add the remove did not observe
        log.append(&owner, remove.to_payload()).unwrap();
        assert!(Views::of(&log).unwrap().set_contains(b"s", b"x"));
        let remove = Views::of(&log).unwrap().set_remove(b"s", b"x");
        log.append(&owner, remove.to_payload()).unwrap();
        assert!(!Views::of(&log).unwrap().set_contains(b"s", b"x"));
    }

    #[test]
    fn map_last_writer_wins_and_counter_sums() {
        let owner = SecretKey::generate();
        let log = Log::in_memory(owner.node_id());
        for (k, v) in [("a", "1"), ("b", "2"), ("a", "3")] {
            let op = Op::MapSet {
                key: k.into(),
                value: v.into(),
            };
            log.append(&owner, op.to_payload()).unwrap();
        }
        log.append(&owner, Op::MapDelete { key: b"b".to_vec() }.to_payload())
            .unwrap();
        for delta in [5, -2, 10] {
            let op = Op::CounterAdd {
                counter: b"c".to_vec(),
                delta,
            };
            log.append(&owner, op.to_payload()).unwrap();
        }
        log.append(&owner, Payload::Data(b"not an op".to_vec()))
            .unwrap();
        let views = Views::of(&log).unwrap();
        let map: Vec<_> = views.map_entries().collect();
        assert_eq!(map, vec![(&b"a".to_vec(), &b"3".to_vec())]);
        assert_eq!(views.counters[b"c".as_slice()], 13);
    }
}
