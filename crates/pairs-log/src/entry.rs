//! Entries: the signed, content-addressed nodes of a log's Merkle DAG.
//!
//! An entry's id is the BLAKE3 hash of its canonical body, which names the log, the author, the author's
//! sequence number, the Lamport clock, the parents (the heads the author saw), a timestamp and the
//! payload. The signature is over the id, so it covers everything, including every ancestor through the
//! parent hashes.
//!
//! **Sealing.** An author appending several entries at once signs only the last of them: each earlier entry
//! is the direct parent of the next (the author's chain), so the last signature authenticates them all
//! through the hashes. An unsigned entry is *sealed* by the first signed entry of the same author that
//! descends from it along that chain, and is accepted only together with it. This is how Hypercore signs a
//! tree root rather than every block, and it is what lets 100-byte entries travel with little overhead.

use std::fmt;

use pairs_base::{NodeId, SecretKey, base32};
use serde::{Deserialize, Serialize};

/// Most parents an entry may have.
pub const MAX_PARENTS: usize = 64;
/// Most payload bytes in one entry.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Most bytes of a canonical body (payload plus everything else).
pub const MAX_BODY: usize = MAX_PAYLOAD + 4096;

const ID_CONTEXT: &str = "pairs log entry id v1";
const SIGNATURE_CONTEXT: &[u8] = b"pairs log entry signature v1";

/// A 32-byte hash naming an entry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntryId(pub [u8; 32]);

impl EntryId {
    /// The id as bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 characters of the base32 form, for humans.
    pub fn short(&self) -> String {
        let mut text = self.to_string();
        text.truncate(8);
        text
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base32::encode(&self.0))
    }
}

impl fmt::Debug for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryId({})", self.short())
    }
}

/// A log is named by its owner's public key.
pub type LogId = NodeId;

/// What an entry carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// Application data.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The owner admits a writer. The writer's first entry must have this entry as a parent.
    AddWriter(NodeId),
    /// The owner removes a writer: the writer's entries after sequence number `keep_until` (all of them
    /// if `None`) no longer count in views. They stay stored, so every replica keeps the same set.
    RemoveWriter {
        /// The writer removed.
        writer: NodeId,
        /// The last of the writer's sequence numbers that still counts.
        keep_until: Option<u64>,
    },
    /// The owner opens the log: anyone may write, their first entry having this entry (or an
    /// `AddWriter` naming them) as a parent. The owner still removes writers with `RemoveWriter`.
    Open,
}

impl Payload {
    fn len(&self) -> usize {
        match self {
            Payload::Data(data) => data.len(),
            _ => 40,
        }
    }
}

/// Everything an entry says; its canonical encoding is what is hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryBody {
    /// The log this entry belongs to (hashed, never sent: an entry cannot be replayed into another log).
    pub log: LogId,
    /// Who wrote it.
    pub author: NodeId,
    /// The author's sequence number: 0 for its first entry, then each entry's is one more than its
    /// previous one's, which must be among its parents.
    pub seq: u64,
    /// Lamport clock: 0 without parents, else one more than the largest parent clock.
    pub clock: u64,
    /// The heads the author saw, sorted and without duplicates.
    pub parents: Vec<EntryId>,
    /// The author's wall clock, milliseconds since the Unix epoch. Informational only.
    pub timestamp: u64,
    /// The content.
    pub payload: Payload,
}

impl EntryBody {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        encode_sized(self, self.encoded_len_hint())
    }

    /// Room for the encoding: keys, hashes and payload, plus varints at their widest.
    fn encoded_len_hint(&self) -> usize {
        64 + 32 * self.parents.len() + self.payload.len() + 64
    }

    /// The id of this body.
    pub fn id(&self) -> EntryId {
        id_of(&self.encode())
    }

    /// Checks the limits that do not need the rest of the log.
    pub fn check_limits(&self) -> Result<(), &'static str> {
        if self.parents.len() > MAX_PARENTS {
            return Err("too many parents");
        }
        if !self.parents.windows(2).all(|w| w[0] < w[1]) {
            return Err("parents not sorted and unique");
        }
        if self.payload.len() > MAX_PAYLOAD {
            return Err("payload over the 64 KiB limit");
        }
        if self.parents.is_empty() != (self.clock == 0) {
            return Err("clock must be 0 exactly when there are no parents");
        }
        Ok(())
    }
}

/// Postcard encoding into a buffer sized up front: growing it byte by byte (ids are 32 one-byte
/// fields to serde) showed in profiles of replication.
fn encode_sized<T: Serialize>(value: &T, hint: usize) -> Vec<u8> {
    postcard::to_extend(value, Vec::with_capacity(hint)).expect("entries always serialize")
}

fn id_of(canonical: &[u8]) -> EntryId {
    EntryId(blake3::derive_key(ID_CONTEXT, canonical))
}

