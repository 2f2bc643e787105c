//! The replication wire format: length-prefixed frames carrying postcard-encoded [`Message`]s.
//!
//! Frame: `u32` big-endian length, then that many bytes. A frame longer than [`MAX_FRAME`] is refused
//! from its length prefix alone, before anything is allocated. The first message each side sends is
//! [`Message::Hello`], whose first field is the protocol version.
//!
//! Entries travel in [`WireBatch`]es, which drop everything the receiver can recompute or already knows:
//! the log id (it is in every hashed body, never on the wire), each author's key after its first use
//! (an index into the batch's author list), parent hashes of entries in the same batch (a back-reference),
//! and most of the timestamp (a delta from the previous entry).

use pairs_base::NodeId;
use serde::{Deserialize, Serialize};

use crate::entry::{Entry, EntryBody, EntryId, EntrySignature, LogId, Payload};

/// Protocol version, the first field of [`Message::Hello`].
pub const VERSION: u8 = 1;
/// Largest frame accepted or sent.
pub const MAX_FRAME: usize = 8 << 20;
/// Most ids in one Want/Missing/IdList.
pub const MAX_IDS: usize = 8192;
/// Most heads announced.
pub const MAX_HEADS: usize = 32;
/// Most ranges in one message.
pub const MAX_RANGES: usize = 256;
/// Most entries in one batch.
pub const MAX_BATCH: usize = 16384;

/// The upper end of a range: (clock, first 8 bytes of an id), or everything.
pub type WireBound = Option<(u64, [u8; 8])>;

/// What one side says about one range of the (Lamport, id) order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RangeMode {
    /// Nothing to do for this range.
    Skip,
    /// The sender's fingerprint of its entries in the range.
    Fingerprint([u8; 16]),
    /// All of the sender's entry ids in the range.
    IdList(Vec<EntryId>),
}

/// One range: from the previous range's upper bound (or the start) up to `upper`, excluded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRange {
    /// Exclusive upper bound.
    pub upper: WireBound,
    /// What the sender says about it.
    pub mode: RangeMode,
}

/// A parent as written in a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParentRef {
    /// The entry `n` places earlier in the same batch (1 = the one just before).
    Back(u32),
    /// Any other entry, by id.
    Id(EntryId),
}

/// An entry as written in a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    /// Index into the batch's authors.
    pub author: u32,
    /// The author's sequence number.
    pub seq: u64,
    /// Lamport clock.
    pub clock: u64,
    /// Parents, in the canonical (sorted) order of their ids.
    pub parents: Vec<ParentRef>,
    /// Timestamp minus the previous entry's in the batch (the first: minus 0).
    pub timestamp_delta: i64,
    /// Content.
    pub payload: Payload,
    /// Signature, absent for entries sealed by a later one.
    pub signature: Option<EntrySignature>,
}

/// Entries in a compact form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireBatch {
    /// Authors of the batch's entries, as received: checked to be public keys by
    /// [`WireBatch::decode`]. (Encoded exactly as `NodeId`s are; kept as bytes so that a receiver
    /// skips the curve-point check for authors it knows, which dominated decoding a live entry.)
    pub authors: Vec<[u8; 32]>,
    /// The entries, parents before children.
    pub entries: Vec<WireEntry>,
}

impl WireBatch {
    /// Encodes entries (parents before children).
    pub fn encode(entries: &[Entry]) -> Self {
        let mut batch = WireBatch::default();
        let mut position = std::collections::HashMap::new();
        let mut last_timestamp = 0u64;
        for (i, entry) in entries.iter().enumerate() {
            let body = entry.body();
            let author = match batch
                .authors
                .iter()
                .position(|a| a == body.author.as_bytes())
            {
                Some(a) => a,
                None => {
                    batch.authors.push(*body.author.as_bytes());
                    batch.authors.len() - 1
                }
            } as u32;
            let parents = body
                .parents
                .iter()
                .map(|p| match position.get(p) {
                    Some(&j) => ParentRef::Back((i - j) as u32),
                    None => ParentRef::Id(*p),
                })
                .collect();
            batch.entries.push(WireEntry {
                author,
                seq: body.seq,
                clock: body.clock,
                parents,
                timestamp_delta: body.timestamp.wrapping_sub(last_timestamp) as i64,
                payload: body.payload.clone(),
                signature: entry.signature(),
            });
            last_timestamp = body.timestamp;
            position.insert(entry.id(), i);
        }
        batch
    }

