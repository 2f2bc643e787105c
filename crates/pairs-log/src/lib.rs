//! The pairs log: a signed, multi-writer Merkle DAG that replicates over any byte stream.
//!
//! - [`entry`]: entries, ids, signatures and sealing.
//! - [`index`]: the (Lamport, id) order with range fingerprints.

#![warn(missing_docs)]

pub mod entry;
mod fast;
pub mod index;
mod pending;
pub mod reconcile;
mod replicate;
mod rows;
pub mod session;
pub mod store;
pub mod view;
pub mod wire;

pub use entry::{Entry, EntryBody, EntryId, LogId, Payload};
pub use session::{Session, SyncError, SyncStats};
pub use store::{Log, StoreError};
pub use view::{Op, Views};
pub mod ticket;
pub use ticket::LogTicket;
