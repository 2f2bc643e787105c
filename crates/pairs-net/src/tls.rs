//! TLS 1.3 for QUIC where the certificate *is* the node key.
//!
//! Both sides present an RFC 7250 raw public key: the DER `SubjectPublicKeyInfo` of their ed25519 node key,
//! and prove possession by signing the handshake with it. There are no certificate authorities, names or
//! expiry dates to get wrong: a peer is exactly the key it proves. The dialer knows which [`NodeId`] it
//! wants and refuses any other; the acceptor learns the dialer's id from the handshake.

use std::sync::{Arc, Mutex};

use pairs_base::{NodeId, SecretKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature_with_raw_key,
};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, PeerIncompatible,
    SignatureAlgorithm, SignatureScheme,
};

/// DER prefix of an ed25519 `SubjectPublicKeyInfo` (RFC 8410 §4): SEQUENCE { SEQUENCE { OID 1.3.101.112 },
/// BIT STRING (33 bytes, 0 unused bits) }. The 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The server name the dialer puts in its ClientHello. It is sent in clear, so it names nobody.
pub(crate) const SERVER_NAME: &str = "pairs";

/// Encodes a node id as the DER `SubjectPublicKeyInfo` sent as the raw public key.
pub(crate) fn node_id_to_spki(id: &NodeId) -> Vec<u8> {
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(id.as_bytes());
    der
}

/// Decodes the raw public key a peer presented; `None` unless it is a valid ed25519 key.
pub(crate) fn node_id_from_spki(der: &[u8]) -> Option<NodeId> {
    let key: &[u8; 32] = der.strip_prefix(&ED25519_SPKI_PREFIX)?.try_into().ok()?;
    NodeId::from_bytes(key).ok()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certified_key(secret: &SecretKey) -> Arc<CertifiedKey> {
    let spki = node_id_to_spki(&secret.node_id());
    Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(spki)],
        Arc::new(NodeKeySigner(secret.clone())),
    ))
}

/// Builds the acceptor's TLS configuration, offering `alpns`.
pub(crate) fn server_config(secret: &SecretKey, alpns: Vec<Vec<u8>>) -> rustls::ServerConfig {
    let provider = provider();
    let verifier = Arc::new(AnyNodeVerifier {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(
            rustls::server::AlwaysResolvesServerRawPublicKeys::new(certified_key(secret)),
        ));
    config.alpn_protocols = alpns;
    config.max_early_data_size = 0;
    config
}

/// Which key a dialed peer must prove.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expect {
    /// Exactly this node (a ticket, a resolved id).
    Node(NodeId),
    /// Anyone but this node (an address found without an id: a DHT lookup, a seed). The key the
    /// peer proves is learned from the handshake; our own key means we dialed ourselves.
    AnyBut(NodeId),
}

impl Expect {
    fn accepts(self, found: NodeId) -> bool {
        match self {
            Expect::Node(expected) => found == expected,
            Expect::AnyBut(me) => found != me,
        }
    }
}

/// Builds the dialer's TLS configuration for one connection, asking for `alpn`.
///
/// The returned [`KeyMismatch`] records which key the peer proved if it was not `expected`, so the dialer
/// can report "wrong key" rather than a generic handshake failure.
pub(crate) fn client_config(
    secret: &SecretKey,
    expected: Expect,
    alpn: &[u8],
) -> (rustls::ClientConfig, KeyMismatch) {
    let provider = provider();
    let mismatch = KeyMismatch::default();
    let verifier = Arc::new(ExpectedNodeVerifier {
        expected,
        mismatch: mismatch.clone(),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(
            rustls::client::AlwaysResolvesClientRawPublicKeys::new(certified_key(secret)),
        ));
    config.alpn_protocols = vec![alpn.to_vec()];
    config.enable_early_data = false;
    (config, mismatch)
}

/// Which node a dialed peer proved to be when it was not one `Expect` accepts.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyMismatch(Arc<Mutex<Option<NodeId>>>);

impl KeyMismatch {
    pub(crate) fn found(&self) -> Option<NodeId> {
        *self.0.lock().expect("mutex poisoned")
    }
}

/// Signs handshakes with the node's ed25519 key.
#[derive(Debug)]
struct NodeKeySigner(SecretKey);

impl rustls::sign::SigningKey for NodeKeySigner {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        offered
            .contains(&SignatureScheme::ED25519)
            .then(|| Box::new(NodeKeySigner(self.0.clone())) as Box<dyn rustls::sign::Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(node_id_to_spki(&self.0.node_id()).into())
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ED25519
    }
}

impl rustls::sign::Signer for NodeKeySigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(self.0.sign(message).to_vec())
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

fn parse_peer_key(end_entity: &CertificateDer<'_>) -> Result<NodeId, Error> {
    node_id_from_spki(end_entity).ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))
}

fn verify_signature(
    message: &[u8],
    key: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(PeerIncompatible::NoSignatureSchemesInCommon.into());
    }
    verify_tls13_signature_with_raw_key(
        message,
        &SubjectPublicKeyInfoDer::from(key.as_ref()),
        dss,
        algorithms,
    )
}

/// The dialer's verifier: the server must prove a key `expected` accepts.
#[derive(Debug)]
struct ExpectedNodeVerifier {
    expected: Expect,
    mismatch: KeyMismatch,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ExpectedNodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if !intermediates.is_empty() {
            return Err(Error::InvalidCertificate(CertificateError::BadEncoding));
        }
        let found = parse_peer_key(end_entity)?;
        if !self.expected.accepts(found) {
            *self.mismatch.0.lock().expect("mutex poisoned") = Some(found);
            return Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(PeerIncompatible::Tls12NotOffered.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// The acceptor's verifier: any valid ed25519 key is a node; who may do what is decided above TLS.
#[derive(Debug)]
struct AnyNodeVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyNodeVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        if !intermediates.is_empty() {
            return Err(Error::InvalidCertificate(CertificateError::BadEncoding));
        }
        parse_peer_key(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(PeerIncompatible::Tls12NotOffered.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_round_trip_and_rejections() {
        let id = SecretKey::generate().node_id();
        let der = node_id_to_spki(&id);
        assert_eq!(der.len(), 44);
        assert_eq!(node_id_from_spki(&der), Some(id));
        assert_eq!(node_id_from_spki(&der[..43]), None);
        let mut wrong_oid = der.clone();
        wrong_oid[8] = 0x71; // Ed448
        assert_eq!(node_id_from_spki(&wrong_oid), None);
    }
}
