//! The log ticket: what someone needs to read and replicate a log.

use pairs_base::Ticket;
use serde::{Deserialize, Serialize};

use crate::entry::LogId;

/// Names a log. Knowing it is the capability to read the log and replicate it; writing takes a key the
/// owner admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogTicket {
    /// The log's id (its owner's public key).
    pub log: LogId,
}

impl Ticket for LogTicket {
    const KIND: &'static str = "log";
}

impl LogTicket {
    /// A 32-byte tag naming the log on the wire without revealing it (discovery, stream headers).
    pub fn discovery_key(&self) -> [u8; 32] {
        blake3::derive_key("pairs log discovery v1", self.log.as_bytes())
    }
}
