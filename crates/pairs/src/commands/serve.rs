//! `pairs serve`: a helper node for others. It answers STUN, keeps the nodes that register with it
//! reachable, introduces them to each other for hole punching, and relays within its budget.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use pairs_base::Ticket as _;
use pairs_net::Router;
use pairs_net::nat::{self, Nat, NatConfig, RelayLimits};

use crate::cli::ServeArgs;

pub async fn run(data_dir: Option<&Path>, args: ServeArgs) -> Result<()> {
    let endpoint = super::pipe::bind(data_dir, &args.bind, None).await?;
    let config = NatConfig {
        relay: RelayLimits {
            max_circuits: args.relay_circuits,
            max_circuits_per_node: args.relay_circuits_per_node,
            bytes_per_circuit: args.relay_bytes,
            rate_per_circuit: args.relay_rate,
        },
        ..NatConfig::default()
    };
    let nat = Nat::new(&endpoint, config);
    let router = Router::builder(endpoint.clone())
        .accept(nat::wire::ALPN, nat.handler())
        .spawn();
    let ticket = endpoint.node_addr().to_ticket();
    eprintln!(
        "pairs: serving as {} on {}; nodes use it with --via {ticket}",
        endpoint.node_id(),
        endpoint.local_addr()
    );
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{ticket}")
        .and_then(|()| stdout.flush())
        .context("cannot write the ticket to stdout")?;
    drop(stdout);
    super::stop_requested().await;
    router.shutdown().await;
    Ok(())
}
