//! A thousand nodes sharing one live log, in virtual time: propagation, a partition that heals,
//! churn, and a tenth of the nodes Byzantine. Deterministic: `PAIRS_SIM_SEED=N` replays a run.
//!
//! `cargo test -p pairs-sim --test scenarios -- --nocapture` prints the figures.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use pairs_sim::{Config, Delivery, Role, Sim, link::LinkConfig};

const NODES: usize = 1000;
/// Time for the overlay to form (bootstrap peers, then peer exchange every 30 s).
const WARM_UP: Duration = Duration::from_secs(120);

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// Writers append `per_writer` entries each, one at a time, at random moments of `window` from
/// the current time, then the network gets `settle` more.
fn write_burst(sim: &mut Sim, per_writer: usize, window: Duration, settle: Duration) {
    let start = sim.now();
    let mut plan: Vec<(Duration, usize)> = Vec::new();
    for w in sim.writers() {
        for _ in 0..per_writer {
            let at = start + secs(sim.rng().f64() * window.as_secs_f64());
            plan.push((at, w));
        }
    }
    plan.sort();
    for (at, w) in plan {
        sim.run_until(at);
        if sim.is_online(w) {
            sim.append(w);
        }
    }
    sim.run_until(start + window + settle);
}

fn honest(sim: &Sim) -> impl Fn(usize) -> bool + '_ {
    |n| sim.role(n).is_honest()
}

fn row(name: &str, d: &Delivery, sim: &Sim, wall: Duration) {
    let honest: Vec<usize> = (0..sim.len()).filter(|&n| sim.role(n).is_honest()).collect();
    let degree = honest.iter().map(|&n| sim.degree(n)).sum::<usize>() as f64 / honest.len() as f64;
    println!(
        "| {name} | {} | {} | {} | {} ms | {} ms | {} ms | {:.1} | {:.1} | {:.1} s |",
        sim.len(),
        d.entries,
        d.misses,
        d.percentile(50.0).as_millis(),
        d.percentile(99.0).as_millis(),
        d.percentile(100.0).as_millis(),
        degree,
        sim.counters.duplicates as f64 / sim.counters.received.max(1) as f64,
        wall.as_secs_f64(),
    );
    println!("  counters: {:?}", sim.counters);
}

/// Every honest online node holds the same heads; returns how many distinct head sets there are.
fn head_sets(sim: &Sim, counted: impl Fn(usize) -> bool) -> usize {
    let sets: BTreeSet<Vec<_>> = (0..sim.len())
        .filter(|&n| counted(n))
        .map(|n| sim.log(n).heads())
        .collect();
    sets.len()
}

#[test]
fn a_seed_replays_exactly() {
    let run = |seed| {
        let mut sim = Sim::new(Config {
            nodes: 150,
            seed,
            writers: 4,
            link: LinkConfig {
                loss: 0.01,
                ..LinkConfig::default()
            },
            ..Config::default()
        });
        sim.run_until(secs(60.0));
        write_burst(&mut sim, 3, secs(5.0), secs(5.0));
        (sim.digest(), sim.counters.events)
    };
    let seed = pairs_sim::seed(7);
    let first = run(seed);
    assert_eq!(first, run(seed), "the same seed must give the same run");
    assert_ne!(first, run(seed + 1), "another seed, another run");
}

#[test]
fn live_entries_reach_every_node() {
    let wall = Instant::now();
    let seed = pairs_sim::seed(1);
    let mut sim = Sim::new(Config {
        nodes: NODES,
        seed,
        ..Config::default()
    });
    sim.run_until(WARM_UP);
    println!("warm-up: {:?} wall, {:?}", wall.elapsed(), sim.counters);
    write_burst(&mut sim, 5, secs(10.0), secs(10.0));
    sim.collect_session_stats();
    let d = sim.delivery(honest(&sim));
    row("live log", &d, &sim, wall.elapsed());
    assert_eq!(d.misses, 0, "{d}");
    assert!(d.percentile(99.0) < secs(1.0), "{d}");
    assert_eq!(head_sets(&sim, |_| true), 1, "every replica has the same heads");
}
