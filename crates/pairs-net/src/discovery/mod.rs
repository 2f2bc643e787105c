//! Discovery sources: where a swarm learns which nodes exist and how to reach them.
//!
//! A source reports [`Discovered`] events; the swarm decides whom to dial. A discovered address is
//! only a hint: every connection proves the node's key in its handshake, so a lying source can
//! waste a dial but never impersonate a node.

pub mod dht;
pub mod mdns;

use std::net::SocketAddr;

use pairs_base::{NodeAddr, NodeId};

/// What a discovery source reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovered {
    /// A node may be reached at these addresses.
    Found(NodeAddr),
    /// The source no longer knows of this node.
    Lost(NodeId),
    /// Some node (the source cannot say which) may be reached here: a DHT lookup's answer. The
    /// handshake tells who it is.
    Address(SocketAddr),
}
