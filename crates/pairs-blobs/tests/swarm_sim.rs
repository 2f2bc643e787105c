//! The blob swarm's sans-IO core driven in one process with virtual time: honest, corrupting, lying and
//! stalling peers on links with capped upload rates. Deterministic: same seed, same run.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use pairs_blobs::layer::{GROUP_SIZE, group_count, group_len};
use pairs_blobs::wire::Message;
use pairs_blobs::{Action, Bitfield, BlobSwarm, Hash, Layer, SwarmConfig};

const TICK: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    Honest,
    /// Flips a bit in every group it sends.
    Corrupt,
    /// Says it has everything, holds nothing, refuses every request.
    Liar,
    /// Says it has everything and never answers a request.
    Staller,
    /// Downloads like anyone, never unchokes anyone.
    FreeRider,
}

struct SimNode {
    swarm: BlobSwarm,
    behaviour: Behaviour,
    data: Vec<Option<Vec<u8>>>,
    /// Bytes this node may upload per tick (all links together).
    upload_per_tick: usize,
    uploaded: u64,
    /// Upload credit carried between ticks (a group may overdraw it; the debt is paid next tick).
    credit: i64,
    done_at: Option<Duration>,
    dropped: Vec<(usize, String, bool)>,
}

struct Sim {
    nodes: Vec<SimNode>,
    /// Frames in flight per directed link (from, to).
    links: BTreeMap<(usize, usize), VecDeque<Message>>,
    content: Vec<u8>,
    hash: Hash,
    now: Duration,
}

fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

fn config(seed: u64) -> SwarmConfig {
    SwarmConfig {
        seed,
        rechoke: Duration::from_secs(2),
        stall: Duration::from_secs(1),
        ..SwarmConfig::default()
    }
}

impl Sim {
    fn new(content: Vec<u8>) -> Self {
        let hash = Hash::of(&content);
        Sim {
            nodes: Vec::new(),
            links: BTreeMap::new(),
            content,
            hash,
            now: Duration::ZERO,
        }
    }

    fn add(&mut self, seeded: bool, behaviour: Behaviour, upload_per_tick: usize) -> usize {
        let index = self.nodes.len();
        let size = self.content.len() as u64;
        let groups = group_count(size);
        let claims_all = seeded || matches!(behaviour, Behaviour::Liar | Behaviour::Staller);
        let mut config = config(index as u64 + 1);
        if behaviour == Behaviour::FreeRider {
            config.upload_slots = 0;
            config.optimistic_slots = 0;
        }
        let swarm = if claims_all {
            let (_, layer) = Layer::of(&self.content);
            BlobSwarm::with_layer(self.hash, layer, Bitfield::full(groups), config)
        } else {
            BlobSwarm::new(self.hash, config)
        };
        let data = (0..groups)
            .map(|g| {
                (seeded && behaviour != Behaviour::Liar).then(|| {
                    let start = (g * GROUP_SIZE) as usize;
                    self.content[start..start + group_len(size, g)].to_vec()
                })
            })
            .collect();
        self.nodes.push(SimNode {
            swarm,
            behaviour,
            data,
            upload_per_tick,
            uploaded: 0,
            credit: 0,
            done_at: if seeded { Some(Duration::ZERO) } else { None },
            dropped: Vec::new(),
        });
        index
    }

    /// A peer holding the groups `holds` picks, with the layer.
    fn add_partial(&mut self, holds: impl Fn(u64) -> bool, upload_per_tick: usize) -> usize {
        let index = self.nodes.len();
        let size = self.content.len() as u64;
        let groups = group_count(size);
        let mut have = Bitfield::new(groups);
        let data = (0..groups)
            .map(|g| {
                holds(g).then(|| {
                    have.set(g);
                    let start = (g * GROUP_SIZE) as usize;
                    self.content[start..start + group_len(size, g)].to_vec()
                })
            })
            .collect();
        let (_, layer) = Layer::of(&self.content);
        let swarm = BlobSwarm::with_layer(self.hash, layer, have, config(index as u64 + 1));
        self.nodes.push(SimNode {
            swarm,
            behaviour: Behaviour::Honest,
            data,
            upload_per_tick,
            uploaded: 0,
            credit: 0,
            done_at: None,
            dropped: Vec::new(),
        });
        index
    }

