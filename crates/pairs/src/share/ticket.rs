//! The share ticket: a share's log and nodes to ask first.

use pairs_base::{NodeAddr, Ticket};
use pairs_log::{LogId, LogTicket};
use serde::{Deserialize, Serialize};

/// Names a share (its log) with nodes known to serve it; any other replica is found through the
/// swarm. Knowing it is the capability to read the share; writing takes a key its owner admitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareTicket {
    /// The share's log.
    pub log: LogId,
    /// Nodes to ask first.
    pub providers: Vec<NodeAddr>,
}

impl Ticket for ShareTicket {
    const KIND: &'static str = "share";

    fn check(&self) -> Result<(), &'static str> {
        NodeAddr::check_providers(&self.providers, ShareTicket::MAX_PROVIDERS)
    }
}

impl ShareTicket {
    /// Most providers a ticket carries.
    pub const MAX_PROVIDERS: usize = 8;

    /// The log ticket of the share (what `pairs log` commands take).
    pub fn log_ticket(&self) -> LogTicket {
        LogTicket { log: self.log }
    }

    /// Reads a share ticket, or a plain log ticket (no providers: replicas are found on the swarm).
    pub fn parse(text: &str) -> Result<ShareTicket, pairs_base::TicketError> {
        let text = text.trim();
        match ShareTicket::from_ticket(text) {
            Ok(ticket) => Ok(ticket),
            Err(err) => match LogTicket::from_ticket(text) {
                Ok(log) => Ok(ShareTicket {
                    log: log.log,
                    providers: Vec::new(),
                }),
                Err(_) => Err(err),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pairs_base::SecretKey;

    #[test]
    fn share_and_log_tickets_both_parse() {
        let log = SecretKey::generate().node_id();
        let ticket = ShareTicket {
            log,
            providers: Vec::new(),
        };
        assert_eq!(ShareTicket::parse(&ticket.to_ticket()).unwrap(), ticket);
        let plain = LogTicket { log }.to_ticket();
        assert_eq!(ShareTicket::parse(&plain).unwrap(), ticket);
        let err = ShareTicket::parse("blobabc").unwrap_err().to_string();
        assert!(err.contains("share ticket"), "{err}");
    }
}
