//! Endpoint behaviour over loopback: authentication, routing, streams, errors.

use std::net::SocketAddr;
use std::time::Duration;

use pairs_base::{NodeAddr, SecretKey};
use pairs_net::{BindError, ConnectError, Connection, Endpoint, EndpointConfig, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const ALPN: &[u8] = b"pairs/test/1";
const WAIT: Duration = Duration::from_secs(10);

async fn loopback_endpoint() -> Endpoint {
    let mut config = EndpointConfig::new(SecretKey::generate());
    config.bind = Some("127.0.0.1:0".parse().unwrap());
    config.connect_timeout = Duration::from_secs(2);
    Endpoint::bind(config).await.unwrap()
}

/// A listening endpoint whose accepted connections arrive on the returned channel.
async fn listener() -> (Router, mpsc::Receiver<Connection>) {
    let (tx, rx) = mpsc::channel(4);
    let router = Router::builder(loopback_endpoint().await)
        .accept(ALPN, tx)
        .spawn();
    (router, rx)
}

async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut).await.expect("timed out")
}

/// A listener and a dialer connected to it: (router, dialer's connection, listener's connection).
async fn connected_pair() -> (Router, Connection, Connection) {
    let (router, mut incoming) = listener().await;
    let dialer = loopback_endpoint().await;
    let conn = within(dialer.connect(&router.endpoint().node_addr(), ALPN))
        .await
        .unwrap();
    let accepted = within(incoming.recv()).await.unwrap();
    (router, conn, accepted)
}

#[tokio::test]
async fn both_sides_learn_the_proven_node_id() {
    let (router, mut incoming) = listener().await;
    let dialer = loopback_endpoint().await;
    let conn = within(dialer.connect(&router.endpoint().node_addr(), ALPN))
        .await
        .unwrap();
    let accepted = within(incoming.recv()).await.unwrap();
    assert_eq!(conn.remote_node_id(), router.endpoint().node_id());
    assert_eq!(accepted.remote_node_id(), dialer.node_id());
    assert_eq!(accepted.alpn(), ALPN);
    assert_eq!(accepted.remote_addr(), dialer.local_addr());
}

#[tokio::test]
async fn an_address_without_an_id_is_dialed_and_the_handshake_says_who() {
    let (router, mut incoming) = listener().await;
    let dialer = loopback_endpoint().await;
    let conn = within(dialer.connect_unknown(router.endpoint().local_addr(), ALPN))
        .await
        .unwrap();
    assert_eq!(conn.remote_node_id(), router.endpoint().node_id());
    let accepted = within(incoming.recv()).await.unwrap();
    assert_eq!(accepted.remote_node_id(), dialer.node_id());
}

#[tokio::test]
async fn dialing_our_own_address_without_an_id_is_refused() {
    let (router, _incoming) = listener().await;
    let own = router.endpoint().local_addr();
    let err = within(router.endpoint().connect_unknown(own, ALPN))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConnectError::SelfDial(addr) if addr == own),
        "{err}"
    );
}

#[tokio::test]
async fn dialing_the_wrong_key_fails_with_an_authentication_error() {
    let (router, mut incoming) = listener().await;
    let dialer = loopback_endpoint().await;
    let impostor = SecretKey::generate().node_id();
    let target = NodeAddr::new(impostor, router.endpoint().node_addr().addrs);
    let err = within(dialer.connect(&target, ALPN)).await.unwrap_err();
    match &err {
        ConnectError::WrongNodeId {
            expected, found, ..
        } => {
            assert_eq!(*expected, impostor);
            assert_eq!(*found, router.endpoint().node_id());
        }
        other => panic!("expected WrongNodeId, got {other}"),
    }
    assert!(err.to_string().contains("wrong key"));
    assert!(incoming.try_recv().is_err(), "no connection was handed out");
}

