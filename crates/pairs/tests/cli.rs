//! The command line as a new user meets it: messages that say what happened and what to do.

mod common;

use std::process::Stdio;

use common::lab::{Lab, Running};
use common::{Home, SHORT, lines_of, stderr_text, wait_output};

/// `pairs serve` on loopback (every pairs node answers STUN), and its `IP:PORT`.
fn stun_server(home: &Home) -> (Running, String) {
    let mut child = home
        .pairs(&["serve", "--bind", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines_of(child.stderr.take().unwrap());
    let line = stderr
        .recv_timeout(SHORT)
        .expect("serve printed its address");
    let addr = line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_end_matches([';', ','])
        .to_owned();
    (Running(child), addr)
}

#[test]
fn doctor_in_front_of_no_nat_says_no_nat() {
    let home = Home::new();
    let (_server, addr) = stun_server(&Home::new());
    let out = wait_output(
        home.pairs(&["doctor", "--bind", "127.0.0.1:0", "--stun", &addr])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        SHORT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let nat = text.lines().find(|l| l.starts_with("nat ")).unwrap();
    assert!(nat.contains("no NAT"), "{text}");
    assert!(!nat.contains("unknown"), "{text}");
}

#[test]
fn doctor_tells_a_malformed_stun_server_from_one_dns_cannot_find() {
    let home = Home::new();
    let out = home.run(&["doctor", "--stun", "stun-without-port"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("has no port (want HOST:PORT)"), "{text}");

    // Offline: a lab host whose resolver is not there (nothing leaves its namespace).
    let lab = Lab::new();
    lab.run(&["lan", "1"]);
    lab.run(&["resolver", "h1", "127.0.0.1"]);
    let out = wait_output(
        lab.pairs(
            "h1",
            &home,
            &[
                "doctor",
                "--stun",
                "stun.example.org:3478",
                "--port-mapping",
                "off",
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
        SHORT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let stun = text.lines().find(|l| l.starts_with("stun ")).unwrap();
    assert!(stun.contains("cannot resolve stun.example.org:"), "{text}");
    assert!(!stun.contains("want HOST:PORT"), "{text}");
}

#[test]
fn a_zero_timeout_and_empty_names_are_refused_before_anything_runs() {
    let home = Home::new();
    for args in [
        &["connect", "TICKET", "--timeout", "0"][..],
        &["paste", "--receive", "--timeout", "0"],
    ] {
        let out = home.run(args);
        let err = stderr_text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("a timeout of 0 would give up"), "{err}");
    }
    for args in [
        &["swarm", ""][..],
        &["paste", "", "--receive"],
        &["status", "ok", ""],
    ] {
        let out = home.run(args);
        let err = stderr_text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("a value is required"), "{args:?}: {err}");
    }
}

#[test]
fn help_puts_a_command_s_own_options_apart_from_the_shared_ones() {
    let home = Home::new();
    let help = String::from_utf8(home.run(&["connect", "--help"]).stdout).unwrap();
    let section = |name: &str| help.find(name).unwrap_or_else(|| panic!("{name}: {help}"));
    let (own, network, global) = (
        section("\nOptions:"),
        section("\nNetwork options:"),
        section("\nGlobal options:"),
    );
    assert!(own < network && network < global, "{help}");
    // --timeout is connect's own; --peer and --data-dir are not.
    let timeout = section("--timeout");
    assert!(own < timeout && timeout < network, "{help}");
    assert!(section("--peer") > network && section("--data-dir") > global);
    assert!(help.contains("\nExamples:\n  pairs connect "), "{help}");
}

#[test]
fn log_replicate_needs_no_stdio_flag() {
    let (a, b) = (Home::new(), Home::new());
    let ticket = String::from_utf8(a.run(&["log", "new"]).stdout).unwrap();
    let ticket = ticket.trim();
    // With its input ended at once, replicate reports the other side gone: it ran.
    for home in [&a, &b] {
        let out = home.run(&["log", "replicate", ticket]);
        let err = stderr_text(&out);
        assert!(!err.contains("required"), "{err}");
        assert!(err.contains("ended before the logs were in sync"), "{err}");
    }
}

#[test]
fn listen_json_names_the_node_as_id_json_does_and_reports_each_peer() {
    let (home, peer) = (Home::new(), Home::new());
    let id: serde_json::Value =
        serde_json::from_slice(&home.run(&["id", "--json"]).stdout).unwrap();
    let mut listener = home
        .pairs(&["listen", "--json", "--bind", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines_of(listener.stderr.take().unwrap());
    let json = |line: String| -> serde_json::Value {
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    };
    let listening = json(stderr.recv_timeout(SHORT).expect("listening line"));
    assert_eq!(listening["event"], "listening");
    assert_eq!(listening["node"], id["node"]);
    assert!(
        listening["addrs"][0]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let ticket = listening["ticket"].as_str().unwrap();
    let out = peer.run(&["connect", ticket]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let connected = json(stderr.recv_timeout(SHORT).expect("connected line"));
    assert_eq!(connected["event"], "connected");
    let done = json(stderr.recv_timeout(SHORT).expect("done line"));
    assert_eq!(done["event"], "done");
    assert_eq!(done["sent"], 0);
    assert_eq!(done["sent_blake3"], blake3::hash(b"").to_hex().as_str());
    let peer_id: serde_json::Value =
        serde_json::from_slice(&peer.run(&["id", "--json"]).stdout).unwrap();
    assert_eq!(connected["node"], peer_id["node"]);
    let _ = Running(listener);
}

/// A LAN with no internet: the DHT cannot bootstrap, and the node id alone still connects, found
/// through the listener's mDNS advertisement.
#[test]
fn a_node_id_alone_connects_on_an_offline_lan() {
    let lab = Lab::new();
    lab.run(&["lan", "2"]);
    for host in ["h1", "h2"] {
        // DNS goes nowhere: the DHT's bootstrap names do not resolve, nothing leaves the lab.
        lab.run(&["resolver", host, "127.0.0.1"]);
    }
    let (h1, h2) = (Home::new(), Home::new());
    let id = String::from_utf8(h1.run(&["id"]).stdout).unwrap();
    let mut listen = lab.pairs("h1", &h1, &["listen"]);
    listen
        .env_remove("PAIRS_NO_DHT")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut listener = listen.spawn().unwrap();
    let stderr = lines_of(listener.stderr.take().unwrap());
    std::io::Write::write_all(&mut listener.stdin.take().unwrap(), b"over the LAN\n").unwrap();
    let _listener = Running(listener);
    while !stderr
        .recv_timeout(SHORT)
        .expect("listener offered its id on the LAN")
        .contains("on this LAN")
    {}
    let mut connect = lab.pairs("h2", &h2, &["connect", id.trim(), "--timeout", "10"]);
    connect
        .env_remove("PAIRS_NO_DHT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = wait_output(connect.spawn().unwrap(), SHORT);
    let err = stderr_text(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over the LAN\n");
    assert!(!err.contains("ERROR") && !err.contains("WARN"), "{err}");
}

/// Ctrl-C while connect is still looking for its peer stops it with a message, at once (it used to
/// be killed by the signal's default action until it had connected).
#[test]
fn sigint_while_connect_looks_up_its_peer_stops_it_at_once() {
    let lab = Lab::new();
    lab.run(&["lan", "1"]);
    let home = Home::new();
    let id = String::from_utf8(Home::new().run(&["id"]).stdout).unwrap();
    let mut child = lab
        .pairs("h1", &home, &["connect", id.trim(), "--timeout", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines_of(child.stderr.take().unwrap());
    while !stderr
        .recv_timeout(SHORT)
        .expect("connect said it is looking")
        .contains("looking up")
    {}
    let started = std::time::Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = common::wait_status(child, std::time::Duration::from_secs(3));
    assert_eq!(status.code(), Some(1), "{status:?}");
    let said: Vec<String> = stderr.iter().collect();
    assert!(
        said.iter()
            .any(|l| l.contains("interrupted while looking up")),
        "{said:?}"
    );
    eprintln!("stopped {:?} after SIGINT", started.elapsed());
}

#[test]
fn listen_and_connect_end_with_a_summary_and_the_same_blake3_of_the_data() {
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 991) as u8).collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &data).unwrap();
    let expected = blake3::hash(&data).to_hex().to_string();
    let listener = common::Listener::start(
        &Home::new(),
        &[],
        Stdio::from(std::fs::File::open(file.path()).unwrap()),
    );
    let out = Home::new().run(&["connect", &listener.ticket]);
    let err = stderr_text(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(out.stdout.len(), data.len());
    assert!(err.contains("received 2.86 MiB in"), "{err}");
    assert!(
        err.contains(&format!("blake3 of what was received: {expected}")),
        "{err}"
    );
    // Not a terminal: no progress line, nothing but whole lines of text.
    assert!(!err.contains('\r') && !err.contains('\x1b'), "{err:?}");
    let said = listener.wait_for_stderr("blake3 of what was sent");
    assert!(said.ends_with(&expected), "{said}");
}

/// `listen --code` and `connect CODE` on a LAN: the code finds the listener, the data arrives; a
/// wrong code is refused on both sides and spends the code.
#[test]
fn a_short_code_carries_a_transfer_on_a_lan_and_a_wrong_one_is_refused() {
    let lab = Lab::new();
    lab.run(&["lan", "2"]);
    let (h1, h2) = (Home::new(), Home::new());
    let listen = |data: &'static [u8]| {
        let mut child = lab
            .pairs("h1", &h1, &["listen", "--code"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = lines_of(child.stderr.take().unwrap());
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), data).unwrap();
        let code = loop {
            let line = stderr.recv_timeout(SHORT).expect("listener printed a code");
            if let Some(code) = line.trim().strip_prefix("pairs connect ") {
                break code.to_owned();
            }
        };
        (child, stderr, code)
    };
    let connect = |code: &str| {
        wait_output(
            lab.pairs("h2", &h2, &["connect", code])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
            SHORT,
        )
    };

    let (child, _stderr, code) = listen(b"by code\n");
    let _listener = Running(child);
    let mut parts = code.split('-');
    assert!(parts.next().unwrap().parse::<u16>().is_ok(), "{code}");
    assert_eq!(parts.count(), 2, "{code}");
    let out = connect(&code);
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "by code\n");

    let (child, stderr, code) = listen(b"secret\n");
    let nameplate = code.split('-').next().unwrap();
    let wrong = if code.ends_with("-acid-acid") {
        format!("{nameplate}-acid-acorn")
    } else {
        format!("{nameplate}-acid-acid")
    };
    let out = connect(&wrong);
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("wrong code"), "{err}");
    assert!(out.stdout.is_empty());
    let listener = wait_output(child, SHORT);
    assert_eq!(listener.status.code(), Some(1));
    let said: Vec<String> = stderr.iter().collect();
    assert!(said.iter().any(|l| l.contains("wrong code")), "{said:?}");
}
