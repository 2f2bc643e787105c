//! Range-based set reconciliation over the (Lamport, id) order (Meyer 2023, as in negentropy).
//!
//! Each side describes ranges of its set by a fingerprint, or by its ids when a range is small. A range
//! whose fingerprints match is done; one that differs is split, until id lists show exactly which entries
//! each side lacks. The cost grows with the difference, not with the log. The first message is weighted
//! towards the newest entries (halving ranges, then the last few ids in full), because that is where new
//! entries usually are: one new entry in a million is found in the first round trip.

use std::collections::HashSet;

use crate::entry::{EntryId, OrderKey};
use crate::index::OrderIndex;
use crate::wire::{MAX_IDS, MAX_RANGES, RangeMode, WireBound, WireRange};

/// Sub-ranges a differing range is split into.
const SPLIT: usize = 16;
/// Ranges with at most this many entries are sent as id lists.
const ID_LIST_MAX: usize = 32;
/// Ids sent in full at the newest end of the first message.
const TAIL_IDS: usize = 8;

/// What answering a reconciliation message produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The reply; empty when every range is settled.
    pub reply: Vec<WireRange>,
    /// Our entries the peer lacks.
    pub send: Vec<OrderKey>,
    /// Entries the peer has and we lack.
    pub want: Vec<EntryId>,
}

fn bound_key(bound: &WireBound) -> Option<OrderKey> {
    bound.map(|(clock, prefix)| {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&prefix);
        OrderKey::new(clock, EntryId(id))
    })
}

fn key_bound(key: &OrderKey) -> WireBound {
    Some((key.clock, key.id.0[..8].try_into().expect("8")))
}

fn ids(index: &OrderIndex, from: usize, to: usize) -> Vec<EntryId> {
    index
        .keys_between(from, to)
        .into_iter()
        .map(|k| k.id)
        .collect()
}

/// The first message: the whole set, finer towards the newest entries.
pub fn initiate(index: &OrderIndex) -> Vec<WireRange> {
    let n = index.len();
    let mut ranges = Vec::new();
    let mut lo = 0;
    while n - lo > TAIL_IDS {
        let cut = (lo + (n - lo) / 2).min(n - TAIL_IDS);
        let bound = key_bound(&index.key_at(cut).expect("cut < n"));
        let hi = index.rank(bound_key(&bound).as_ref());
        if hi <= lo {
            break;
        }
        ranges.push(WireRange {
            upper: bound,
            mode: RangeMode::Fingerprint(index.fingerprint(lo, hi)),
        });
        lo = hi;
    }
    ranges.push(WireRange {
        upper: None,
        mode: RangeMode::IdList(ids(index, lo, n)),
    });
    ranges
}

/// Answers a non-empty reconciliation message.
pub fn respond(index: &OrderIndex, ranges: &[WireRange]) -> Result<Outcome, &'static str> {
    if ranges.len() > MAX_RANGES {
        return Err("too many ranges");
    }
    if ranges.last().is_none_or(|r| r.upper.is_some()) {
        return Err("ranges do not cover the whole order");
    }
    let mut outcome = Outcome::default();
    let mut lo = 0;
    let mut previous: Option<OrderKey> = None;
    for (i, range) in ranges.iter().enumerate() {
        // Keep the reply within what the peer accepts: every range still to answer may need one.
        let left = ranges.len() - i - 1;
        let pieces = MAX_RANGES
            .saturating_sub(outcome.reply.len() + left)
            .clamp(1, SPLIT);
        let upper = bound_key(&range.upper);
        if let (Some(prev), Some(up)) = (previous, upper)
            && up <= prev
        {
            return Err("range bounds out of order");
        }
        let hi = index.rank(upper.as_ref()).max(lo);
        match &range.mode {
            RangeMode::Skip => push_skip(&mut outcome.reply, range.upper),
            RangeMode::Fingerprint(theirs) => {
                if *theirs == index.fingerprint(lo, hi) {
                    push_skip(&mut outcome.reply, range.upper);
                } else {
                    split(index, lo, hi, range.upper, pieces, &mut outcome.reply);
                }
            }
            RangeMode::IdList(theirs) => {
                if theirs.len() > MAX_IDS {
                    return Err("id list too long");
                }
                let mine = index.keys_between(lo, hi);
                let theirs_set: HashSet<&EntryId> = theirs.iter().collect();
                let mine_set: HashSet<EntryId> = mine.iter().map(|k| k.id).collect();
                outcome
                    .send
                    .extend(mine.iter().filter(|k| !theirs_set.contains(&k.id)));
                outcome
                    .want
                    .extend(theirs.iter().filter(|id| !mine_set.contains(id)));
                push_skip(&mut outcome.reply, range.upper);
            }
        }
        lo = hi;
        previous = upper;
    }
    if outcome
        .reply
        .iter()
        .all(|r| matches!(r.mode, RangeMode::Skip))
    {
        outcome.reply.clear();
    }
    Ok(outcome)
}

fn push_skip(reply: &mut Vec<WireRange>, upper: WireBound) {
    match reply.last_mut() {
        Some(last) if matches!(last.mode, RangeMode::Skip) => last.upper = upper,
        _ => reply.push(WireRange {
            upper,
            mode: RangeMode::Skip,
        }),
    }
}

