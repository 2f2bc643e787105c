//! Which groups of a blob a peer holds.

use serde::{Deserialize, Serialize};

/// One bit per group, most significant bit first (BitTorrent's order).
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Bitfield {
    len: u64,
    #[serde(with = "serde_bytes")]
    bits: Vec<u8>,
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{})", self.count(), self.len)
    }
}

impl Bitfield {
    /// All clear.
    pub fn new(len: u64) -> Self {
        Bitfield {
            len,
            bits: vec![0; len.div_ceil(8) as usize],
        }
    }

    /// All set.
    pub fn full(len: u64) -> Self {
        let mut field = Bitfield::new(len);
        field.set_range(0, len);
        field
    }

    /// Rebuilds a bitfield from its bytes; `None` if the lengths disagree or spare bits are set.
    pub fn from_bytes(len: u64, bits: Vec<u8>) -> Option<Self> {
        if bits.len() as u64 != len.div_ceil(8) {
            return None;
        }
        let field = Bitfield { len, bits };
        let spare = (8 - len % 8) % 8;
        if spare > 0
            && field
                .bits
                .last()
                .is_some_and(|b| b & ((1u8 << spare) - 1) != 0)
        {
            return None;
        }
        Some(field)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// Number of bits.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether there are no bits at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bit `i` (false past the end).
    pub fn get(&self, i: u64) -> bool {
        i < self.len && self.bits[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Sets bit `i`; returns whether it was clear.
    pub fn set(&mut self, i: u64) -> bool {
        assert!(i < self.len, "bit {i} past {}", self.len);
        let byte = &mut self.bits[(i / 8) as usize];
        let mask = 0x80 >> (i % 8);
        let was_clear = *byte & mask == 0;
        *byte |= mask;
        was_clear
    }

    /// Clears bit `i`.
    pub fn clear(&mut self, i: u64) {
        if i < self.len {
            self.bits[(i / 8) as usize] &= !(0x80 >> (i % 8));
        }
    }

    /// Sets bits `start..end`.
    pub fn set_range(&mut self, start: u64, end: u64) {
        for i in start..end.min(self.len) {
            self.set(i);
        }
    }

    /// Number of set bits.
    pub fn count(&self) -> u64 {
        self.bits.iter().map(|b| b.count_ones() as u64).sum()
    }

    /// Whether every bit is set.
    pub fn is_full(&self) -> bool {
        self.count() == self.len
    }

    /// Whether bits `start..end` are all set.
    pub fn all_in(&self, start: u64, end: u64) -> bool {
        (start..end.min(self.len)).all(|i| self.get(i))
    }

    /// Indices of the set bits.
    pub fn ones(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_and_spare_bits_are_refused() {
        let mut field = Bitfield::new(11);
        assert!(field.set(0) && field.set(10) && !field.set(10));
        assert_eq!(field.as_bytes(), &[0x80, 0x20]);
        assert_eq!(field.count(), 2);
        assert!(field.get(10) && !field.get(9) && !field.get(11));
        let back = Bitfield::from_bytes(11, field.as_bytes().to_vec()).unwrap();
        assert_eq!(back, field);
        assert!(
            Bitfield::from_bytes(11, vec![0, 0x10]).is_none(),
            "spare bit set"
        );
        assert!(Bitfield::from_bytes(11, vec![0]).is_none(), "too short");
        assert!(Bitfield::full(11).is_full());
        assert_eq!(Bitfield::full(11).ones().count(), 11);
    }
}
