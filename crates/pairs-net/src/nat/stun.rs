//! The STUN messages pairs sends and answers (RFC 8489), encoded and checked with `stun-types`.
//!
//! Binding requests without credentials are the public STUN service every node offers. Hole-punch
//! probes are binding requests with a USERNAME naming the punch and a MESSAGE-INTEGRITY under the
//! punch's key (short-term credentials, as ICE uses), answered the same way.

use std::net::SocketAddr;

use stun_types::attribute::{
    AttributeType, MappedSocketAddr, RawAttribute, Username, XorMappedAddress,
};
use stun_types::message::{
    BINDING, IntegrityAlgorithm, Message, MessageClass, MessageIntegrityCredentials,
    MessageWriteExt, MessageWriteVec, ShortTermCredentials, TransactionId,
};
use stun_types::prelude::MessageWrite;

/// A STUN message's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A request.
    Request,
    /// A success response.
    Success,
    /// An error response.
    Error,
    /// An indication.
    Indication,
}

/// What pairs reads from a binding message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Request, success, error or indication.
    pub class: Class,
    /// The 96-bit transaction id.
    pub transaction: [u8; 12],
    /// USERNAME, if present.
    pub username: Option<String>,
    /// XOR-MAPPED-ADDRESS, if present.
    pub mapped: Option<SocketAddr>,
    /// OTHER-ADDRESS (RFC 5780): the server's second address, if it has one.
    pub other_address: Option<SocketAddr>,
}

/// CHANGE-REQUEST (RFC 5780 §7.2): asks the server to answer from its other address or port.
const CHANGE_REQUEST: AttributeType = AttributeType::new(0x0003);
/// OTHER-ADDRESS (RFC 5780 §7.4).
const OTHER_ADDRESS: AttributeType = AttributeType::new(0x802c);
/// CHANGED-ADDRESS (RFC 3489), what older servers send instead of OTHER-ADDRESS.
const CHANGED_ADDRESS: AttributeType = AttributeType::new(0x0005);

/// Where a server should answer a binding request from (RFC 5780 CHANGE-REQUEST).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Change {
    /// From its other IP address.
    pub ip: bool,
    /// From its other port.
    pub port: bool,
}

fn transaction_id(bytes: &[u8; 12]) -> TransactionId {
    let mut wide = [0u8; 16];
    wide[4..].copy_from_slice(bytes);
    u128::from_be_bytes(wide).into()
}

fn transaction_bytes(id: TransactionId) -> [u8; 12] {
    let wide = u128::from(id).to_be_bytes();
    wide[4..].try_into().expect("12 bytes")
}

fn credentials(key: &[u8; 16]) -> MessageIntegrityCredentials {
    // Short-term credentials are a text password: the key in hex.
    let password: String = key.iter().map(|b| format!("{b:02x}")).collect();
    MessageIntegrityCredentials::ShortTerm(ShortTermCredentials::new(password))
}

/// Parses a binding message (any class); `None` if it is not valid STUN or not a binding.
pub fn parse(bytes: &[u8]) -> Option<Parsed> {
    let message = Message::from_bytes(bytes).ok()?;
    if !message.has_method(BINDING) {
        return None;
    }
    let class = match message.class() {
        MessageClass::Request => Class::Request,
        MessageClass::Success => Class::Success,
        MessageClass::Error => Class::Error,
        MessageClass::Indication => Class::Indication,
    };
    let id = message.transaction_id();
    Some(Parsed {
        class,
        transaction: transaction_bytes(id),
        username: message
            .attribute::<Username>()
            .ok()
            .map(|u| u.username().to_string()),
        mapped: message
            .attribute::<XorMappedAddress>()
            .ok()
            .map(|a| crate::socket::canonical(a.addr(id))),
        other_address: [OTHER_ADDRESS, CHANGED_ADDRESS].into_iter().find_map(|t| {
            let raw = message.raw_attribute(t)?;
            MappedSocketAddr::from_raw(&raw)
                .ok()
                .map(|a| crate::socket::canonical(a.addr()))
        }),
    })
}

/// Whether the message carries a MESSAGE-INTEGRITY that holds under `key`.
pub fn verify_integrity(bytes: &[u8], key: &[u8; 16]) -> bool {
    Message::from_bytes(bytes)
        .map(|m| m.validate_integrity(&credentials(key)).is_ok())
        .unwrap_or(false)
}

/// A binding request; with `auth` (username, key), signed.
pub fn binding_request(transaction: &[u8; 12], auth: Option<(&str, &[u8; 16])>) -> Vec<u8> {
    request(transaction, Change::default(), auth)
}

/// A binding request asking the server to answer from elsewhere (RFC 5780 NAT behaviour discovery).
pub fn binding_request_changed(transaction: &[u8; 12], change: Change) -> Vec<u8> {
    request(transaction, change, None)
}

