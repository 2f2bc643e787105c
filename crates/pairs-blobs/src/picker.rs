//! Which groups to ask a peer for next: deadlines first, then pieces already started, then the rarest
//! (ties at random, so newcomers start on different pieces), then — only when every missing group is already asked for — the
//! strict endgame.
//!
//! Groups (16 KiB) are what is verified and requested; pieces (16 or more groups) are what rarity is counted
//! on, so picking stays cheap for large blobs (at most [`MAX_PIECES`] pieces).

use crate::bitfield::Bitfield;

/// The picker never tracks more pieces than this: larger blobs get larger pieces.
pub const MAX_PIECES: u64 = 16 * 1024;

/// Groups per piece for a blob of `groups` groups: a power of two, at least 16.
pub fn piece_groups(groups: u64) -> u64 {
    let mut per = 16;
    while groups.div_ceil(per) > MAX_PIECES {
        per *= 2;
    }
    per
}

/// What a peer can give, as the picker sees it.
pub trait Holds {
    /// Whether the peer holds group `group`.
    fn holds(&self, group: u64) -> bool;
}

impl Holds for Bitfield {
    fn holds(&self, group: u64) -> bool {
        self.get(group)
    }
}

/// A peer holding every group.
pub struct HoldsAll;

impl Holds for HoldsAll {
    fn holds(&self, _: u64) -> bool {
        true
    }
}

/// Download bookkeeping for one blob: what we have, what is asked for, how rare each piece is.
#[derive(Debug)]
pub struct Picker {
    groups: u64,
    per_piece: u64,
    have: Bitfield,
    /// Outstanding requests per group (more than one only in the endgame).
    requested: Vec<u8>,
    /// Groups of each piece neither held nor requested.
    open: Vec<u32>,
    /// Peers holding any group of each piece: a piece someone started is not rare, so a newcomer asks
    /// for what nobody but the seeds has yet (what spreads a flash crowd fastest).
    availability: Vec<u32>,
    /// Byte ranges a reader is waiting for, as group ranges, most urgent first.
    deadlines: Vec<(u64, u64)>,
    pieces_done: u64,
    rng: fastrand::Rng,
}

