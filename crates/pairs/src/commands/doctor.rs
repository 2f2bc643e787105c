//! `pairs doctor`: what stands between this node and its peers, and what gets through.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use pairs_base::{NodeAddr, Ticket as _};
use pairs_net::nat::behaviour::{Behaviour, Mapping, NatType};
use pairs_net::nat::{Nat, NatConfig};
use serde::Serialize;

use crate::cli::DoctorArgs;

/// Used when no `--stun` is given and the node is not isolated.
const PUBLIC_STUN: [&str; 2] = ["stun.l.google.com:19302", "stun.cloudflare.com:3478"];

#[derive(Debug, Serialize)]
struct Report {
    // One vocabulary across commands' JSON: `node` for a node id, `addrs` for its addresses.
    #[serde(rename = "node")]
    node_id: String,
    #[serde(rename = "addrs")]
    local_addrs: Vec<SocketAddr>,
    stun: Vec<StunReport>,
    nat: Option<Behaviour>,
    port_mapping: Vec<MappingReport>,
    helper: Option<HelperReport>,
    publicly_reachable: bool,
    relay: Option<String>,
}

#[derive(Debug, Serialize)]
struct StunReport {
    server: String,
    mapped: Option<SocketAddr>,
    other_address: Option<SocketAddr>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct MappingReport {
    protocol: &'static str,
    external: Option<SocketAddr>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct HelperReport {
    #[serde(rename = "node")]
    node_id: String,
    observed: Option<SocketAddr>,
    error: Option<String>,
}

pub async fn run(data_dir: Option<&Path>, isolated: bool, args: DoctorArgs) -> Result<()> {
    let endpoint = super::pipe::bind(data_dir, &args.bind, None).await?;
    let nat = Nat::new(&endpoint, NatConfig::default());
    let servers: Vec<String> = if !args.stun.is_empty() {
        args.stun.clone()
    } else if isolated {
        Vec::new()
    } else {
        PUBLIC_STUN.iter().map(|s| s.to_string()).collect()
    };
    let helper = match &args.via {
        Some(ticket) => Some(
            NodeAddr::from_ticket(ticket)
                .with_context(|| format!("--via needs a node ticket, not '{ticket}'"))?,
        ),
        None => None,
    };

    let mut stun = Vec::new();
    let mut nat_verdict: Option<Behaviour> = None;
    for server in &servers {
        let addr = match resolve_stun(server).await {
            Ok(addr) => addr,
            Err(why) => {
                stun.push(StunReport {
                    server: server.clone(),
                    mapped: None,
                    other_address: None,
                    error: Some(why),
                });
                continue;
            }
        };
        match nat.nat_behaviour(addr).await {
            Ok((seen, verdict)) => {
                stun.push(StunReport {
                    server: server.clone(),
                    mapped: seen.mapped,
                    other_address: seen.other_address,
                    error: None,
                });
                // The first verdict that knows the type wins.
                if nat_verdict.is_none_or(|v| v.nat_type == NatType::Unknown) {
                    nat_verdict = Some(verdict);
                }
            }
            Err(err) => stun.push(StunReport {
                server: server.clone(),
                mapped: None,
                other_address: None,
                error: Some(err.to_string()),
            }),
        }
    }
    // Two servers without RFC 5780 still tell a symmetric NAT: they see different mappings.
    if nat_verdict.is_none_or(|v| v.nat_type == NatType::Unknown) {
        let mapped: Vec<SocketAddr> = stun.iter().filter_map(|s| s.mapped).collect();
        if mapped.len() >= 2 && mapped.iter().any(|m| *m != mapped[0]) {
            nat_verdict = Some(Behaviour {
                mapping: Some(Mapping::AddressAndPortDependent),
                filtering: None,
                nat_type: NatType::Symmetric,
            });
        }
    }

    let mut port_mapping = Vec::new();
    let port = endpoint.local_addr().port();
    for protocol in super::pipe::port_mapping_protocols(isolated, args.port_mapping.as_ref())
        .unwrap_or_default()
    {
        match pairs_portmap::map_udp(port, protocol).await {
            Ok(mapping) => {
                let external = mapping.external;
                if let Err(err) = mapping.remove().await {
                    tracing::warn!(%err, "test mapping not removed");
                }
                port_mapping.push(MappingReport {
                    protocol: protocol.name(),
                    external: Some(external),
                    error: None,
                });
            }
            Err(err) => port_mapping.push(MappingReport {
                protocol: protocol.name(),
                external: None,
                error: Some(err.to_string()),
            }),
        }
    }

    let helper_report = match &helper {
        Some(helper) => Some(match nat.register(helper).await {
            Ok(registration) => HelperReport {
                node_id: helper.node_id.to_string(),
                observed: Some(registration.observed()),
                error: None,
            },
            Err(err) => HelperReport {
                node_id: helper.node_id.to_string(),
                observed: None,
                error: Some(err.to_string()),
            },
        }),
        None => None,
    };

    let mapped_ok = port_mapping.iter().any(|m| m.external.is_some());
    let report = Report {
        node_id: endpoint.node_id().to_string(),
        local_addrs: endpoint.node_addr().addrs,
        stun,
        nat: nat_verdict,
        port_mapping,
        relay: helper_report
            .as_ref()
            .filter(|h| h.error.is_none())
            .map(|h| h.node_id.clone()),
        helper: helper_report,
        publicly_reachable: mapped_ok
            || nat_verdict.is_some_and(|v| v.nat_type.publicly_reachable()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    if servers.is_empty() && report.helper.is_none() {
        bail!(
            "nothing to test against: name a STUN server with --stun or a helper with --via (--isolated turns the public STUN servers off)"
        );
    }
    Ok(())
}

/// The IPv4 address of a STUN server named `HOST:PORT`, or why there is none: a malformed name and a
/// name DNS cannot resolve (offline, a typo) are told apart.
async fn resolve_stun(server: &str) -> Result<SocketAddr, String> {
    let Some((host, port)) = server.rsplit_once(':') else {
        return Err(format!("{server:?} has no port (want HOST:PORT)"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("{server:?} is not HOST:PORT"));
    }
    match tokio::net::lookup_host(server).await {
        Ok(mut addrs) => addrs
            .find(|a| a.is_ipv4())
            .ok_or_else(|| format!("{host} has no IPv4 address")),
        Err(err) => Err(format!(
            "cannot resolve {host}: {err} (no DNS here: offline? --stun IP:PORT needs none)"
        )),
    }
}

fn print_text(report: &Report) {
    println!("node        {}", report.node_id);
    for addr in &report.local_addrs {
        println!("local       {addr}");
    }
    for s in &report.stun {
        match (&s.mapped, &s.error) {
            (Some(mapped), _) => println!(
                "reflexive   {mapped} (STUN {}{})",
                s.server,
                if s.other_address.is_some() {
                    ", RFC 5780"
                } else {
                    ""
                }
            ),
            (None, Some(err)) => println!("stun        {}: {err}", s.server),
            (None, None) => {}
        }
    }
    match &report.nat {
        Some(v) if v.nat_type == NatType::NoNat => println!(
            "nat         no NAT (filtering untested: a STUN server with two addresses tells)"
        ),
        Some(v) => println!(
            "nat         {}{}",
            v.nat_type.name(),
            match (v.mapping, v.filtering) {
                (Some(Mapping::NoNat), Some(f)) => format!(" (filtering {})", f.name()),
                (Some(m), Some(f)) => format!(" (mapping {}, filtering {})", m.name(), f.name()),
                (Some(m), None) => format!(" (mapping {})", m.name()),
                _ => String::new(),
            }
        ),
        None => println!("nat         unknown (no STUN answer)"),
    }
    for m in &report.port_mapping {
        match (&m.external, &m.error) {
            (Some(external), _) => println!("port map    {}: {external}", m.protocol),
            (None, Some(err)) => println!("port map    {}: no ({err})", m.protocol),
            (None, None) => {}
        }
    }
    if let Some(h) = &report.helper {
        match (&h.observed, &h.error) {
            (Some(observed), _) => println!("helper      {} sees us at {observed}", h.node_id),
            (None, Some(err)) => println!("helper      {err}"),
            (None, None) => {}
        }
    }
    let no_nat = report.nat.is_some_and(|v| v.nat_type == NatType::NoNat);
    println!(
        "reachable   {}",
        if report.publicly_reachable {
            "yes: peers can connect to this node directly"
        } else if no_nat {
            "probably: peers can connect directly unless a firewall filters"
        } else {
            "not directly: peers need a hole punch (--via a helper) or a relay"
        }
    );
    println!(
        "relay       {}",
        report
            .relay
            .as_deref()
            .map(|r| format!("helper {r}, when no direct path works"))
            .unwrap_or_else(|| "none".into())
    );
}
