//! The base layer of pairs: what every other crate shares and nothing on the network decides.
//!
//! - [`SecretKey`] and [`NodeId`]: a node *is* its ed25519 key pair; the public key is its identity.
//! - [`keyfile`]: keeping a node's secret key on disk, created once, never silently replaced.
//! - [`ticket`]: copy-paste-safe strings that carry typed, checksummed payloads such as a [`NodeAddr`].
//! - [`topic`]: the 32-byte secrets peers meet under, and the keys derived from them.
//! - [`base32`]: the one text encoding used for keys and tickets.
//!
//! This crate performs no network I/O and has no async runtime, so protocol cores built on it stay sans-IO.

#![warn(missing_docs)]

pub mod base32;
pub mod identity;
pub mod keyfile;
pub mod node_addr;
pub mod ticket;
pub mod topic;

pub use identity::{KeyError, NodeId, SecretKey, Signature, x25519_ephemeral};
pub use node_addr::NodeAddr;
pub use ticket::{Ticket, TicketError};
pub use topic::{DiscoveryKey, Topic};
