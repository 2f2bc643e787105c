//! Signed address records: a node's current addresses as a BEP 44 mutable item under its own key.
//!
//! The item is stored at `sha1(node key ‖ salt)`, so a NodeId alone finds it. The DHT library
//! checks signatures too; [`verify`] checks everything again, with our own rules on top (key,
//! salt, size, freshness), because nothing from the network is trusted.

use std::net::SocketAddr;
use std::time::Duration;

use pairs_base::{NodeAddr, NodeId};
use serde::{Deserialize, Serialize};

/// Salt of our records: keeps them apart from anything else signed by the same key.
pub const SALT: &[u8] = b"pairs addrs v1";
/// Record format version, the first byte of the value.
const VERSION: u8 = 1;
/// Addresses per record.
pub const MAX_ADDRS: usize = 8;
/// BEP 44 caps values at 1000 bytes.
const MAX_VALUE: usize = 1000;
/// A record older than this is stale: its node would have refreshed it.
pub const RECORD_TTL: Duration = Duration::from_secs(2 * 60 * 60);
/// Clock skew tolerated for records issued "in the future".
const MAX_SKEW: Duration = Duration::from_secs(10 * 60);

/// What a record says: where its node can be reached, as of when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressRecord {
    /// Unix time of issue, in milliseconds; also the BEP 44 sequence number.
    pub issued_ms: u64,
    /// The node's addresses, best first.
    pub addrs: Vec<SocketAddr>,
}

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Signed by another key than the node asked for.
    #[error("record signed by another key")]
    WrongKey,
    /// Not under our salt.
    #[error("record has the wrong salt")]
    WrongSalt,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Undecodable, too large, or with no or too many addresses.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    /// The sequence number is not the issue time it signs.
    #[error("sequence number does not match the record")]
    SeqMismatch,
    /// Older than [`RECORD_TTL`].
    #[error("stale record")]
    Stale,
    /// Issued later than now plus the tolerated skew.
    #[error("record from the future")]
    FromTheFuture,
}

impl AddressRecord {
    /// A record of `addrs` (at most [`MAX_ADDRS`] kept) issued at `issued_ms`.
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>, issued_ms: u64) -> Self {
        Self {
            issued_ms,
            addrs: addrs.into_iter().take(MAX_ADDRS).collect(),
        }
    }

    /// The BEP 44 value: a version byte and the postcard encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend(postcard::to_stdvec(self).expect("records always encode"));
        out
    }

    /// The BEP 44 sequence number of this record.
    pub fn seq(&self) -> i64 {
        i64::try_from(self.issued_ms).unwrap_or(i64::MAX)
    }

    /// The record as a dialable address.
    pub fn node_addr(&self, node: NodeId) -> NodeAddr {
        NodeAddr::new(node, self.addrs.iter().copied())
    }
}

/// The bytes a BEP 44 signature covers: the bencoded `salt` (if any), `seq` and `v` entries.
pub fn signable(seq: i64, value: &[u8], salt: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + salt.len() + 32);
    if !salt.is_empty() {
        out.extend_from_slice(format!("4:salt{}:", salt.len()).as_bytes());
        out.extend_from_slice(salt);
    }
    out.extend_from_slice(format!("3:seqi{seq}e1:v{}:", value.len()).as_bytes());
    out.extend_from_slice(value);
    out
}

/// One mutable item as received from the DHT, before any check.
#[derive(Debug, Clone, Copy)]
pub struct SignedItem<'a> {
    /// The public key the item claims.
    pub key: &'a [u8; 32],
    /// Its salt.
    pub salt: &'a [u8],
    /// Its sequence number.
    pub seq: i64,
    /// Its value.
    pub value: &'a [u8],
    /// Its signature.
    pub signature: &'a [u8; 64],
}

/// Checks a received item as `node`'s address record at time `now_ms` (unix milliseconds).
pub fn verify(
    node: &NodeId,
    item: SignedItem<'_>,
    now_ms: u64,
) -> Result<AddressRecord, RecordError> {
    if item.key != node.as_bytes() {
        return Err(RecordError::WrongKey);
    }
    if item.salt != SALT {
        return Err(RecordError::WrongSalt);
    }
    if item.value.len() > MAX_VALUE {
        return Err(RecordError::Malformed("value over 1000 bytes"));
    }
    node.verify(&signable(item.seq, item.value, item.salt), item.signature)
        .map_err(|_| RecordError::BadSignature)?;
    let (&version, body) = item
        .value
        .split_first()
        .ok_or(RecordError::Malformed("empty value"))?;
    if version != VERSION {
        return Err(RecordError::Malformed("unknown version"));
    }
    let record: AddressRecord =
        postcard::from_bytes(body).map_err(|_| RecordError::Malformed("undecodable"))?;
    if record.addrs.is_empty() || record.addrs.len() > MAX_ADDRS {
        return Err(RecordError::Malformed("no or too many addresses"));
    }
    if record.seq() != item.seq {
        return Err(RecordError::SeqMismatch);
    }
    if record
        .issued_ms
        .saturating_add(RECORD_TTL.as_millis() as u64)
        < now_ms
    {
        return Err(RecordError::Stale);
    }
    if record.issued_ms > now_ms.saturating_add(MAX_SKEW.as_millis() as u64) {
        return Err(RecordError::FromTheFuture);
    }
    Ok(record)
}

