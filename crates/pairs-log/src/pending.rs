//! Entries that arrived before they can be stored: waiting for parents, or (unsigned) for the signed
//! entry that seals them.
//!
//! A *vouched* entry carries a signature that was not checked because a later entry of its author in
//! the same batch was, and that one's signature covers it through the chain (see
//! [`crate::session`]): here it is treated like an unsigned entry sealed by that later one.
//!
//! Work is incremental, O(1) amortized per entry: each entry keeps a count of parents not yet
//! available, each missing parent a list of the entries waiting for it, and a seal propagates back along
//! its author's chain as the links arrive. A signed entry is *released* once all its parents are
//! available; releasing makes it available to its waiters in turn, so releases come out in an order
//! where parents precede children, ready to be stored in one transaction.
//!
//! An entry sealed by a later one is *held* once its parents are available: available to the next links
//! of its chain only, and released together with its seal, just before it. So a sealed entry is never
//! stored without its seal, even when the seal waits for a parent by another author (as it does when
//! entries appended one by one, each with the other writers' heads as parents, were stored as sealed).

use pairs_base::NodeId;

use crate::entry::{Entry, EntryId};
use crate::fast::{Map as HashMap, Set as HashSet};
use crate::session::Link;
use crate::store::Verified;

/// The waiting room.
#[derive(Default)]
pub(crate) struct Pending {
    entries: HashMap<EntryId, Entry>,
    missing: HashMap<EntryId, usize>,
    waiters: HashMap<EntryId, Vec<EntryId>>,
    seals: HashMap<EntryId, EntryId>,
    /// Waiting entries by (author, seq); several when an author forked.
    by_author_seq: HashMap<(NodeId, u64), Vec<EntryId>>,
    /// Waiting entries whose signature was not checked: they count as unsigned.
    vouched: HashSet<EntryId>,
    /// Seal -> the entries it seals that are held for it, parents first.
    held: HashMap<EntryId, Vec<EntryId>>,
    /// Entries held (still waiting, but no longer counted as missing by their chain's next links).
    held_ids: HashSet<EntryId>,
    /// Released but not yet stored: available to waiters already.
    released: HashSet<EntryId>,
    bytes: usize,
}

impl Pending {
    /// Entries waiting.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Approximate bytes of the entries waiting.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether `id` is waiting or released.
    pub(crate) fn contains(&self, id: &EntryId) -> bool {
        self.entries.contains_key(id) || self.released.contains(id)
    }

    /// A waiting entry as [`crate::session::vouched`] sees it.
    pub(crate) fn link(&self, id: &EntryId) -> Option<Link> {
        let entry = self.entries.get(id)?;
        let unsealed = (entry.signature().is_none() || self.vouched.contains(id))
            && !self.seals.contains_key(id);
        Some(Link::of(entry, unsealed))
    }

    /// Whether some waiting entry needs `id` as a parent.
    pub(crate) fn waits_for(&self, id: &EntryId) -> bool {
        self.waiters.contains_key(id)
    }

    /// Parents that some waiting entry needs and nobody has provided.
    pub(crate) fn missing_parents(&self) -> impl Iterator<Item = &EntryId> {
        self.waiters
            .keys()
            .filter(|id| !self.entries.contains_key(*id))
    }

    /// Adds an entry whose signature, if any, was verified, unless `vouched`: then it waits like an
    /// unsigned entry for the later entry that vouches for it, and is released still carrying its
    /// unchecked signature, with that entry as its seal. `stored` says whether an id is in the
    /// store. Entries that become storable are appended to `out` in a parents-first order.
    pub(crate) fn insert(
        &mut self,
        entry: Entry,
        vouched: bool,
        stored: impl Fn(&EntryId) -> bool,
        out: &mut Vec<Verified>,
    ) {
        let id = entry.id();
        let body = entry.body();
        let mut missing = 0;
        for parent in &body.parents {
            if !stored(parent) && !self.released.contains(parent) {
                missing += 1;
                self.waiters.entry(*parent).or_default().push(id);
            }
        }
        self.missing.insert(id, missing);
        self.by_author_seq
            .entry((body.author, body.seq))
            .or_default()
            .push(id);
        let signed = entry.signature().is_some() && !vouched;
        if vouched {
            self.vouched.insert(id);
        }
        // A sealed successor already waiting (one that names this entry as its parent) seals it.
        let inherited = body.seq.checked_add(1).and_then(|next| {
            self.by_author_seq
                .get(&(body.author, next))?
                .iter()
                .find(|s| {
                    self.seals.contains_key(*s) && self.entries[*s].body().parents.contains(&id)
                })
                .and_then(|s| self.seals.get(s).copied())
        });
        self.bytes += size(&entry);
        self.entries.insert(id, entry);
        if signed {
            self.seal_chain(id, id, out);
        } else if let Some(seal) = inherited {
            self.seal_chain(id, seal, out);
        }
        self.try_release(id, out);
    }

