//! pairs: peer-to-peer for any application.
//!
//! Start with [`Node`]: it owns a node's key, endpoint, swarm, NAT service and stores, and serves
//! every protocol. Logs come from [`Node::create_log`] and [`Node::log`]; [`LogHandle::share`]
//! replicates one live with every peer the swarm finds for it.
//!
//! This crate is also the facade over the layers ([`base`] for identity and tickets, [`net`] for the
//! authenticated QUIC endpoint and swarms, [`log`] for replicated logs), the [`control`] API that the
//! `pairs` command line uses to talk to a running node, and home of the small protocols it speaks,
//! such as [`pipe`].

#![warn(missing_docs)]

pub use pairs_base as base;
pub use pairs_blobs as blobs;
pub use pairs_log as log;
pub use pairs_net as net;

pub mod chat;
pub mod code;
pub mod config;
pub mod control;
#[cfg(feature = "gateway")]
pub mod gateway;
pub mod home;
pub mod node;
pub mod paste;
pub mod pipe;
mod seeds;
pub mod share;

pub use node::{LogHandle, Node, NodeBuilder};
