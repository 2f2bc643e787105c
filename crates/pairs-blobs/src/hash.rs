//! Blob names: the BLAKE3 hash of the content.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A blob's name: the BLAKE3 hash of its bytes (the same hash `b3sum` prints).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from(self.0).to_hex().to_string()
    }

    /// The first 10 hex characters, for logs and progress lines.
    pub fn short(&self) -> String {
        self.to_hex()[..10].to_string()
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.short())
    }
}

/// A string that is not a blob hash.
#[derive(Debug, Clone, thiserror::Error)]
#[error("not a blob hash: expected 64 hex characters (0-9, a-f), got {0} characters")]
pub struct ParseHashError(usize);

impl FromStr for Hash {
    type Err = ParseHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        blake3::Hash::from_hex(s.to_ascii_lowercase())
            .map(|h| Hash(*h.as_bytes()))
            .map_err(|_| ParseHashError(s.chars().count()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_b3sum_compatibility() {
        // b3sum of the empty input.
        let empty = Hash::of(b"");
        assert_eq!(
            empty.to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(empty.to_hex().parse::<Hash>().unwrap(), empty);
        assert_eq!(
            empty.to_hex().to_uppercase().parse::<Hash>().unwrap(),
            empty
        );
        let err = "abc".parse::<Hash>().unwrap_err().to_string();
        assert!(err.contains("64 hex") && err.contains("got 3"), "{err}");
    }
}