/// Of two verified records of one node, the one to believe: the later issue (a replayed older
/// record never wins).
pub fn newest(a: Option<AddressRecord>, b: AddressRecord) -> AddressRecord {
    match a {
        Some(a) if a.issued_ms >= b.issued_ms => a,
        _ => b,
    }
}

#[cfg(test)]
mod tests {
    use pairs_base::SecretKey;

    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    struct Signed {
        key: [u8; 32],
        salt: Vec<u8>,
        seq: i64,
        value: Vec<u8>,
        signature: [u8; 64],
    }

    impl Signed {
        fn by(secret: &SecretKey, record: &AddressRecord) -> Self {
            let value = record.encode();
            let signature = secret.sign(&signable(record.seq(), &value, SALT));
            Self {
                key: *secret.node_id().as_bytes(),
                salt: SALT.to_vec(),
                seq: record.seq(),
                value,
                signature,
            }
        }

        fn item(&self) -> SignedItem<'_> {
            SignedItem {
                key: &self.key,
                salt: &self.salt,
                seq: self.seq,
                value: &self.value,
                signature: &self.signature,
            }
        }
    }

    fn record(at: u64) -> AddressRecord {
        AddressRecord::new(["192.0.2.1:4000".parse().unwrap()], at)
    }

    #[test]
    fn a_signed_record_verifies() {
        let secret = SecretKey::generate();
        let signed = Signed::by(&secret, &record(NOW));
        assert_eq!(
            verify(&secret.node_id(), signed.item(), NOW),
            Ok(record(NOW))
        );
    }

    #[test]
    fn signable_matches_bep44() {
        // The example from BEP 44: salt "foobar", seq 1, value "Hello World!" (bencoded as 12:...).
        assert_eq!(
            signable(1, b"12:Hello World!", b"foobar"),
            b"4:salt6:foobar3:seqi1e1:v15:12:Hello World!".to_vec()
        );
    }

    #[test]
    fn forged_records_are_refused() {
        let secret = SecretKey::generate();
        let node = secret.node_id();
        let mut bad_sig = Signed::by(&secret, &record(NOW));
        bad_sig.signature[0] ^= 1;
        assert_eq!(
            verify(&node, bad_sig.item(), NOW),
            Err(RecordError::BadSignature)
        );

        let mut tampered = Signed::by(&secret, &record(NOW));
        *tampered.value.last_mut().unwrap() ^= 1;
        assert_eq!(
            verify(&node, tampered.item(), NOW),
            Err(RecordError::BadSignature)
        );

        let other = Signed::by(&SecretKey::generate(), &record(NOW));
        assert_eq!(verify(&node, other.item(), NOW), Err(RecordError::WrongKey));

        let mut salted = Signed::by(&secret, &record(NOW));
        salted.salt = b"other".to_vec();
        assert_eq!(
            verify(&node, salted.item(), NOW),
            Err(RecordError::WrongSalt)
        );
    }

    #[test]
    fn stale_future_and_mismatched_records_are_refused() {
        let secret = SecretKey::generate();
        let node = secret.node_id();
        let hour = 3_600_000;
        let old = Signed::by(&secret, &record(NOW - 3 * hour));
        assert_eq!(verify(&node, old.item(), NOW), Err(RecordError::Stale));
        let future = Signed::by(&secret, &record(NOW + hour));
        assert_eq!(
            verify(&node, future.item(), NOW),
            Err(RecordError::FromTheFuture)
        );

        // Validly signed, but the sequence number is not the record's issue time.
        let value = record(NOW).encode();
        let signature = secret.sign(&signable(7, &value, SALT));
        let item = SignedItem {
            key: node.as_bytes(),
            salt: SALT,
            seq: 7,
            value: &value,
            signature: &signature,
        };
        assert_eq!(verify(&node, item, NOW), Err(RecordError::SeqMismatch));
    }

    #[test]
    fn malformed_values_are_refused() {
        let secret = SecretKey::generate();
        let node = secret.node_id();
        for value in [vec![], vec![9, 1, 2], vec![VERSION, 0xff, 0xff, 0xff], {
            let mut v = vec![VERSION];
            v.extend(
                postcard::to_stdvec(&AddressRecord {
                    issued_ms: NOW,
                    addrs: vec![],
                })
                .unwrap(),
            );
            v
        }] {
            let seq = i64::try_from(NOW).unwrap();
            let signature = secret.sign(&signable(seq, &value, SALT));
            let item = SignedItem {
                key: node.as_bytes(),
                salt: SALT,
                seq,
                value: &value,
                signature: &signature,
            };
            assert!(
                matches!(verify(&node, item, NOW), Err(RecordError::Malformed(_))),
                "{value:?}"
            );
        }
    }

    #[test]
    fn an_older_record_never_replaces_a_newer_one() {
        let newer = record(NOW);
        let older = record(NOW - 1000);
        assert_eq!(newest(Some(newer.clone()), older.clone()), newer);
        assert_eq!(newest(Some(older), newer.clone()), newer);
    }
}
