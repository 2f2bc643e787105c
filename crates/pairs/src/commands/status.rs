//! `pairs status`: runs a node for a few seconds and reports what each discovery source found.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use pairs_base::Topic;
use pairs_net::discovery::dht::DhtStatus;
use pairs_net::swarm::TopicEvent;
use serde::Serialize;

use crate::cli::StatusArgs;

/// Everything `pairs status` reports.
#[derive(Debug, Serialize)]
struct Report {
    node: String,
    addrs: Vec<SocketAddr>,
    config: String,
    config_present: bool,
    lan: bool,
    dht: Option<DhtStatus>,
    static_peers: usize,
    resolved: Vec<Resolved>,
    topics: BTreeMap<String, Vec<String>>,
    connections: usize,
    /// Peers this node registered with as NAT helpers (they introduce it to members behind NATs).
    nat_helpers: Vec<NatHelper>,
}

#[derive(Debug, Serialize)]
struct NatHelper {
    node: String,
    /// Our address as the helper sees it.
    sees_us_at: SocketAddr,
}

#[derive(Debug, Serialize)]
struct Resolved {
    name: String,
    addrs: Vec<SocketAddr>,
    error: Option<String>,
}

/// How often `pairs status` checks whether it has seen enough.
const POLL: Duration = Duration::from_millis(100);

/// Whether waiting longer could change the report much: every topic asked about has met a peer
/// (a topic nobody answers for waits out --wait); without topics, the DHT has bootstrapped and
/// published our record, or given up.
fn settled(dht: Option<&DhtStatus>, topics: usize, all_topics_met: bool, lan: bool) -> bool {
    if dht.is_some_and(|d| d.bootstrapping) {
        return false;
    }
    if topics > 0 {
        // With the DHT down and no LAN, nothing else is coming.
        let dht_failed = dht.is_some_and(|d| !d.bootstrapped);
        return all_topics_met || (dht_failed && !lan);
    }
    match dht {
        Some(d) if d.bootstrapped => d.record.as_ref().is_some_and(|r| r.result.is_some()),
        _ => true,
    }
}

pub async fn run(data_dir: Option<&Path>, isolated: bool, mut args: StatusArgs) -> Result<()> {
    // The status of this node, the one `pairs id` names: its own key, its own DHT record.
    args.discovery.node_key = true;
    let node = super::swarm_node(data_dir, isolated, &args.discovery).await?;
    let sources = node
        .sources()
        .expect("a networked node has sources")
        .clone();
    let met: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
    let mut handles = Vec::new();
    for name in &args.topics {
        let mut handle = node.swarm()?.join(Topic::from_name(name)).await?;
        met.lock().expect("lock").insert(name.clone(), Vec::new());
        let (met, name) = (met.clone(), name.clone());
        handles.push(tokio::spawn(async move {
            while let Some(event) = handle.next().await {
                if let TopicEvent::Joined(peer) = event {
                    let mut met = met.lock().expect("lock");
                    let peers = met.entry(name.clone()).or_default();
                    let id = peer.node_id().to_string();
                    // A replaced connection joins again: one entry per peer.
                    if !peers.contains(&id) {
                        peers.push(id);
                    }
                }
            }
        }));
    }
    // Report once every source has had its say, or when --wait runs out.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait);
    let dht = loop {
        let dht = match node.swarm()?.dht() {
            Some(dht) => Some(dht.status().await),
            None => None,
        };
        let all_met = met
            .lock()
            .expect("lock")
            .values()
            .all(|peers| !peers.is_empty());
        let lan = sources.lan;
        if settled(dht.as_ref(), args.topics.len(), all_met, lan)
            || tokio::time::Instant::now() >= deadline
        {
            break dht;
        }
        tokio::time::sleep(POLL).await;
    };
    let stats = node.swarm()?.stats().await?;
    let resolved = node
        .resolved()
        .unwrap_or_default()
        .lock()
        .expect("lock")
        .iter()
        .map(|(name, result)| Resolved {
            name: name.clone(),
            addrs: result.clone().unwrap_or_default(),
            error: result.clone().err(),
        })
        .collect();
    let endpoint = node.endpoint()?;
    let report = Report {
        node: endpoint.node_id().to_string(),
        addrs: endpoint.node_addr().addrs,
        config: sources.config_path.display().to_string(),
        config_present: sources.config_path.exists(),
        lan: sources.lan,
        dht,
        static_peers: sources.peers.len() + sources.addrs.len(),
        resolved,
        topics: met.lock().expect("lock").clone(),
        connections: stats.connections,
        nat_helpers: stats
            .helpers
            .iter()
            .map(|(node, observed)| NatHelper {
                node: node.to_string(),
                sees_us_at: *observed,
            })
            .collect(),
    };
    for handle in handles {
        handle.abort();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    node.shutdown().await;
    Ok(())
}

fn print_text(r: &Report) {
    let list = |addrs: &[SocketAddr]| {
        addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("node         {}", r.node);
    println!("addresses    {}", list(&r.addrs));
    let present = if r.config_present {
        ""
    } else {
        " (none; defaults)"
    };
    println!("config       {}{present}", r.config);
    println!("lan (mDNS)   {}", if r.lan { "on" } else { "off" });
    match &r.dht {
        None => println!("dht          off"),
        Some(d) => {
            if d.bootstrapped {
                println!(
                    "dht          bootstrapped; about {} nodes; public address {}; {}",
                    d.size_estimate,
                    d.public_addr
                        .map_or_else(|| "not known yet".into(), |a| a.to_string()),
                    if d.server_mode {
                        "serving"
                    } else {
                        "client only"
                    }
                );
            } else if d.bootstrapping {
                println!("dht          bootstrapping (no answer yet; try a longer --wait)");
            } else {
                println!("dht          NOT bootstrapped: no bootstrap node answered");
            }
            match &d.record {
                None => println!("  record     not published yet"),
                Some(rec) => match &rec.result {
                    None => println!("  record     publishing {}", list(&rec.addrs)),
                    Some(Ok(())) => println!("  record     published {}", list(&rec.addrs)),
                    Some(Err(e)) => println!("  record     publishing failed: {e}"),
                },
            }
            for t in &d.topics {
                let announced = match &t.announced {
                    None => "announcing".to_string(),
                    Some(Ok(())) => "announced".to_string(),
                    Some(Err(e)) => format!("announce failed: {e}"),
                };
                println!(
                    "  topic {}  {announced}; {} lookups found {} addresses",
                    t.key, t.lookups, t.found
                );
            }
        }
    }
    println!("static peers {}", r.static_peers);
    for res in &r.resolved {
        match &res.error {
            None => println!("  {}  -> {}", res.name, list(&res.addrs)),
            Some(e) => println!("  {}  cannot resolve: {e}", res.name),
        }
    }
    for (topic, peers) in &r.topics {
        println!("topic '{topic}'  {} peers met", peers.len());
        for p in peers {
            println!("  {p}");
        }
    }
    println!("connections  {}", r.connections);
    if r.nat_helpers.is_empty() {
        println!("nat helpers  none (no peer outside our private ranges that we dialed)");
    }
    for h in &r.nat_helpers {
        println!("nat helper   {}  sees us at {}", h.node, h.sees_us_at);
    }
}
