//! The network layer of pairs.
//!
//! An [`Endpoint`] is a node on the network: one UDP socket ([`SharedSocket`]), one ed25519 key, QUIC
//! connections whose TLS 1.3 handshake proves both nodes' keys. A [`Router`] hands each incoming
//! [`Connection`] to the protocol that registered its ALPN; a connection carries any number of
//! [`BiStream`]s, each an independent `AsyncRead + AsyncWrite` with its own half-close.
//!
//! ```no_run
//! # async fn demo(ticket: &str) -> Result<(), Box<dyn std::error::Error>> {
//! use pairs_base::{NodeAddr, SecretKey, Ticket};
//! use pairs_net::{Endpoint, EndpointConfig};
//! use tokio::io::AsyncWriteExt;
//!
//! let endpoint = Endpoint::bind(EndpointConfig::new(SecretKey::generate())).await?;
//! let peer = NodeAddr::from_ticket(ticket)?;
//! let connection = endpoint.connect(&peer, b"my-app/1").await?;
//! let mut stream = connection.open_bi().await?;
//! stream.write_all(b"hello").await?;
//! stream.shutdown().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod connection;
pub mod discovery;
mod endpoint;
mod local_addrs;
pub mod nat;
mod router;
pub mod socket;
mod stream;
pub mod swarm;
mod tls;

pub use connection::{Connection, ConnectionError};
pub use endpoint::{
    BindError, ConnectError, DEFAULT_CONNECT_TIMEOUT, Endpoint, EndpointConfig, IDLE_TIMEOUT,
};
pub use local_addrs::direct_addrs;
pub use router::{ProtocolHandler, Router, RouterBuilder};
pub use socket::SharedSocket;
pub use stream::{
    BiStream, ReadError, ReadExactError, RecvStream, SendStream, StoppedError, WriteError,
};