impl Picker {
    /// A picker for `have.len()` groups, starting from what is already held.
    pub fn new(have: Bitfield, seed: u64) -> Self {
        let groups = have.len();
        let per_piece = piece_groups(groups);
        let pieces = groups.div_ceil(per_piece);
        let mut open = vec![0u32; pieces as usize];
        let mut pieces_done = 0;
        for piece in 0..pieces {
            let (start, end) = (piece * per_piece, ((piece + 1) * per_piece).min(groups));
            let missing = (start..end).filter(|&g| !have.get(g)).count() as u32;
            open[piece as usize] = missing;
            pieces_done += u64::from(missing == 0);
        }
        Picker {
            groups,
            per_piece,
            have,
            requested: vec![0; groups as usize],
            open,
            availability: vec![0; pieces as usize],
            deadlines: Vec::new(),
            pieces_done,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Groups held.
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// Whether every group is held.
    pub fn is_complete(&self) -> bool {
        self.have.count() == self.groups
    }

    /// Groups per piece.
    pub fn per_piece(&self) -> u64 {
        self.per_piece
    }

    fn piece_range(&self, piece: u64) -> (u64, u64) {
        (
            piece * self.per_piece,
            ((piece + 1) * self.per_piece).min(self.groups),
        )
    }

    /// A peer now holds part of `piece` (or no longer does, with `delta` = -1).
    pub fn piece_availability(&mut self, piece: u64, delta: i32) {
        if let Some(a) = self.availability.get_mut(piece as usize) {
            *a = a.saturating_add_signed(delta);
        }
    }

    /// Whether `holds` has any group of `piece`.
    pub fn holds_any(&self, holds: &dyn Holds, piece: u64) -> bool {
        let (start, end) = self.piece_range(piece);
        (start..end).any(|g| holds.holds(g))
    }

    /// Groups of `piece` that `holds` has.
    pub fn held_in_piece(&self, holds: &dyn Holds, piece: u64) -> u64 {
        let (start, end) = self.piece_range(piece);
        (start..end).filter(|&g| holds.holds(g)).count() as u64
    }

    /// The piece a group belongs to.
    pub fn piece_of(&self, group: u64) -> u64 {
        group / self.per_piece
    }

    /// Number of pieces.
    pub fn pieces(&self) -> u64 {
        self.open.len() as u64
    }

    /// Sets what a reader waits for: group ranges in order of urgency (replaces the previous ones).
    pub fn set_deadlines(&mut self, ranges: Vec<(u64, u64)>) {
        self.deadlines = ranges;
    }

    /// Whether we lack anything `holds` has.
    pub fn wants_from(&self, holds: &dyn Holds) -> bool {
        (0..self.groups).any(|g| !self.have.get(g) && holds.holds(g))
    }

    fn mark_requested(&mut self, group: u64) {
        let count = &mut self.requested[group as usize];
        if *count == 0 {
            let piece = (group / self.per_piece) as usize;
            self.open[piece] -= 1;
        }
        *count = count.saturating_add(1);
    }

    /// A request for `group` ended without data (rejected, cancelled, timed out, peer gone).
    pub fn release(&mut self, group: u64) {
        let Some(count) = self.requested.get_mut(group as usize) else {
            return;
        };
        if *count == 0 {
            return;
        }
        *count -= 1;
        if *count == 0 && !self.have.get(group) {
            self.open[(group / self.per_piece) as usize] += 1;
        }
    }

    /// A verified group arrived; returns whether it was new, and whether it completed its piece.
    pub fn received(&mut self, group: u64) -> (bool, bool) {
        if group >= self.groups || self.have.get(group) {
            return (false, false);
        }
        let piece = (group / self.per_piece) as usize;
        // Requests still out for it (endgame duplicates) no longer count: they are cancelled.
        if self.requested[group as usize] == 0 {
            self.open[piece] -= 1;
        }
        self.requested[group as usize] = 0;
        self.have.set(group);
        let (start, end) = self.piece_range(piece as u64);
        let done = self.have.all_in(start, end);
        self.pieces_done += u64::from(done);
        (true, done)
    }

    /// Up to `max` groups to ask `holds` for, in runs of adjacent groups; `exclude` lists groups this peer
    /// already has in flight (the endgame never asks one peer twice for a group). `fast` is false for a
    /// peer too slow to be trusted with deadline pieces.
    pub fn pick(
        &mut self,
        holds: &dyn Holds,
        max: usize,
        exclude: &dyn Fn(u64) -> bool,
        fast: bool,
    ) -> Vec<u64> {
        self.pick_with(holds, max, exclude, fast, None)
    }

    /// [`Picker::pick`], leaving out pieces held (even in part) by more than `max_availability` peers:
    /// what a seed is asked for, so that a seed's upload goes to pieces nobody else can give yet.
    pub fn pick_with(
        &mut self,
        holds: &dyn Holds,
        max: usize,
        exclude: &dyn Fn(u64) -> bool,
        fast: bool,
        max_availability: Option<u32>,
    ) -> Vec<u64> {
        let mut picked = Vec::new();
        if max == 0 {
            return picked;
        }
        // 1. What a reader waits for, in order.
        if fast {
            let deadlines = self.deadlines.clone();
            for (start, end) in deadlines {
                self.take_open(holds, start, end, max, &mut picked);
                if picked.len() >= max {
                    return picked;
                }
            }
        }
        // 2. Pieces already started (finishing them makes them tradeable), then new ones.
        while picked.len() < max {
            let Some(piece) = self.choose_piece(holds, max_availability) else {
                break;
            };
            let (start, end) = self.piece_range(piece);
            let before = picked.len();
            self.take_open(holds, start, end, max, &mut picked);
            if picked.len() == before {
                break;
            }
        }
        // 3. Strict endgame: every missing group is requested from someone; duplicate what others are
        // fetching (only when nothing anywhere is left unrequested, as libtorrent does).
        if picked.len() < max && self.open.iter().all(|&open| open == 0) {
            let mut candidates: Vec<u64> = (0..self.groups)
                .filter(|&g| {
                    !self.have.get(g)
                        && self.requested[g as usize] > 0
                        && holds.holds(g)
                        && !exclude(g)
                })
                .filter(|g| !picked.contains(g))
                .collect();
            candidates.sort_by_key(|&g| self.requested[g as usize]);
            for g in candidates.into_iter().take(max - picked.len()) {
                self.mark_requested(g);
                picked.push(g);
            }
        }
        picked
    }

    fn take_open(
        &mut self,
        holds: &dyn Holds,
        start: u64,
        end: u64,
        max: usize,
        picked: &mut Vec<u64>,
    ) {
        for g in start..end.min(self.groups) {
            if picked.len() >= max {
                return;
            }
            if !self.have.get(g) && self.requested[g as usize] == 0 && holds.holds(g) {
                self.mark_requested(g);
                picked.push(g);
            }
        }
    }

    /// The next piece to work on for this peer: a started one first, else the rarest, ties broken at
    /// random (so the first pieces are random among the rarest and peers start on different ones).
    fn choose_piece(&mut self, holds: &dyn Holds, max_availability: Option<u32>) -> Option<u64> {
        let has_open_group = |me: &Self, piece: u64| {
            let (start, end) = me.piece_range(piece);
            (start..end).any(|g| !me.have.get(g) && me.requested[g as usize] == 0 && holds.holds(g))
        };
        let mut best: Option<(u32, u64, u64)> = None; // (availability, tie-break, piece)
        for piece in 0..self.pieces() {
            let open = self.open[piece as usize];
            if open == 0 || max_availability.is_some_and(|m| self.availability[piece as usize] > m)
            {
                continue;
            }
            let (start, end) = self.piece_range(piece);
            let started = open < (end - start) as u32;
            if started && has_open_group(self, piece) {
                return Some(piece);
            }
            let rank = self.availability[piece as usize];
            let tie = self.rng.u64(..);
            if best.is_none_or(|(r, t, _)| (rank, tie) < (r, t)) && has_open_group(self, piece) {
                best = Some((rank, tie, piece));
            }
        }
        best.map(|(_, _, piece)| piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: u64) -> bool {
        false
    }

    #[test]
    fn rarest_piece_first_after_the_random_start() {
        let groups = 16 * 8;
        let mut have = Bitfield::new(groups);
        // Four pieces done: the random phase is over.
        have.set_range(0, 16 * 4);
        let mut picker = Picker::new(have, 1);
        for piece in 4..8 {
            picker.piece_availability(piece, 3);
        }
        picker.piece_availability(6, -2); // piece 6 is the rarest
        let picked = picker.pick(&HoldsAll, 4, &none, true);
        assert_eq!(picked, vec![96, 97, 98, 99]);
        // The started piece is finished before a new one is opened.
        let picked = picker.pick(&HoldsAll, 14, &none, true);
        assert_eq!(picked[..12], (100..112).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn deadlines_come_first_for_fast_peers_only() {
        let mut picker = Picker::new(Bitfield::new(64), 2);
        picker.set_deadlines(vec![(40, 42)]);
        assert!(!picker.pick(&HoldsAll, 1, &none, false).contains(&40));
        assert_eq!(picker.pick(&HoldsAll, 2, &none, true), vec![40, 41]);
    }

    #[test]
    fn endgame_duplicates_only_when_nothing_is_open() {
        let mut picker = Picker::new(Bitfield::new(20), 3);
        let first = picker.pick(&HoldsAll, 19, &none, true);
        assert_eq!(first.len(), 19);
        // One group is still open: a second peer gets it, not a duplicate.
        let second = picker.pick(&HoldsAll, 5, &none, true);
        assert_eq!(second.len(), 5);
        let fresh: Vec<_> = second.iter().filter(|g| !first.contains(g)).collect();
        assert_eq!(
            fresh.len(),
            1,
            "the open group first, then duplicates: {second:?}"
        );
        for g in 0..20 {
            picker.received(g);
        }
        assert!(picker.is_complete());
        assert!(picker.pick(&HoldsAll, 5, &none, true).is_empty());
    }

    #[test]
    fn released_groups_are_picked_again_and_only_from_holders() {
        let mut picker = Picker::new(Bitfield::new(32), 4);
        let mut holds = Bitfield::new(32);
        holds.set(5);
        assert_eq!(picker.pick(&holds, 8, &none, true), vec![5]);
        assert!(
            picker.pick(&holds, 8, &|g| g == 5, true).is_empty(),
            "in flight from this peer"
        );
        picker.release(5);
        assert_eq!(picker.pick(&holds, 8, &none, true), vec![5]);
        assert_eq!(piece_groups(16 * 1024 * 16), 16);
        assert_eq!(piece_groups(16 * 1024 * 16 + 1), 32);
    }
}
