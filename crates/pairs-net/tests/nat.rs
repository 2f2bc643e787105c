//! NAT traversal over loopback: STUN answers, introductions and punches through a helper, relay
//! circuits and their budget, and the bound on probes a stranger can cause. The NAT behaviours
//! themselves are tested in the lab (crates/pairs/tests/nat.rs).

use std::net::SocketAddr;
use std::time::Duration;

use pairs_base::{NodeAddr, SecretKey};
use pairs_net::nat::limits::RelayLimits;
use pairs_net::nat::wire::{self, Frame, PunchOffer};
use pairs_net::nat::{ConnectError, Nat, NatConfig, Path, Registration};
use pairs_net::{Connection, Endpoint, EndpointConfig, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const ECHO: &[u8] = b"pairs/test-echo/1";
const WAIT: Duration = Duration::from_secs(20);

async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut).await.expect("timed out")
}

async fn loopback_endpoint() -> Endpoint {
    let mut config = EndpointConfig::new(SecretKey::generate());
    config.bind = Some("127.0.0.1:0".parse().unwrap());
    config.connect_timeout = Duration::from_secs(3);
    Endpoint::bind(config).await.unwrap()
}

/// A node serving the helper protocol and an echo protocol (each stream's bytes sent back).
struct Node {
    nat: Nat,
    router: Router,
    echoed: mpsc::Receiver<Connection>,
}

impl Node {
    async fn start(config: NatConfig) -> Self {
        let endpoint = loopback_endpoint().await;
        let nat = Nat::new(&endpoint, config);
        let (tx, rx) = mpsc::channel::<Connection>(8);
        let (seen_tx, echoed) = mpsc::channel(8);
        let router = Router::builder(endpoint)
            .accept(wire::ALPN, nat.handler())
            .accept(ECHO, tx)
            .spawn();
        tokio::spawn(echo_server(rx, seen_tx));
        Self {
            nat,
            router,
            echoed,
        }
    }

    fn addr(&self) -> NodeAddr {
        self.router.endpoint().node_addr()
    }

    fn id(&self) -> pairs_base::NodeId {
        self.router.endpoint().node_id()
    }
}

async fn echo_server(mut incoming: mpsc::Receiver<Connection>, seen: mpsc::Sender<Connection>) {
    while let Some(connection) = incoming.recv().await {
        let _ = seen.send(connection.clone()).await;
        tokio::spawn(async move {
            while let Ok(stream) = connection.accept_bi().await {
                tokio::spawn(async move {
                    let (mut recv, mut send) = (stream.recv, stream.send);
                    let _ = tokio::io::copy(&mut recv, &mut send).await;
                    let _ = send.finish();
                });
            }
        });
    }
}

