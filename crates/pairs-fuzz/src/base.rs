//! Tickets: the text a user pastes, decoded by every command that takes one.

use pairs::share::ShareTicket;
use pairs_base::{NodeAddr, Ticket};
use pairs_blobs::BlobTicket;
use pairs_log::LogTicket;

fn round_trip<T: Ticket + PartialEq + std::fmt::Debug>(text: &str) {
    if let Ok(ticket) = T::from_ticket(text) {
        let again = ticket.to_ticket();
        assert!(again.len() <= pairs_base::ticket::MAX_TICKET_LEN, "{again}");
        assert_eq!(
            T::from_ticket(&again).ok().as_ref(),
            Some(&ticket),
            "{again}"
        );
    }
}

/// Every ticket kind (node, blob, log, share) decoded from the same text; a decoded ticket must
/// encode within the size limit and decode back to itself.
pub fn ticket(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    round_trip::<NodeAddr>(&text);
    round_trip::<BlobTicket>(&text);
    round_trip::<LogTicket>(&text);
    round_trip::<ShareTicket>(&text);
    let _ = ShareTicket::parse(&text);
}
