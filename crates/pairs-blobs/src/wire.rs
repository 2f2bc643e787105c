//! The blob protocol's frames: `u32` big-endian length, then a postcard-encoded [`Message`].
//!
//! One bidirectional stream carries one blob between two peers, both ways: each side says what it holds
//! ([`Message::Status`], [`Message::Bits`], then [`Message::Have`] as groups arrive), asks for groups it lacks
//! and answers the other's requests when it has unchoked it. Every list and every request is bounded, and a
//! frame is refused from its length prefix before anything is allocated.

use serde::{Deserialize, Serialize};

use crate::hash::Hash;
use crate::layer::GROUP_SIZE;

/// Protocol version, the first field of [`Message::Hello`].
pub const VERSION: u8 = 1;
/// ALPN of the blob protocol.
pub const ALPN: &[u8] = b"pairs/blobs/1";
/// Largest frame accepted or sent (a group of data and its header fit).
pub const MAX_FRAME: usize = GROUP_SIZE as usize + 1024;
/// Most groups one [`Message::Request`] may ask for (1 MiB).
pub const MAX_REQUEST_GROUPS: u32 = 64;
/// Most bitfield bytes in one [`Message::Bits`].
pub const MAX_BITS_BYTES: usize = 8 * 1024;
/// Most chaining values in one [`Message::LayerPart`] or [`Message::LayerRequest`].
pub const MAX_LAYER_CVS: u32 = 256;
/// Longest reason in a [`Message::Close`].
pub const MAX_REASON: usize = 200;
/// Largest blob the protocol carries (2^46 bytes: 64 TiB).
pub const MAX_BLOB_SIZE: u64 = 1 << 46;

/// What a side holds, sent right after [`Message::Hello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Holding {
    /// Nothing, and the size is not known here either.
    Nothing,
    /// Every group.
    All {
        /// The blob's size in bytes.
        size: u64,
    },
    /// Some groups, listed by the [`Message::Bits`] that follow.
    Some {
        /// The blob's size in bytes.
        size: u64,
    },
}

/// One frame's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// First frame of each side: the protocol version and the blob this stream is about.
    Hello {
        /// [`VERSION`].
        version: u8,
        /// The blob.
        hash: Hash,
    },
    /// What the sender holds.
    Status(Holding),
    /// Part of the sender's bitfield, from group `first` (a multiple of 8).
    Bits {
        /// First group covered.
        first: u64,
        /// The bits, most significant first.
        #[serde(with = "serde_bytes")]
        bits: Vec<u8>,
    },
    /// The sender now holds groups `start..end`.
    Have {
        /// First group.
        start: u64,
        /// End, excluded.
        end: u64,
    },
    /// The sender wants groups the receiver has.
    Interested,
    /// The sender wants nothing more from the receiver.
    NotInterested,
    /// The sender will not answer requests for now.
    Choke,
    /// The sender will answer requests.
    Unchoke,
    /// Please send groups `start..start + count`.
    Request {
        /// First group.
        start: u64,
        /// How many ([`MAX_REQUEST_GROUPS`] at most).
        count: u32,
    },
    /// Forget a request (groups `start..start + count`).
    Cancel {
        /// First group.
        start: u64,
        /// How many.
        count: u32,
    },
    /// Groups that will not be sent (choked, or not held).
    Reject {
        /// First group.
        start: u64,
        /// How many.
        count: u32,
    },
    /// One group of the blob.
    Data {
        /// Which group.
        group: u64,
        /// Its bytes (16 KiB, less for the last group).
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Please send the piece layer's values `start..start + count`.
    LayerRequest {
        /// First value.
        start: u64,
        /// How many ([`MAX_LAYER_CVS`] at most).
        count: u32,
    },
    /// Piece layer values from `start`, 32 bytes each.
    LayerPart {
        /// First value.
        start: u64,
        /// The values.
        #[serde(with = "serde_bytes")]
        cvs: Vec<u8>,
    },
    /// The sender closes the stream, and says why.
    Close {
        /// Why ([`MAX_REASON`] bytes at most).
        reason: String,
    },
}

/// A frame that breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The length prefix is over [`MAX_FRAME`].
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The frame does not decode.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The frame decodes but breaks a bound.
    #[error("{0}")]
    OutOfBounds(&'static str),
}

