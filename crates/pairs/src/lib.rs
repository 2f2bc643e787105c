//! pairs: peer-to-peer for any application.
//!
//! This crate is the facade over the layers ([`base`] for identity and tickets, [`net`] for the
//! authenticated QUIC endpoint, [`log`] for replicated logs) and home of the small protocols the
//! `pairs` command line speaks, such as [`pipe`].

#![warn(missing_docs)]

pub use pairs_base as base;
pub use pairs_log as log;
pub use pairs_net as net;

pub mod paste;
pub mod pipe;
