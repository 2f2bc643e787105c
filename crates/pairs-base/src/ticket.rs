//! Tickets: one copy-paste-safe string carrying a typed payload.
//!
//! Layout: `KIND` then base32( version ‖ postcard(payload) ‖ checksum ), all lowercase letters and digits,
//! so a double-click selects the whole ticket. The 4-byte checksum (BLAKE3 keyed by the kind) catches typos
//! and truncation with a clear error before anything is dialed; authenticity still comes from the handshake,
//! which proves the node id inside.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::base32;

const VERSION: u8 = 1;
const CHECKSUM_LEN: usize = 4;
/// Longest ticket text accepted, so parsing work is bounded.
pub const MAX_TICKET_LEN: usize = 4096;

/// Why a ticket string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    /// The string does not start with the expected kind.
    #[error("not a {expected} ticket (a {expected} ticket starts with \"{expected}\"){}", hint_for(.found))]
    WrongKind {
        /// The kind that was expected.
        expected: &'static str,
        /// The kind of pairs ticket it is instead, if it is one.
        found: Option<&'static str>,
    },
    /// The string has characters outside the base32 alphabet or is too long.
    #[error("malformed {kind} ticket: {why}")]
    Malformed {
        /// The ticket kind.
        kind: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// The checksum does not match: the ticket was mistyped, truncated or altered.
    #[error("{kind} ticket is damaged (checksum mismatch): copy it again in full")]
    Checksum {
        /// The ticket kind.
        kind: &'static str,
    },
    /// The ticket comes from an incompatible version of pairs.
    #[error("{kind} ticket has version {found}, this pairs understands version {VERSION}")]
    Version {
        /// The ticket kind.
        kind: &'static str,
        /// The version found.
        found: u8,
    },
}

/// A payload that can travel as a ticket string.
pub trait Ticket: Serialize + DeserializeOwned {
    /// The lowercase word the ticket starts with, e.g. `node`.
    const KIND: &'static str;

    /// Extra validation after decoding (limits on lists and the like).
    fn check(&self) -> Result<(), &'static str> {
        Ok(())
    }

    /// Encodes the payload as a ticket string.
    fn to_ticket(&self) -> String {
        let mut body = vec![VERSION];
        body.extend(postcard::to_stdvec(self).expect("ticket payloads always serialize"));
        let sum = checksum(Self::KIND, &body);
        body.extend_from_slice(&sum);
        format!("{}{}", Self::KIND, base32::encode(&body))
    }

    /// Parses a ticket string, checking kind, checksum, version and payload.
    fn from_ticket(text: &str) -> Result<Self, TicketError> {
        let kind = Self::KIND;
        let malformed = |why| TicketError::Malformed { kind, why };
        let text = text.trim();
        if text.len() > MAX_TICKET_LEN {
            return Err(malformed("too long"));
        }
        // Tickets are lowercase; one read aloud, retyped or scanned from a QR code may not be.
        let text = text.to_ascii_lowercase();
        let encoded = text
            .strip_prefix(kind)
            .ok_or_else(|| TicketError::WrongKind {
                expected: kind,
                found: KINDS.iter().copied().find(|k| text.starts_with(k)),
            })?;
        let body = base32::decode(encoded).ok_or_else(|| {
            malformed("not base32 (a-z, 2-7), or cut short: copy it again in full")
        })?;
        if body.len() < 1 + CHECKSUM_LEN {
            return Err(malformed("too short"));
        }
        let (body, sum) = body.split_at(body.len() - CHECKSUM_LEN);
        if sum != checksum(kind, body) {
            return Err(TicketError::Checksum { kind });
        }
        if body[0] != VERSION {
            return Err(TicketError::Version {
                kind,
                found: body[0],
            });
        }
        let value: Self = postcard::from_bytes(&body[1..]).map_err(|_| malformed("bad payload"))?;
        value.check().map_err(malformed)?;
        Ok(value)
    }
}

/// The kinds of ticket pairs prints, to tell a user which one they gave.
const KINDS: [&str; 4] = ["node", "log", "blob", "share"];

fn hint_for(found: &Option<&'static str>) -> &'static str {
    match found {
        Some("node") => ": this is a node ticket, for `pairs connect`",
        Some("log") => ": this is a log ticket, for `pairs log` and `pairs kv`",
        Some("blob") => ": this is a blob ticket, for `pairs get`",
        Some("share") => ": this is a share ticket, for `pairs sync` and `pairs get`",
        _ => "",
    }
}

fn checksum(kind: &str, body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut hasher = blake3::Hasher::new_derive_key("pairs ticket checksum");
    hasher.update(kind.as_bytes());
    hasher.update(&[0]);
    hasher.update(body);
    hasher.finalize().as_bytes()[..CHECKSUM_LEN]
        .try_into()
        .expect("hash is 32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NodeAddr, SecretKey};

    fn sample() -> NodeAddr {
        NodeAddr::new(
            SecretKey::generate().node_id(),
            [
                "127.0.0.1:4433".parse().unwrap(),
                "[::1]:4433".parse().unwrap(),
            ],
        )
    }

    #[test]
    fn round_trip() {
        let addr = sample();
        let text = addr.to_ticket();
        assert!(text.starts_with("node"));
        assert!(
            text.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_eq!(NodeAddr::from_ticket(&text).unwrap(), addr);
        assert_eq!(NodeAddr::from_ticket(&format!("  {text}\n")).unwrap(), addr);
    }

    #[test]
    fn every_single_character_change_is_detected() {
        let text = sample().to_ticket();
        for i in 4..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert!(
                NodeAddr::from_ticket(&tampered).is_err(),
                "change at {i} went unnoticed"
            );
        }
    }

    #[test]
    fn clear_errors() {
        let text = sample().to_ticket();
        assert_eq!(
            NodeAddr::from_ticket("blob123"),
            Err(TicketError::WrongKind {
                expected: "node",
                found: Some("blob")
            })
        );
        let wrong = NodeAddr::from_ticket("logabc").unwrap_err().to_string();
        assert!(
            wrong.contains("this is a log ticket, for `pairs log`"),
            "{wrong}"
        );
        assert_eq!(
            NodeAddr::from_ticket("xyz"),
            Err(TicketError::WrongKind {
                expected: "node",
                found: None
            })
        );
        assert!(matches!(
            NodeAddr::from_ticket(&text[..text.len() - 5]),
            Err(TicketError::Checksum { .. } | TicketError::Malformed { .. })
        ));
        assert!(matches!(
            NodeAddr::from_ticket("node!!!"),
            Err(TicketError::Malformed { .. })
        ));
        assert!(matches!(
            NodeAddr::from_ticket(&format!("node{}", "a".repeat(5000))),
            Err(TicketError::Malformed {
                why: "too long",
                ..
            })
        ));
    }

    #[test]
    fn an_upper_case_ticket_is_the_same_ticket() {
        let addr = sample();
        let text = addr.to_ticket();
        assert_eq!(NodeAddr::from_ticket(&text.to_uppercase()), Ok(addr));
    }

    #[test]
    fn too_many_addresses_rejected() {
        let mut addr = sample();
        addr.addrs = (0..40).map(|p| ([127, 0, 0, 1], p).into()).collect();
        assert!(matches!(
            NodeAddr::from_ticket(&addr.to_ticket()),
            Err(TicketError::Malformed {
                why: "too many addresses",
                ..
            })
        ));
    }
}
