//! Topic membership between two connected peers, settled without telling a peer about topics it
//! does not know.
//!
//! Each side sends, for every topic it is in, a *tag*: a keyed hash of the connection's channel
//! binding and the sender's node id under the topic's membership key. A peer that knows the topic
//! computes the tag it expects and recognises it; to anyone else it is 16 random bytes, and it is
//! worthless on any other connection or from any other sender.

use std::collections::HashSet;

use pairs_base::{NodeAddr, NodeId, Topic};
use serde::{Deserialize, Serialize};

/// Bytes of a membership tag. 128 bits: forging one means guessing a keyed hash.
pub const TAG_LEN: usize = 16;

/// One side's proof that it knows a topic, valid on one connection only.
pub type Tag = [u8; TAG_LEN];

/// Version of the membership protocol spoken on the control stream.
pub const VERSION: u16 = 1;

/// Most topics one peer may claim on a connection; more is a protocol violation.
pub const MAX_TAGS: usize = 256;

/// Largest control frame, refused from its length prefix before anything is allocated.
pub const MAX_FRAME: usize = 2 + MAX_TAGS * (TAG_LEN + 1) + 64;

/// Label under which the TLS exporter derives the channel binding for tags.
pub const BINDING_LABEL: &[u8] = b"EXPORTER-pairs-swarm-membership-v1";

/// The tag `prover` sends for `topic` on the connection with `binding`.
pub fn tag(topic: &Topic, binding: &[u8; 32], prover: &NodeId) -> Tag {
    let mut hasher = blake3::Hasher::new_keyed(&topic.membership_key());
    hasher.update(b"pairs membership tag v1");
    hasher.update(binding);
    hasher.update(prover.as_bytes());
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..TAG_LEN]);
    out
}

/// A message on the control stream. Each side opens one unidirectional control stream and writes
/// `Hello` first, then `Join`/`Leave` as its topics change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// The sender's protocol version and the tags of every topic it is in.
    Hello {
        /// Membership protocol version.
        version: u16,
        /// One tag per topic.
        tags: Vec<Tag>,
    },
    /// The sender joined the topic with this tag.
    Join(Tag),
    /// The sender left the topic with this tag.
    Leave(Tag),
    /// Peer exchange: further members of the topic with this (the sender's) tag, and where the
    /// sender reaches them. See [`super::pex`].
    Peers {
        /// The sender's tag for the topic.
        tag: Tag,
        /// At most [`super::pex::MAX_ENTRIES`] peers.
        peers: Vec<NodeAddr>,
    },
}

impl Frame {
    /// The frame as written on the wire: a 2-byte big-endian length, then postcard.
    pub fn encode(&self) -> Vec<u8> {
        let body = postcard::to_allocvec(self).expect("frames always serialize");
        debug_assert!(body.len() <= MAX_FRAME);
        let mut out = Vec::with_capacity(body.len() + 2);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a frame body (without its length prefix).
    pub fn decode(body: &[u8]) -> Result<Self, MembershipError> {
        postcard::from_bytes(body).map_err(|_| MembershipError::Malformed)
    }
}

/// Why a peer's control stream was refused. Each closes the connection with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// The bytes are not a control frame.
    #[error("malformed control frame")]
    Malformed,
    /// A frame announced a length above the limit.
    #[error("control frame of {0} bytes is over the limit")]
    TooLarge(usize),
    /// The first frame was not `Hello`, or `Hello` came twice.
    #[error("control stream out of order")]
    OutOfOrder,
    /// The peer speaks a version we do not.
    #[error("membership protocol version {0} is not supported")]
    Version(u16),
    /// The peer claimed more topics than allowed.
    #[error("peer claims more than {MAX_TAGS} topics")]
    TooManyTopics,
}

/// What the peer has proven so far on one connection. Sans-IO: fed decoded frames, it says which
/// tags appeared or went away; the caller matches them against its own topics.
#[derive(Debug)]
pub struct RemoteMembership {
    binding: [u8; 32],
    remote: NodeId,
    tags: HashSet<Tag>,
    hello: bool,
}

/// A change in the peer's proven topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The peer proved the topic with this tag.
    Joined(Tag),
    /// The peer left the topic with this tag.
    Left(Tag),
}

impl RemoteMembership {
    /// State for the connection to `remote` whose channel binding is `binding`.
    pub fn new(binding: [u8; 32], remote: NodeId) -> Self {
        Self {
            binding,
            remote,
            tags: HashSet::new(),
            hello: false,
        }
    }

    /// Whether the peer's `Hello` arrived.
    pub fn has_hello(&self) -> bool {
        self.hello
    }

    /// The tag the peer must send to prove `topic`.
    pub fn expected_tag(&self, topic: &Topic) -> Tag {
        tag(topic, &self.binding, &self.remote)
    }

    /// Whether the peer has proven `topic`.
    pub fn proves(&self, topic: &Topic) -> bool {
        self.tags.contains(&self.expected_tag(topic))
    }