    fn connect(&mut self, a: usize, b: usize) {
        self.links.insert((a, b), VecDeque::new());
        self.links.insert((b, a), VecDeque::new());
        let now = self.now;
        self.nodes[a].swarm.add_peer(b as u64, now);
        self.nodes[b].swarm.add_peer(a as u64, now);
    }

    fn mesh(&mut self) {
        for a in 0..self.nodes.len() {
            for b in a + 1..self.nodes.len() {
                self.connect(a, b);
            }
        }
    }

    /// Applies every pending action of node `i`.
    fn drain(&mut self, i: usize) {
        while let Some(action) = self.nodes[i].swarm.poll_action() {
            let node = &mut self.nodes[i];
            match action {
                Action::Send(to, message) => {
                    if let Some(link) = self.links.get_mut(&(i, to as usize)) {
                        link.push_back(message);
                    }
                }
                Action::Serve(to, group) => {
                    let message = match (node.behaviour, &node.data[group as usize]) {
                        (Behaviour::Staller, _) => None,
                        (Behaviour::Liar, _) | (_, None) => Some(Message::Reject {
                            start: group,
                            count: 1,
                        }),
                        (Behaviour::Corrupt, Some(bytes)) => {
                            let mut bytes = bytes.clone();
                            let middle = bytes.len() / 2;
                            bytes[middle] ^= 0x10;
                            Some(Message::Data { group, bytes })
                        }
                        (Behaviour::Honest | Behaviour::FreeRider, Some(bytes)) => {
                            Some(Message::Data {
                                group,
                                bytes: bytes.clone(),
                            })
                        }
                    };
                    let rejected = matches!(message, Some(Message::Reject { .. }));
                    if let (Some(message), Some(link)) =
                        (message, self.links.get_mut(&(i, to as usize)))
                    {
                        link.push_back(message);
                    }
                    if rejected {
                        self.nodes[i].swarm.on_sent(to);
                    }
                }
                Action::Write(group, bytes) => node.data[group as usize] = Some(bytes),
                Action::LayerReady(layer) => assert_eq!(layer.size(), self.content.len() as u64),
                Action::Complete => {
                    node.done_at.get_or_insert(self.now);
                }
                Action::Drop { peer, reason, ban } => {
                    node.dropped.push((peer as usize, reason, ban));
                    self.links.remove(&(i, peer as usize));
                    self.links.remove(&(peer as usize, i));
                    self.nodes[peer as usize].swarm.remove_peer(i as u64);
                }
            }
        }
    }

    fn step(&mut self) {
        self.now += TICK;
        let now = self.now;
        for i in 0..self.nodes.len() {
            self.nodes[i].swarm.tick(now);
            self.drain(i);
        }
        // Deliver: each node uploads at most its budget per tick, round robin over its links.
        for from in 0..self.nodes.len() {
            let node = &mut self.nodes[from];
            node.credit =
                (node.credit + node.upload_per_tick as i64).min(node.upload_per_tick as i64);
            let mut budget = node.credit;
            let mut targets: Vec<usize> = self
                .links
                .keys()
                .filter(|(f, _)| *f == from)
                .map(|&(_, t)| t)
                .collect();
            // Each tick starts the round robin at another link, so no link is starved.
            if !targets.is_empty() {
                let shift = (self.now.as_millis() / TICK.as_millis()) as usize % targets.len();
                targets.rotate_left(shift);
            }
            let mut progress = true;
            while progress && budget > 0 {
                progress = false;
                for &to in &targets {
                    let Some(link) = self.links.get_mut(&(from, to)) else {
                        continue;
                    };
                    let Some(message) = link.pop_front() else {
                        continue;
                    };
                    let cost = match &message {
                        Message::Data { bytes, .. } => bytes.len(),
                        _ => 16,
                    };
                    budget -= cost as i64;
                    let data = matches!(message, Message::Data { .. });
                    if data {
                        self.nodes[from].uploaded += cost as u64;
                    }
                    self.nodes[to].swarm.on_message(from as u64, message, now);
                    self.drain(to);
                    if data {
                        // Delivered: the sender's upload queue has room for its next choice.
                        self.nodes[from].swarm.on_sent(to as u64);
                        self.drain(from);
                    }
                    progress = true;
                    if budget <= 0 {
                        break;
                    }
                }
            }
            self.nodes[from].credit = budget;
        }
    }