fn split(
    index: &OrderIndex,
    lo: usize,
    hi: usize,
    upper: WireBound,
    pieces: usize,
    reply: &mut Vec<WireRange>,
) {
    let count = hi - lo;
    if count <= ID_LIST_MAX {
        reply.push(WireRange {
            upper,
            mode: RangeMode::IdList(ids(index, lo, hi)),
        });
        return;
    }
    let mut from = lo;
    for k in 1..pieces {
        let cut = lo + count * k / pieces;
        let bound = key_bound(&index.key_at(cut).expect("cut < hi"));
        let to = index.rank(bound_key(&bound).as_ref());
        if to <= from {
            continue;
        }
        reply.push(WireRange {
            upper: bound,
            mode: RangeMode::Fingerprint(index.fingerprint(from, to)),
        });
        from = to;
    }
    reply.push(WireRange {
        upper,
        mode: RangeMode::Fingerprint(index.fingerprint(from, hi)),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(i: u64) -> OrderKey {
        let id = *blake3::hash(&i.to_le_bytes()).as_bytes();
        OrderKey::new(i / 3, EntryId(id))
    }

    /// Runs reconciliation to the end between two sets; returns (a's set after, b's set after, rounds).
    fn reconcile(a: &[u64], b: &[u64]) -> (Vec<OrderKey>, Vec<OrderKey>, usize) {
        let mut sa: Vec<OrderKey> = a.iter().map(|&i| key(i)).collect();
        let mut sb: Vec<OrderKey> = b.iter().map(|&i| key(i)).collect();
        let index = |s: &Vec<OrderKey>| {
            let mut v = s.clone();
            v.sort();
            v.dedup();
            OrderIndex::from_sorted(v)
        };
        let (ia, ib) = (index(&sa), index(&sb));
        let all: std::collections::HashMap<EntryId, OrderKey> =
            sa.iter().chain(sb.iter()).map(|k| (k.id, *k)).collect();
        let mut message = initiate(&ia);
        let mut rounds = 0;
        let mut a_turn = false;
        loop {
            rounds += 1;
            let (responder, sender_set, responder_set) = if a_turn {
                (&ia, &mut sb, &mut sa)
            } else {
                (&ib, &mut sa, &mut sb)
            };
            let out = respond(responder, &message).unwrap();
            sender_set.extend(out.send.iter().copied());
            responder_set.extend(out.want.iter().map(|id| all[id]));
            if out.reply.is_empty() {
                break;
            }
            message = out.reply;
            a_turn = !a_turn;
            assert!(rounds < 64, "does not converge");
        }
        sa.sort();
        sa.dedup();
        sb.sort();
        sb.dedup();
        (sa, sb, rounds)
    }

    #[test]
    fn one_new_entry_in_a_large_set_takes_one_round() {
        let base: Vec<u64> = (0..100_000).collect();
        let mut newer = base.clone();
        newer.push(100_000);
        let (a, b, rounds) = reconcile(&base, &newer);
        assert_eq!(a, b);
        assert_eq!(rounds, 1);
        let (a, b, rounds) = reconcile(&newer, &base);
        assert_eq!(a, b);
        assert_eq!(rounds, 1);
    }

    #[test]
    fn interleaved_differences_converge_within_the_range_limit() {
        // Two writers cut off from each other: their entries alternate in the order.
        let a: Vec<u64> = (0..8000).filter(|i| i % 2 == 0).collect();
        let b: Vec<u64> = (0..8000).filter(|i| i % 2 == 1).collect();
        let (ra, rb, _) = reconcile(&a, &b);
        assert_eq!(ra.len(), 8000);
        assert_eq!(ra, rb);
        let mut mixed_a: Vec<u64> = (0..3000).collect();
        mixed_a.extend((3000..9000).filter(|i| i % 3 == 0));
        let mut mixed_b: Vec<u64> = (0..3000).collect();
        mixed_b.extend((3000..9000).filter(|i| i % 3 == 1));
        let (ra, rb, _) = reconcile(&mixed_a, &mixed_b);
        assert_eq!(ra, rb);
        assert_eq!(ra.len(), 3000 + 4000);
    }

    #[test]
    fn empty_against_full() {
        let full: Vec<u64> = (0..5000).collect();
        let (a, b, rounds) = reconcile(&[], &full);
        assert_eq!(a.len(), 5000);
        assert_eq!(a, b);
        assert!(rounds <= 2);
        let (a, b, _) = reconcile(&full, &[]);
        assert_eq!(a, b);
    }

    #[test]
    fn malformed_messages_are_refused() {
        let index = OrderIndex::from_sorted((0..10).map(key));
        assert!(respond(&index, &[]).is_err());
        let open = WireRange {
            upper: Some((1, [0; 8])),
            mode: RangeMode::Skip,
        };
        assert!(respond(&index, std::slice::from_ref(&open)).is_err());
        let back = WireRange {
            upper: Some((0, [0; 8])),
            mode: RangeMode::Skip,
        };
        let end = WireRange {
            upper: None,
            mode: RangeMode::Skip,
        };
        assert_eq!(
            respond(&index, &[open, back, end]),
            Err("range bounds out of order")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn ends_with_the_union(common in 0u64..3000, only_a in proptest::collection::vec(3000u64..6000, 0..200),
                               only_b in proptest::collection::vec(6000u64..9000, 0..200)) {
            let a: Vec<u64> = (0..common).chain(only_a.iter().copied()).collect();
            let b: Vec<u64> = (0..common).chain(only_b.iter().copied()).collect();
            let (ra, rb, _) = reconcile(&a, &b);
            let mut union: Vec<OrderKey> = a.iter().chain(b.iter()).map(|&i| key(i)).collect();
            union.sort();
            union.dedup();
            prop_assert_eq!(&ra, &union);
            prop_assert_eq!(&rb, &union);
        }
    }
}
