//! DNS seeds: names whose records list peers, as bitcoin's seeds do.
//!
//! - `name:port`: every A/AAAA record of `name` is a peer's address at `port` (the handshake tells
//!   whose it is).
//! - `name` alone: its TXT records list peers, one per record, as `pairs=` followed by a node
//!   ticket (as printed by `pairs listen`: id and addresses) or by `ip:port`. Other TXT records
//!   are ignored, so a name can carry other data too.
//!
//! Names are looked up through the system's resolver configuration.

use std::net::SocketAddr;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;
use pairs_base::{NodeAddr, Ticket as _};

/// Prefix of a TXT record that lists a peer.
pub const TXT_PREFIX: &str = "pairs=";
/// Most peers taken from one name (a seed is a starting point, not a directory).
pub const MAX_PER_SEED: usize = 64;

/// A peer a seed named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedPeer {
    /// Id and addresses, from a ticket in a TXT record.
    Node(NodeAddr),
    /// An address without an id.
    Addr(SocketAddr),
}

impl SeedPeer {
    /// The addresses, for reports.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        match self {
            Self::Node(node) => node.addrs.clone(),
            Self::Addr(addr) => vec![*addr],
        }
    }
}

/// Whether a seed is looked up by its TXT records (no port given).
pub fn is_txt_seed(seed: &str) -> bool {
    !seed.contains(':')
}

/// Reads one TXT record's text; `None` if it is not a pairs peer.
pub fn parse_txt(text: &str) -> Option<SeedPeer> {
    let value = text.trim().strip_prefix(TXT_PREFIX)?.trim();
    if let Ok(node) = NodeAddr::from_ticket(value) {
        return Some(SeedPeer::Node(node));
    }
    value.parse().ok().map(SeedPeer::Addr)
}

/// Looks a seed up: TXT records for a bare name, A/AAAA for `name:port`.
pub async fn resolve(seed: &str) -> Result<Vec<SeedPeer>, String> {
    let mut peers = if is_txt_seed(seed) {
        resolve_txt(seed).await?
    } else {
        tokio::net::lookup_host(seed)
            .await
            .map_err(|e| e.to_string())?
            .map(SeedPeer::Addr)
            .collect()
    };
    peers.truncate(MAX_PER_SEED);
    Ok(peers)
}

async fn resolve_txt(name: &str) -> Result<Vec<SeedPeer>, String> {
    let resolver = TokioResolver::builder_tokio()
        .and_then(|b| b.build())
        .map_err(|e| format!("no DNS resolver: {e}"))?;
    let lookup = resolver.txt_lookup(name).await.map_err(|e| e.to_string())?;
    let peers: Vec<SeedPeer> = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::TXT(txt) => {
                // A record's strings form one text (long values are split into several).
                let bytes: Vec<u8> = txt.txt_data.iter().flatten().copied().collect();
                parse_txt(&String::from_utf8_lossy(&bytes))
            }
            _ => None,
        })
        .collect();
    if peers.is_empty() {
        return Err(format!("no `{TXT_PREFIX}` TXT records at {name}"));
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use pairs_base::SecretKey;

    use super::*;

    #[test]
    fn txt_records_name_peers_by_ticket_or_address() {
        let node = NodeAddr::new(
            SecretKey::generate().node_id(),
            ["192.0.2.7:4000".parse().unwrap()],
        );
        let ticket = format!("pairs={}", node.to_ticket());
        assert_eq!(parse_txt(&ticket), Some(SeedPeer::Node(node)));
        assert_eq!(
            parse_txt(" pairs=192.0.2.8:4001 "),
            Some(SeedPeer::Addr("192.0.2.8:4001".parse().unwrap()))
        );
        assert_eq!(
            parse_txt("pairs=[2001:db8::1]:4002"),
            Some(SeedPeer::Addr("[2001:db8::1]:4002".parse().unwrap()))
        );
    }

    #[test]
    fn other_txt_records_are_ignored() {
        for text in [
            "v=spf1 -all",
            "pairs=",
            "pairs=not a ticket",
            "pairs=host.example:4000",
            "pairs=192.0.2.1",
            "pairsx=192.0.2.1:1",
        ] {
            assert_eq!(parse_txt(text), None, "{text}");
        }
    }

    #[test]
    fn a_seed_without_a_port_is_read_from_txt() {
        assert!(is_txt_seed("seed.example"));
        assert!(!is_txt_seed("seed.example:4000"));
    }
}
