//! Node identity: an ed25519 key pair. The public key is the [`NodeId`]; there is no other name.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::base32;

/// Errors about keys and signatures.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The text is not a node id: wrong length or characters.
    #[error("not a node id: expected 52 base32 characters (a-z, 2-7), got {0:?}")]
    BadNodeIdText(String),
    /// The 32 bytes are not a valid ed25519 public key.
    #[error("not a valid ed25519 public key")]
    BadPublicKey,
    /// A signature did not verify against the key.
    #[error("signature does not verify")]
    BadSignature,
}

/// An ed25519 signature (64 bytes).
pub type Signature = [u8; 64];

/// A node's secret key. Never printed, never serialized by accident: [`fmt::Debug`] shows only the public id.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// Creates a fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("the operating system random source is unavailable");
        Self::from_bytes(&seed)
    }

    /// Rebuilds a key from its 32 secret bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(bytes))
    }

    /// The 32 secret bytes. Handle with care.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public identity that goes with this key.
    pub fn node_id(&self) -> NodeId {
        NodeId(self.0.verifying_key().to_bytes())
    }

    /// Signs `message` (pure ed25519, RFC 8032).
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.0.sign(message).to_bytes()
    }

    /// X25519 with this key's scalar and `public` (a Montgomery u-coordinate, e.g.
    /// [`NodeId::x25519_public`] of another key, or an ephemeral one): a shared secret for sealing
    /// to a node id without another key exchange. `None` for a low-order point, which gives every
    /// key the same secret.
    pub fn x25519(&self, public: &[u8; 32]) -> Option<[u8; 32]> {
        let shared =
            curve25519_dalek::MontgomeryPoint(*public).mul_clamped(self.0.to_scalar_bytes());
        (shared.to_bytes() != [0; 32]).then(|| shared.to_bytes())
    }
}

/// X25519 between a fresh ephemeral scalar and `public`: (the ephemeral public value, the shared
/// secret). `None` for a low-order point.
pub fn x25519_ephemeral(public: &[u8; 32]) -> Option<([u8; 32], [u8; 32])> {
    let mut scalar = [0u8; 32];
    getrandom::fill(&mut scalar).expect("the operating system random source is unavailable");
    let ours = curve25519_dalek::MontgomeryPoint::mul_base_clamped(scalar);
    let shared = curve25519_dalek::MontgomeryPoint(*public).mul_clamped(scalar);
    (shared.to_bytes() != [0; 32]).then(|| (ours.to_bytes(), shared.to_bytes()))
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(for {})", self.node_id().short())
    }
}

/// A node's identity: its ed25519 public key, always a valid curve point.
///
/// Printed as 52 lowercase base32 characters; [`NodeId::short`] gives a prefix for humans.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "[u8; 32]", into = "[u8; 32]")]
pub struct NodeId([u8; 32]);

impl NodeId {
    /// Length of the text form.
    pub const TEXT_LEN: usize = 52;

    /// Accepts 32 bytes only if they are a valid ed25519 public key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::BadPublicKey)?;
        Ok(Self(*bytes))
    }

    /// Wraps bytes *this program already validated* as a public key, e.g. read back from its own store,
    /// skipping the curve-point check (a square root, the dominant cost of decoding stored entries).
    /// Never use it on bytes from the network or from a file others can write.
    pub fn from_verified_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 public key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 10 characters of the text form: enough to tell peers apart in logs and chat.
    pub fn short(&self) -> String {
        let mut text = self.to_string();
        text.truncate(10);
        text
    }

    /// The X25519 public value of this key (its Montgomery form), for [`SecretKey::x25519`];
    /// `None` if the bytes are not a key after all (see [`NodeId::from_verified_bytes`]).
    pub fn x25519_public(&self) -> Option<[u8; 32]> {
        Some(
            VerifyingKey::from_bytes(&self.0)
                .ok()?
                .to_montgomery()
                .to_bytes(),
        )
    }

    /// Verifies an ed25519 signature by this node over `message`.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), KeyError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| KeyError::BadPublicKey)?;
        key.verify(message, &ed25519_dalek::Signature::from_bytes(signature))
            .map_err(|_| KeyError::BadSignature)
    }
}

impl TryFrom<[u8; 32]> for NodeId {
    type Error = KeyError;
    fn try_from(bytes: [u8; 32]) -> Result<Self, KeyError> {
        Self::from_bytes(&bytes)
    }
}

impl From<NodeId> for [u8; 32] {
    fn from(id: NodeId) -> Self {
        id.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base32::encode(&self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl FromStr for NodeId {
    type Err = KeyError;
    fn from_str(text: &str) -> Result<Self, KeyError> {
        let bad = || KeyError::BadNodeIdText(text.to_owned());
        if text.len() != Self::TEXT_LEN {
            return Err(bad());
        }
        // Upper case is the same id, as retyped or read from a QR code.
        let bytes: [u8; 32] = base32::decode(&text.to_ascii_lowercase())
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?;
        Self::from_bytes(&bytes)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn x25519_from_node_keys_agrees_both_ways_and_refuses_low_order_points() {
        let (a, b) = (SecretKey::generate(), SecretKey::generate());
        let ab = a.x25519(&b.node_id().x25519_public().unwrap()).unwrap();
        let ba = b.x25519(&a.node_id().x25519_public().unwrap()).unwrap();
        assert_eq!(ab, ba);
        let (ephemeral, shared) = x25519_ephemeral(&b.node_id().x25519_public().unwrap()).unwrap();
        assert_eq!(b.x25519(&ephemeral), Some(shared));
        assert_ne!(a.x25519(&ephemeral), Some(shared));
        assert_eq!(a.x25519(&[0; 32]), None);
        assert_eq!(x25519_ephemeral(&[0; 32]), None);
    }

    use super::*;

    #[test]
    fn node_id_text_round_trip() {
        let id = SecretKey::generate().node_id();
        let text = id.to_string();
        assert_eq!(text.len(), NodeId::TEXT_LEN);
        assert_eq!(text.parse::<NodeId>().unwrap(), id);
        assert!(text.starts_with(&id.short()));
    }

    #[test]
    fn node_id_text_errors() {
        assert!(matches!(
            "abc".parse::<NodeId>(),
            Err(KeyError::BadNodeIdText(_))
        ));
        let id = SecretKey::generate().node_id().to_string();
        let bad_char = format!("1{}", &id[1..]);
        assert!(matches!(
            bad_char.parse::<NodeId>(),
            Err(KeyError::BadNodeIdText(_))
        ));
    }

    #[test]
    fn rejects_points_off_the_curve() {
        // y = 2 is not the y-coordinate of any point on edwards25519.
        let mut bytes = [0u8; 32];
        bytes[0] = 2;
        assert_eq!(NodeId::from_bytes(&bytes), Err(KeyError::BadPublicKey));
    }

    #[test]
    fn sign_and_verify() {
        let key = SecretKey::generate();
        let sig = key.sign(b"hello");
        key.node_id().verify(b"hello", &sig).unwrap();
        assert_eq!(
            key.node_id().verify(b"hellO", &sig),
            Err(KeyError::BadSignature)
        );
        let other = SecretKey::generate().node_id();
        assert_eq!(other.verify(b"hello", &sig), Err(KeyError::BadSignature));
    }

    #[test]
    fn secret_round_trip_and_debug_hides_secret() {
        let key = SecretKey::generate();
        let again = SecretKey::from_bytes(&key.to_bytes());
        assert_eq!(again.node_id(), key.node_id());
        let debug = format!("{key:?}");
        assert!(!debug.contains(&base32::encode(&key.to_bytes())));
    }
}