    /// `id` reached the store by another way (another session, a local append): if it was waiting it
    /// no longer does, what it held can be stored now that their seal is, and its waiters may go on.
    pub(crate) fn now_stored(&mut self, id: &EntryId, out: &mut Vec<Verified>) {
        if let Some(entry) = self.entries.remove(id) {
            self.forget(id, &entry);
        }
        let mut candidates = Vec::new();
        for member in self.held.remove(id).unwrap_or_default() {
            if self.take(member, out) {
                self.notify_waiters(member, &mut candidates);
            }
        }
        self.notify_waiters(*id, &mut candidates);
        self.advance(candidates, out);
    }

    /// Ids of the waiting entries.
    pub(crate) fn waiting_ids(&self) -> Vec<EntryId> {
        self.entries.keys().copied().collect()
    }

    /// Drops the bookkeeping of an entry that left the waiting room.
    fn forget(&mut self, id: &EntryId, entry: &Entry) {
        self.missing.remove(id);
        self.vouched.remove(id);
        if let Some(seal) = self.seals.remove(id)
            && self.held_ids.remove(id)
            && let Some(group) = self.held.get_mut(&seal)
        {
            group.retain(|x| x != id);
        }
        self.bytes -= size(entry);
        let key = (entry.body().author, entry.body().seq);
        if let Some(ids) = self.by_author_seq.get_mut(&key) {
            ids.retain(|x| x != id);
            if ids.is_empty() {
                self.by_author_seq.remove(&key);
            }
        }
    }

    /// The released entries were stored.
    pub(crate) fn stored(&mut self) {
        self.released.clear();
    }

    /// Seals `from` and then each unsigned predecessor on its author's chain that is waiting.
    fn seal_chain(&mut self, from: EntryId, seal: EntryId, out: &mut Vec<Verified>) {
        let mut current = from;
        loop {
            let Some(entry) = self.entries.get(&current) else {
                return;
            };
            let (author, seq) = (entry.body().author, entry.body().seq);
            // The previous link is the parent by the same author with the previous sequence number.
            let previous = entry.body().parents.iter().copied().find(|p| {
                self.entries
                    .get(p)
                    .is_some_and(|e| e.body().author == author && e.body().seq + 1 == seq)
            });
            self.seals.insert(current, seal);
            self.try_release(current, out);
            let Some(previous) = previous else { return };
            let waiting_unsealed = self
                .entries
                .get(&previous)
                .is_some_and(|p| p.signature().is_none() || self.vouched.contains(&previous))
                && !self.seals.contains_key(&previous);
            if !waiting_unsealed {
                return;
            }
            current = previous;
        }
    }

    fn ready(&self, id: &EntryId) -> bool {
        self.missing.get(id) == Some(&0)
            && self.seals.contains_key(id)
            && !self.held_ids.contains(id)
    }

    fn try_release(&mut self, id: EntryId, out: &mut Vec<Verified>) {
        self.advance(vec![id], out);
    }

    /// Moves on every candidate that is ready, and whatever that makes ready in turn (iteratively, so
    /// long chains cannot overflow the stack). A ready entry sealed by another is held for it, which
    /// lets the next links of its chain go on; a ready signed entry is released with what it holds.
    fn advance(&mut self, mut candidates: Vec<EntryId>, out: &mut Vec<Verified>) {
        while let Some(id) = candidates.pop() {
            if !self.ready(&id) {
                continue;
            }
            let seal = self.seals[&id];
            if seal != id {
                self.held_ids.insert(id);
                self.held.entry(seal).or_default().push(id);
                // Only the entries on the way to the same seal count it as available now; the others
                // wait until it is released.
                if let Some(waiters) = self.waiters.get_mut(&id) {
                    let seals = &self.seals;
                    let mut links = Vec::new();
                    waiters.retain(|w| {
                        let same = seals.get(w) == Some(&seal);
                        if same {
                            links.push(*w);
                        }
                        !same
                    });
                    if waiters.is_empty() {
                        self.waiters.remove(&id);
                    }
                    for link in links {
                        if let Some(count) = self.missing.get_mut(&link) {
                            *count -= 1;
                        }
                        candidates.push(link);
                    }
                }
                continue;
            }
            // Held entries became held parents first: released in that order, then their seal.
            let group = self.held.remove(&id).unwrap_or_default();
            for member in group.into_iter().chain(std::iter::once(id)) {
                if self.take(member, out) {
                    self.notify_waiters(member, &mut candidates);
                }
            }
        }
    }

