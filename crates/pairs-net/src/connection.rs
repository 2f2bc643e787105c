//! An authenticated connection to one peer, carrying any number of streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pairs_base::NodeId;

use crate::socket::canonical;
use crate::stream::BiStream;
use crate::tls;

pub use quinn::ConnectionError;

/// A QUIC connection whose peer proved it holds the key of [`Connection::remote_node_id`].
#[derive(Debug, Clone)]
pub struct Connection {
    inner: quinn::Connection,
    remote: NodeId,
    alpn: Arc<[u8]>,
}

impl Connection {
    /// Wraps an established quinn connection, reading the peer's proven key and the negotiated protocol.
    /// `None` if the handshake did not leave a raw ed25519 key or a protocol (never the case with our
    /// TLS configuration, but the peer is not trusted to behave).
    pub(crate) fn from_quinn(inner: quinn::Connection) -> Option<Self> {
        let certs = inner
            .peer_identity()?
            .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .ok()?;
        let remote = tls::node_id_from_spki(certs.first()?)?;
        let alpn = inner
            .handshake_data()?
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .ok()?
            .protocol?;
        Some(Self {
            inner,
            remote,
            alpn: alpn.into(),
        })
    }

    /// The peer's node id, proven by the TLS handshake.
    pub fn remote_node_id(&self) -> NodeId {
        self.remote
    }

    /// The peer's current address (IPv4 shown as IPv4 even on a dual-stack socket).
    pub fn remote_addr(&self) -> SocketAddr {
        canonical(self.inner.remote_address())
    }

    /// The protocol (ALPN) this connection speaks.
    pub fn alpn(&self) -> &[u8] {
        &self.alpn
    }

    /// Opens a bidirectional stream. The peer sees it once we write to it.
    pub async fn open_bi(&self) -> Result<BiStream, ConnectionError> {
        let (send, recv) = self.inner.open_bi().await?;
        Ok(BiStream::new(send, recv))
    }

    /// Waits for the peer to open a bidirectional stream.
    pub async fn accept_bi(&self) -> Result<BiStream, ConnectionError> {
        let (send, recv) = self.inner.accept_bi().await?;
        Ok(BiStream::new(send, recv))
    }

    /// Opens a unidirectional stream towards the peer.
    pub async fn open_uni(&self) -> Result<quinn::SendStream, ConnectionError> {
        self.inner.open_uni().await
    }

    /// Waits for the peer to open a unidirectional stream.
    pub async fn accept_uni(&self) -> Result<quinn::RecvStream, ConnectionError> {
        self.inner.accept_uni().await
    }

    /// 32 bytes both ends of this connection, and no one else, can compute (TLS keying material
    /// exporter, RFC 5705/8446), for binding a protocol's proofs to this very connection.
    pub fn channel_binding(&self, label: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        self.inner
            .export_keying_material(&mut out, label, b"")
            .expect("TLS 1.3 exports 32 bytes of keying material");
        out
    }

    /// Closes the connection at once with an application code and reason; unsent data is discarded.
    pub fn close(&self, code: u32, reason: &[u8]) {
        self.inner.close(code.into(), reason);
    }

    /// Waits until the connection is closed, by either side or by a timeout, and says why.
    pub async fn closed(&self) -> ConnectionError {
        self.inner.closed().await
    }

    /// The current smoothed round-trip time.
    pub fn rtt(&self) -> Duration {
        self.inner.rtt()
    }

    /// The underlying quinn connection, for what this wrapper does not expose yet.
    pub fn quinn(&self) -> &quinn::Connection {
        &self.inner
    }
}
