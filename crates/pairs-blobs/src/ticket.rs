//! The blob ticket: a hash, what it names, and nodes known to have it.

use pairs_base::{NodeAddr, Ticket};
use serde::{Deserialize, Serialize};

use crate::hash::Hash;

/// What a blob ticket's hash names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobFormat {
    /// The bytes of one file.
    Raw,
    /// A [`crate::Collection`]: a directory of named blobs.
    Collection,
}

/// Names a blob or a collection, with nodes to ask first (any other node holding it is found through the
/// swarm under [`BlobTicket::discovery_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobTicket {
    /// The blob.
    pub hash: Hash,
    /// What it is.
    pub format: BlobFormat,
    /// Nodes to ask first.
    pub providers: Vec<NodeAddr>,
}

impl Ticket for BlobTicket {
    const KIND: &'static str = "blob";

    fn check(&self) -> Result<(), &'static str> {
        NodeAddr::check_providers(&self.providers, BlobTicket::MAX_PROVIDERS)
    }
}

impl BlobTicket {
    /// Most providers a ticket carries.
    pub const MAX_PROVIDERS: usize = 8;

    /// A 32-byte tag naming the blob on the wire without revealing it: its swarm's topic.
    pub fn discovery_key(&self) -> [u8; 32] {
        discovery_key(&self.hash)
    }
}

/// The swarm topic of a blob (derived, so the topic does not reveal the hash to the DHT).
pub fn discovery_key(hash: &Hash) -> [u8; 32] {
    blake3::derive_key("pairs blob discovery v1", hash.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pairs_base::SecretKey;

    #[test]
    fn ticket_round_trips() {
        let node = SecretKey::generate().node_id();
        let ticket = BlobTicket {
            hash: Hash::of(b"hello"),
            format: BlobFormat::Collection,
            providers: vec![NodeAddr::new(node, ["127.0.0.1:4000".parse().unwrap()])],
        };
        let text = ticket.to_ticket();
        assert!(text.starts_with("blob"));
        assert_eq!(BlobTicket::from_ticket(&text).unwrap(), ticket);
        assert_ne!(ticket.discovery_key(), *ticket.hash.as_bytes());
    }
}
