//! One module per subcommand.

mod blobs;
mod doctor;
mod id;
mod kv;
mod log;
mod node;
mod paste;
mod pipe;
mod serve;
mod share;
mod site;
mod status;
mod swarm;

use std::path::Path;

use anyhow::Result;
use pairs::Node;
use pairs::control::Client;

use crate::cli::{Cli, Command, DiscoveryArgs};

/// A node for the swarm commands (`swarm`, `paste`, `status`): a fresh key unless `--node-key`,
/// the data directory's configuration, and the discovery flags.
pub(crate) async fn swarm_node(
    data_dir: Option<&Path>,
    isolated: bool,
    args: &DiscoveryArgs,
) -> Result<Node> {
    node_with(data_dir, isolated, args, !args.node_key).await
}

/// A node with the discovery flags: a fresh key, or the data directory's own (which a share's
/// admitted writer needs across runs).
pub(crate) async fn node_with(
    data_dir: Option<&Path>,
    isolated: bool,
    args: &DiscoveryArgs,
    fresh_key: bool,
) -> Result<Node> {
    let mut builder = Node::builder()
        .isolated(isolated)
        .sources(args.sources.options())
        .bind(args.bind.bind)
        .port(args.bind.port)
        .relay_circuits(if args.no_relay {
            0
        } else {
            pairs::node::DEFAULT_RELAY_CIRCUITS
        });
    if let Some(dir) = data_dir {
        builder = builder.data_dir(dir);
    }
    if fresh_key {
        builder = builder.fresh_key();
    }
    builder.spawn().await
}

/// The running node's control API, or an offline node in this process when none runs.
pub(crate) async fn control(data_dir: Option<&Path>) -> Result<Client> {
    Client::connect_or_embed(&pairs::home::data_dir(data_dir)?).await
}

/// Resolves when the process is asked to stop: Ctrl-C, or SIGTERM (service managers, containers),
/// so that long-running commands close their connections and say goodbye either way.
///
/// The handlers are installed by this call, not when the future is first polled: a command that
/// calls it at its start is never killed by a signal that arrives before it waits for one.
pub(crate) fn stop_requested() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            return Box::pin(async move {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            });
        }
    }
    Box::pin(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let data_dir = cli.data_dir.as_deref();
    match cli.command {
        Command::Id { json } => id::run(data_dir, json),
        Command::Listen(args) => pipe::listen(data_dir, cli.isolated, args).await,
        Command::Connect(args) => pipe::connect(data_dir, cli.isolated, args).await,
        Command::Serve(args) => serve::run(data_dir, args).await,
        Command::Paste(args) => paste::run(data_dir, cli.isolated, args).await,
        Command::Swarm(args) => swarm::run(data_dir, cli.isolated, args).await,
        Command::Status(args) => status::run(data_dir, cli.isolated, args).await,
        Command::Doctor(args) => doctor::run(data_dir, cli.isolated, args).await,
        Command::Node(args) => node::run(data_dir, cli.isolated, args).await,
        Command::Send(args) => blobs::send(data_dir, cli.isolated, args).await,
        Command::Get(args) => match pairs::share::ShareTicket::parse(&args.ticket) {
            Ok(share) => share::get(data_dir, cli.isolated, share, args).await,
            Err(_) => blobs::get(data_dir, cli.isolated, args).await,
        },
        Command::Share(args) => share::run(data_dir, cli.isolated, args).await,
        Command::Sync(args) => share::sync(data_dir, cli.isolated, args).await,
        Command::Blobs(command) => blobs::run(data_dir, command).await,
        Command::Log(command) => log::run(data_dir, cli.isolated, command).await,
        Command::Kv(command) => kv::run(data_dir, command).await,
        Command::Site(command) => site::run(data_dir, cli.isolated, command).await,
    }
}