    /// Whether `tag` is one the peer currently holds (a stream header, say).
    pub fn holds(&self, tag: &Tag) -> bool {
        self.tags.contains(tag)
    }

    /// Applies one frame from the peer.
    pub fn on_frame(&mut self, frame: Frame) -> Result<Vec<Change>, MembershipError> {
        match frame {
            Frame::Hello { version, tags } => {
                if self.hello {
                    return Err(MembershipError::OutOfOrder);
                }
                if version != VERSION {
                    return Err(MembershipError::Version(version));
                }
                if tags.len() > MAX_TAGS {
                    return Err(MembershipError::TooManyTopics);
                }
                self.hello = true;
                let mut changes = Vec::new();
                for tag in tags {
                    if self.tags.insert(tag) {
                        changes.push(Change::Joined(tag));
                    }
                }
                Ok(changes)
            }
            _ if !self.hello => Err(MembershipError::OutOfOrder),
            Frame::Join(tag) => {
                if self.tags.len() >= MAX_TAGS && !self.tags.contains(&tag) {
                    return Err(MembershipError::TooManyTopics);
                }
                Ok(if self.tags.insert(tag) {
                    vec![Change::Joined(tag)]
                } else {
                    Vec::new()
                })
            }
            Frame::Leave(tag) => Ok(if self.tags.remove(&tag) {
                vec![Change::Left(tag)]
            } else {
                Vec::new()
            }),
            // Peer lists change no membership; the swarm reads them (see `pex`).
            Frame::Peers { .. } => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use pairs_base::SecretKey;

    use super::*;

    fn ids() -> (NodeId, NodeId) {
        (
            SecretKey::generate().node_id(),
            SecretKey::generate().node_id(),
        )
    }

    #[test]
    fn a_peer_that_knows_the_topic_recognises_the_tag() {
        let (a, b) = ids();
        let binding = [7u8; 32];
        let topic = Topic::from_name("chat");
        let mut seen_by_b = RemoteMembership::new(binding, a);
        let changes = seen_by_b
            .on_frame(Frame::Hello {
                version: VERSION,
                tags: vec![tag(&topic, &binding, &a)],
            })
            .unwrap();
        assert_eq!(changes.len(), 1);
        assert!(seen_by_b.proves(&topic));
        assert!(!seen_by_b.proves(&Topic::from_name("other")));
        let _ = b;
    }

    #[test]
    fn tags_do_not_carry_over_to_another_connection_or_sender() {
        let (a, b) = ids();
        let topic = Topic::from_name("chat");
        let here = tag(&topic, &[1; 32], &a);
        assert_ne!(here, tag(&topic, &[2; 32], &a), "other connection");
        assert_ne!(here, tag(&topic, &[1; 32], &b), "other sender");
        // A relay that replays A's tag as its own proves nothing.
        let mut seen = RemoteMembership::new([1; 32], b);
        seen.on_frame(Frame::Hello {
            version: VERSION,
            tags: vec![here],
        })
        .unwrap();
        assert!(!seen.proves(&topic));
    }

    #[test]
    fn frames_round_trip_and_bad_sequences_are_refused() {
        let frame = Frame::Hello {
            version: VERSION,
            tags: vec![[3; TAG_LEN]; MAX_TAGS],
        };
        let wire = frame.encode();
        assert!(wire.len() - 2 <= MAX_FRAME);
        assert_eq!(Frame::decode(&wire[2..]).unwrap(), frame);
        assert_eq!(
            Frame::decode(&[0xff, 0xff]),
            Err(MembershipError::Malformed)
        );

        let (a, _) = ids();
        let mut seen = RemoteMembership::new([0; 32], a);
        assert_eq!(
            seen.on_frame(Frame::Join([1; TAG_LEN])),
            Err(MembershipError::OutOfOrder)
        );
        assert_eq!(
            seen.on_frame(Frame::Hello {
                version: 9,
                tags: vec![]
            }),
            Err(MembershipError::Version(9))
        );
        let too_many = Frame::Hello {
            version: VERSION,
            tags: (0..=MAX_TAGS).map(|i| [i as u8; TAG_LEN]).collect(),
        };
        assert_eq!(seen.on_frame(too_many), Err(MembershipError::TooManyTopics));
        seen.on_frame(Frame::Hello {
            version: VERSION,
            tags: vec![],
        })
        .unwrap();
        assert_eq!(
            seen.on_frame(Frame::Hello {
                version: VERSION,
                tags: vec![]
            }),
            Err(MembershipError::OutOfOrder)
        );
        assert_eq!(
            seen.on_frame(Frame::Join([5; TAG_LEN])).unwrap(),
            vec![Change::Joined([5; TAG_LEN])]
        );
        assert!(seen.holds(&[5; TAG_LEN]));
        assert_eq!(
            seen.on_frame(Frame::Leave([5; TAG_LEN])).unwrap(),
            vec![Change::Left([5; TAG_LEN])]
        );
        assert!(!seen.holds(&[5; TAG_LEN]));
    }
}
