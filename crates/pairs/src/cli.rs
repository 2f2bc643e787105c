//! Command-line syntax.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// pairs: peer-to-peer for any application. Every connection is encrypted and authenticated by node key.
#[derive(Debug, Parser)]
#[command(name = "pairs", version, propagate_version = true)]
pub struct Cli {
    /// Directory for this node's key and data [default: the platform's data directory]
    #[arg(long, global = true, env = "PAIRS_HOME", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// More logging on stderr (-v, -vv, -vvv); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print this node's id (created on first use)
    Id,
    /// Wait for a peer, then pipe stdin to it and its data to stdout
    Listen(ListenArgs),
    /// Connect to a listening peer, then pipe stdin to it and its data to stdout
    Connect(ConnectArgs),
}

/// Where the node's socket binds.
#[derive(Debug, Args)]
pub struct BindArgs {
    /// UDP address to bind, e.g. 0.0.0.0:7000 or [::1]:0 [default: all interfaces, any port]
    #[arg(long, value_name = "ADDR", conflicts_with = "port")]
    pub bind: Option<SocketAddr>,

    /// UDP port to bind on all interfaces (keeps the ticket stable across restarts)
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
}

/// `pairs listen`
#[derive(Debug, Args)]
pub struct ListenArgs {
    #[command(flatten)]
    pub bind: BindArgs,

    /// Keep listening after the first peer: serve peers one after another
    #[arg(long)]
    pub keep: bool,
}

/// `pairs connect`
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The ticket printed by `pairs listen`
    pub ticket: String,

    #[command(flatten)]
    pub bind: BindArgs,

    /// Seconds to wait for an answer from each address
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub timeout: u64,
}
