//! Lowercase RFC 4648 base32 without padding: the text form of keys and tickets.
//!
//! Chosen because it survives copy-paste everywhere: no punctuation (a double-click selects it whole),
//! no case to get wrong (upper case is accepted when decoding), and it is valid as a DNS label.

use std::sync::LazyLock;

use data_encoding::{Encoding, Specification};

static ENCODING: LazyLock<Encoding> = LazyLock::new(|| {
    let mut spec = Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.translate.from.push_str("ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    spec.translate.to.push_str("abcdefghijklmnopqrstuvwxyz");
    spec.encoding()
        .expect("static base32 specification is valid")
});

/// Encodes bytes as lowercase unpadded base32.
pub fn encode(bytes: &[u8]) -> String {
    ENCODING.encode(bytes)
}

/// Decodes lowercase or uppercase unpadded base32; `None` if the text is not valid base32.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    ENCODING.decode(text.as_bytes()).ok()
}

/// How many base32 characters encode `len` bytes.
pub fn encoded_len(len: usize) -> usize {
    ENCODING.encode_len(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_accepts_upper_case() {
        let bytes = [0u8, 1, 2, 250, 251, 252, 253, 254, 255];
        let text = encode(&bytes);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(decode(&text).unwrap(), bytes);
        assert_eq!(decode(&text.to_uppercase()).unwrap(), bytes);
        assert_eq!(encoded_len(32), 52);
    }

    #[test]
    fn rejects_foreign_symbols() {
        assert!(decode("abc!").is_none());
        assert!(decode("01").is_none());
    }
}
