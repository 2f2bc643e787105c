//! Percentiles and the figures of a scenario.

use std::fmt;
use std::time::Duration;

/// How the tracked entries reached the nodes that were meant to get them.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// Entries tracked (appended by honest writers).
    pub entries: usize,
    /// Nodes each entry should have reached.
    pub nodes: usize,
    /// (entry, node) pairs that arrived.
    pub delivered: usize,
    /// (entry, node) pairs that never arrived.
    pub misses: usize,
    /// Time from append to arrival, each delivery, sorted.
    pub delays: Vec<Duration>,
}

impl Delivery {
    /// The `p`-th percentile (0..=100) of the delays, by the nearest-rank method.
    pub fn percentile(&self, p: f64) -> Duration {
        percentile(&self.delays, p)
    }
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} entries x {} nodes: {} delivered, {} missed; p50 {} ms, p99 {} ms, max {} ms",
            self.entries,
            self.nodes,
            self.delivered,
            self.misses,
            self.percentile(50.0).as_millis(),
            self.percentile(99.0).as_millis(),
            self.percentile(100.0).as_millis(),
        )
    }
}

/// The `p`-th percentile (0..=100) of sorted `values`, by the nearest-rank method; zero if empty.
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}
