//! A node for the swarm commands: endpoint, swarm and router, set up from the configuration file
//! and the command line.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use pairs_base::{SecretKey, Ticket as _};
use pairs_net::nat::{self, Nat, NatConfig, RelayLimits};
use pairs_net::swarm::{SWARM_ALPN, Swarm, SwarmConfig};
use pairs_net::{Endpoint, EndpointConfig, Router};

use crate::cli::DiscoveryArgs;
use crate::config::Sources;
use crate::home;
use crate::seeds::{self, SeedPeer};

/// Relay circuits a swarm node opens for its peers at once; `pairs serve` is the dedicated relay.
const SWARM_RELAY_CIRCUITS: usize = 8;

/// How often DNS seeds and named static peers are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(5 * 60);

/// What each name (static peer or DNS seed) last resolved to, or why it did not.
pub type Resolutions = Arc<Mutex<Vec<(String, Result<Vec<SocketAddr>, String>)>>>;

/// A running swarm node; shuts down when dropped.
pub struct SwarmNode {
    pub swarm: Swarm,
    pub router: Router,
    /// Hole punching and relaying, for this node and for its peers.
    pub nat: Nat,
    pub sources: Sources,
    /// What static peers and DNS seeds resolved to.
    pub resolved: Resolutions,
}

impl SwarmNode {
    /// Binds, starts the discovery sources (only `--peer`s if `isolated`) and adds the peers.
    pub async fn start(
        data_dir: Option<&Path>,
        isolated: bool,
        args: &DiscoveryArgs,
    ) -> Result<Self> {
        let sources = Sources::resolve(data_dir, isolated, &args.sources)?;
        let secret = if args.node_key {
            home::node_key(data_dir)?
        } else {
            SecretKey::generate()
        };
        let mut config = EndpointConfig::new(secret);
        config.bind = args.bind.bind;
        config.port = args.bind.port.or(sources.port).unwrap_or(0);
        let endpoint = Endpoint::bind(config).await?;
        // Every swarm node helps its peers through NATs (introductions for hole punches, a few
        // relay circuits) and asks them for the same.
        let nat = Nat::new(
            &endpoint,
            NatConfig {
                relay: RelayLimits {
                    max_circuits: if args.no_relay {
                        0
                    } else {
                        SWARM_RELAY_CIRCUITS
                    },
                    max_circuits_per_node: 2,
                    ..RelayLimits::default()
                },
                ..NatConfig::default()
            },
        );
        let swarm = Swarm::new(
            endpoint.clone(),
            SwarmConfig {
                mdns: sources.lan,
                dht: sources.dht.clone(),
                nat: Some(nat.clone()),
                ..SwarmConfig::default()
            },
        )?;
        let router = Router::builder(endpoint.clone())
            .accept(SWARM_ALPN, swarm.handler())
            .accept(nat::wire::ALPN, nat.handler())
            .spawn();
        for peer in &sources.peers {
            swarm.add_peer(peer.clone())?;
        }
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
        tracing::info!(ticket = %endpoint.node_addr().to_ticket(), "node up");
        Ok(Self {
            swarm,
            router,
            nat,
            sources,
            resolved,
        })
    }

    /// Stops the node: relayed connections hand over what they queued (their last acknowledgements
    /// and close), then the endpoint closes.
    pub async fn shutdown(self) {
        self.nat.shutdown().await;
        self.router.shutdown().await;
    }

    /// This node's ticket, for `--peer` on another node.
    pub fn ticket(&self) -> String {
        self.router.endpoint().node_addr().to_ticket()
    }
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
