//! Static peers given by name and DNS seeds, resolved now and again while the node runs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pairs_net::swarm::Swarm;

use crate::config::Sources;
use crate::seeds::{self, SeedPeer};

/// How often DNS seeds and named static peers are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(5 * 60);

/// What each name (static peer or DNS seed) last resolved to, or why it did not.
pub type Resolutions = Arc<Mutex<Vec<(String, Result<Vec<SocketAddr>, String>)>>>;

/// Starts resolving the static `host:port` peers and DNS seeds of `sources` (now, then every few
/// minutes), handing what they name to the swarm.
pub(crate) fn start(sources: &Sources, swarm: &Swarm) -> Resolutions {
    let names: Vec<Name> = sources
        .addrs
        .iter()
        .map(|a| Name::Peer(a.clone()))
        .chain(sources.dns_seeds.iter().map(|s| Name::Seed(s.clone())))
        .collect();
    let resolved = Arc::new(Mutex::new(Vec::new()));
    if !names.is_empty() {
        tokio::spawn(resolve_names(names, swarm.clone(), resolved.clone()));
    }
    resolved
}

/// A name to look up: a static `host:port` peer, or a DNS seed (see [`seeds`]).
enum Name {
    Peer(String),
    Seed(String),
}

/// Resolves static `host:port` peers and DNS seeds now and every few minutes, handing every peer
/// to the swarm (an address without an id: the handshake says whose it is).
async fn resolve_names(names: Vec<Name>, swarm: Swarm, report: Resolutions) {
    loop {
        let mut results = Vec::new();
        for name in &names {
            let (name, found) = match name {
                Name::Peer(host_port) => (
                    host_port,
                    tokio::net::lookup_host(host_port.as_str())
                        .await
                        .map(|addrs| addrs.map(SeedPeer::Addr).collect::<Vec<_>>())
                        .map_err(|e| e.to_string()),
                ),
                Name::Seed(seed) => (seed, seeds::resolve(seed).await),
            };
            let result = match found {
                Ok(peers) => {
                    for peer in &peers {
                        let added = match peer {
                            SeedPeer::Node(node) => swarm.add_peer(node.clone()),
                            SeedPeer::Addr(addr) => swarm.add_addr(*addr),
                        };
                        if added.is_err() {
                            return; // the swarm stopped
                        }
                    }
                    Ok(peers.iter().flat_map(SeedPeer::addrs).collect())
                }
                Err(err) => {
                    tracing::warn!(%name, %err, "cannot resolve");
                    Err(err)
                }
            };
            results.push((name.clone(), result));
        }
        *report.lock().expect("report lock") = results;
        tokio::time::sleep(RESOLVE_EVERY).await;
    }
}