impl Message {
    /// Checks every bound a well-behaved peer keeps.
    pub fn check(&self) -> Result<(), WireError> {
        let bad = |why| Err(WireError::OutOfBounds(why));
        match self {
            Message::Status(Holding::All { size } | Holding::Some { size })
                if *size > MAX_BLOB_SIZE =>
            {
                bad("blob size over the protocol's limit")
            }
            Message::Bits { first, bits } if first % 8 != 0 || bits.len() > MAX_BITS_BYTES => {
                bad("bitfield part misaligned or too long")
            }
            Message::Have { start, end } if start >= end => bad("empty have range"),
            Message::Request { count, .. }
            | Message::Cancel { count, .. }
            | Message::Reject { count, .. }
                if *count == 0 || *count > MAX_REQUEST_GROUPS =>
            {
                bad("request count out of range")
            }
            Message::Data { bytes, .. }
                if bytes.is_empty() || bytes.len() > GROUP_SIZE as usize =>
            {
                bad("data frame is not a group")
            }
            Message::LayerRequest { count, .. } if *count == 0 || *count > MAX_LAYER_CVS => {
                bad("layer request count out of range")
            }
            Message::LayerPart { cvs, .. }
                if cvs.is_empty()
                    || cvs.len() % 32 != 0
                    || cvs.len() > MAX_LAYER_CVS as usize * 32 =>
            {
                bad("layer part is not whole values")
            }
            Message::Close { reason } if reason.len() > MAX_REASON => bad("close reason too long"),
            _ => Ok(()),
        }
    }

    /// Appends this message as one frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        let out_vec = std::mem::take(out);
        let mut out_vec = postcard::to_extend(self, out_vec).expect("messages always serialize");
        let len = (out_vec.len() - at - 4) as u32;
        out_vec[at..at + 4].copy_from_slice(&len.to_be_bytes());
        *out = out_vec;
    }

    /// This message as one frame.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// A close with `reason` cut to [`MAX_REASON`] bytes.
    pub fn close(reason: impl Into<String>) -> Message {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON {
            let mut cut = MAX_REASON;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        Message::Close { reason }
    }
}

/// Splits a byte stream into checked messages (sans-IO: feed bytes, take messages).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    at: usize,
}

impl FrameDecoder {
    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.at > 0 && self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The length of the next frame's body, once its prefix has arrived (refused if over the limit).
    pub fn next_len(&self) -> Result<Option<usize>, WireError> {
        let rest = &self.buf[self.at..];
        if rest.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(WireError::TooLarge(len));
        }
        Ok(Some(len))
    }

    /// The next whole message, if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        let Some(len) = self.next_len()? else {
            return Ok(None);
        };
        let rest = &self.buf[self.at..];
        if rest.len() < 4 + len {
            return Ok(None);
        }
        let message: Message = postcard::from_bytes(&rest[4..4 + len])
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        self.at += 4 + len;
        if self.at > 1 << 20 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        message.check()?;
        Ok(Some(message))
    }

    /// Bytes received but not yet taken as messages.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_any_split() {
        let messages = vec![
            Message::Hello {
                version: VERSION,
                hash: Hash::of(b"x"),
            },
            Message::Status(Holding::Some { size: 1 << 30 }),
            Message::Bits {
                first: 8,
                bits: vec![0xff; 100],
            },
            Message::Request {
                start: 5,
                count: 64,
            },
            Message::Data {
                group: 3,
                bytes: vec![7; GROUP_SIZE as usize],
            },
            Message::close("done"),
        ];
        let mut stream = Vec::new();
        for m in &messages {
            m.encode_into(&mut stream);
        }
        for step in [1, 3, 100, stream.len()] {
            let mut decoder = FrameDecoder::default();
            let mut got = Vec::new();
            for piece in stream.chunks(step) {
                decoder.push(piece);
                while let Some(m) = decoder.next_message().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, messages, "step {step}");
            assert_eq!(decoder.pending(), 0);
        }
    }

    #[test]
    fn oversized_and_out_of_bounds_frames_are_refused() {
        let mut decoder = FrameDecoder::default();
        decoder.push(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert_eq!(
            decoder.next_message(),
            Err(WireError::TooLarge(MAX_FRAME + 1))
        );

        for bad in [
            Message::Request {
                start: 0,
                count: MAX_REQUEST_GROUPS + 1,
            },
            Message::Request { start: 0, count: 0 },
            Message::Data {
                group: 0,
                bytes: vec![],
            },
            Message::LayerPart {
                start: 0,
                cvs: vec![0; 33],
            },
            Message::Bits {
                first: 3,
                bits: vec![1],
            },
            Message::Have { start: 4, end: 4 },
            Message::Status(Holding::All {
                size: MAX_BLOB_SIZE + 1,
            }),
        ] {
            let mut decoder = FrameDecoder::default();
            decoder.push(&bad.to_frame());
            assert!(
                matches!(decoder.next_message(), Err(WireError::OutOfBounds(_))),
                "{bad:?}"
            );
        }
        let mut decoder = FrameDecoder::default();
        decoder.push(&[0, 0, 0, 2, 200, 200]);
        assert!(matches!(
            decoder.next_message(),
            Err(WireError::Malformed(_))
        ));
        assert_eq!(
            Message::close("é".repeat(150)),
            Message::Close {
                reason: "é".repeat(100)
            }
        );
    }
}
