//! Swarms over loopback: topics, membership proofs, one connection per pair, leaving, rogue peers.
//! Peers are given to each other directly (no mDNS here; see the CLI's LAN tests for that).

use std::time::Duration;

use pairs_base::{NodeAddr, SecretKey, Topic};
use pairs_net::swarm::membership::{Frame, VERSION};
use pairs_net::swarm::{SWARM_ALPN, Swarm, SwarmConfig, TopicEvent, TopicHandle, TopicPeer};
use pairs_net::{Endpoint, EndpointConfig, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

struct Node {
    swarm: Swarm,
    router: Router,
}

impl Node {
    async fn new() -> Self {
        Self::with_key(SecretKey::generate()).await
    }

    async fn with_key(key: SecretKey) -> Self {
        let mut config = EndpointConfig::new(key);
        config.bind = Some("127.0.0.1:0".parse().unwrap());
        config.connect_timeout = Duration::from_secs(2);
        let endpoint = Endpoint::bind(config).await.unwrap();
        let swarm = Swarm::new(
            endpoint.clone(),
            SwarmConfig {
                mdns: false,
                dht: None,
                ..SwarmConfig::default()
            },
        )
        .unwrap();
        let router = Router::builder(endpoint)
            .accept(SWARM_ALPN, swarm.handler())
            .spawn();
        Self { swarm, router }
    }

    fn addr(&self) -> NodeAddr {
        self.router.endpoint().node_addr()
    }

    fn id(&self) -> pairs_base::NodeId {
        self.swarm.node_id()
    }

    /// Waits until this node's connections settle to exactly `n`.
    async fn wait_connections(&self, n: usize) {
        within(async {
            loop {
                if self.swarm.stats().await.unwrap().connections == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
}

/// A member of `topic` that speaks the swarm protocol by hand: its connection to `a`, the
/// connection's binding, its id and its tag for `topic` (nothing sent yet).
async fn hand_made_member(
    a: &Node,
    topic: &Topic,
) -> (
    pairs_net::Connection,
    [u8; 32],
    pairs_base::NodeId,
    pairs_net::swarm::membership::Tag,
) {
    use pairs_net::swarm::membership::{BINDING_LABEL, tag};
    let key = SecretKey::generate();
    let me = key.node_id();
    let mut config = EndpointConfig::new(key);
    config.bind = Some("127.0.0.1:0".parse().unwrap());
    let member = Endpoint::bind(config).await.unwrap();
    let conn = within(member.connect(&a.addr(), SWARM_ALPN)).await.unwrap();
    let binding = conn.channel_binding(BINDING_LABEL);
    let our_tag = tag(topic, &binding, &me);
    (conn, binding, me, our_tag)
}

async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut).await.expect("timed out")
}

async fn next_joined(topic: &mut TopicHandle) -> TopicPeer {
    match within(topic.next()).await.expect("swarm alive") {
        TopicEvent::Joined(peer) => peer,
        TopicEvent::Left(id) => panic!("unexpected leave of {id}"),
    }
}

#[tokio::test]
async fn three_peers_in_a_topic_each_get_a_stream_to_the_others() {
    let nodes = [Node::new().await, Node::new().await, Node::new().await];
    let topic = Topic::from_name("three");
    let mut handles = Vec::new();
    for node in &nodes {
        handles.push(node.swarm.join(topic).await.unwrap());
    }
    for a in &nodes {
        for b in &nodes {
            if a.id() != b.id() {
                a.swarm.add_peer(b.addr()).unwrap();
            }
        }
    }
    // Each node writes its id on one stream per peer and reads the peer's id back.
    let mut tasks = Vec::new();
    for (i, mut handle) in handles.into_iter().enumerate() {
        let me = nodes[i].id();
        tasks.push(tokio::spawn(async move {
            // Peers are served concurrently, as an application must: the side that accepts waits
            // for the other to open.
            let mut exchanges = Vec::new();
            for _ in 0..2 {
                let mut peer = next_joined(&mut handle).await;
                exchanges.push(tokio::spawn(async move {
                    let mut stream = peer.stream().await.unwrap();
                    stream.write_all(me.as_bytes()).await.unwrap();
                    let mut got = [0u8; 32];
                    stream.read_exact(&mut got).await.unwrap();
                    assert_eq!(&got, peer.node_id().as_bytes());
                    peer.node_id()
                }));
            }
            let mut heard = Vec::new();
            for exchange in exchanges {
                heard.push(exchange.await.unwrap());
            }
            heard.sort();
            (handle, heard)
        }));
    }
    let mut kept = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let (handle, heard) = within(task).await.unwrap();
        kept.push(handle);
        let mut expected: Vec<_> = nodes
            .iter()
            .map(Node::id)
            .filter(|id| *id != nodes[i].id())
            .collect();
        expected.sort();
        assert_eq!(heard, expected);
    }
    for node in &nodes {
        node.wait_connections(2).await;
    }
}

#[tokio::test]
async fn simultaneous_dials_leave_one_connection_per_pair() {
    for _ in 0..5 {
        let (a, b) = (Node::new().await, Node::new().await);
        let topic = Topic::from_name("race");
        let mut ta = a.swarm.join(topic).await.unwrap();
        let mut tb = b.swarm.join(topic).await.unwrap();
        // Both learn of each other at once: both may dial.
        a.swarm.add_peer(b.addr()).unwrap();
        b.swarm.add_peer(a.addr()).unwrap();
        let _pa = next_joined(&mut ta).await;
        let _pb = next_joined(&mut tb).await;
        a.wait_connections(1).await;
        b.wait_connections(1).await;
    }
}

/// A node that restarts under the same key while its old connection is still up replaces that
/// connection: its peer sees it leave, then join again, in that order, and the new session works.
#[tokio::test]
async fn a_restarted_peer_leaves_before_it_joins_again() {
    // The restarted node must hold the smaller id: its new connection then wins over the old one.
    let (k1, k2) = (SecretKey::generate(), SecretKey::generate());
    let (small, large) = if k1.node_id() < k2.node_id() {
        (k1, k2)
    } else {
        (k2, k1)
    };
    let topic = Topic::from_name("restart");
    let a = Node::with_key(large).await;
    let mut ta = a.swarm.join(topic).await.unwrap();
    let b = Node::with_key(small.clone()).await;
    let mut tb = b.swarm.join(topic).await.unwrap();
    b.swarm.add_peer(a.addr()).unwrap();
    let first = next_joined(&mut ta).await;
    next_joined(&mut tb).await;

    // b "restarts": a new process with the same key, while the old one is still connected.
    let b2 = Node::with_key(small).await;
    let mut tb2 = b2.swarm.join(topic).await.unwrap();
    b2.swarm.add_peer(a.addr()).unwrap();
    match within(ta.next()).await.expect("swarm alive") {
        TopicEvent::Left(id) => assert_eq!(id, b.id()),
        TopicEvent::Joined(_) => panic!("the new session joined before the old one left"),
    }
    let mut second = next_joined(&mut ta).await;
    assert_eq!(second.node_id(), b.id());
    assert_ne!(
        first.connection().quinn().stable_id(),
        second.connection().quinn().stable_id()
    );
    let mut theirs = next_joined(&mut tb2).await;
    let (mine, theirs) = tokio::join!(second.stream(), theirs.stream());
    let (mut mine, mut theirs) = (mine.unwrap(), theirs.unwrap());
    mine.write_all(b"still there?").await.unwrap();
    let mut got = [0u8; 12];
    within(theirs.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"still there?");
    a.wait_connections(1).await;
}

#[tokio::test]
async fn peers_without_a_shared_topic_never_meet_and_do_not_stay_connected() {
    let (a, b) = (Node::new().await, Node::new().await);
    let mut ta = a.swarm.join(Topic::from_name("apples")).await.unwrap();
    let _tb = b.swarm.join(Topic::from_name("pears")).await.unwrap();
    a.swarm.add_peer(b.addr()).unwrap();
    b.swarm.add_peer(a.addr()).unwrap();
    // A third node shares "apples" with a: its arrival proves a is processing events.
    let c = Node::new().await;
    let _tc = c.swarm.join(Topic::from_name("apples")).await.unwrap();
    c.swarm.add_peer(a.addr()).unwrap();
    let met = next_joined(&mut ta).await;
    assert_eq!(
        met.node_id(),
        c.id(),
        "only the node sharing the topic is met"
    );
    b.wait_connections(0).await;
    assert_eq!(a.swarm.stats().await.unwrap().peers, vec![c.id()]);
}

#[tokio::test]
async fn joining_later_meets_peers_already_known() {
    let (a, b) = (Node::new().await, Node::new().await);
    let topic = Topic::from_name("later");
    let mut ta = a.swarm.join(topic).await.unwrap();
    let _other = b.swarm.join(Topic::from_name("elsewhere")).await.unwrap();
    a.swarm.add_peer(b.addr()).unwrap();
    b.swarm.add_peer(a.addr()).unwrap();
    // They connect, find nothing shared and part.
    a.wait_connections(0).await;
    // b joins the topic later: b redials a because its topics changed.
    let mut tb = b.swarm.join(topic).await.unwrap();
    assert_eq!(next_joined(&mut ta).await.node_id(), b.id());
    assert_eq!(next_joined(&mut tb).await.node_id(), a.id());
}

#[tokio::test]
async fn leaving_a_topic_tells_the_peer() {
    let (a, b) = (Node::new().await, Node::new().await);
    let topic = Topic::from_name("leave");
    let mut ta = a.swarm.join(topic).await.unwrap();
    let mut tb = b.swarm.join(topic).await.unwrap();
    a.swarm.add_peer(b.addr()).unwrap();
    let mut peer = next_joined(&mut ta).await;
    next_joined(&mut tb).await;
    drop(tb);
    match within(ta.next()).await.unwrap() {
        TopicEvent::Left(id) => assert_eq!(id, b.id()),
        TopicEvent::Joined(_) => panic!("expected a leave"),
    }
    assert!(
        peer.accept_bi().await.is_none(),
        "no more streams from a peer that left"
    );
    a.wait_connections(0).await;
}

#[tokio::test]
async fn joining_twice_is_refused() {
    let a = Node::new().await;
    let topic = Topic::from_name("twice");
    let _first = a.swarm.join(topic).await.unwrap();
    assert!(a.swarm.join(topic).await.is_err());
}

/// A stranger that connects and claims topics with made-up tags meets no one and gets no stream
/// through; a stranger that replays a member's proof from another connection does no better.
#[tokio::test]
async fn a_stranger_claiming_topics_gets_nothing() {
    let a = Node::new().await;
    let topic = Topic::from_name("secret");
    let mut ta = a.swarm.join(topic).await.unwrap();

    let mut config = EndpointConfig::new(SecretKey::generate());
    config.bind = Some("127.0.0.1:0".parse().unwrap());
    let rogue = Endpoint::bind(config).await.unwrap();
    let conn = within(rogue.connect(&a.addr(), SWARM_ALPN)).await.unwrap();
    let mut control = conn.open_uni().await.unwrap();
    control.write_all(&[0]).await.unwrap();
    let forged = Frame::Hello {
        version: VERSION,
        tags: (0..200).map(|i| [i as u8; 16]).collect(),
    };
    control.write_all(&forged.encode()).await.unwrap();
    // A topic stream under a made-up tag is refused.
    let mut stream = conn.open_bi().await.unwrap();
    stream.write_all(&[1]).await.unwrap();
    stream.write_all(&[7u8; 16]).await.unwrap();
    stream.write_all(b"hello?").await.unwrap();
    let mut buf = [0u8; 1];
    let refused = within(stream.read(&mut buf)).await;
    assert!(refused.is_err(), "stream must be reset, got {refused:?}");
    // The node closes the connection: nothing shared.
    let closed = within(conn.closed()).await;
    assert!(closed.to_string().contains("no shared topic"), "{closed}");
    // And no one joined.
    let nothing = tokio::time::timeout(Duration::from_millis(200), ta.next()).await;
    assert!(nothing.is_err(), "a stranger must not join: {nothing:?}");
}

#[tokio::test]
async fn garbage_on_the_control_stream_closes_with_a_reason() {
    let a = Node::new().await;
    let _ta = a.swarm.join(Topic::from_name("x")).await.unwrap();
    for garbage in [
        &[0u8, 0xff, 0xff][..],
        &[0, 0, 3, 0xff, 0xff, 0xff],
        &[9, 1, 2],
    ] {
        let mut config = EndpointConfig::new(SecretKey::generate());
        config.bind = Some("127.0.0.1:0".parse().unwrap());
        let rogue = Endpoint::bind(config).await.unwrap();
        let conn = within(rogue.connect(&a.addr(), SWARM_ALPN)).await.unwrap();
        let mut control = conn.open_uni().await.unwrap();
        control.write_all(garbage).await.unwrap();
        let closed = within(conn.closed()).await.to_string();
        assert!(
            closed.contains("over the limit")
                || closed.contains("malformed")
                || closed.contains("bad control stream"),
            "{garbage:?}: {closed}"
        );
    }
    // The node still works.
    let b = Node::new().await;
    let _tb = b.swarm.join(Topic::from_name("x")).await.unwrap();
    b.swarm.add_peer(a.addr()).unwrap();
    b.wait_connections(1).await;
}

/// Peer exchange: A and C each know only B, yet meet, because B tells each about the other.
#[tokio::test]
async fn members_who_know_only_a_common_peer_meet_through_it() {
    let (a, b, c) = (Node::new().await, Node::new().await, Node::new().await);
    let topic = Topic::from_name("exchange");
    let mut ta = a.swarm.join(topic).await.unwrap();
    let _tb = b.swarm.join(topic).await.unwrap();
    let mut tc = c.swarm.join(topic).await.unwrap();
    a.swarm.add_peer(b.addr()).unwrap();
    c.swarm.add_peer(b.addr()).unwrap();
    for (handle, other) in [(&mut ta, c.id()), (&mut tc, a.id())] {
        let mut met = Vec::new();
        while !met.contains(&other) {
            met.push(next_joined(handle).await.node_id());
        }
        assert!(met.contains(&b.id()), "met {met:?}");
    }
}

/// A member that sends an overlong peer list is cut off with a reason; lists about a topic the
/// node is not in are ignored.
#[tokio::test]
async fn an_overlong_peer_list_closes_the_connection() {
    use pairs_net::swarm::membership::tag;
    use pairs_net::swarm::pex::MAX_ENTRIES;

    let a = Node::new().await;
    let topic = Topic::from_name("members");
    let _ta = a.swarm.join(topic).await.unwrap();
    let (conn, binding, me, our_tag) = hand_made_member(&a, &topic).await;
    let mut control = conn.open_uni().await.unwrap();
    control.write_all(&[0]).await.unwrap();
    let hello = Frame::Hello {
        version: VERSION,
        tags: vec![our_tag],
    };
    control.write_all(&hello.encode()).await.unwrap();
    let peer = |i: u16| {
        NodeAddr::new(
            SecretKey::generate().node_id(),
            [std::net::SocketAddr::from(([127, 0, 0, 1], 40000 + i))],
        )
    };
    // About a topic `a` is not in: ignored, the connection stays.
    let other = tag(&Topic::from_name("elsewhere"), &binding, &me);
    let ignored = Frame::Peers {
        tag: other,
        peers: (0..40).map(peer).collect(),
    };
    control.write_all(&ignored.encode()).await.unwrap();
    let still_open = tokio::time::timeout(Duration::from_millis(300), conn.closed()).await;
    assert!(still_open.is_err(), "closed: {still_open:?}");
    let flood = Frame::Peers {
        tag: our_tag,
        peers: (0..=MAX_ENTRIES as u16).map(peer).collect(),
    };
    control.write_all(&flood.encode()).await.unwrap();
    let closed = within(conn.closed()).await.to_string();
    assert!(closed.contains("over the limit"), "{closed}");
}

/// A member's topic stream that overtakes its hello (they travel on different QUIC streams) waits for
/// the hello instead of being refused.
#[tokio::test]
async fn a_stream_that_arrives_before_the_hello_waits_for_it() {
    let a = Node::new().await;
    let topic = Topic::from_name("overtaken");
    let mut ta = a.swarm.join(topic).await.unwrap();
    let (conn, _, me, our_tag) = hand_made_member(&a, &topic).await;
    // The topic stream first, with data, and only then the hello.
    let mut stream = conn.open_bi().await.unwrap();
    let mut header = vec![1u8];
    header.extend_from_slice(&our_tag);
    stream.write_all(&header).await.unwrap();
    stream.write_all(b"early words").await.unwrap();
    a.wait_connections(1).await;
    let mut control = conn.open_uni().await.unwrap();
    control.write_all(&[0]).await.unwrap();
    let hello = Frame::Hello {
        version: VERSION,
        tags: vec![our_tag],
    };
    control.write_all(&hello.encode()).await.unwrap();
    let mut peer = next_joined(&mut ta).await;
    assert_eq!(peer.node_id(), me);
    let mut got = within(peer.accept_bi()).await.expect("the early stream");
    let mut words = [0u8; 11];
    within(got.read_exact(&mut words)).await.unwrap();
    assert_eq!(&words, b"early words");
}