    fn run_until_done(&mut self, leechers: &[usize], limit: Duration) {
        while self.now < limit {
            if leechers.iter().all(|&i| self.nodes[i].done_at.is_some()) {
                return;
            }
            self.step();
        }
        panic!(
            "not done by {limit:?}: {:?}",
            leechers
                .iter()
                .map(|&i| self.nodes[i].swarm.bytes_held())
                .collect::<Vec<_>>()
        );
    }

    fn assert_intact(&self, i: usize) {
        let got: Vec<u8> = self.nodes[i]
            .data
            .iter()
            .flat_map(|g| g.clone().expect("every group"))
            .collect();
        assert!(got == self.content, "node {i} holds other bytes");
    }
}

const MB: usize = 1 << 20;

#[test]
fn one_seeder_one_leecher() {
    let mut sim = Sim::new(content(3 * MB + 123, 1));
    sim.add(true, Behaviour::Honest, 64 * 1024);
    let leecher = sim.add(false, Behaviour::Honest, 64 * 1024);
    sim.mesh();
    sim.run_until_done(&[leecher], Duration::from_secs(60));
    sim.assert_intact(leecher);
}

#[test]
fn tiny_and_empty_blobs() {
    for len in [0, 1, 5000, GROUP_SIZE as usize, GROUP_SIZE as usize + 1] {
        let mut sim = Sim::new(content(len, 2));
        sim.add(true, Behaviour::Honest, 64 * 1024);
        let leecher = sim.add(false, Behaviour::Honest, 64 * 1024);
        sim.mesh();
        sim.run_until_done(&[leecher], Duration::from_secs(10));
        sim.assert_intact(leecher);
    }
}

#[test]
fn a_corrupting_seeder_is_banned_and_the_file_arrives_intact() {
    let mut sim = Sim::new(content(2 * MB, 3));
    let corrupter = sim.add(true, Behaviour::Corrupt, 64 * 1024);
    sim.add(true, Behaviour::Honest, 64 * 1024);
    let leecher = sim.add(false, Behaviour::Honest, 64 * 1024);
    sim.mesh();
    sim.run_until_done(&[leecher], Duration::from_secs(60));
    sim.assert_intact(leecher);
    let dropped = &sim.nodes[leecher].dropped;
    assert!(
        dropped
            .iter()
            .any(|(p, why, ban)| *p == corrupter && *ban && why.contains("corrupt")),
        "corrupter not banned: {dropped:?}"
    );
}

#[test]
fn four_seeders_one_lying_the_download_completes_from_the_others() {
    let mut sim = Sim::new(content(4 * MB, 4));
    for _ in 0..3 {
        sim.add(true, Behaviour::Honest, 32 * 1024);
    }
    let liar = sim.add(false, Behaviour::Liar, 32 * 1024);
    let leecher = sim.add(false, Behaviour::Honest, 1 << 30);
    sim.mesh();
    sim.run_until_done(&[leecher], Duration::from_secs(120));
    sim.assert_intact(leecher);
    let dropped = &sim.nodes[leecher].dropped;
    assert!(
        dropped.iter().any(|(p, _, ban)| *p == liar && *ban),
        "liar kept: {dropped:?}"
    );
}

#[test]
fn a_staller_loses_its_groups_to_the_others() {
    let mut sim = Sim::new(content(2 * MB, 5));
    sim.add(false, Behaviour::Staller, 64 * 1024);
    sim.add(true, Behaviour::Honest, 64 * 1024);
    let leecher = sim.add(false, Behaviour::Honest, 1 << 30);
    sim.mesh();
    sim.run_until_done(&[leecher], Duration::from_secs(60));
    sim.assert_intact(leecher);
}