/// An ed25519 signature, kept as two halves so serde can encode it.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntrySignature(pub [u8; 32], pub [u8; 32]);

impl EntrySignature {
    fn from_bytes(bytes: [u8; 64]) -> Self {
        let (a, b) = bytes.split_at(32);
        Self(a.try_into().expect("32"), b.try_into().expect("32"))
    }

    fn to_bytes(self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&self.0);
        out[32..].copy_from_slice(&self.1);
        out
    }
}

impl fmt::Debug for EntrySignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EntrySignature(..)")
    }
}

/// An entry: its body, its id, and its signature unless it is sealed by a later entry of its author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    body: EntryBody,
    id: EntryId,
    signature: Option<EntrySignature>,
}

impl Entry {
    /// Builds and signs an entry.
    pub fn signed(body: EntryBody, key: &SecretKey) -> Self {
        let mut entry = Self::unsigned(body);
        entry.sign(key);
        entry
    }

    /// Signs this entry (its id is already known, so nothing is hashed again).
    pub fn sign(&mut self, key: &SecretKey) {
        self.signature = Some(EntrySignature::from_bytes(
            key.sign(&signing_message(&self.id)),
        ));
    }

    /// Builds an entry without a signature (to be sealed by a later signed entry of the same author).
    pub fn unsigned(body: EntryBody) -> Self {
        let id = body.id();
        Self {
            body,
            id,
            signature: None,
        }
    }

    /// Rebuilds an entry from a body and an optional signature, computing its id. Nothing is verified.
    pub fn from_parts(body: EntryBody, signature: Option<EntrySignature>) -> Self {
        let id = body.id();
        Self {
            body,
            id,
            signature,
        }
    }

    /// The id.
    pub fn id(&self) -> EntryId {
        self.id
    }

    /// The body.
    pub fn body(&self) -> &EntryBody {
        &self.body
    }

    /// The signature, if this entry carries one.
    pub fn signature(&self) -> Option<EntrySignature> {
        self.signature
    }

    /// Drops the signature: for an entry stored as sealed by a later one of its author, whose checked
    /// signature covers it, so that a signature never checked is never kept or passed on.
    pub(crate) fn drop_signature(&mut self) {
        self.signature = None;
    }

    /// Whether the signature is present and valid for the author.
    pub fn verify_signature(&self) -> bool {
        match self.signature {
            Some(sig) => self
                .body
                .author
                .verify(&signing_message(&self.id), &sig.to_bytes())
                .is_ok(),
            None => false,
        }
    }

    /// The entry's key in the log's order: (Lamport clock, id).
    pub fn order_key(&self) -> OrderKey {
        OrderKey::new(self.body.clock, self.id)
    }

    /// Encoding for the local store: the body without the log id (the store's own), the signature if
    /// any, and the sealing entry if any.
    pub(crate) fn to_stored(&self, seal: Option<EntryId>) -> Vec<u8> {
        let b = &self.body;
        let stored = StoredEntry {
            author: *b.author.as_bytes(),
            seq: b.seq,
            clock: b.clock,
            parents: &b.parents,
            timestamp: b.timestamp,
            payload: &b.payload,
            signature: self.signature,
            seal,
            _borrow: std::marker::PhantomData,
        };
        // Room for the body, a signature and a seal.
        encode_sized(&stored, b.encoded_len_hint() + 100)
    }

    /// Decodes the local store's encoding. The store only holds entries it verified, so the id comes from
    /// its key and the author key is not validated again: hashing and point decompression on every read
    /// would dominate replication.
    pub(crate) fn from_stored(
        log: LogId,
        id: EntryId,
        bytes: &[u8],
    ) -> Option<(Self, Option<EntryId>)> {
        let stored: StoredEntry<'_, Vec<EntryId>, Payload> = postcard::from_bytes(bytes).ok()?;
        let body = EntryBody {
            log,
            author: NodeId::from_verified_bytes(stored.author),
            seq: stored.seq,
            clock: stored.clock,
            parents: stored.parents,
            timestamp: stored.timestamp,
            payload: stored.payload,
        };
        Some((
            Self {
                body,
                id,
                signature: stored.signature,
            },
            stored.seal,
        ))
    }
}

/// An entry as the local store keeps it. Generic so the same layout serves borrowed (writing) and owned
/// (reading) fields.
#[derive(Serialize, Deserialize)]
struct StoredEntry<'a, P, D> {
    author: [u8; 32],
    seq: u64,
    clock: u64,
    parents: P,
    timestamp: u64,
    payload: D,
    signature: Option<EntrySignature>,
    seal: Option<EntryId>,
    #[serde(skip)]
    _borrow: std::marker::PhantomData<&'a ()>,
}

fn signing_message(id: &EntryId) -> Vec<u8> {
    [SIGNATURE_CONTEXT, id.as_bytes()].concat()
}