    /// Counts released `id` as available to the entries waiting for it.
    fn notify_waiters(&mut self, id: EntryId, candidates: &mut Vec<EntryId>) {
        for waiter in self.waiters.remove(&id).unwrap_or_default() {
            if let Some(count) = self.missing.get_mut(&waiter) {
                *count -= 1;
            }
            candidates.push(waiter);
        }
    }

    /// Moves an entry from the waiting room to `out`.
    fn take(&mut self, id: EntryId, out: &mut Vec<Verified>) -> bool {
        let Some(&seal) = self.seals.get(&id) else {
            return false;
        };
        let Some(entry) = self.entries.remove(&id) else {
            return false;
        };
        self.forget(&id, &entry);
        out.push(Verified {
            entry,
            seal: (seal != id).then_some(seal),
        });
        self.released.insert(id);
        true
    }
}

/// Approximate bytes an entry occupies, for buffer and batch limits.
pub(crate) fn size(entry: &Entry) -> usize {
    let payload = match &entry.body().payload {
        crate::entry::Payload::Data(d) => d.len(),
        _ => 64,
    };
    // Each parent may also cost a waiter record.
    payload + entry.body().parents.len() * 250 + 200
}

#[cfg(test)]
mod tests {
    use pairs_base::SecretKey;

    use super::*;
    use crate::entry::{EntryBody, Payload};

    fn entry(key: &SecretKey, seq: u64, parents: &[&Entry], signed: bool) -> Entry {
        let mut ids: Vec<EntryId> = parents.iter().map(|p| p.id()).collect();
        ids.sort();
        let body = EntryBody {
            log: SecretKey::from_bytes(&[1; 32]).node_id(),
            author: key.node_id(),
            seq,
            clock: parents
                .iter()
                .map(|p| p.body().clock + 1)
                .max()
                .unwrap_or(0),
            parents: ids,
            timestamp: 0,
            payload: Payload::Data(vec![seq as u8]),
        };
        if signed {
            Entry::signed(body, key)
        } else {
            Entry::unsigned(body)
        }
    }

    fn ids(out: &[Verified]) -> Vec<EntryId> {
        out.iter().map(|v| v.entry.id()).collect()
    }

    /// a0, a1 unsigned, sealed by a2, which also names b0 of another writer, arriving last.
    fn sealed_chain_with_a_late_parent() -> (Vec<Entry>, Entry) {
        let (a, b) = (SecretKey::generate(), SecretKey::generate());
        let b0 = entry(&b, 0, &[], true);
        let a0 = entry(&a, 0, &[], false);
        let a1 = entry(&a, 1, &[&a0], false);
        let a2 = entry(&a, 2, &[&a1, &b0], true);
        (vec![a0, a1, a2], b0)
    }

    #[test]
    fn a_sealed_chain_waits_for_its_seal_to_be_storable() {
        let (chain, b0) = sealed_chain_with_a_late_parent();
        let mut pending = Pending::default();
        let mut out = Vec::new();
        for e in &chain {
            pending.insert(e.clone(), false, |_| false, &mut out);
        }
        // a0 and a1 are sealed and have their parents, but a2 cannot be stored yet: they wait.
        assert!(out.is_empty());
        assert_eq!(pending.len(), 3);
        pending.insert(b0.clone(), false, |_| false, &mut out);
        assert_eq!(
            ids(&out),
            [b0.id(), chain[0].id(), chain[1].id(), chain[2].id()]
        );
        let seal = Some(chain[2].id());
        assert_eq!(
            out.iter().map(|v| v.seal).collect::<Vec<_>>(),
            [None, seal, seal, None]
        );
        assert!(pending.is_empty());
    }

    #[test]
    fn held_entries_go_when_their_seal_is_stored_elsewhere() {
        let (chain, _) = sealed_chain_with_a_late_parent();
        let mut pending = Pending::default();
        let mut out = Vec::new();
        for e in &chain {
            pending.insert(e.clone(), false, |_| false, &mut out);
        }
        pending.now_stored(&chain[2].id(), &mut out);
        assert_eq!(ids(&out), [chain[0].id(), chain[1].id()]);
        assert!(pending.is_empty());
    }

    #[test]
    fn a_vouched_entry_waits_like_an_unsigned_one_and_keeps_its_signature() {
        let a = SecretKey::generate();
        let a0 = entry(&a, 0, &[], true);
        let a1 = entry(&a, 1, &[&a0], true);
        let mut pending = Pending::default();
        let mut out = Vec::new();
        pending.insert(a0.clone(), true, |_| false, &mut out);
        assert!(
            out.is_empty(),
            "a vouched entry waits for what vouches for it"
        );
        pending.insert(a1.clone(), false, |_| false, &mut out);
        assert_eq!(ids(&out), [a0.id(), a1.id()]);
        assert!(out[0].entry.signature().is_some());
        assert_eq!(out[0].seal, Some(a1.id()));
    }
}
