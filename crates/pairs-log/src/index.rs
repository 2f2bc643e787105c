//! The log's entries in (Lamport, id) order, with range counts and fingerprints in sub-linear time.
//!
//! Keys live in sorted blocks, each keeping the 256-bit sum of its ids, so the fingerprint of a range
//! costs two partial block scans plus one addition per whole block in between.

use crate::entry::{EntryId, OrderKey};

const BLOCK_MAX: usize = 1024;

/// A 16-byte digest of a set of ids: BLAKE3 of (sum of ids mod 2^256, count).
///
/// A sum rather than an XOR: an XOR of hashes can be matched by a crafted set with linear algebra, while
/// finding ids whose sum hits a target means inverting BLAKE3 (the negentropy construction).
pub type Fingerprint = [u8; 16];

/// A sum of ids modulo 2^256, as four little-endian 64-bit limbs.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct IdSum([u64; 4]);

impl IdSum {
    fn add(&mut self, other: &IdSum) {
        let mut carry = false;
        for (a, b) in self.0.iter_mut().zip(other.0) {
            let (s1, c1) = a.overflowing_add(b);
            let (s2, c2) = s1.overflowing_add(carry as u64);
            *a = s2;
            carry = c1 || c2;
        }
    }

    fn add_id(&mut self, id: &EntryId) {
        let mut limbs = [0u64; 4];
        for (i, limb) in limbs.iter_mut().enumerate() {
            *limb = u64::from_le_bytes(id.0[i * 8..i * 8 + 8].try_into().expect("8"));
        }
        self.add(&IdSum(limbs));
    }

    /// The fingerprint of a set with this sum and `count` members.
    pub fn fingerprint(&self, count: usize) -> Fingerprint {
        let mut hasher = blake3::Hasher::new_derive_key("pairs log range fingerprint v1");
        for limb in self.0 {
            hasher.update(&limb.to_le_bytes());
        }
        hasher.update(&(count as u64).to_le_bytes());
        hasher.finalize().as_bytes()[..16].try_into().expect("16")
    }
}

#[derive(Debug, Default, Clone)]
struct Block {
    keys: Vec<OrderKey>,
    sum: IdSum,
}

impl Block {
    fn recompute(&mut self) {
        self.sum = IdSum::default();
        for key in &self.keys {
            self.sum.add_id(&key.id);
        }
    }
}

/// An ordered set of [`OrderKey`]s with rank, range and fingerprint queries.
#[derive(Debug, Default, Clone)]
pub struct OrderIndex {
    blocks: Vec<Block>,
    len: usize,
}