#[test]
fn four_capped_seeders_add_up() {
    // Each seeder uploads 32 KiB per 10 ms tick (3.2 MB/s); four should give ~12.8 MB/s.
    let size = 16 * MB;
    let mut sim = Sim::new(content(size, 6));
    let rate = 32 * 1024;
    for _ in 0..4 {
        sim.add(true, Behaviour::Honest, rate);
    }
    let leecher = sim.add(false, Behaviour::Honest, 1 << 30);
    sim.mesh();
    sim.run_until_done(&[leecher], Duration::from_secs(60));
    sim.assert_intact(leecher);
    let bound = Duration::from_secs_f64(size as f64 / (4.0 * rate as f64) * TICK.as_secs_f64());
    let took = sim.nodes[leecher].done_at.unwrap();
    eprintln!("four seeders: {took:?}, lower bound {bound:?}");
    assert!(
        took.as_secs_f64() <= bound.as_secs_f64() * 1.1,
        "took {took:?}, bound {bound:?}"
    );
    for seeder in 0..4 {
        let share = sim.nodes[seeder].uploaded as f64 / size as f64;
        assert!(
            share > 0.2,
            "seeder {seeder} sent only {share:.2} of the file"
        );
    }
}

#[test]
fn one_slow_seeder_does_not_hold_the_others_back() {
    let size = 8 * MB;
    let mut sim = Sim::new(content(size, 7));
    let rates = [32 * 1024, 32 * 1024, 32 * 1024, 3 * 1024];
    for rate in rates {
        sim.add(true, Behaviour::Honest, rate);
    }
    let leecher = sim.add(false, Behaviour::Honest, 1 << 30);
    sim.mesh();
    sim.run_until_done(&[leecher], Duration::from_secs(60));
    sim.assert_intact(leecher);
    let total: usize = rates.iter().sum();
    let bound = size as f64 / total as f64 * TICK.as_secs_f64();
    let took = sim.nodes[leecher].done_at.unwrap().as_secs_f64();
    eprintln!("slow seeder: {took:.2}s, lower bound {bound:.2}s");
    assert!(took <= bound / 0.9, "took {took:.2}s, bound {bound:.2}s");
}

#[test]
fn flash_crowd_spreads_pieces_among_leechers() {
    let size = 4 * MB;
    let mut sim = Sim::new(content(size, 8));
    let rate = 32 * 1024;
    let seed = sim.add(true, Behaviour::Honest, rate);
    let leechers: Vec<usize> = (0..10)
        .map(|_| sim.add(false, Behaviour::Honest, rate))
        .collect();
    sim.mesh();
    // The seed's upload at the moment every group first exists at some leecher.
    let groups = group_count(size as u64) as usize;
    let mut seeded_when_spread = None;
    while leechers.iter().any(|&l| sim.nodes[l].done_at.is_none()) {
        assert!(sim.now < Duration::from_secs(120), "flash crowd not done");
        sim.step();
        if seeded_when_spread.is_none()
            && (0..groups).all(|g| leechers.iter().any(|&l| sim.nodes[l].data[g].is_some()))
        {
            seeded_when_spread = Some(sim.nodes[seed].uploaded as f64 / size as f64);
        }
    }
    let spread = seeded_when_spread.expect("every group spread");
    for &l in &leechers {
        sim.assert_intact(l);
    }
    let seeded = sim.nodes[seed].uploaded as f64 / size as f64;
    let last = leechers
        .iter()
        .map(|&l| sim.nodes[l].done_at.unwrap())
        .max()
        .unwrap();
    let bound = Duration::from_secs_f64(size as f64 / rate as f64 * TICK.as_secs_f64());
    eprintln!(
        "flash crowd: seed uploaded {spread:.2}x the file before every group existed elsewhere, \
         {seeded:.2}x in all; last done at {last:?} (lower bound {bound:?})"
    );
    assert!(
        spread < 2.0,
        "seed uploaded {spread:.2}x the file before every group existed elsewhere"
    );
}

