//! The CLI on a private Mainline DHT (an in-process testnet on loopback): topics found through the
//! DHT, `pairs connect NODE-ID`, `pairs status`, and interop with WebTorrent's `bittorrent-dht`.

mod common;

use std::io::Write as _;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::lab::Running;
use common::{Home, Listener, lines_of, wait_output};
use mainline::Testnet;
use pairs_base::{NodeAddr, Ticket as _, Topic};

const WAIT: Duration = Duration::from_secs(40);

fn testnet() -> Testnet {
    Testnet::builder(24)
        .bind_address(Ipv4Addr::LOCALHOST)
        .build()
        .expect("DHT testnet")
}

/// A free UDP port on loopback (the kernel picks; we release it for the node to take).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Swarm {
    _child: Running,
    stdin: std::process::ChildStdin,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    _home: Home,
}

impl Swarm {
    fn start(topic: &str, args: &[&str]) -> Self {
        let home = Home::new();
        let mut all = vec!["swarm", topic];
        all.extend_from_slice(args);
        let mut child = home
            .pairs(&all)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pairs swarm");
        Self {
            stdin: child.stdin.take().unwrap(),
            stdout: lines_of(child.stdout.take().unwrap()),
            stderr: lines_of(child.stderr.take().unwrap()),
            _child: Running(child),
            _home: home,
        }
    }

    fn wait(rx: &Receiver<String>, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("never saw {what}; saw {seen:#?}"));
            if pred(&line) {
                return line;
            }
            seen.push(line);
        }
    }

    fn wait_joined(&self) -> String {
        Self::wait(&self.stderr, "a peer join", |l| l.ends_with(" joined"))
    }
}

#[test]
fn two_swarm_processes_meet_through_the_dht_alone() {
    let net = testnet();
    let boot = &net.bootstrap[0];
    // Isolated (no mDNS), with only the testnet's bootstrap.
    let mut a = Swarm::start("dht topic", &["--dht-bootstrap", boot]);
    let b = Swarm::start("dht topic", &["--dht-bootstrap", boot]);
    a.wait_joined();
    b.wait_joined();
    writeln!(a.stdin, "over the dht").unwrap();
    Swarm::wait(&b.stdout, "a's line", |l| l.ends_with(" over the dht"));
}

