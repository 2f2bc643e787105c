//! A thousand nodes sharing one live log, in virtual time: propagation, a partition that heals,
//! churn, and a tenth of the nodes Byzantine. Deterministic: `PAIRS_SIM_SEED=N` replays a run.
//!
//! `cargo test -p pairs-sim --test scenarios -- --nocapture` prints the figures.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use pairs_sim::{Config, Delivery, Role, Sim, link::LinkConfig};

const NODES: usize = 1000;
/// Time for the overlay to form (bootstrap peers, then peer exchange every 30 s).
const WARM_UP: Duration = Duration::from_secs(60);

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

/// CPU time this thread has used (Linux; zero elsewhere), so figures hold on a busy machine.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime and stime are the 12th and 13th.
    let fields: Vec<u64> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    Duration::from_millis(fields.iter().sum::<u64>() * 10)
}

fn row(name: &str, d: &Delivery, sim: &Sim, wall: Duration) {
    let honest: Vec<usize> = (0..sim.len())
        .filter(|&n| sim.role(n).is_honest())
        .collect();
    let degree = honest.iter().map(|&n| sim.degree(n)).sum::<usize>() as f64 / honest.len() as f64;
    println!(
        "| {name} | {} | {} | {} | {} ms | {} ms | {} ms | {:.1} | {:.1} | {:.1} s | {:.1} s |",
        sim.len(),
        d.entries,
        d.misses,
        d.percentile(50.0).as_millis(),
        d.percentile(99.0).as_millis(),
        d.percentile(100.0).as_millis(),
        degree,
        sim.counters.duplicates as f64 / sim.counters.received.max(1) as f64,
        wall.as_secs_f64(),
        cpu().as_secs_f64(),
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
    write_burst(&mut sim, 3, secs(10.0), secs(5.0));
    sim.collect_session_stats();
    let d = sim.delivery(honest(&sim));
    row("live log", &d, &sim, wall.elapsed());
    assert_eq!(d.misses, 0, "{d}");
    assert!(d.percentile(99.0) < secs(1.0), "{d}");
    assert_eq!(
        head_sets(&sim, |_| true),
        1,
        "every replica has the same heads"
    );
}

#[test]
fn a_partition_heals_to_identical_heads() {
    let wall = Instant::now();
    let seed = pairs_sim::seed(2);
    let mut sim = Sim::new(Config {
        nodes: NODES,
        seed,
        ..Config::default()
    });
    sim.run_until(WARM_UP);
    sim.partition(|n| n % 2 == 0);
    // Both halves keep writing while cut off from each other.
    write_burst(&mut sim, 2, secs(20.0), secs(10.0));
    let split = head_sets(&sim, |_| true);
    sim.heal();
    let healed_at = sim.now();
    let mut converged = None;
    for step in 1..=36 {
        sim.run_until(healed_at + secs(5.0 * step as f64));
        if head_sets(&sim, |_| true) == 1 {
            converged = Some(sim.now() - healed_at);
            break;
        }
    }
    sim.collect_session_stats();
    let d = sim.delivery(|_| true);
    row("partition + heal", &d, &sim, wall.elapsed());
    println!(
        "  {split} head sets while split; identical heads {:?} after healing",
        converged
    );
    assert!(split >= 2, "the halves diverged while cut off");
    assert!(
        converged.is_some(),
        "replicas still differ 3 minutes after healing"
    );
    assert_eq!(d.misses, 0, "{d}");
}

#[test]
fn ten_percent_churn_per_minute() {
    let wall = Instant::now();
    let seed = pairs_sim::seed(3);
    let mut sim = Sim::new(Config {
        nodes: NODES,
        seed,
        ..Config::default()
    });
    sim.run_until(WARM_UP);
    let writers = sim.writers();
    // For two minutes: every 6 s ten nodes leave (100 a minute), each back 20-60 s later, half
    // with their store, half with an empty one; a writer appends every 3 s.
    let start = sim.now();
    let mut away: Vec<(Duration, usize)> = Vec::new();
    let mut left = 0;
    for tick in 0..120 {
        let now = start + secs(tick as f64);
        sim.run_until(now);
        away.sort();
        while away.first().is_some_and(|(at, _)| *at <= now) {
            let (_, n) = away.remove(0);
            sim.rejoin(n);
        }
        if tick % 6 == 0 {
            for _ in 0..10 {
                let count = sim.len();
                let n = sim.rng().usize(0..count);
                if sim.is_online(n) {
                    let keep = sim.rng().bool();
                    sim.leave(n, keep);
                    let back = now + secs(20.0 + 40.0 * sim.rng().f64());
                    away.push((back, n));
                    left += 1;
                }
            }
        }
        let w = writers[(tick / 3) % writers.len()];
        if tick % 3 == 0 && sim.is_online(w) {
            sim.append(w);
        }
    }
    for (_, n) in away.drain(..) {
        sim.rejoin(n);
    }
    let end = sim.now();
    let mut converged = None;
    for step in 1..=24 {
        sim.run_until(end + secs(5.0 * step as f64));
        if head_sets(&sim, |_| true) == 1 && sim.delivery(|_| true).misses == 0 {
            converged = Some(sim.now() - end);
            break;
        }
    }
    sim.collect_session_stats();
    let d = sim.delivery(|_| true);
    let present = sim.delivery_present(|_| true, secs(5.0));
    row("churn 10%/min", &d, &sim, wall.elapsed());
    row("churn: nodes present", &present, &sim, wall.elapsed());
    let alone = (0..sim.len()).filter(|&n| sim.degree(n) == 0).count();
    println!(
        "  {left} departures; every replica identical {converged:?} after the churn stopped; {alone} nodes without a connection"
    );
    assert_eq!(present.misses, 0, "{present}");
    assert!(present.percentile(99.0) < secs(1.0), "{present}");
    assert!(
        converged.is_some(),
        "replicas still differ 2 minutes after the churn"
    );
    assert_eq!(d.misses, 0, "{d}");
}

#[test]
fn a_tenth_byzantine() {
    let wall = Instant::now();
    let seed = pairs_sim::seed(4);
    let mut sim = Sim::new(Config {
        nodes: NODES,
        seed,
        byzantine: 0.1,
        ..Config::default()
    });
    sim.run_until(WARM_UP);
    sim.attack_from(WARM_UP);
    write_burst(&mut sim, 3, secs(10.0), secs(10.0));
    sim.collect_session_stats();
    let honest_nodes: Vec<usize> = (0..sim.len())
        .filter(|&n| sim.role(n) == Role::Honest)
        .collect();
    let accepted: usize = honest_nodes
        .iter()
        .map(|&n| {
            sim.forged()
                .iter()
                .filter(|id| sim.log(n).contains(id))
                .count()
        })
        .sum();
    let d = sim.delivery(honest(&sim));
    row("10% Byzantine", &d, &sim, wall.elapsed());
    println!(
        "  {} forged entries sent, {accepted} accepted by honest nodes; {} equivocations",
        sim.forged().len(),
        sim.equivocations().len()
    );
    assert!(!sim.forged().is_empty());
    assert_eq!(accepted, 0, "a forged entry was accepted");
    assert_eq!(d.misses, 0, "{d}");
    assert!(d.percentile(99.0) < secs(1.0), "{d}");
    assert_eq!(head_sets(&sim, honest(&sim)), 1, "honest replicas agree");
    // Equivocation is not forgery: both entries are signed by a writer. Every honest replica keeps
    // both and records the fork.
    for &(first, second) in sim.equivocations() {
        for &n in &honest_nodes {
            let log = sim.log(n);
            assert!(log.contains(&first) && log.contains(&second));
            let recorded = log.equivocations().expect("read");
            assert!(recorded.iter().any(|e| {
                (e.first == first && e.second == second) || (e.first == second && e.second == first)
            }));
        }
    }
}