    /// Rebuilds the entries for log `log`, computing their ids. Fails on references out of range
    /// and on an author that is not a valid public key.
    pub fn decode(self, log: LogId) -> Result<Vec<Entry>, &'static str> {
        self.decode_known(log, |_| None)
    }

    /// [`WireBatch::decode`], taking from `known` the authors the caller has checked already
    /// (the log's writers); any other author is checked here.
    pub fn decode_known(
        self,
        log: LogId,
        known: impl Fn(&[u8; 32]) -> Option<NodeId>,
    ) -> Result<Vec<Entry>, &'static str> {
        if self.entries.len() > MAX_BATCH {
            return Err("batch too large");
        }
        let authors = self
            .authors
            .iter()
            .map(|bytes| known(bytes).map_or_else(|| NodeId::from_bytes(bytes), Ok))
            .collect::<Result<Vec<NodeId>, _>>()
            .map_err(|_| "author is not a public key")?;
        let mut out: Vec<Entry> = Vec::with_capacity(self.entries.len());
        let mut last_timestamp = 0u64;
        for (i, wire) in self.entries.into_iter().enumerate() {
            // Limits first: a few bytes of back-references must not expand into large allocations.
            if wire.parents.len() > crate::entry::MAX_PARENTS {
                return Err("too many parents");
            }
            if let Payload::Data(data) = &wire.payload
                && data.len() > crate::entry::MAX_PAYLOAD
            {
                return Err("payload over the 64 KiB limit");
            }
            let author = *authors
                .get(wire.author as usize)
                .ok_or("author index out of range")?;
            let mut parents = Vec::with_capacity(wire.parents.len());
            for parent in wire.parents {
                parents.push(match parent {
                    ParentRef::Id(id) => id,
                    ParentRef::Back(n) => {
                        let n = n as usize;
                        if n == 0 || n > i {
                            return Err("parent reference out of range");
                        }
                        out[i - n].id()
                    }
                });
            }
            let timestamp = last_timestamp.wrapping_add(wire.timestamp_delta as u64);
            last_timestamp = timestamp;
            let body = EntryBody {
                log,
                author,
                seq: wire.seq,
                clock: wire.clock,
                parents,
                timestamp,
                payload: wire.payload,
            };
            out.push(Entry::from_parts(body, wire.signature));
        }
        Ok(out)
    }
}

/// A replication message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// First message: protocol version and a fresh nonce.
    Hello {
        /// [`VERSION`].
        version: u8,
        /// Random, for the knowledge proof.
        nonce: [u8; 16],
    },
    /// Proof of knowing the log's key, and a summary of what the sender has.
    Auth {
        /// Keyed hash of both nonces under a key derived from the log id.
        proof: [u8; 32],
        /// The sender's heads, or none if it has more than [`MAX_HEADS`].
        heads: Vec<EntryId>,
        /// How many entries the sender has.
        len: u64,
    },
    /// A reconciliation step; an empty list means reconciliation is complete.
    Ranges(Vec<WireRange>),
    /// Entries.
    Entries(WireBatch),
    /// Please send these entries.
    Want(Vec<EntryId>),
    /// The sender does not have these wanted entries.
    Missing(Vec<EntryId>),
    /// The sender needs nothing more (in live mode: the initial sync is complete).
    Done,
    /// The sender is closing the session because of this.
    Error(String),
}

impl Message {
    /// Encodes as a frame, length prefix included.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut frame = vec![0u8; 4];
        frame = postcard::to_extend(self, frame).expect("messages always serialize");
        let len = (frame.len() - 4) as u32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        frame
    }

    /// Decodes a frame's body (without the length prefix).
    pub fn from_body(body: &[u8]) -> Result<Self, &'static str> {
        postcard::from_bytes(body).map_err(|_| "malformed message")
    }
}

