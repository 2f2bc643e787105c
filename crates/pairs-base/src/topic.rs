//! Topics: the names peers meet under, and the keys derived from them.
//!
//! A topic is a 32-byte secret. Knowing it is the capability to join it, so it never travels on the
//! network: discovery announces its [`DiscoveryKey`], and peers prove membership to each other with
//! a key derived from it ([`Topic::membership_key`]) that an observer of the discovery key cannot
//! compute.

use std::fmt;

/// A topic key. Derive one from a human name with [`Topic::from_name`], or use 32 random bytes for a
/// topic that only those it is shared with can find.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic([u8; 32]);

/// The public tag a topic is announced and looked up under (mDNS, DHT). It reveals nothing about
/// the topic and does not let its holder join.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiscoveryKey([u8; 32]);

impl Topic {
    /// A topic from raw key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The topic everyone who types `name` meets under. As secret as the name is: a guessable name
    /// gives a guessable topic.
    pub fn from_name(name: &str) -> Self {
        Self(blake3::derive_key("pairs topic name v1", name.as_bytes()))
    }

    /// The raw key bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The tag announced to discovery services in place of the topic.
    pub fn discovery_key(&self) -> DiscoveryKey {
        DiscoveryKey(blake3::derive_key("pairs discovery v1", &self.0))
    }

    /// The key peers prove knowledge of the topic with. Distinct from the discovery key, so
    /// someone who saw the topic announced cannot pass the proof.
    pub fn membership_key(&self) -> [u8; 32] {
        blake3::derive_key("pairs topic membership v1", &self.0)
    }
}

impl DiscoveryKey {
    /// A discovery key from raw bytes (e.g. read back from a discovery service).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Topic {
    /// Shows the discovery key, never the topic itself, so logs do not leak the capability.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic(discovery {})", self.discovery_key())
    }
}

impl fmt::Display for DiscoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DiscoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DiscoveryKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_stable_distinct_topics() {
        assert_eq!(Topic::from_name("chat"), Topic::from_name("chat"));
        assert_ne!(Topic::from_name("chat"), Topic::from_name("Chat"));
    }

    #[test]
    fn derived_keys_differ_from_each_other_and_from_the_topic() {
        let topic = Topic::from_name("chat");
        let discovery = *topic.discovery_key().as_bytes();
        let membership = topic.membership_key();
        assert_ne!(discovery, membership);
        assert_ne!(&discovery, topic.as_bytes());
        assert_ne!(&membership, topic.as_bytes());
    }

    #[test]
    fn debug_output_does_not_reveal_the_topic() {
        let topic = Topic::from_bytes([0xab; 32]);
        let shown = format!("{topic:?}");
        assert!(!shown.contains("abab"), "{shown}");
    }
}