#[test]
fn connect_by_node_id_alone() {
    let net = testnet();
    let boot = net.bootstrap[0].as_str();
    let server = Home::new();
    // The listener sends nothing (stdin empty), so the pipe ends once the client's data is in.
    let mut listener = Listener::start(&server, &["--dht-bootstrap", boot], Stdio::null());
    let id = NodeAddr::from_ticket(&listener.ticket)
        .unwrap()
        .node_id
        .to_string();
    let client = Home::new();
    let mut child = client
        .pairs(&["connect", &id, "--dht-bootstrap", boot, "--timeout", "20"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"found you by id\n")
        .unwrap();
    let out = lines_of(listener.child.stdout.take().unwrap());
    let line = out.recv_timeout(WAIT).expect("the listener got the data");
    assert_eq!(line, "found you by id");
    let output = wait_output(child, WAIT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("looking up"), "{stderr}");
    assert!(listener.wait(WAIT).success());
}

#[test]
fn connect_by_id_without_a_dht_says_what_to_do() {
    let home = Home::new();
    let id = pairs_base::SecretKey::generate().node_id().to_string();
    let output = home.run(&["connect", &id]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("needs the LAN (mDNS) or the DHT"),
        "{stderr}"
    );
    assert!(stderr.contains("use the node's ticket"), "{stderr}");
}

#[test]
fn status_reports_an_unreachable_bootstrap_clearly() {
    let home = Home::new();
    let dead = format!("127.0.0.1:{}", free_port());
    let output = home.run(&[
        "status",
        "--wait",
        "30",
        "--json",
        "--dht-bootstrap",
        &dead,
        "some topic",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["dht"]["bootstrapped"], false, "{report}");
    assert_eq!(report["lan"], false);
    let text = home.run(&["status", "--wait", "30", "--dht-bootstrap", &dead]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("NOT bootstrapped"), "{text}");
}

#[test]
fn status_shows_what_the_dht_found_for_a_topic() {
    let net = testnet();
    let boot = net.bootstrap[0].as_str();
    let _member = Swarm::start("status topic", &["--dht-bootstrap", boot]);
    let home = Home::new();
    let output = home.run(&[
        "status",
        "--wait",
        "30",
        "--json",
        "--dht-bootstrap",
        boot,
        "status topic",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["dht"]["bootstrapped"], true, "{report}");
    assert_eq!(
        report["topics"]["status topic"].as_array().unwrap().len(),
        1,
        "{report}"
    );
    // The DHT is the only source here (isolated, no LAN): the topic shows under its key, not its name.
    let dht_topics = report["dht"]["topics"].as_array().unwrap();
    assert_eq!(dht_topics.len(), 1, "{report}");
    assert!(
        !report.to_string().contains("\"key\":\"status topic\""),
        "{report}"
    );
}

// ---- interop with WebTorrent's DHT ----

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js/dht")
}

/// `node dht-node.mjs ARGS`; its JSON lines come through the receiver.
fn js_node(args: &[&str]) -> (Running, Receiver<String>, std::process::ChildStdin) {
    let dir = js_dir();
    assert!(
        dir.join("node_modules/bittorrent-dht").exists(),
        "bittorrent-dht is not installed: run `npm ci` in {} (CI does)",
        dir.display()
    );
    let mut child: Child = Command::new("node")
        .arg(dir.join("dht-node.mjs"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node (Node.js) must be installed");
    let stdin = child.stdin.take().unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    (Running(child), lines, stdin)
}

fn info_hash_hex(topic: &str) -> String {
    Topic::from_name(topic).discovery_key().as_bytes()[..20]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn bittorrent_dht_and_pairs_find_what_the_other_announced() {
    // A bittorrent-dht node starts the network; everyone else bootstraps from it.
    let (_js_boot, js_boot_out, _js_boot_in) = js_node(&["--bootstrap", "none", "--timeout", "90"]);
    let ready = Swarm::wait(&js_boot_out, "the bootstrap node", |l| {
        l.contains("\"ready\"")
    });
    let port: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let boot = format!("127.0.0.1:{}", port["port"]);
    let boot = boot.as_str();
    let topic = "interop topic";
    let hash = info_hash_hex(topic);
    // x is in the topic but uses no DHT: only the JS node's announcement says where it is.
    let x_port = free_port();
    let x = Swarm::start(topic, &["--port", &x_port.to_string()]);
    let (_js, js_out, _js_in) = js_node(&[
        "--bootstrap",
        boot,
        "--announce",
        &format!("{hash}:{x_port}"),
        "--lookup",
        &hash,
        "--timeout",
        "60",
    ]);
    Swarm::wait(&js_out, "the JS announce", |l| l.contains("\"announced\""));
    // y uses the DHT: it finds x through the JS node's announcement, and announces itself.
    let y_port = free_port();
    let y = Swarm::start(
        topic,
        &["--dht-bootstrap", boot, "--port", &y_port.to_string()],
    );
    y.wait_joined();
    x.wait_joined();
    // The JS node's lookup finds y's QUIC address, announced by pairs.
    let want = format!("127.0.0.1:{y_port}");
    Swarm::wait(&js_out, "pairs' announcement in the JS lookup", |l| {
        l.contains("\"peer\"") && l.contains(&want)
    });
}

/// A short code found through the DHT alone (no LAN: the homes are isolated), as across the internet.
#[test]
fn a_short_code_is_found_through_the_dht() {
    let net = testnet();
    let boot = net.bootstrap[0].as_str();
    let (server, client) = (Home::new(), Home::new());
    let mut listener = server
        .pairs(&[
            "listen",
            "--code",
            "--bind",
            "127.0.0.1:0",
            "--dht-bootstrap",
            boot,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    listener
        .stdin
        .take()
        .unwrap()
        .write_all(b"through the dht\n")
        .unwrap();
    let stderr = lines_of(listener.stderr.take().unwrap());
    let _listener = Running(listener);
    let code = loop {
        let line = stderr.recv_timeout(WAIT).expect("listener printed a code");
        if let Some(code) = line.trim().strip_prefix("pairs connect ") {
            break code.to_owned();
        }
    };
    let child = client
        .pairs(&[
            "connect",
            &code,
            "--bind",
            "127.0.0.1:0",
            "--dht-bootstrap",
            boot,
            "--timeout",
            "40",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_output(child, WAIT + Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "through the dht\n");
}

/// `pairs send --code` found by `pairs get CODE` through the DHT alone (isolated homes: no LAN).
#[test]
fn a_send_code_is_found_through_the_dht() {
    let net = testnet();
    let boot = net.bootstrap[0].as_str();
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("notes.txt");
    std::fs::write(&file, b"through the dht\n").unwrap();
    let (server, client) = (Home::new(), Home::new());
    let mut sender = server
        .pairs(&[
            "send",
            "--code",
            file.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
            "--dht-bootstrap",
            boot,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let code = lines_of(sender.stdout.take().unwrap())
        .recv_timeout(WAIT)
        .expect("sender printed a code");
    let _sender = Running(sender);
    let out = files.path().join("out");
    let child = client
        .pairs(&[
            "get",
            code.trim(),
            "-o",
            out.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
            "--dht-bootstrap",
            boot,
            "--timeout",
            "40",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_output(child, WAIT + Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        std::fs::read(out.join("notes.txt")).unwrap(),
        b"through the dht\n"
    );
}