/// Position in the log's total order: Lamport clock, then id. Sorting by it is a topological order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct OrderKey {
    /// Lamport clock.
    pub clock: u64,
    /// Entry id.
    pub id: EntryId,
}

impl OrderKey {
    /// The smallest key.
    pub const MIN: OrderKey = OrderKey {
        clock: 0,
        id: EntryId([0; 32]),
    };

    /// A key.
    pub fn new(clock: u64, id: EntryId) -> Self {
        Self { clock, id }
    }

    /// Big-endian bytes, so byte order is key order (the store's index key).
    pub fn to_bytes(&self) -> [u8; 40] {
        let mut out = [0u8; 40];
        out[..8].copy_from_slice(&self.clock.to_be_bytes());
        out[8..].copy_from_slice(&self.id.0);
        out
    }

    /// Inverse of [`OrderKey::to_bytes`].
    pub fn from_bytes(bytes: &[u8; 40]) -> Self {
        Self {
            clock: u64::from_be_bytes(bytes[..8].try_into().expect("8")),
            id: EntryId(bytes[8..].try_into().expect("32")),
        }
    }
}

/// The current time in milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(key: &SecretKey) -> EntryBody {
        EntryBody {
            log: key.node_id(),
            author: key.node_id(),
            seq: 0,
            clock: 0,
            parents: vec![],
            timestamp: 1,
            payload: Payload::Data(b"hello".to_vec()),
        }
    }

    #[test]
    fn signature_covers_the_body() {
        let key = SecretKey::generate();
        let entry = Entry::signed(body(&key), &key);
        assert!(entry.verify_signature());
        let mut altered = entry.body().clone();
        altered.payload = Payload::Data(b"hellO".to_vec());
        let forged = Entry::from_parts(altered, entry.signature());
        assert!(!forged.verify_signature());
        assert_ne!(forged.id(), entry.id());
        assert!(!Entry::unsigned(body(&key)).verify_signature());
    }

    #[test]
    fn encoding_is_postcard_whatever_the_payload() {
        let key = SecretKey::generate();
        let payloads = [
            Payload::Data(vec![]),
            Payload::Data(vec![7; MAX_PAYLOAD]),
            Payload::AddWriter(key.node_id()),
            Payload::RemoveWriter {
                writer: key.node_id(),
                keep_until: Some(u64::MAX),
            },
        ];
        for payload in payloads {
            let mut b = body(&key);
            b.payload = payload;
            b.seq = u64::MAX;
            b.clock = u64::MAX;
            b.timestamp = u64::MAX;
            b.parents = (0..MAX_PARENTS as u8).map(|i| EntryId([i; 32])).collect();
            assert_eq!(b.encode(), postcard::to_stdvec(&b).unwrap());
            let entry = Entry::signed(b, &key);
            let seal = Some(EntryId([9; 32]));
            let expected = postcard::to_stdvec(&StoredEntry {
                author: *entry.body().author.as_bytes(),
                seq: entry.body().seq,
                clock: entry.body().clock,
                parents: &entry.body().parents,
                timestamp: entry.body().timestamp,
                payload: &entry.body().payload,
                signature: entry.signature(),
                seal,
                _borrow: std::marker::PhantomData,
            })
            .unwrap();
            assert_eq!(entry.to_stored(seal), expected);
        }
    }

    #[test]
    fn another_log_gives_another_id() {
        let key = SecretKey::generate();
        let mut other = body(&key);
        other.log = SecretKey::generate().node_id();
        assert_ne!(other.id(), body(&key).id());
    }

    #[test]
    fn stored_round_trip() {
        let key = SecretKey::generate();
        let entry = Entry::signed(body(&key), &key);
        let seal = Some(EntryId([3; 32]));
        assert_eq!(
            Entry::from_stored(key.node_id(), entry.id(), &entry.to_stored(seal)).unwrap(),
            (entry, seal)
        );
    }

    #[test]
    fn order_key_bytes_sort_like_keys() {
        let a = OrderKey::new(1, EntryId([9; 32]));
        let b = OrderKey::new(2, EntryId([0; 32]));
        assert!(a < b && a.to_bytes() < b.to_bytes());
        assert_eq!(OrderKey::from_bytes(&a.to_bytes()), a);
    }

    #[test]
    fn limits() {
        let key = SecretKey::generate();
        let mut b = body(&key);
        assert!(b.check_limits().is_ok());
        b.clock = 3;
        assert!(b.check_limits().is_err());
        b.clock = 1;
        b.parents = vec![EntryId([2; 32]), EntryId([1; 32])];
        assert_eq!(b.check_limits(), Err("parents not sorted and unique"));
        b.parents.sort();
        b.payload = Payload::Data(vec![0; MAX_PAYLOAD + 1]);
        assert_eq!(b.check_limits(), Err("payload over the 64 KiB limit"));
    }
}