/// Sends `data` on a fresh stream and reads back the echo.
async fn echo(connection: &Connection, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let stream = connection.open_bi().await?;
    let (mut send, mut recv) = stream.split();
    let writing = async {
        AsyncWriteExt::write_all(&mut send, data).await?;
        send.finish()?;
        Ok::<_, std::io::Error>(())
    };
    let mut back = Vec::new();
    let (written, read) = tokio::join!(writing, AsyncReadExt::read_to_end(&mut recv, &mut back));
    written?;
    read?;
    Ok(back)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn every_node_answers_stun_with_the_address_it_sees() {
    let server = Node::start(NatConfig::default()).await;
    let client = Node::start(NatConfig::default()).await;
    let mapped = within(client.nat.stun(server.router.endpoint().local_addr()))
        .await
        .unwrap();
    assert_eq!(mapped, client.router.endpoint().local_addr());
    assert_eq!(client.nat.observed(), vec![mapped]);
}

#[tokio::test]
async fn a_stun_request_to_a_silent_address_times_out() {
    let client = Node::start(NatConfig::default()).await;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = within(client.nat.stun(silent.local_addr().unwrap()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no answer"), "{err}");
    // The silent socket saw the retransmissions.
    silent.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let mut seen = 0;
    while silent.recv(&mut buf).is_ok() {
        seen += 1;
    }
    assert_eq!(seen, 3);
}

#[tokio::test]
async fn two_nodes_meet_through_a_helper_by_punching() {
    let helper = Node::start(NatConfig::default()).await;
    let mut target = Node::start(NatConfig::default()).await;
    let dialer = Node::start(NatConfig::default()).await;
    let registration = within(target.nat.register(&helper.addr())).await.unwrap();
    assert_eq!(
        registration.observed(),
        target.router.endpoint().local_addr()
    );
    let (connection, path) = within(dialer.nat.connect_via(target.id(), ECHO, &helper.addr()))
        .await
        .unwrap();
    assert_eq!(connection.remote_node_id(), target.id());
    assert_eq!(
        path,
        Path::Punched {
            addr: target.router.endpoint().local_addr(),
            attempt: 1
        }
    );
    let data = pattern(100_000);
    assert_eq!(within(echo(&connection, &data)).await.unwrap(), data);
    let accepted = within(target.echoed.recv()).await.unwrap();
    assert_eq!(accepted.remote_node_id(), dialer.id());
}

/// A helper with `relay` limits, a target registered with it that takes part in no punch, and a
/// dialer: (helper, target, dialer, the target's registration).
async fn relay_trio(relay: RelayLimits) -> (Node, Node, Node, Registration) {
    let helper = Node::start(NatConfig {
        relay,
        ..NatConfig::default()
    })
    .await;
    let target = Node::start(NatConfig {
        punch: false,
        ..NatConfig::default()
    })
    .await;
    let dialer = Node::start(NatConfig::default()).await;
    let registration = within(target.nat.register(&helper.addr())).await.unwrap();
    (helper, target, dialer, registration)
}

/// The dialer's connection to the target, through the helper, which must be relayed.
async fn relayed(helper: &Node, target: &Node, dialer: &Node) -> Connection {
    let (connection, path) = within(dialer.nat.connect_via(target.id(), ECHO, &helper.addr()))
        .await
        .unwrap();
    assert_eq!(path, Path::Relayed(helper.id()));
    connection
}

#[tokio::test]
async fn a_node_that_does_not_punch_is_reached_through_the_relay() {
    let (helper, mut target, dialer, _registration) = relay_trio(RelayLimits::default()).await;
    let connection = relayed(&helper, &target, &dialer).await;
    assert_eq!(connection.remote_node_id(), target.id());
    assert!(pairs_net::socket::is_virtual(connection.remote_addr()));
    // End-to-end: the target proved its key to the dialer through the relay, and data flows both ways.
    let data = pattern(2_000_000);
    assert_eq!(within(echo(&connection, &data)).await.unwrap(), data);
    let accepted = within(target.echoed.recv()).await.unwrap();
    assert_eq!(accepted.remote_node_id(), dialer.id());
    assert!(pairs_net::socket::is_virtual(accepted.remote_addr()));
}

#[tokio::test]
async fn a_relay_cuts_a_circuit_at_its_budget() {
    let budget = RelayLimits {
        bytes_per_circuit: 300_000,
        ..RelayLimits::default()
    };
    let (helper, target, dialer, _registration) = relay_trio(budget).await;
    let connection = relayed(&helper, &target, &dialer).await;
    // Well within the budget: fine.
    let small = pattern(20_000);
    assert_eq!(within(echo(&connection, &small)).await.unwrap(), small);
    // Echoing 1 MB needs over 2 MB through the relay: the circuit is cut, and the connection dies.
    let big = pattern(1_000_000);
    let outcome = tokio::time::timeout(Duration::from_secs(60), echo(&connection, &big)).await;
    if let Ok(Ok(back)) = outcome {
        panic!("{} bytes came back through a 300 kB relay", back.len());
    }
    within(connection.closed()).await;
}

#[tokio::test]
async fn a_relay_refuses_circuits_over_its_limit() {
    let one_each = RelayLimits {
        max_circuits_per_node: 1,
        ..RelayLimits::default()
    };
    let (helper, target, dialer, _registration) = relay_trio(one_each).await;
    let first = relayed(&helper, &target, &dialer).await;
    let second = within(dialer.nat.connect_via(target.id(), ECHO, &helper.addr())).await;
    match second {
        Err(ConnectError::Refused { reason, .. }) => {
            assert!(reason.contains("at most 1 relay circuit"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The first circuit still works.
    assert_eq!(
        within(echo(&first, b"still here")).await.unwrap(),
        b"still here"
    );
}

#[tokio::test]
async fn an_unregistered_target_is_refused_by_name() {
    let helper = Node::start(NatConfig::default()).await;
    let dialer = Node::start(NatConfig::default()).await;
    let stranger = SecretKey::generate().node_id();
    let err = within(dialer.nat.connect_via(stranger, ECHO, &helper.addr()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not registered here"), "{err}");
}

/// A rogue node asks for punch after punch naming a victim's address as its candidate: the target
/// probes the victim for the few introductions it accepts, then refuses.
#[tokio::test]
async fn introductions_cannot_turn_a_target_into_a_flood() {
    let helper = Node::start(NatConfig::default()).await;
    let target = Node::start(NatConfig {
        introductions_burst: 2,
        introductions_per_second: 0.1,
        ..NatConfig::default()
    })
    .await;
    let _registration = within(target.nat.register(&helper.addr())).await.unwrap();
    let victim = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let victim_addr: SocketAddr = victim.local_addr().unwrap();

    // The rogue speaks the protocol by hand and never answers a probe.
    let rogue = loopback_endpoint().await;
    let to_helper = within(rogue.connect(&helper.addr(), wire::ALPN))
        .await
        .unwrap();
    let mut refused = 0;
    for i in 0..10u64 {
        let mut stream = within(to_helper.open_bi()).await.unwrap();
        let offer = PunchOffer {
            id: i,
            key: [1; 16],
            candidates: vec![victim_addr],
        };
        let connect = Frame::Connect {
            target: target.id(),
            offer,
        };
        within(wire::write_frame(&mut stream, &connect))
            .await
            .unwrap();
        match within(wire::read_frame(&mut stream)).await.unwrap() {
            Frame::Punch { .. } => {}
            Frame::Refused { reason } => {
                assert!(reason.contains("too many introductions"), "{reason}");
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(refused >= 7, "only {refused} of 10 refused");
    // Count what reaches the victim until the punches are over.
    let mut probes = 0;
    let mut buf = [0u8; 1500];
    let deadline = tokio::time::Instant::now() + pairs_net::nat::punch::PUNCH_TIME * 2;
    while let Ok(Ok(_)) = tokio::time::timeout_at(deadline, victim.recv_from(&mut buf)).await {
        probes += 1;
    }
    let rounds = (pairs_net::nat::punch::PUNCH_TIME.as_millis()
        / pairs_net::nat::punch::PROBE_INTERVAL.as_millis()) as usize;
    let accepted = 10 - refused;
    assert!(probes > 0, "the accepted punches did probe");
    assert!(
        probes <= accepted * (rounds + 1),
        "{probes} probes for {accepted} punches"
    );
}

/// A STUN server that answers each request three ways: with the wrong transaction id, from another
/// socket, and (last) correctly. Only the correct answer may count.
#[tokio::test]
async fn stun_answers_with_a_wrong_transaction_or_source_are_ignored() {
    use pairs_net::nat::stun;
    let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let impostor = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((len, from)) = server.recv_from(&mut buf).await else {
                return;
            };
            let Some(request) = stun::parse(&buf[..len]) else {
                continue;
            };
            let mut wrong = request.transaction;
            wrong[11] ^= 0xff;
            let lie: SocketAddr = "192.0.2.66:6666".parse().unwrap();
            let _ = server
                .send_to(&stun::binding_success(&wrong, lie, None), from)
                .await;
            let _ = impostor
                .send_to(
                    &stun::binding_success(&request.transaction, lie, None),
                    from,
                )
                .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = server
                .send_to(
                    &stun::binding_success(&request.transaction, from, None),
                    from,
                )
                .await;
        }
    });
    let client = Node::start(NatConfig::default()).await;
    let mapped = within(client.nat.stun(server_addr)).await.unwrap();
    assert_eq!(mapped, client.router.endpoint().local_addr());
}

/// A TURN server that answers every request with forged successes (wrong transaction id, no
/// MESSAGE-INTEGRITY, integrity under the wrong password): no allocation may come of it.
#[tokio::test]
async fn forged_turn_answers_make_no_allocation() {
    use pairs_net::nat::turn::TurnServer;
    use stun_types::attribute::XorMappedAddress;
    use stun_types::message::{
        IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageType,
        MessageWriteVec, TransactionId,
    };
    use stun_types::prelude::*;
    use turn_client_proto::types::attribute::{Lifetime, XorRelayedAddress};

    let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = answered.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        let lie: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        loop {
            let Ok((len, from)) = server.recv_from(&mut buf).await else {
                return;
            };
            let Ok(request) = Message::from_bytes(&buf[..len]) else {
                continue;
            };
            if !request.has_class(MessageClass::Request) {
                continue;
            }
            let wrong: TransactionId = (u128::from(request.transaction_id()) ^ 1).into();
            for (transaction, signed) in [
                (wrong, false),
                (request.transaction_id(), false),
                (request.transaction_id(), true),
            ] {
                let mtype = MessageType::from_class_method(MessageClass::Success, request.method());
                let mut answer = Message::builder(mtype, transaction, MessageWriteVec::new());
                answer
                    .add_attribute(&XorRelayedAddress::new(lie, transaction))
                    .unwrap();
                answer
                    .add_attribute(&XorMappedAddress::new(from, transaction))
                    .unwrap();
                answer.add_attribute(&Lifetime::new(600)).unwrap();
                if signed {
                    let wrong_key = LongTermKeyCredentials::new(
                        "test".into(),
                        "not-the-password".into(),
                        "pairs.test".into(),
                    );
                    answer
                        .add_message_integrity(&wrong_key.into(), IntegrityAlgorithm::Sha1)
                        .unwrap();
                }
                let _ = server.send_to(&answer.finish(), from).await;
            }
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let client = Node::start(NatConfig::default()).await;
    let turn: TurnServer = format!("test:test123@{server_addr}").parse().unwrap();
    let result = within(client.nat.turn_allocate(&turn)).await;
    assert!(
        answered.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the fake server saw requests"
    );
    match result {
        Ok(allocation) => panic!("allocation from forged answers: {}", allocation.relayed()),
        Err(err) => assert!(err.to_string().contains("TURN server"), "{err}"),
    }
}

#[test]
fn turn_server_strings_parse_and_hide_the_password() {
    use pairs_net::nat::turn::TurnServer;
    let server: TurnServer = "alice:s3cret@203.0.113.10:3478".parse().unwrap();
    assert_eq!(server.username, "alice");
    assert_eq!(server.password, "s3cret");
    assert_eq!(
        server.addr,
        "203.0.113.10:3478".parse::<SocketAddr>().unwrap()
    );
    assert!(!format!("{server:?}").contains("s3cret"));
    for bad in [
        "203.0.113.10:3478",
        "alice@203.0.113.10:3478",
        ":pw@1.2.3.4:1",
        "a:b@nowhere",
    ] {
        let err = bad.parse::<TurnServer>().unwrap_err();
        assert!(err.contains("USER:PASSWORD@IP:PORT"), "{bad}: {err}");
    }
}
