//! `pairs listen` / `pairs connect` end to end on loopback.

mod common;

use std::io::{Read, Write};
use std::process::Stdio;
use std::thread;
use std::time::Duration;

use common::{Home, Listener, SHORT, stderr_text, wait_output, wait_status};
use pairs::base::{NodeAddr, SecretKey, Ticket as _};
use sha2::{Digest, Sha256};

const GIB: u64 = 1 << 30;

/// Writes `len` pseudo-random bytes (seeded) to `sink` and returns their SHA-256.
fn feed(mut sink: impl Write, seed: &str, len: u64) -> [u8; 32] {
    let mut source = blake3::Hasher::new_derive_key(seed).finalize_xof();
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        source.fill(&mut buf[..n]);
        hash.update(&buf[..n]);
        sink.write_all(&buf[..n]).expect("write to pairs stdin");
        left -= n as u64;
    }
    hash.finalize().into()
}

/// Reads `source` to the end and returns its length and SHA-256.
fn drain(mut source: impl Read) -> (u64, [u8; 32]) {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = source.read(&mut buf).expect("read pairs stdout");
        if n == 0 {
            return (total, hash.finalize().into());
        }
        hash.update(&buf[..n]);
        total += n as u64;
    }
}

#[test]
fn one_gib_each_way_at_once_arrives_intact() {
    let (listen_home, connect_home) = (Home::new(), Home::new());
    let mut listener = Listener::start(&listen_home, &[], Stdio::piped());
    let mut connector = connect_home
        .pairs(&["connect", &listener.ticket])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();

    let to_listener = connector.stdin.take().unwrap();
    let to_connector = listener.child.stdin.take().unwrap();
    let from_listener = listener.child.stdout.take().unwrap();
    let from_connector = connector.stdout.take().unwrap();
    let sent_c = thread::spawn(move || feed(to_listener, "connector to listener", GIB));
    let sent_l = thread::spawn(move || feed(to_connector, "listener to connector", GIB));
    let got_l = thread::spawn(move || drain(from_listener));
    let got_c = thread::spawn(move || drain(from_connector));

    let limit = Duration::from_secs(600);
    assert!(wait_status(connector, limit).success(), "connect failed");
    let (received_by_listener, hash_at_listener) = got_l.join().unwrap();
    let (received_by_connector, hash_at_connector) = got_c.join().unwrap();
    assert_eq!(received_by_listener, GIB);
    assert_eq!(received_by_connector, GIB);
    assert_eq!(hash_at_listener, sent_c.join().unwrap());
    assert_eq!(hash_at_connector, sent_l.join().unwrap());
    assert!(listener.wait(SHORT).success(), "listen failed");
}

#[test]
fn eof_in_one_direction_keeps_the_other_open() {
    let (listen_home, connect_home) = (Home::new(), Home::new());
    let mut listener = Listener::start(&listen_home, &[], Stdio::piped());
    // The connector has nothing to say: its direction ends at once.
    let mut connector = connect_home
        .pairs(&["connect", &listener.ticket])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    listener.wait_for_stderr("connected to");
    let mut to_connector = listener.child.stdin.take().unwrap();
    let from_connector = connector.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut from_connector = from_connector;
        let mut first = [0u8; 11];
        from_connector.read_exact(&mut first).unwrap();
        (first, drain(from_connector))
    });
    // The listener speaks in two parts; the connector's stdout must still be open for the second.
    to_connector.write_all(b"first part\n").unwrap();
    to_connector.flush().unwrap();
    let sent = feed(&mut to_connector, "second part", 10 << 20);
    drop(to_connector);
    let output = wait_output(connector, SHORT);
    assert!(output.status.success(), "{}", stderr_text(&output));
    let (first, rest) = reader.join().unwrap();
    assert_eq!(&first, b"first part\n");
    assert_eq!(rest, (10 << 20, sent));
}

#[test]
fn listener_with_nothing_to_send_still_receives_everything() {
    let (listen_home, connect_home) = (Home::new(), Home::new());
    let mut listener = Listener::start(&listen_home, &[], Stdio::null());
    let mut connector = connect_home
        .pairs(&["connect", &listener.ticket])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let from_listener = listener.child.stdout.take().unwrap();
    let reader = thread::spawn(move || drain(from_listener));
    let sent = feed(
        connector.stdin.take().unwrap(),
        "to a silent listener",
        5 << 20,
    );
    let output = wait_output(connector, SHORT);
    assert!(output.status.success(), "{}", stderr_text(&output));
    assert!(output.stdout.is_empty());
    assert_eq!(reader.join().unwrap(), (5 << 20, sent));
}

#[test]
fn keep_serves_peers_one_after_another() {
    let listen_home = Home::new();
    let mut listener = Listener::start(&listen_home, &["--keep"], Stdio::null());
    let from_listener = listener.child.stdout.take().unwrap();
    let reader = thread::spawn(move || drain(from_listener));
    for word in ["alpha\n", "beta\n", "gamma\n"] {
        let home = Home::new();
        let mut connector = home
            .pairs(&["connect", &listener.ticket])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        connector
            .stdin
            .take()
            .unwrap()
            .write_all(word.as_bytes())
            .unwrap();
        let output = wait_output(connector, SHORT);
        assert!(output.status.success(), "{}", stderr_text(&output));
    }
    listener.child.kill().unwrap();
    let (_, hash) = reader.join().unwrap();
    assert_eq!(
        hash,
        <[u8; 32]>::from(Sha256::digest(b"alpha\nbeta\ngamma\n"))
    );
}

