//! A node for the swarm commands: endpoint, swarm and router, set up from the command line.

use std::path::Path;

use anyhow::{Context as _, Result};
use pairs_base::{NodeAddr, SecretKey, Ticket as _};
use pairs_net::swarm::{SWARM_ALPN, Swarm, SwarmConfig};
use pairs_net::{Endpoint, EndpointConfig, Router};

use crate::cli::DiscoveryArgs;
use crate::home;

/// A running swarm node; shuts down when dropped.
pub struct SwarmNode {
    pub swarm: Swarm,
    pub router: Router,
}

impl SwarmNode {
    /// Binds, starts discovery (unless `isolated`) and adds the `--peer`s.
    pub async fn start(
        data_dir: Option<&Path>,
        isolated: bool,
        args: &DiscoveryArgs,
    ) -> Result<Self> {
        let peers = args
            .peers
            .iter()
            .map(|t| {
                NodeAddr::from_ticket(t).with_context(|| {
                    format!("--peer {t}: not a node ticket (as printed by `pairs listen`, or by `pairs swarm` and `pairs paste` with --isolated)")
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let secret = if args.node_key {
            home::node_key(data_dir)?
        } else {
            SecretKey::generate()
        };
        let mut config = EndpointConfig::new(secret);
        config.bind = args.bind.bind;
        config.port = args.bind.port.unwrap_or(0);
        let endpoint = Endpoint::bind(config).await?;
        let swarm = Swarm::new(
            endpoint.clone(),
            SwarmConfig {
                mdns: !isolated,
                ..SwarmConfig::default()
            },
        )?;
        let router = Router::builder(endpoint.clone())
            .accept(SWARM_ALPN, swarm.handler())
            .spawn();
        for peer in peers {
            swarm.add_peer(peer)?;
        }
        tracing::info!(ticket = %endpoint.node_addr().to_ticket(), "node up");
        Ok(Self { swarm, router })
    }

    /// This node's ticket, for `--peer` on another node.
    pub fn ticket(&self) -> String {
        self.router.endpoint().node_addr().to_ticket()
    }
}
