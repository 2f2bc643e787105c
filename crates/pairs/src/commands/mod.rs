//! One module per subcommand.

mod blobs;
mod chat;
#[cfg(feature = "tui")]
mod chat_tui;
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

use anyhow::{Context as _, Result, bail};
use pairs::Node;
use pairs::code::{self, Code};
use pairs::control::Client;
use pairs_net::BiStream;
use pairs_net::swarm::{TopicEvent, TopicHandle, TopicPeer};

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

/// Meets the peer that knows `code` on the swarm topic of its nameplate and proves both know the
/// same code; the proven stream with it (the peer stays met while the [`Met`] lives). The first
/// peer met gets the one attempt: a wrong code ends the run. `wait`: how long to look for the peer
/// (`None`: until `stop`); `maker`: the command that makes such codes, for the messages.
pub(crate) async fn meet_by_code(
    node: &Node,
    code: &Code,
    wait: Option<std::time::Duration>,
    maker: &str,
    stop: &mut Stop,
) -> Result<Met> {
    let mut topic = node.swarm()?.join(code.topic()).await?;
    let meet = async {
        loop {
            match topic.next().await {
                Some(TopicEvent::Joined(peer)) => return Some(peer),
                Some(_) => {}
                None => return None,
            }
        }
    };
    let peer = tokio::select! {
        peer = async {
            match wait {
                Some(wait) => tokio::time::timeout(wait, meet).await.ok().flatten(),
                None => meet.await,
            }
        } => peer,
        _ = &mut *stop => bail!("interrupted; the code {code} is not used"),
    };
    let Some(mut peer) = peer else {
        bail!(
            "nobody with code {code} found within {}s: is `{maker}` running? (--timeout SECS waits longer)",
            wait.unwrap_or_default().as_secs()
        );
    };
    let mut stream = peer.stream().await?;
    let binding = peer.connection().channel_binding(b"pairs code v1");
    let initiator = peer.is_initiator();
    tokio::select! {
        proven = code::authenticate(code, &mut stream, initiator, binding) => match proven {
            Ok(()) => Ok(Met { peer, stream, _topic: topic }),
            Err(code::CodeError::Wrong) => bail!(
                "wrong code: {code} is not the other side's; a code is good for one attempt, so \
                 `{maker}` must make a new one"
            ),
            Err(err) => Err(err).context(format!("code {code}")),
        },
        _ = &mut *stop => bail!("interrupted; the code {code} is spent"),
    }
}

/// A peer met by [`meet_by_code`].
pub(crate) struct Met {
    /// The peer.
    pub peer: TopicPeer,
    /// The stream the code was proven on.
    pub stream: BiStream,
    /// The code's topic, to keep while the peer is needed: leaving it would leave the connection
    /// without a shared topic, which closes it.
    pub _topic: TopicHandle,
}

/// What [`stop_requested`] returns.
pub(crate) type Stop = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Reads a code as [`Code::parse`] does, with an error naming `maker` (the command that makes
/// such codes) for text that looks like a code but is not one.
pub(crate) fn parse_code(text: &str, maker: &str) -> Result<Code> {
    Code::parse(text).with_context(|| {
        format!(
            "'{}' is not a code `{maker}` prints (a number from 1 to 99 and two of its words)",
            text.trim()
        )
    })
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
pub(crate) fn stop_requested() -> Stop {
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
        Command::Chat(args) => chat::run(data_dir, cli.isolated, args).await,
        Command::Sync(args) => share::sync(data_dir, cli.isolated, args).await,
        Command::Blobs(command) => blobs::run(data_dir, command).await,
        Command::Log(command) => log::run(data_dir, cli.isolated, command).await,
        Command::Kv(command) => kv::run(data_dir, command).await,
        Command::Site(command) => site::run(data_dir, cli.isolated, command).await,
    }
}