#[test]
fn tampered_ticket_is_rejected_before_dialing() {
    let listener = Listener::start(&Home::new(), &[], Stdio::null());
    let mut tampered = listener.ticket.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'a' { b'b' } else { b'a' };
    let tampered = String::from_utf8(tampered).unwrap();
    let output = Home::new().run(&["connect", &tampered]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr_text(&output);
    assert!(
        err.contains("damaged") || err.contains("malformed"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one-line error: {err}");
}

#[test]
fn ticket_naming_another_key_is_an_authentication_error() {
    let listener = Listener::start(&Home::new(), &[], Stdio::null());
    let real = NodeAddr::from_ticket(&listener.ticket).unwrap();
    let impostor = NodeAddr::new(SecretKey::generate().node_id(), real.addrs);
    let output = Home::new().run(&["connect", &impostor.to_ticket()]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr_text(&output);
    assert!(err.contains("wrong key"), "{err}");
    assert!(err.contains(&real.node_id.to_string()), "{err}");
}

#[test]
fn unreachable_address_times_out_naming_it() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let ticket = NodeAddr::new(SecretKey::generate().node_id(), [addr]).to_ticket();
    let output = Home::new().run(&["connect", &ticket, "--timeout", "1"]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr_text(&output);
    assert!(
        err.contains(&addr.to_string()) && err.contains("no answer"),
        "{err}"
    );
}

#[test]
fn port_in_use_is_a_clear_error() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = Home::new().run(&["listen", "--bind", &addr]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr_text(&output).contains("already in use"),
        "{}",
        stderr_text(&output)
    );
}

#[test]
fn connecting_to_a_stopped_listener_fails() {
    let listener = Listener::start(&Home::new(), &[], Stdio::null());
    let ticket = listener.ticket.clone();
    drop(listener);
    let output = Home::new().run(&["connect", &ticket, "--timeout", "1"]);
    assert_eq!(output.status.code(), Some(1));
}

/// Sends `signal` (`-INT`, `-KILL`) to process `pid`.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// A listener sending without end (/dev/zero) and a connected peer reading it.
fn endless_transfer() -> (Listener, std::process::Child, Home, Home) {
    let (listener_home, connect_home) = (Home::new(), Home::new());
    let zero = std::fs::File::open("/dev/zero").unwrap();
    let listener = Listener::start(&listener_home, &[], Stdio::from(zero));
    let peer = connect_home
        .pairs(&["connect", &listener.ticket])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pairs connect");
    listener.wait_for_stderr("connected to");
    (listener, peer, listener_home, connect_home)
}

#[test]
fn sigint_stops_a_sending_listener_at_once_and_its_peer_hears_of_it() {
    let (listener, peer, _homes, _homes2) = endless_transfer();
    let started = std::time::Instant::now();
    signal(listener.child.id(), "-INT");
    let status = listener.wait(Duration::from_secs(3));
    let stopped_in = started.elapsed();
    assert!(
        !status.success(),
        "an interrupted transfer is not a success"
    );
    // The close normally arrives at once; on a saturated loopback the peer's receive buffer can drop
    // it, and then the peer learns of the stop from a stateless reset or, at worst, the 5 s idle
    // timeout.
    let output = wait_output(peer, Duration::from_secs(8));
    let err = stderr_text(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the peer was stopped")
            || err.contains("the peer stopped")
            || err.contains("stopped answering"),
        "{err}"
    );
    eprintln!("listener stopped {stopped_in:?} after SIGINT");
}

#[test]
fn sigint_stops_a_connect_and_the_listener_hears_of_it() {
    let (listener, peer, _homes, _homes2) = endless_transfer();
    signal(peer.id(), "-INT");
    let output = wait_output(peer, Duration::from_secs(3));
    assert_eq!(output.status.code(), Some(1), "{}", stderr_text(&output));
    let said = listener.wait_for_stderr("error");
    assert!(said.contains("the peer was stopped"), "{said}");
}

#[test]
fn a_killed_listener_is_noticed_within_seconds() {
    let (listener, peer, _homes, _homes2) = endless_transfer();
    let killed = std::time::Instant::now();
    signal(listener.child.id(), "-KILL");
    let output = wait_output(peer, Duration::from_secs(8));
    let noticed = killed.elapsed();
    let err = stderr_text(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("stopped answering"), "{err}");
    eprintln!("connect noticed the killed listener after {noticed:?}");
}

#[test]
fn a_killed_connect_is_noticed_by_the_listener_within_seconds() {
    let (listener, mut peer, _homes, _homes2) = endless_transfer();
    let killed = std::time::Instant::now();
    peer.kill().unwrap();
    peer.wait().unwrap();
    let said = listener.wait_for_stderr("error");
    let noticed = killed.elapsed();
    assert!(said.contains("stopped answering"), "{said}");
    assert!(
        noticed < Duration::from_secs(8),
        "noticed after {noticed:?}"
    );
    eprintln!("listener noticed the killed connect after {noticed:?}");
}

#[test]
fn wrong_targets_are_named_for_what_they_are() {
    let home = Home::new();
    let listener = Listener::start(&Home::new(), &[], Stdio::null());
    // Upper case is the same ticket.
    let out = home.run(&["connect", &listener.ticket.to_uppercase(), "--timeout", "2"]);
    assert!(out.status.success(), "{}", stderr_text(&out));

    let id = SecretKey::generate().node_id().to_string();
    let err = stderr_text(&home.run(&["connect", &id[..40]]));
    assert!(
        err.contains("a node id has 52 characters, this has 40"),
        "{err}"
    );

    let log = String::from_utf8(home.run(&["log", "new"]).stdout).unwrap();
    let err = stderr_text(&home.run(&["connect", log.trim()]));
    assert!(err.contains("this is a log ticket"), "{err}");
}
