//! DHT benchmark on a private loopback testnet (run it inside a network namespace; see
//! BENCHMARKS.md): time to announce a topic key and to find it, and time from `Swarm::join` to the
//! first connection through the DHT.
//!
//! `cargo run -p pairs-net --example dht_bench -- [NODES] [TRIALS]`

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use mainline::{Dht, Id, Testnet};
use pairs_base::{SecretKey, Topic};
use pairs_net::discovery::dht::DhtConfig;
use pairs_net::swarm::{SWARM_ALPN, Swarm, SwarmConfig, TopicEvent};
use pairs_net::{Endpoint, EndpointConfig, Router};

fn client(bootstrap: &[String]) -> mainline::async_dht::AsyncDht {
    Dht::builder()
        .bootstrap(bootstrap)
        .bind_address(Ipv4Addr::LOCALHOST)
        .build()
        .expect("DHT client")
        .as_async()
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<34} n={:<3} median {:>7.1} ms   p95 {:>7.1} ms   max {:>7.1} ms",
        ms.len(),
        at(0.5),
        at(0.95),
        at(1.0)
    );
}

async fn swarm_node(bootstrap: &[String]) -> (Swarm, Router) {
    let mut config = EndpointConfig::new(SecretKey::generate());
    config.bind = Some("127.0.0.1:0".parse().unwrap());
    let endpoint = Endpoint::bind(config).await.unwrap();
    let mut dht = DhtConfig::with_bootstrap(bootstrap.iter().cloned());
    dht.bind = Some(Ipv4Addr::LOCALHOST);
    let swarm = Swarm::new(
        endpoint.clone(),
        SwarmConfig {
            mdns: false,
            dht: Some(dht),
            ..SwarmConfig::default()
        },
    )
    .unwrap();
    let router = Router::builder(endpoint)
        .accept(SWARM_ALPN, swarm.handler())
        .spawn();
    (swarm, router)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().map_or(200, |a| a.parse().expect("NODES"));
    let trials: usize = args.next().map_or(20, |a| a.parse().expect("TRIALS"));
    let started = Instant::now();
    let net = Testnet::builder(nodes)
        .bind_address(Ipv4Addr::LOCALHOST)
        .build()
        .expect("testnet");
    println!(
        "testnet: {nodes} mainline nodes on loopback, up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let announcer = client(&net.bootstrap);
    let finder = client(&net.bootstrap);
    announcer.bootstrapped().await;
    finder.bootstrapped().await;

    let (mut announce_ms, mut first_ms, mut done_ms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..trials {
        let hash = Id::random();
        let t = Instant::now();
        announcer
            .announce_peer(hash, Some(4000))
            .await
            .expect("announce");
        announce_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let mut peers = finder.get_peers(hash);
        let mut first = None;
        while let Some(batch) = peers.next().await {
            if first.is_none() && !batch.is_empty() {
                first = Some(t.elapsed());
            }
        }
        first_ms.push(first.expect("announced peer found").as_secs_f64() * 1e3);
        done_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    summary("announce_peer (complete)", announce_ms);
    summary("get_peers: first peer", first_ms);
    summary("get_peers: lookup complete", done_ms);

    // A node already up joins a topic whose member has announced it.
    let mut warm_ms = Vec::new();
    for i in 0..trials.min(10) {
        let topic = Topic::from_name(&format!(
            "bench warm {i} {}",
            SecretKey::generate().node_id()
        ));
        let (a, _ra) = swarm_node(&net.bootstrap).await;
        let (b, _rb) = swarm_node(&net.bootstrap).await;
        let _ta = a.join(topic).await.unwrap();
        assert!(b.dht().unwrap().bootstrapped().await, "bootstrap");
        while a.dht().unwrap().status().await.topics[0]
            .announced
            .is_none()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t = Instant::now();
        let mut tb = b.join(topic).await.unwrap();
        first_joined(&mut tb).await;
        warm_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    summary("join (node up, member announced)", warm_ms);

    // Two fresh nodes start and join at the same moment: neither has announced yet.
    let mut cold_ms = Vec::new();
    for i in 0..trials.min(10) {
        let topic = Topic::from_name(&format!(
            "bench cold {i} {}",
            SecretKey::generate().node_id()
        ));
        let t = Instant::now();
        let (a, _ra) = swarm_node(&net.bootstrap).await;
        let (b, _rb) = swarm_node(&net.bootstrap).await;
        let _ta = a.join(topic).await.unwrap();
        let mut tb = b.join(topic).await.unwrap();
        first_joined(&mut tb).await;
        cold_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    summary("start + join, both at once", cold_ms);
}

async fn first_joined(events: &mut pairs_net::swarm::TopicHandle) {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), events.next()).await {
            Ok(Some(TopicEvent::Joined(_))) => return,
            Ok(Some(TopicEvent::Left(_))) => {}
            other => panic!("no peer through the DHT: {other:?}"),
        }
    }
}