#[tokio::test]
async fn unknown_protocol_is_refused_with_a_reason() {
    let (router, _incoming) = listener().await;
    let dialer = loopback_endpoint().await;
    let err = within(dialer.connect(&router.endpoint().node_addr(), b"other/1"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("does not serve protocol \"other/1\""),
        "{err}"
    );
}

#[tokio::test]
async fn unreachable_address_times_out_naming_the_address() {
    let dialer = loopback_endpoint().await;
    // A bound socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let target = NodeAddr::new(SecretKey::generate().node_id(), [addr]);
    let err = within(dialer.connect(&target, ALPN)).await.unwrap_err();
    assert!(matches!(err, ConnectError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn happy_eyeballs_skips_a_dead_address() {
    let (router, _incoming) = listener().await;
    let dialer = loopback_endpoint().await;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut target = router.endpoint().node_addr();
    target.addrs.insert(0, silent.local_addr().unwrap());
    let conn = within(dialer.connect(&target, ALPN)).await.unwrap();
    assert_eq!(conn.remote_node_id(), router.endpoint().node_id());
}

#[tokio::test]
async fn port_in_use_is_a_clear_error() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = taken.local_addr().unwrap();
    let mut config = EndpointConfig::new(SecretKey::generate());
    config.bind = Some(addr);
    let err = Endpoint::bind(config).await.unwrap_err();
    assert!(matches!(err, BindError::AddrInUse(a) if a == addr), "{err}");
    assert!(err.to_string().contains("already in use"));
}

#[tokio::test]
async fn eof_in_one_direction_keeps_the_other_open() {
    let (_router, conn, accepted) = connected_pair().await;
    let mut a = conn.open_bi().await.unwrap();
    a.write_all(b"question").await.unwrap();
    a.shutdown().await.unwrap(); // dialer is done sending

    let mut b = within(accepted.accept_bi()).await.unwrap();
    let mut got = Vec::new();
    within(b.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"question");
    // After reading the dialer's EOF, the acceptor still sends, and the dialer still reads.
    for _ in 0..100 {
        b.write_all(&[7u8; 10_000]).await.unwrap();
    }
    b.shutdown().await.unwrap();
    let mut reply = Vec::new();
    within(a.read_to_end(&mut reply)).await.unwrap();
    assert_eq!(reply.len(), 1_000_000);
    assert!(reply.iter().all(|&x| x == 7));
}

#[tokio::test]
async fn many_streams_on_one_connection() {
    let (_router, conn, accepted) = connected_pair().await;
    let echo = tokio::spawn(async move {
        while let Ok(mut stream) = accepted.accept_bi().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                stream.read_to_end(&mut buf).await.unwrap();
                stream.write_all(&buf).await.unwrap();
                stream.shutdown().await.unwrap();
            });
        }
    });
    let mut tasks = Vec::new();
    for i in 0..20u8 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = conn.open_bi().await.unwrap();
            s.write_all(&[i; 1000]).await.unwrap();
            s.shutdown().await.unwrap();
            let mut back = Vec::new();
            s.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, vec![i; 1000]);
        }));
    }
    for t in tasks {
        within(t).await.unwrap();
    }
    echo.abort();
}

#[tokio::test]
async fn garbage_on_the_port_does_not_disturb_the_endpoint() {
    let (router, mut incoming) = listener().await;
    let port_addr = router.endpoint().local_addr();
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for len in [0usize, 1, 5, 20, 1200, 1500] {
        for first in [0x00u8, 0x40, 0x80, 0xc0, 0xff] {
            let mut datagram = vec![first; len];
            if len > 0 {
                datagram[0] = first;
            }
            junk.send_to(&datagram, port_addr).unwrap();
        }
    }
    let dialer = loopback_endpoint().await;
    let conn = within(dialer.connect(&router.endpoint().node_addr(), ALPN))
        .await
        .unwrap();
    within(incoming.recv()).await.unwrap();
    assert_eq!(conn.remote_node_id(), router.endpoint().node_id());
}
