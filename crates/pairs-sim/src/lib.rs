//! Deterministic simulation of many pairs nodes in one process.
//!
//! The sans-IO cores run unchanged: each node has its own in-memory log replica
//! ([`pairs_log::Log`]), one live replication [`pairs_log::Session`] per connection, the swarm's
//! connection [`Planner`](pairs_net::swarm::planner::Planner) and per-connection peer exchange
//! ([`Pex`](pairs_net::swarm::pex::Pex)). The simulator replaces only the I/O: QUIC connections become
//! [`link`] models (latency drawn per pair of nodes, loss delaying a stream by a retransmission,
//! optional bandwidth), time is virtual (an event queue ordered by time, then by insertion), and every
//! random choice comes from one seeded generator, so a run with a given seed replays exactly.
//!
//! Nothing here opens a socket. Nothing else in the workspace depends on this crate.
//!
//! - [`link`]: what one simulated connection does to the bytes sent on it.
//! - [`sim`]: the nodes, the event loop, partitions, churn and Byzantine behaviours.
//! - [`stats`]: percentiles and the figures a scenario prints.

#![warn(missing_docs)]

pub mod link;
pub mod sim;
pub mod stats;

pub use sim::{Config, Role, Sim};
pub use stats::Delivery;

/// The seed of a scenario: `PAIRS_SIM_SEED` if set (to replay a failing run), else `default`.
/// Printed, so that a failing test's output names the seed that replays it.
pub fn seed(default: u64) -> u64 {
    let seed = std::env::var("PAIRS_SIM_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default);
    println!("seed {seed} (PAIRS_SIM_SEED={seed} replays this run)");
    seed
}
