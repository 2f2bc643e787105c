//! How to reach a node: its id and the socket addresses it may be found at.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::identity::NodeId;
use crate::ticket::Ticket;

/// A node's id plus addresses to try, best first. Serialized as the `node` ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    /// Who the node is; a connection is accepted only if the peer proves this key.
    pub node_id: NodeId,
    /// Where to try, best first. May be empty once other discovery sources exist.
    pub addrs: Vec<SocketAddr>,
}

impl NodeAddr {
    /// Most addresses a ticket may carry; a longer list is rejected when parsing.
    pub const MAX_ADDRS: usize = 32;

    /// Checks a ticket's list of providers: at most `max`, each within [`NodeAddr::MAX_ADDRS`].
    pub fn check_providers(providers: &[NodeAddr], max: usize) -> Result<(), &'static str> {
        if providers.len() > max {
            return Err("too many providers");
        }
        if providers.iter().any(|p| p.addrs.len() > Self::MAX_ADDRS) {
            return Err("too many addresses");
        }
        Ok(())
    }

    /// A node address with the given id and addresses.
    pub fn new(node_id: NodeId, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            node_id,
            addrs: addrs.into_iter().collect(),
        }
    }
}

impl Ticket for NodeAddr {
    const KIND: &'static str = "node";

    fn check(&self) -> Result<(), &'static str> {
        if self.addrs.len() > Self::MAX_ADDRS {
            return Err("too many addresses");
        }
        Ok(())
    }
}
