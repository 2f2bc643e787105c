//! Private rooms: messages sealed with a room key that only members hold.
//!
//! The owner makes a random 32-byte key per *epoch* and seals it to each member's node id: X25519
//! between a fresh ephemeral scalar and the member's key in Montgomery form, BLAKE3 `derive_key`
//! over the shared secret and both public values, ChaCha20-Poly1305 (ring) under that one-time key.
//! A message is the encoded operation sealed under the epoch's key with a random 96-bit nonce and
//! the room's id and the epoch as associated data, so it cannot be replayed into another room or
//! epoch. Removing a member starts a new epoch sealed to the others only: what is written after
//! never reaches the removed member in the clear. A node that stores and forwards the room without
//! a key holds ciphertext only.

use pairs_base::{NodeId, SecretKey};
use pairs_log::LogId;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};

const BOX_CONTEXT: &str = "pairs chat room key box v1";
/// Most members one key share names.
pub const MAX_BOXES: usize = 1024;

/// A room key of one epoch.
#[derive(Clone, PartialEq, Eq)]
pub struct RoomKey(pub [u8; 32]);

impl std::fmt::Debug for RoomKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomKey(..)")
    }
}

impl RoomKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system random source is unavailable");
        Self(key)
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &self.0).expect("a 32-byte key"))
    }

    /// Seals `plaintext` for room `room`, epoch `epoch`: (nonce, ciphertext with its tag).
    pub fn seal(&self, room: &LogId, epoch: u32, plaintext: &[u8]) -> ([u8; 12], Vec<u8>) {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("the operating system random source is unavailable");
        let mut out = plaintext.to_vec();
        self.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated(room, epoch)),
                &mut out,
            )
            .expect("sealing cannot fail for messages this size");
        (nonce, out)
    }

    /// Opens what [`RoomKey::seal`] made; `None` if anything was changed or another key sealed it.
    pub fn open(
        &self,
        room: &LogId,
        epoch: u32,
        nonce: &[u8; 12],
        ciphertext: &[u8],
    ) -> Option<Vec<u8>> {
        let mut buffer = ciphertext.to_vec();
        let plain = self
            .aead()
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(associated(room, epoch)),
                &mut buffer,
            )
            .ok()?;
        Some(plain.to_vec())
    }
}

fn associated(room: &LogId, epoch: u32) -> [u8; 36] {
    let mut aad = [0u8; 36];
    aad[..32].copy_from_slice(room.as_bytes());
    aad[32..].copy_from_slice(&epoch.to_be_bytes());
    aad
}

/// A room key sealed to one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBox {
    /// The member (its node id).
    pub member: NodeId,
    /// The ephemeral X25519 public value.
    pub ephemeral: [u8; 32],
    /// The key sealed (32 bytes and a 16-byte tag).
    pub sealed: Vec<u8>,
}

impl KeyBox {
    /// Seals `key` to `member`; `None` if its id has no usable X25519 form.
    pub fn seal(key: &RoomKey, member: NodeId) -> Option<Self> {
        let public = member.x25519_public()?;
        let (ephemeral, shared) = pairs_base::x25519_ephemeral(&public)?;
        let mut sealed = key.0.to_vec();
        box_key(&shared, &ephemeral, &public)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::empty(),
                &mut sealed,
            )
            .ok()?;
        Some(Self {
            member,
            ephemeral,
            sealed,
        })
    }

    /// Opens the box with the member's key; `None` when it is not ours or was tampered with.
    pub fn open(&self, me: &SecretKey) -> Option<RoomKey> {
        if self.member != me.node_id() {
            return None;
        }
        let public = self.member.x25519_public()?;
        let shared = me.x25519(&self.ephemeral)?;
        let mut buffer = self.sealed.clone();
        let key = box_key(&shared, &self.ephemeral, &public)
            .open_in_place(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::empty(),
                &mut buffer,
            )
            .ok()?;
        Some(RoomKey(key.try_into().ok()?))
    }
}

/// The one-time key of a box: every input is fresh per box, so a fixed nonce is safe.
fn box_key(shared: &[u8; 32], ephemeral: &[u8; 32], member: &[u8; 32]) -> LessSafeKey {
    let mut material = [0u8; 96];
    material[..32].copy_from_slice(shared);
    material[32..64].copy_from_slice(ephemeral);
    material[64..].copy_from_slice(member);
    let key = blake3::derive_key(BOX_CONTEXT, &material);
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key).expect("a 32-byte key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_opens_only_for_its_member_and_a_message_only_in_its_room_and_epoch() {
        let (member, other) = (SecretKey::generate(), SecretKey::generate());
        let key = RoomKey::generate();
        let sealed = KeyBox::seal(&key, member.node_id()).unwrap();
        assert_eq!(sealed.open(&member), Some(key.clone()));
        assert_eq!(sealed.open(&other), None);
        let mut redirected = sealed.clone();
        redirected.member = other.node_id();
        assert_eq!(redirected.open(&other), None);
        let mut damaged = sealed;
        damaged.sealed[0] ^= 1;
        assert_eq!(damaged.open(&member), None);

        let room = SecretKey::generate().node_id();
        let (nonce, ciphertext) = key.seal(&room, 3, b"meet at noon");
        assert!(!ciphertext.windows(4).any(|w| w == b"noon"));
        assert_eq!(
            key.open(&room, 3, &nonce, &ciphertext).as_deref(),
            Some(&b"meet at noon"[..])
        );
        assert_eq!(key.open(&room, 4, &nonce, &ciphertext), None);
        assert_eq!(key.open(&member.node_id(), 3, &nonce, &ciphertext), None);
        assert_eq!(
            RoomKey::generate().open(&room, 3, &nonce, &ciphertext),
            None
        );
    }
}
