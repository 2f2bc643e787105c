//! `pairs node`: run the node in the foreground, serving its logs and the control socket;
//! `pairs node status`: ask the running node what it serves.

use std::path::Path;

use anyhow::{Result, bail};
use pairs::Node;
use pairs::control::{Client, ControlServer, NodeStatus};

use crate::cli::{BindArgs, NodeArgs, NodeCommand, SourceArgs};

pub async fn run(data_dir: Option<&Path>, isolated: bool, args: NodeArgs) -> Result<()> {
    match args.command {
        Some(NodeCommand::Status { json }) => status(data_dir, json).await,
        None => {
            let (node, control) = start_with_gateway(
                data_dir,
                isolated,
                &args.bind,
                &args.sources,
                args.no_relay,
                true,
            )
            .await?;
            let shared = node.reshare().await?;
            eprintln!("pairs: node {} running", node.id());
            eprintln!("pairs: ticket {}", node.ticket().unwrap_or_default());
            if let Some(addr) = node.gateway_addr() {
                eprintln!("pairs: gateway http://localhost:{}/", addr.port());
            }
            eprintln!("pairs: control socket {}", control.path().display());
            eprintln!("pairs: sharing {shared} logs; Ctrl-C or SIGTERM stops");
            super::stop_requested().await;
            eprintln!("pairs: stopping");
            drop(control);
            node.shutdown().await;
            Ok(())
        }
    }
}

/// Starts a node that owns the data directory: its stored key, its configuration, the control
/// socket (so other commands use it rather than opening the stores themselves).
pub(crate) async fn start(
    data_dir: Option<&Path>,
    isolated: bool,
    bind: &BindArgs,
    sources: &SourceArgs,
    no_relay: bool,
) -> Result<(Node, ControlServer)> {
    start_with_gateway(data_dir, isolated, bind, sources, no_relay, false).await
}

/// [`start`], serving the HTTP gateway as `pairs node` does (`[gateway]` in the config, else the
/// default port) if `gateway`.
async fn start_with_gateway(
    data_dir: Option<&Path>,
    isolated: bool,
    bind: &BindArgs,
    sources: &SourceArgs,
    no_relay: bool,
    gateway: bool,
) -> Result<(Node, ControlServer)> {
    let mut builder = Node::builder()
        .isolated(isolated)
        .sources(sources.options())
        .bind(bind.bind)
        .port(bind.port)
        .relay_circuits(if no_relay {
            0
        } else {
            pairs::node::DEFAULT_RELAY_CIRCUITS
        });
    if let Some(dir) = data_dir {
        builder = builder.data_dir(dir);
    }
    if gateway {
        builder = builder.gateway_by_default();
    }
    let node = builder.spawn().await?;
    let control = ControlServer::listen(&node)?;
    Ok((node, control))
}

async fn status(data_dir: Option<&Path>, json: bool) -> Result<()> {
    let dir = pairs::home::data_dir(data_dir)?;
    let Some(mut client) = Client::connect(&dir).await? else {
        bail!(
            "no pairs node is running on {} (start one with `pairs node`)",
            dir.display()
        );
    };
    let status = client.status().await?;
    if json {
        println!("{}", status_json(&status));
    } else {
        print_status(&status);
    }
    Ok(())
}

fn status_json(status: &NodeStatus) -> serde_json::Value {
    let ids = |ids: &[pairs::base::NodeId]| ids.iter().map(ToString::to_string).collect::<Vec<_>>();
    serde_json::json!({
        "node": status.id.to_string(),
        "ticket": status.ticket,
        "gateway": status.gateway.map(|addr| format!("http://localhost:{}/", addr.port())),
        "pid": status.pid,
        "connections": status.connections,
        "peers": ids(&status.peers),
        "logs": status.logs.iter().map(|log| serde_json::json!({
            "log": log.log.to_string(),
            "entries": log.entries,
            "shared": log.shared,
            "peers": ids(&log.peers),
        })).collect::<Vec<_>>(),
    })
}

fn print_status(status: &NodeStatus) {
    println!("node         {}", status.id);
    println!("pid          {}", status.pid);
    if let Some(ticket) = &status.ticket {
        println!("ticket       {ticket}");
    }
    if let Some(addr) = status.gateway {
        println!("gateway      http://localhost:{}/", addr.port());
    }
    println!(
        "peers        {} ({} connections)",
        status.peers.len(),
        status.connections
    );
    for log in &status.logs {
        let entries = log
            .entries
            .map_or_else(|| "not open".to_owned(), |n| format!("{n} entries"));
        let sharing = if log.shared {
            format!("shared, {} peers replicating", log.peers.len())
        } else {
            "not shared".to_owned()
        };
        println!("log          {}  {entries}, {sharing}", log.log);
    }
}
