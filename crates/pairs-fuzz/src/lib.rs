//! The fuzz targets of pairs: one function per decoder and per state machine fed by the network.
//!
//! Each target takes the fuzzer's bytes and must never panic, whatever they are; where a promise is
//! cheap to check (a decoded value encodes back to itself, nothing unverified is stored, a list
//! stays within its bound), the target asserts it, so a broken promise is a crash too. Stateful
//! targets read a sequence of frames, events and time steps from the bytes with `arbitrary`.
//!
//! `fuzz/` (cargo-fuzz) runs them with libFuzzer; `tests/corpus.rs` replays the committed corpus and
//! every crash found so far through them on stable Rust, as part of the test suite. Nothing here
//! opens a socket: every target is sans-IO or reads from memory.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

pub mod base;
pub mod blobs;
pub mod control;
pub mod gateway;
pub mod log;
pub mod net;
pub mod share;

/// A fuzz target: takes any bytes, panics only on a bug.
pub type Target = fn(&[u8]);

/// Every target by name (the name of its file under `fuzz/fuzz_targets/` and its corpus directory).
pub const TARGETS: &[(&str, Target)] = &[
    ("ticket", base::ticket),
    ("log_frames", log::frames),
    ("log_session", log::session),
    ("swarm_control", net::swarm_control),
    ("nat_wire", net::nat_wire),
    ("stun", net::stun),
    ("punch", net::punch),
    ("turn", net::turn),
    ("dht_record", net::dht_record),
    ("mdns_txt", net::mdns_txt),
    ("mdns_packet", net::mdns_packet),
    ("blob_wire", blobs::wire),
    ("blob_collection", blobs::collection),
    ("blob_swarm", blobs::swarm),
    ("share_model", share::model),
    ("control_frames", control::frames),
    ("gateway", gateway::request),
    ("config", control::config),
];

/// Runs a future that never waits (it reads from memory) to completion.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}
