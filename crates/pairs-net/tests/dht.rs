//! Discovery through a private Mainline DHT on loopback: topics, dial by id, bad bootstraps.

use std::net::Ipv4Addr;
use std::time::Duration;

use mainline::Testnet;
use pairs_base::{SecretKey, Topic};
use pairs_net::discovery::dht::{DhtConfig, ResolveError};
use pairs_net::swarm::{SWARM_ALPN, Swarm, SwarmConfig, TopicEvent};
use pairs_net::{Endpoint, EndpointConfig, Router};

const WAIT: Duration = Duration::from_secs(30);

struct Node {
    swarm: Swarm,
    router: Router,
}

impl Node {
    async fn new(bootstrap: &[String]) -> Self {
        let mut config = EndpointConfig::new(SecretKey::generate());
        config.bind = Some("127.0.0.1:0".parse().unwrap());
        let endpoint = Endpoint::bind(config).await.unwrap();
        let mut dht = DhtConfig::with_bootstrap(bootstrap.iter().cloned());
        dht.bind = Some(Ipv4Addr::LOCALHOST);
        dht.query_timeout = Duration::from_secs(5);
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
        Self { swarm, router }
    }
}

async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut).await.expect("timed out")
}

fn testnet(size: usize) -> Testnet {
    Testnet::builder(size)
        .bind_address(Ipv4Addr::LOCALHOST)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sharing_only_a_topic_and_a_bootstrap_meet_through_the_dht() {
    let net = testnet(30);
    let (a, b) = (
        Node::new(&net.bootstrap).await,
        Node::new(&net.bootstrap).await,
    );
    let topic = Topic::from_name("found on the dht");
    let mut ta = a.swarm.join(topic).await.unwrap();
    let mut tb = b.swarm.join(topic).await.unwrap();
    for (handle, other) in [(&mut ta, b.swarm.node_id()), (&mut tb, a.swarm.node_id())] {
        match within(handle.next()).await.unwrap() {
            TopicEvent::Joined(peer) => assert_eq!(peer.node_id(), other),
            TopicEvent::Left(id) => panic!("unexpected leave of {id}"),
        }
    }
    let status = a.swarm.dht().unwrap().status().await;
    assert_eq!(status.topics.len(), 1);
    assert!(status.topics[0].announced.is_some() || status.topics[0].lookups > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_dialed_by_its_id_alone() {
    let net = testnet(30);
    let (a, b) = (
        Node::new(&net.bootstrap).await,
        Node::new(&net.bootstrap).await,
    );
    let a_id = a.swarm.node_id();
    let dht = b.swarm.dht().unwrap();
    // a publishes its record as soon as its addresses are known; b retries until it is stored.
    let addr = within(async {
        loop {
            match dht.resolve(a_id).await {
                Ok(addr) => return addr,
                Err(ResolveError::NotFound { refused, .. }) => assert_eq!(refused, 0),
                Err(err) => panic!("{err}"),
            }
        }
    })
    .await;
    assert_eq!(addr.node_id, a_id);
    assert!(
        addr.addrs.contains(&a.router.endpoint().local_addr()),
        "{addr:?}"
    );
    let conn = within(b.router.endpoint().connect(&addr, SWARM_ALPN))
        .await
        .unwrap();
    assert_eq!(conn.remote_node_id(), a_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bootstrap_gives_a_clear_answer_not_a_hang() {
    // Nothing listens on this port of the loopback.
    let dead = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().to_string()
    };
    let a = Node::new(&[dead]).await;
    let dht = a.swarm.dht().unwrap();
    let err = within(dht.resolve(SecretKey::generate().node_id()))
        .await
        .unwrap_err();
    assert!(matches!(err, ResolveError::NotBootstrapped), "{err}");
    let status = dht.status().await;
    assert!(!status.bootstrapped && !status.bootstrapping, "{status:?}");
}