/// Splits a byte stream into frames, refusing oversized ones from their prefix.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame body, if any.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, &'static str> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(self.buf[..4].try_into().expect("4")) as usize;
        if len > MAX_FRAME {
            return Err("frame too large");
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let body = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(body))
    }

    /// Bytes of an incomplete frame still buffered (non-zero at end of stream means truncation).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pairs_base::SecretKey;

    #[test]
    fn batch_round_trip_recomputes_ids() {
        let key = SecretKey::generate();
        let log = key.node_id();
        let first = Entry::signed(
            EntryBody {
                log,
                author: log,
                seq: 0,
                clock: 0,
                parents: vec![],
                timestamp: 1_700_000_000_000,
                payload: Payload::Data(vec![1; 100]),
            },
            &key,
        );
        let second = Entry::unsigned(EntryBody {
            log,
            author: log,
            seq: 1,
            clock: 1,
            parents: vec![first.id()],
            timestamp: 1_700_000_000_005,
            payload: Payload::Data(vec![2; 100]),
        });
        let batch = WireBatch::encode(&[first.clone(), second.clone()]);
        assert_eq!(batch.entries[1].parents, vec![ParentRef::Back(1)]);
        let encoded = postcard::to_stdvec(&batch).unwrap();
        // Two 100-byte payloads, one signature, one author key, a few bytes each of framing.
        assert!(encoded.len() < 200 + 64 + 32 + 30, "{}", encoded.len());
        let decoded: WireBatch = postcard::from_bytes(&encoded).unwrap();
        assert_eq!(decoded.decode(log).unwrap(), vec![first, second]);
    }

    #[test]
    fn bad_references_are_refused() {
        let batch = WireBatch {
            authors: vec![],
            entries: vec![WireEntry {
                author: 0,
                seq: 0,
                clock: 0,
                parents: vec![],
                timestamp_delta: 0,
                payload: Payload::Data(vec![]),
                signature: None,
            }],
        };
        let log = SecretKey::generate().node_id();
        assert_eq!(batch.clone().decode(log), Err("author index out of range"));
        let mut batch = batch;
        batch.authors.push(*log.as_bytes());
        batch.entries[0].parents.push(ParentRef::Back(1));
        assert_eq!(batch.decode(log), Err("parent reference out of range"));
    }

    #[test]
    fn an_author_is_checked_unless_the_receiver_knows_it() {
        let log = SecretKey::generate().node_id();
        // Bytes that are not a point on the curve.
        let bad = (0..=255u8)
            .map(|i| {
                let mut bytes = [0u8; 32];
                bytes[0] = i;
                bytes
            })
            .find(|b| NodeId::from_bytes(b).is_err())
            .expect("some y has no x");
        let batch = |author: [u8; 32]| WireBatch {
            authors: vec![author],
            entries: vec![WireEntry {
                author: 0,
                seq: 0,
                clock: 0,
                parents: vec![],
                timestamp_delta: 0,
                payload: Payload::Data(vec![]),
                signature: None,
            }],
        };
        assert_eq!(batch(bad).decode(log), Err("author is not a public key"));
        // What the receiver knows is taken as it is; anything else is checked.
        let known = |b: &[u8; 32]| (b == log.as_bytes()).then_some(log);
        let entries = batch(*log.as_bytes()).decode_known(log, known).unwrap();
        assert_eq!(entries[0].body().author, log);
        assert_eq!(
            batch(bad).decode_known(log, known),
            Err("author is not a public key")
        );
    }

    #[test]
    fn frames_split_and_oversize_is_refused_from_the_prefix() {
        let mut decoder = FrameDecoder::default();
        let frame = Message::Done.to_frame();
        decoder.push(&frame[..2]);
        assert_eq!(decoder.next_frame(), Ok(None));
        decoder.push(&frame[2..]);
        let body = decoder.next_frame().unwrap().unwrap();
        assert_eq!(Message::from_body(&body), Ok(Message::Done));
        decoder.push(&u32::MAX.to_be_bytes());
        assert_eq!(decoder.next_frame(), Err("frame too large"));
    }
}
