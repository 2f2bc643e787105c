//! pairs blobs: content named by its BLAKE3 hash, moved from many peers at once and verified 16 KiB at a time.
//!
//! - [`hash`]: blob names.
//! - [`hashing`]: files hashed on every core, each byte read and hashed once.
//! - [`layer`]: the piece layer that lets every 16 KiB group be checked on its own.
//! - [`wire`]: the protocol's frames, every one bounded.
//! - [`picker`] and [`swarm`]: the sans-IO core of a blob's swarm (piece picking, pipelining, choking).
//! - [`store`]: complete and partial blobs on disk, resumable after a crash.
//! - [`collection`]: a directory as one blob of names and hashes.
//! - [`ticket`]: what someone needs to fetch a blob or a collection.
//!
//! Nothing here knows about the network: the protocol runs over any duplex byte stream, driven by the node.

#![warn(missing_docs)]

pub mod bitfield;
pub mod collection;
pub mod hash;
pub mod hashing;
pub mod layer;
pub mod picker;
pub mod store;
pub mod swarm;
pub mod ticket;
pub mod wire;

pub use bitfield::Bitfield;
pub use collection::{Collection, CollectionEntry};
pub use hash::Hash;
pub use layer::{GROUP_SIZE, Layer};
pub use store::{BlobStatus, Store, StoreError};
pub use swarm::{Action, BlobSwarm, PeerKey, SwarmConfig};
pub use ticket::BlobTicket;
