//! One simulated connection: what QUIC does to the bytes of its streams, in virtual time.
//!
//! - **Latency** is fixed per pair of nodes, drawn uniformly from the configured range from the seed
//!   and the pair alone (no table of a million pairs).
//! - **Streams are reliable and ordered**: a frame never overtakes an earlier frame of its stream.
//!   Frames of different streams (the swarm's control stream and the log stream) are independent,
//!   so they may arrive out of order relative to each other.
//! - **Loss** is per packet (1,200 bytes of payload each). QUIC retransmits a lost packet once its
//!   loss is detected, about 9/8 of a round trip later at the earliest; the frame, and everything
//!   after it on its stream, waits for the retransmission (head-of-line blocking). A retransmission
//!   can be lost again.
//! - **Bandwidth**, if set, serializes each direction: a frame starts when the previous one (of any
//!   stream) has left.

use std::time::Duration;

/// Payload bytes per packet.
pub const PACKET: usize = 1200;

/// Streams of one connection.
pub const STREAMS: usize = 2;

/// The swarm's control stream (hello, peer exchange).
pub const CONTROL: usize = 0;
/// The log's replication stream.
pub const LOG: usize = 1;

/// The properties of the simulated network.
#[derive(Debug, Clone, Copy)]
pub struct LinkConfig {
    /// Shortest one-way latency.
    pub latency_min: Duration,
    /// Longest one-way latency.
    pub latency_max: Duration,
    /// Probability that a packet is lost (each retransmission too).
    pub loss: f64,
    /// Bytes per second each way, per connection; `None`: unlimited.
    pub bandwidth: Option<u64>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            latency_min: Duration::from_millis(10),
            latency_max: Duration::from_millis(50),
            loss: 0.0,
            bandwidth: None,
        }
    }
}

impl LinkConfig {
    /// The one-way latency between nodes `a` and `b`, in microseconds: the same for both
    /// directions and for every connection between them.
    pub fn latency_us(&self, seed: u64, a: usize, b: usize) -> u64 {
        let (lo, hi) = (a.min(b) as u64, a.max(b) as u64);
        let mut x =
            seed ^ lo.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ hi.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        // splitmix64
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        let min = self.latency_min.as_micros() as u64;
        let span = (self.latency_max.as_micros() as u64).saturating_sub(min) + 1;
        min + x % span
    }
}

/// The state of one direction of one connection.
#[derive(Debug, Default, Clone)]
pub struct Direction {
    /// When the sender's queue is free again (bandwidth).
    busy_until: u64,
    /// Arrival time of the last frame of each stream, so that none overtakes it.
    last_arrival: [u64; STREAMS],
    /// Bytes sent this way.
    pub bytes: u64,
    /// Packets lost this way (each delayed its stream by a retransmission).
    pub lost: u64,
}

impl Direction {
    /// When a frame of `len` bytes sent on `stream` at `now` arrives (microseconds).
    pub fn send(
        &mut self,
        config: &LinkConfig,
        latency: u64,
        rng: &mut fastrand::Rng,
        now: u64,
        stream: usize,
        len: usize,
    ) -> u64 {
        self.bytes += len as u64;
        let start = now.max(self.busy_until);
        let transmit = config
            .bandwidth
            .map_or(0, |bw| (len as u64 * 1_000_000).div_ceil(bw.max(1)));
        self.busy_until = start + transmit;
        let mut delay = 0;
        if config.loss > 0.0 {
            let rto = latency * 2 * 9 / 8 + 1000;
            for _ in 0..len.div_ceil(PACKET).max(1) {
                let mut packet_delay = 0;
                while rng.f64() < config.loss {
                    packet_delay += rto;
                    self.lost += 1;
                }
                delay = delay.max(packet_delay);
            }
        }
        let arrival = (start + transmit + latency + delay).max(self.last_arrival[stream]);
        self.last_arrival[stream] = arrival;
        arrival
    }
}