impl OrderIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds an index from keys already in ascending order.
    pub fn from_sorted(keys: impl IntoIterator<Item = OrderKey>) -> Self {
        let mut index = Self::new();
        let mut block = Block::default();
        for key in keys {
            block.sum.add_id(&key.id);
            block.keys.push(key);
            index.len += 1;
            if block.keys.len() == BLOCK_MAX / 2 {
                index.blocks.push(std::mem::take(&mut block));
            }
        }
        if !block.keys.is_empty() {
            index.blocks.push(block);
        }
        index
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Inserts a key; false if it was present.
    pub fn insert(&mut self, key: OrderKey) -> bool {
        if self.blocks.is_empty() {
            let mut block = Block {
                keys: vec![key],
                sum: IdSum::default(),
            };
            block.recompute();
            self.blocks.push(block);
            self.len = 1;
            return true;
        }
        // The block whose first key is the last one <= key (or the first block).
        let b = match self.blocks.partition_point(|blk| blk.keys[0] <= key) {
            0 => 0,
            n => n - 1,
        };
        let block = &mut self.blocks[b];
        match block.keys.binary_search(&key) {
            Ok(_) => return false,
            Err(pos) => block.keys.insert(pos, key),
        }
        block.sum.add_id(&key.id);
        self.len += 1;
        if block.keys.len() > BLOCK_MAX {
            let tail = block.keys.split_off(BLOCK_MAX / 2);
            block.recompute();
            let mut new_block = Block {
                keys: tail,
                sum: IdSum::default(),
            };
            new_block.recompute();
            self.blocks.insert(b + 1, new_block);
        }
        true
    }

    /// Whether the key is present.
    pub fn contains(&self, key: &OrderKey) -> bool {
        let b = self.blocks.partition_point(|blk| blk.keys[0] <= *key);
        b > 0 && self.blocks[b - 1].keys.binary_search(key).is_ok()
    }

    /// How many keys are below `bound` (`None` = above everything).
    pub fn rank(&self, bound: Option<&OrderKey>) -> usize {
        let Some(bound) = bound else { return self.len };
        let mut rank = 0;
        for block in &self.blocks {
            if block.keys.last().is_some_and(|last| last < bound) {
                rank += block.keys.len();
            } else {
                return rank + block.keys.partition_point(|k| k < bound);
            }
        }
        rank
    }

    /// The key at position `rank` (0-based).
    pub fn key_at(&self, mut rank: usize) -> Option<OrderKey> {
        for block in &self.blocks {
            if rank < block.keys.len() {
                return Some(block.keys[rank]);
            }
            rank -= block.keys.len();
        }
        None
    }

    /// The keys with ranks in `[from, to)`.
    pub fn keys_between(&self, from: usize, to: usize) -> Vec<OrderKey> {
        let mut out = Vec::with_capacity(to.saturating_sub(from));
        let mut offset = 0;
        for block in &self.blocks {
            let end = offset + block.keys.len();
            if end > from && offset < to {
                let lo = from.saturating_sub(offset);
                let hi = (to - offset).min(block.keys.len());
                out.extend_from_slice(&block.keys[lo..hi]);
            }
            offset = end;
            if offset >= to {
                break;
            }
        }
        out
    }

    /// Fingerprint of the keys with ranks in `[from, to)`.
    pub fn fingerprint(&self, from: usize, to: usize) -> Fingerprint {
        let mut sum = IdSum::default();
        let mut offset = 0;
        for block in &self.blocks {
            let end = offset + block.keys.len();
            if from <= offset && end <= to {
                sum.add(&block.sum);
            } else if end > from && offset < to {
                let lo = from.saturating_sub(offset);
                let hi = (to - offset).min(block.keys.len());
                for key in &block.keys[lo..hi] {
                    sum.add_id(&key.id);
                }
            }
            offset = end;
            if offset >= to {
                break;
            }
        }
        sum.fingerprint(to.saturating_sub(from))
    }

    /// Every key in order.
    pub fn iter(&self) -> impl Iterator<Item = &OrderKey> {
        self.blocks.iter().flat_map(|b| b.keys.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(clock: u64, b: u8) -> OrderKey {
        OrderKey::new(clock, EntryId([b; 32]))
    }

    #[test]
    fn fingerprint_depends_on_membership_not_order_of_insertion() {
        let keys: Vec<_> = (0..3000u64).map(|i| key(i / 7, (i % 251) as u8)).collect();
        let mut a = OrderIndex::new();
        for k in &keys {
            a.insert(*k);
        }
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        let b = OrderIndex::from_sorted(sorted.iter().copied());
        assert_eq!(a.len(), b.len());
        assert_eq!(a.fingerprint(0, a.len()), b.fingerprint(0, b.len()));
        assert_eq!(a.fingerprint(100, 2000), b.fingerprint(100, 2000));
        assert_ne!(a.fingerprint(100, 2000), a.fingerprint(100, 2001));
    }

    proptest! {
        #[test]
        fn queries_match_a_sorted_vec(raw in proptest::collection::vec((0u64..50, any::<u8>()), 0..3000),
                                      probe in (0u64..60, any::<u8>())) {
            let mut index = OrderIndex::new();
            let mut model: Vec<OrderKey> = Vec::new();
            for (c, b) in raw {
                let k = key(c, b);
                let fresh = index.insert(k);
                prop_assert_eq!(fresh, !model.contains(&k));
                if fresh { model.push(k); }
            }
            model.sort();
            prop_assert_eq!(index.len(), model.len());
            prop_assert!(index.iter().copied().eq(model.iter().copied()));
            let p = key(probe.0, probe.1);
            let rank = model.partition_point(|k| *k < p);
            prop_assert_eq!(index.rank(Some(&p)), rank);
            prop_assert_eq!(index.contains(&p), model.binary_search(&p).is_ok());
            prop_assert_eq!(index.keys_between(rank / 2, rank), model[rank / 2..rank].to_vec());
            let mut sum = IdSum::default();
            for k in &model[rank / 2..rank] { sum.add_id(&k.id); }
            prop_assert_eq!(index.fingerprint(rank / 2, rank), sum.fingerprint(rank - rank / 2));
            if let Some(k) = model.get(rank) { prop_assert_eq!(index.key_at(rank), Some(*k)); }
        }
    }
}
