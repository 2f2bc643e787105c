//! The endpoint: one UDP socket, one node key, QUIC connections to and from other nodes.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use pairs_base::{NodeAddr, NodeId, SecretKey};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tokio::task::JoinSet;

use crate::connection::Connection;
use crate::local_addrs::direct_addrs;
use crate::socket::{SharedSocket, canonical};
use crate::tls;

/// How long a dial to one address may take before it counts as unreachable.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Delay between starting dials to successive addresses of the same node (RFC 8305 "happy eyeballs").
const NEXT_ADDRESS_DELAY: Duration = Duration::from_millis(250);
/// Socket buffer size asked of the kernel; bursts at high throughput overflow the default.
const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// Errors binding the endpoint's socket.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another program holds the port.
    #[error("port {} is already in use on {}: choose another port, or 0 for any", .0.port(), .0.ip())]
    AddrInUse(SocketAddr),
    /// The address is not one of this machine's.
    #[error("cannot bind {0}: that address is not assigned to this machine")]
    AddrNotAvailable(SocketAddr),
    /// Any other failure.
    #[error("cannot bind UDP socket {addr}: {cause}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        cause: io::Error,
    },
}

/// Errors dialing a node.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing to dial.
    #[error("no address known for node {0}")]
    NoAddresses(NodeId),
    /// No address answered in time.
    #[error("could not reach node {} at {} (no answer within {}s)", .node.short(), join_addrs(.addrs), .timeout.as_secs())]
    Timeout {
        /// The node dialed.
        node: NodeId,
        /// Every address tried.
        addrs: Vec<SocketAddr>,
        /// The time allowed per address.
        timeout: Duration,
    },
    /// A node answered, but it holds a different key: wrong ticket, or someone impersonating.
    #[error("wrong key at {addr}: expected node {}, but the node there is {}", .expected, .found)]
    WrongNodeId {
        /// Where.
        addr: SocketAddr,
        /// Who we wanted.
        expected: NodeId,
        /// Who proved to be there.
        found: NodeId,
    },
    /// The address dialed without a known id is this node's own.
    #[error("{0} is this node itself")]
    SelfDial(SocketAddr),
    /// An address dialed without a known id did not answer in time.
    #[error("no answer from {addr} within {}s", .timeout.as_secs())]
    AddrTimeout {
        /// Where.
        addr: SocketAddr,
        /// The time allowed.
        timeout: Duration,
    },
    /// The node answered but does not speak the protocol asked for (it runs another command).
    #[error("connection to {addr} failed: the node does not serve protocol {alpn:?}")]
    NotServed {
        /// Where.
        addr: SocketAddr,
        /// The protocol (ALPN) asked for.
        alpn: String,
    },
    /// The node refused or failed the connection.
    #[error("connection to {addr} failed: {reason}")]
    Failed {
        /// Where.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

fn join_addrs(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Settings for [`Endpoint::bind`].
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The node's key.
    pub secret: SecretKey,
    /// Where to bind. `None`: every interface, IPv6 and IPv4 on one socket where the system allows, on
    /// [`EndpointConfig::port`].
    pub bind: Option<SocketAddr>,
    /// The port used when `bind` is `None`; 0 lets the system pick.
    pub port: u16,
    /// Per-address dial timeout.
    pub connect_timeout: Duration,
}

impl EndpointConfig {
    /// Defaults for `secret`: any port on all interfaces.
    pub fn new(secret: SecretKey) -> Self {
        Self {
            secret,
            bind: None,
            port: 0,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// A node's QUIC endpoint. Cheap to clone; all clones share one socket.
#[derive(Debug, Clone)]
pub struct Endpoint {
    inner: quinn::Endpoint,
    socket: Arc<SharedSocket>,
    secret: SecretKey,
    transport: Arc<quinn::TransportConfig>,
    /// As `transport`, with an idle timeout of at least `connect_timeout`, so a handshake gets that long.
    dial_transport: Arc<quinn::TransportConfig>,
    connect_timeout: Duration,
}

impl Endpoint {
    /// Binds the node's UDP socket. The endpoint dials right away; it accepts connections only once a
    /// [`Router`](crate::Router) says which protocols it serves.
    pub async fn bind(config: EndpointConfig) -> Result<Self, BindError> {
        let std_socket = match config.bind {
            Some(addr) => bind_socket(addr)?,
            None => match bind_socket(SocketAddr::from((Ipv6Addr::UNSPECIFIED, config.port))) {
                Err(BindError::Io { .. } | BindError::AddrNotAvailable(_)) => {
                    // No IPv6 on this system.
                    bind_socket(SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.port)))?
                }
                other => other?,
            },
        };
        let addr = std_socket.local_addr().map_err(|cause| BindError::Io {
            addr: config
                .bind
                .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
            cause,
        })?;
        let socket =
            SharedSocket::new(std_socket).map_err(|cause| BindError::Io { addr, cause })?;
        let mut endpoint_config = quinn::EndpointConfig::default();
        // Other protocols share the socket, told apart by this bit (RFC 9443), so it must not be greased.
        endpoint_config.grease_quic_bit(false);
        let inner = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            None,
            socket.clone(),
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|cause| BindError::Io { addr, cause })?;
        Ok(Self {
            inner,
            socket,
            secret: config.secret,
            transport: Arc::new(transport_config(IDLE_TIMEOUT)),
            dial_transport: Arc::new(transport_config(IDLE_TIMEOUT.max(config.connect_timeout))),
            connect_timeout: config.connect_timeout,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.secret.node_id()
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        canonical(self.socket.local_addr_or_unspecified())
    }

    /// This node's id and the addresses it can be reached at directly, for a ticket.
    pub fn node_addr(&self) -> NodeAddr {
        let bound = self.socket.local_addr_or_unspecified();
        NodeAddr::new(self.node_id(), direct_addrs(bound))
    }

    /// The node's key, for sources that sign in its name (the DHT's address record).
    pub(crate) fn secret(&self) -> &SecretKey {
        &self.secret
    }

    /// The shared UDP socket, for protocols that must use the same port as QUIC (STUN, probes).
    pub fn socket(&self) -> &Arc<SharedSocket> {
        &self.socket
    }

    /// Dials `addr.node_id` speaking protocol `alpn`, trying its addresses in order with a short stagger
    /// and keeping the first that completes a handshake proving the expected key.
    pub async fn connect(&self, addr: &NodeAddr, alpn: &[u8]) -> Result<Connection, ConnectError> {
        let mut targets: Vec<SocketAddr> = addr.addrs.iter().copied().map(canonical).collect();
        dedup_keep_order(&mut targets);
        if targets.is_empty() {
            return Err(ConnectError::NoAddresses(addr.node_id));
        }
        let mut attempts = JoinSet::new();
        for (i, target) in targets.iter().copied().enumerate() {
            let this = self.clone();
            let node = addr.node_id;
            let alpn = alpn.to_vec();
            attempts.spawn(async move {
                tokio::time::sleep(NEXT_ADDRESS_DELAY * i as u32).await;
                this.connect_addr(tls::Expect::Node(node), target, &alpn)
                    .await
            });
        }
        let mut failures = Vec::new();
        while let Some(joined) = attempts.join_next().await {
            match joined.expect("dial task never panics") {
                Ok(connection) => return Ok(connection),
                Err(err) => failures.push(err),
            }
        }
        Err(pick_most_telling(
            failures,
            addr.node_id,
            targets,
            self.connect_timeout,
        ))
    }

    /// Dials whoever is at `addr`, speaking `alpn`, for addresses found without a node id (DHT
    /// lookups, seeds). The peer still proves a key in the handshake; the connection says whose.
    pub async fn connect_unknown(
        &self,
        addr: SocketAddr,
        alpn: &[u8],
    ) -> Result<Connection, ConnectError> {
        self.connect_addr(tls::Expect::AnyBut(self.node_id()), canonical(addr), alpn)
            .await
    }

    async fn connect_addr(
        &self,
        expect: tls::Expect,
        target: SocketAddr,
        alpn: &[u8],
    ) -> Result<Connection, ConnectError> {
        let (tls, mismatch) = tls::client_config(&self.secret, expect, alpn);
        let quic = QuicClientConfig::try_from(tls).expect("TLS 1.3 config with a QUIC suite");
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(self.dial_transport.clone());
        let failed = |reason: String| ConnectError::Failed {
            addr: target,
            reason,
        };
        let connecting = self
            .inner
            .connect_with(config, target, tls::SERVER_NAME)
            .map_err(|e| failed(e.to_string()))?;
        let timeout = match expect {
            tls::Expect::Node(node) => ConnectError::Timeout {
                node,
                addrs: vec![target],
                timeout: self.connect_timeout,
            },
            tls::Expect::AnyBut(_) => ConnectError::AddrTimeout {
                addr: target,
                timeout: self.connect_timeout,
            },
        };
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Err(_) => Err(timeout),
            Ok(Ok(conn)) => Connection::from_quinn(conn)
                .ok_or_else(|| failed("peer completed a handshake without a node key".into())),
            Ok(Err(err)) => Err(match (mismatch.found(), expect) {
                (Some(found), tls::Expect::Node(expected)) => ConnectError::WrongNodeId {
                    addr: target,
                    expected,
                    found,
                },
                (Some(_), tls::Expect::AnyBut(_)) => ConnectError::SelfDial(target),
                (None, _) if refused_protocol(&err) => ConnectError::NotServed {
                    addr: target,
                    alpn: String::from_utf8_lossy(alpn).into_owned(),
                },
                (None, _) => failed(err.to_string()),
            }),
        }
    }

    pub(crate) fn set_server_protocols(&self, alpns: Vec<Vec<u8>>) {
        let tls = tls::server_config(&self.secret, alpns);
        let quic = QuicServerConfig::try_from(tls).expect("TLS 1.3 config with a QUIC suite");
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(self.transport.clone());
        self.inner.set_server_config(Some(config));
    }

    pub(crate) fn quinn(&self) -> &quinn::Endpoint {
        &self.inner
    }

    /// Closes every connection and waits (briefly) for the peers to be told.
    pub async fn close(&self) {
        self.inner.close(0u32.into(), b"endpoint closed");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.wait_idle()).await;
    }
}

impl SharedSocket {
    fn local_addr_or_unspecified(&self) -> SocketAddr {
        quinn::AsyncUdpSocket::local_addr(self)
            .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    }
}

/// After every address failed, the error that tells the user the most: a wrong key beats a refusal,
/// which beats silence.
fn pick_most_telling(
    failures: Vec<ConnectError>,
    node: NodeId,
    targets: Vec<SocketAddr>,
    timeout: Duration,
) -> ConnectError {
    let rank = |e: &ConnectError| match e {
        ConnectError::WrongNodeId { .. } => 0,
        ConnectError::NotServed { .. } | ConnectError::Failed { .. } => 1,
        _ => 2,
    };
    match failures.into_iter().min_by_key(rank) {
        Some(
            err @ (ConnectError::WrongNodeId { .. }
            | ConnectError::NotServed { .. }
            | ConnectError::Failed { .. }),
        ) => err,
        _ => ConnectError::Timeout {
            node,
            addrs: targets,
            timeout,
        },
    }
}

/// Whether the node refused the protocol asked for: TLS alert 120, no_application_protocol, arrives
/// as crypto error 0x100 + 120.
fn refused_protocol(err: &quinn::ConnectionError) -> bool {
    const NO_APPLICATION_PROTOCOL: u64 = 0x100 + 120;
    matches!(err, quinn::ConnectionError::ConnectionClosed(close)
        if u64::from(close.error_code) == NO_APPLICATION_PROTOCOL)
}

fn dedup_keep_order(addrs: &mut Vec<SocketAddr>) {
    let mut seen = std::collections::HashSet::new();
    addrs.retain(|a| seen.insert(*a));
}

fn bind_socket(addr: SocketAddr) -> Result<std::net::UdpSocket, BindError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let classify = |cause: io::Error| match cause.kind() {
        io::ErrorKind::AddrInUse => BindError::AddrInUse(addr),
        io::ErrorKind::AddrNotAvailable => BindError::AddrNotAvailable(addr),
        _ => BindError::Io { addr, cause },
    };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(classify)?;
    if addr.is_ipv6() {
        // One socket for both families where the system allows it.
        let _ = socket.set_only_v6(false);
    }
    // Best effort: the kernel caps these at its configured maximum.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.bind(&addr.into()).map_err(classify)?;
    Ok(socket.into())
}

/// How long a connection may hear nothing from its peer before it is closed as lost. Keep-alives
/// every [`KEEP_ALIVE`] keep a live but quiet connection (and the NAT mappings on its path) from
/// reaching it, so this is how long a vanished peer (killed, unplugged) goes unnoticed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a quiet connection sends a keep-alive: a few can be lost before [`IDLE_TIMEOUT`].
const KEEP_ALIVE: Duration = Duration::from_secs(1);

/// Transport settings shared by every connection. Windows are sized for fast paths (a few hundred
/// Mbit/s at 100 ms RTT); they bound memory per connection.
///
/// QUIC uses the smaller of the two sides' idle timeouts once the handshake is done, and every
/// connection has an accepting side with [`IDLE_TIMEOUT`], so a dialer's longer `idle` (a slow
/// handshake's allowance) lasts only until the handshake completes.
fn transport_config(idle: Duration) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(256u32.into())
        .max_concurrent_uni_streams(256u32.into())
        .stream_receive_window((8u32 << 20).into())
        .receive_window((16u32 << 20).into())
        .send_window(16 << 20)
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(
            idle.try_into()
                .unwrap_or_else(|_| quinn::IdleTimeout::from(quinn::VarInt::MAX)),
        ));
    transport
}