#[test]
fn a_free_rider_gets_a_small_share_while_upload_is_contended() {
    // Six contributors each hold half of the file, so each wants more than the others can upload
    // (every upload capped alike); a seventh peer holds nothing and never uploads.
    let size = 8 * MB;
    let mut sim = Sim::new(content(size, 9));
    let rate = 16 * 1024;
    // Each group is held by three of the six, chosen at random.
    let mut rng = fastrand::Rng::with_seed(10);
    let holders: Vec<Vec<usize>> = (0..group_count(size as u64))
        .map(|_| {
            let mut six: Vec<usize> = (0..6).collect();
            rng.shuffle(&mut six);
            six[..3].to_vec()
        })
        .collect();
    let contributors: Vec<usize> = (0..6)
        .map(|c| {
            let holders = holders.clone();
            sim.add_partial(move |g| holders[g as usize].contains(&c), rate)
        })
        .collect();
    let rider = sim.add(false, Behaviour::FreeRider, rate);
    sim.mesh();
    // Measured until the first contributor completes: from then on it seeds, and serves anyone.
    while contributors.iter().all(|&c| sim.nodes[c].done_at.is_none()) {
        assert!(
            sim.now < Duration::from_secs(300),
            "no contributor completed"
        );
        sim.step();
    }
    let secs = sim.now.as_secs_f64();
    let contributor_rate = contributors
        .iter()
        .map(|&c| sim.nodes[c].swarm.bytes_received() as f64 / secs)
        .sum::<f64>()
        / contributors.len() as f64;
    let rider_rate = sim.nodes[rider].swarm.bytes_held() as f64 / secs;
    let ratio = rider_rate / contributor_rate;
    eprintln!(
        "free rider: {:.0} KiB/s vs contributors {:.0} KiB/s ({ratio:.2}) while they download",
        rider_rate / 1024.0,
        contributor_rate / 1024.0
    );
    assert!(
        ratio <= 0.2,
        "free rider got {ratio:.2} of a contributor's rate"
    );
    sim.run_until_done(&[rider], Duration::from_secs(600));
    sim.assert_intact(rider);
}

#[test]
fn a_reader_window_set_before_the_layer_is_fetched_first() {
    let size = 8 * MB;
    let mut sim = Sim::new(content(size, 9));
    sim.add(true, Behaviour::Honest, 64 * 1024);
    let reader = sim.add(false, Behaviour::Honest, 64 * 1024);
    // Half a MiB near the end, asked for before anything is known of the blob (a gateway request
    // that arrives first).
    let (start, end) = (6 * MB as u64, 6 * MB as u64 + MB as u64 / 2);
    sim.nodes[reader].swarm.set_reader_window(start, end);
    sim.mesh();
    let (first, last) = (start / GROUP_SIZE, end / GROUP_SIZE);
    let window_held = |sim: &Sim| {
        sim.nodes[reader]
            .swarm
            .have()
            .is_some_and(|have| (first..last).all(|g| have.get(g)))
    };
    while !window_held(&sim) {
        assert!(sim.now < Duration::from_secs(60), "the window never came");
        sim.step();
    }
    let held = sim.nodes[reader].swarm.bytes_held();
    // The window, the last group (which proves the size) and little else: not a random quarter.
    assert!(
        held <= end - start + MB as u64 / 4,
        "the window came first: {held} bytes held when it was complete"
    );
    for g in first..last {
        let at = (g * GROUP_SIZE) as usize;
        assert!(
            sim.nodes[reader].data[g as usize].as_deref()
                == Some(&sim.content[at..at + GROUP_SIZE as usize]),
            "group {g} is the content's"
        );
    }
    sim.run_until_done(&[reader], Duration::from_secs(60));
    sim.assert_intact(reader);
}

#[test]
fn a_layer_longer_than_the_request_window_arrives_part_by_part() {
    // 40 MB: 2,442 groups, 10 layer parts, more than are asked for at once.
    let mut sim = Sim::new(content(40 * MB, 11));
    sim.add(true, Behaviour::Honest, 1 << 30);
    let leecher = sim.add(false, Behaviour::Honest, 1 << 30);
    sim.mesh();
    sim.run_until_done(&[leecher], Duration::from_secs(60));
    sim.assert_intact(leecher);
}

#[test]
fn a_huge_claimed_size_queues_only_a_window_of_layer_requests() {
    // Found by the blob_swarm fuzz target: a peer claiming the protocol's largest size made the
    // swarm queue every layer request at once (16 million frames) and a slot for every part.
    let hash = Hash::of(b"anything");
    let mut swarm = BlobSwarm::new(hash, config(1));
    let now = Duration::from_secs(1);
    swarm.add_peer(1, now);
    swarm.on_message(1, Message::Hello { version: 1, hash }, now);
    swarm.on_message(
        1,
        Message::Status(pairs_blobs::wire::Holding::All {
            size: pairs_blobs::wire::MAX_BLOB_SIZE,
        }),
        now,
    );
    let mut layer_requests = 0;
    while let Some(action) = swarm.poll_action() {
        if let Action::Send(_, Message::LayerRequest { .. }) = action {
            layer_requests += 1;
        }
    }
    assert!((1..=8).contains(&layer_requests), "{layer_requests}");
}