fn request(transaction: &[u8; 12], change: Change, auth: Option<(&str, &[u8; 16])>) -> Vec<u8> {
    let id = transaction_id(transaction);
    let mtype = stun_types::message::MessageType::from_class_method(MessageClass::Request, BINDING);
    let mut message = Message::builder(mtype, id, MessageWriteVec::new());
    if change != Change::default() {
        let flags = [
            0,
            0,
            0,
            (u8::from(change.ip) << 2) | (u8::from(change.port) << 1),
        ];
        message
            .add_attribute(&RawAttribute::new(CHANGE_REQUEST, &flags))
            .expect("one CHANGE-REQUEST attribute");
    }
    if let Some((username, _)) = auth {
        let username = Username::new(username).expect("punch usernames are short");
        message
            .add_attribute(&username)
            .expect("one USERNAME attribute");
    }
    seal(message, auth.map(|(_, key)| key))
}

/// A success response to binding request `transaction`, telling the requester it came from `mapped`;
/// signed with `key` if given.
pub fn binding_success(
    transaction: &[u8; 12],
    mapped: SocketAddr,
    key: Option<&[u8; 16]>,
) -> Vec<u8> {
    let id = transaction_id(transaction);
    let mtype = stun_types::message::MessageType::from_class_method(MessageClass::Success, BINDING);
    let mut message = Message::builder(mtype, id, MessageWriteVec::new());
    message
        .add_attribute(&XorMappedAddress::new(crate::socket::canonical(mapped), id))
        .expect("one XOR-MAPPED-ADDRESS attribute");
    seal(message, key)
}

/// Ends a message: MESSAGE-INTEGRITY under `key` if given, then FINGERPRINT.
fn seal(mut message: MessageWriteVec, key: Option<&[u8; 16]>) -> Vec<u8> {
    if let Some(key) = key {
        message
            .add_message_integrity(&credentials(key), IntegrityAlgorithm::Sha1)
            .expect("one MESSAGE-INTEGRITY attribute");
    }
    message
        .add_fingerprint()
        .expect("one FINGERPRINT attribute");
    message.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_binding_round_trips() {
        let request = binding_request(&[1; 12], None);
        let parsed = parse(&request).unwrap();
        assert_eq!(parsed.class, Class::Request);
        assert_eq!(parsed.transaction, [1; 12]);
        assert_eq!(parsed.username, None);
        let from: SocketAddr = "198.51.100.7:4242".parse().unwrap();
        let answer = binding_success(&parsed.transaction, from, None);
        let answer = parse(&answer).unwrap();
        assert_eq!(answer.class, Class::Success);
        assert_eq!(answer.transaction, [1; 12]);
        assert_eq!(answer.mapped, Some(from));
        let v6: SocketAddr = "[2001:db8::9]:80".parse().unwrap();
        assert_eq!(
            parse(&binding_success(&[2; 12], v6, None)).unwrap().mapped,
            Some(v6)
        );
    }

    #[test]
    fn signed_messages_verify_only_under_their_key() {
        let request = binding_request(&[3; 12], Some(("pairs-punch:00", &[5; 16])));
        assert_eq!(
            parse(&request).unwrap().username.as_deref(),
            Some("pairs-punch:00")
        );
        assert!(verify_integrity(&request, &[5; 16]));
        assert!(!verify_integrity(&request, &[6; 16]));
        assert!(!verify_integrity(
            &binding_request(&[3; 12], None),
            &[5; 16]
        ));
        let mut tampered =
            binding_success(&[3; 12], "192.0.2.1:1".parse().unwrap(), Some(&[5; 16]));
        assert!(verify_integrity(&tampered, &[5; 16]));
        tampered[25] ^= 1;
        assert!(!verify_integrity(&tampered, &[5; 16]));
    }

    #[test]
    fn change_requests_and_other_addresses_are_written_and_read() {
        let request = binding_request_changed(
            &[4; 12],
            Change {
                ip: true,
                port: true,
            },
        );
        let parsed = Message::from_bytes(&request).unwrap();
        let raw = parsed.raw_attribute(CHANGE_REQUEST).unwrap();
        assert_eq!(&raw.value[..], &[0, 0, 0, 6]);
        // A server's answer carrying OTHER-ADDRESS.
        let other: SocketAddr = "203.0.113.20:3479".parse().unwrap();
        let id = transaction_id(&[4; 12]);
        let mtype =
            stun_types::message::MessageType::from_class_method(MessageClass::Success, BINDING);
        let mut answer = Message::builder(mtype, id, MessageWriteVec::new());
        answer
            .add_attribute(&MappedSocketAddr::new(other).to_raw(OTHER_ADDRESS))
            .unwrap();
        let answer = answer.finish();
        assert_eq!(parse(&answer).unwrap().other_address, Some(other));
        assert_eq!(
            parse(&binding_success(&[4; 12], other, None))
                .unwrap()
                .other_address,
            None
        );
    }

    #[test]
    fn junk_is_not_stun() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0u8; 20]), None);
        let mut request = binding_request(&[1; 12], None);
        request.truncate(request.len() - 3);
        assert_eq!(parse(&request), None);
    }
}
