//! `pairs node`: the control socket, commands going through a running node, crash safety, and logs
//! shared between nodes that replicate live.

mod common;

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::lab::{Lab, Running};
use common::node_proc::NodeProc;
use common::{Home, SHORT, lines_of, stderr_text, wait_output};
use pairs::control::Response;

fn ok(output: std::process::Output) -> String {
    assert!(output.status.success(), "{}", stderr_text(&output));
    String::from_utf8(output.stdout).unwrap()
}

fn new_log(home: &Home) -> String {
    ok(home.run(&["log", "new"])).trim().to_owned()
}

/// Starts `pairs log cat TICKET --follow` and returns it with its stdout lines.
fn follow(home: &Home, ticket: &str) -> (Child, mpsc::Receiver<String>) {
    let mut child = home
        .pairs(&["log", "cat", ticket, "--follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    (child, lines)
}

/// Collects lines until `done` says so, failing after `limit`.
fn collect_until(
    lines: &mpsc::Receiver<String>,
    limit: Duration,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "gave up after {limit:?}; saw {} lines: {:?}",
                seen.len(),
                seen.iter().rev().take(5).collect::<Vec<_>>()
            ),
        }
    }
    seen
}

/// One raw frame on the control socket: length, version, body.
fn raw_frame(body: &[u8]) -> Vec<u8> {
    let mut frame = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    frame.push(pairs::control::VERSION);
    frame.extend_from_slice(body);
    frame
}

/// Reads one response frame; `None` if the node hung up.
fn read_response(stream: &mut UnixStream) -> Option<Response> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).ok()?;
    assert_eq!(body[0], pairs::control::VERSION);
    Some(postcard::from_bytes(&body[1..]).expect("a response"))
}

fn expect_error(stream: &mut UnixStream, needle: &str) {
    match read_response(stream) {
        Some(Response::Error(message)) => {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}")
        }
        other => panic!("expected an error about {needle:?}, got {other:?}"),
    }
    // Then the node hangs up.
    let mut rest = Vec::new();
    stream.set_read_timeout(Some(SHORT)).unwrap();
    assert_eq!(stream.read_to_end(&mut rest).unwrap(), 0);
}

#[test]
fn the_control_socket_is_private_and_survives_bad_requests() {
    let home = Home::new();
    let node = NodeProc::start(&home, "127.0.0.1:0", &[]);
    let socket = home.path().join(pairs::control::SOCKET_FILE);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");

    // Garbage: a frame that is not a request.
    let mut stream = UnixStream::connect(&socket).unwrap();
    stream.set_read_timeout(Some(SHORT)).unwrap();
    stream.write_all(&raw_frame(&[0xff; 40])).unwrap();
    expect_error(&mut stream, "malformed");

    // A length prefix far over the limit is refused before anything is read.
    let mut stream = UnixStream::connect(&socket).unwrap();
    stream.set_read_timeout(Some(SHORT)).unwrap();
    stream.write_all(&u32::MAX.to_be_bytes()).unwrap();
    expect_error(&mut stream, "over the limit");

    // Another protocol version.
    let mut stream = UnixStream::connect(&socket).unwrap();
    stream.set_read_timeout(Some(SHORT)).unwrap();
    stream.write_all(&[0, 0, 0, 2, 9, 0]).unwrap();
    expect_error(&mut stream, "version 9");

    // Half a frame, then the client goes away; and many connections at once.
    let idle: Vec<UnixStream> = (0..80)
        .map(|_| {
            let mut s = UnixStream::connect(&socket).unwrap();
            s.write_all(&[0, 0, 1]).unwrap();
            s
        })
        .collect();
    drop(idle);

    // The node still serves.
    let ticket = new_log(&home);
    ok(home.run(&["log", "append", &ticket, "still here"]));
    assert_eq!(ok(home.run(&["log", "cat", &ticket])), "still here\n");

    // Followers of a quiet log that go away give their connections back: more of them than the
    // node serves at once, one after the other.
    for _ in 0..70 {
        let mut follower = home
            .pairs(&["log", "cat", &ticket, "--follow"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let lines = common::lines_of(follower.stdout.take().unwrap());
        assert_eq!(lines.recv_timeout(SHORT).unwrap(), "still here");
        follower.kill().unwrap();
        follower.wait().unwrap();
    }
    assert_eq!(ok(home.run(&["log", "cat", &ticket])), "still here\n");

    // Another user cannot use the socket, even when its mode would let them: as root, connect as
    // nobody through a copy of the socket's directory entry made world-writable.
    if is_root()
        && std::process::Command::new("setpriv")
            .arg("--help")
            .output()
            .is_ok()
    {
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_pairs"))
            .args(["log", "cat", &ticket])
            .env("PAIRS_HOME", home.path())
            .env("PAIRS_ISOLATED", "1")
            .output()
            .unwrap();
        assert!(!out.status.success(), "another user was served");
        assert!(out.stdout.is_empty(), "another user read the log");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("closed the control connection"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
        // The node still serves its own user.
        assert_eq!(ok(home.run(&["log", "cat", &ticket])), "still here\n");
    }
    assert!(node.stop().success());
    assert!(!socket.exists(), "the socket is removed on exit");
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[test]
fn four_appenders_and_a_follower_share_one_running_node() {
    let home = Home::new();
    let _node = NodeProc::start(&home, "127.0.0.1:0", &[]);
    let ticket = new_log(&home);
    let (mut follower, lines) = follow(&home, &ticket);
    let started = Instant::now();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let mut child = home
                .pairs(&["log", "append", &ticket, "-", "--lines"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            thread::spawn(move || {
                for i in 0..500 {
                    writeln!(stdin, "writer {w} line {i}").unwrap();
                }
            });
            child
        })
        .collect();
    // And one entry at a time, as a shell loop would.
    for i in 0..20 {
        ok(home.run(&["log", "append", &ticket, &format!("single {i}")]));
    }
    for writer in writers {
        let out = wait_output(writer, SHORT);
        assert!(out.status.success(), "{}", stderr_text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 500);
    }
    // Nobody waited on a store lock (that wait alone was 10 s).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let seen = collect_until(&lines, SHORT, |seen| seen.len() >= 2020);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for line in &seen {
        *counts.entry(line.as_str()).or_default() += 1;
    }
    assert_eq!(counts.len(), 2020, "every entry, each once");
    assert!(counts.values().all(|&n| n == 1));
    for w in 0..4 {
        assert_eq!(
            counts.get(format!("writer {w} line 499").as_str()),
            Some(&1)
        );
    }
    // Nothing more arrives: no duplicates trail behind.
    assert!(lines.recv_timeout(Duration::from_millis(300)).is_err());
    let _ = follower.kill();
    let _ = follower.wait();
}

#[test]
fn appends_reported_committed_survive_kill_9_of_the_node() {
    let home = Home::new();
    let ticket = new_log(&home);
    let mut committed: Vec<String> = Vec::new();
    for round in 0..20usize {
        let node = NodeProc::start(&home, "127.0.0.1:0", &[]);
        let mut appender = home
            .pairs(&["log", "append", &ticket, "-", "--lines"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = appender.stdin.take().unwrap();
        let (done, until_done) = mpsc::channel::<()>();
        let feeder = thread::spawn(move || {
            // Bounded, so the log stays small, and stdin stays open until the node is gone: the
            // appender ends because it lost its node, not because its input ended.
            for i in 0..2_000 {
                if writeln!(stdin, "round {round} line {i}").is_err() {
                    return;
                }
            }
            let _ = until_done.recv();
        });
        // Read ids as they come, so the appender never blocks on a full pipe.
        let ids = lines_of(appender.stdout.take().unwrap());
        for _ in 0..(3 + round * 11) {
            committed.push(ids.recv_timeout(SHORT).expect("an id"));
        }
        node.kill9();
        drop(done);
        common::wait_status(appender, SHORT);
        feeder.join().unwrap();
        // Ids printed before the kill but read after it are committed too.
        committed.extend(ids.iter());
        // No node runs now: the command opens the store itself, which must open cleanly.
        let json = ok(home.run(&["log", "cat", &ticket, "--json"]));
        let stored = common::ids_in_json(&json);
        for id in &committed {
            assert!(
                stored.contains(id),
                "round {round}: committed entry {id} lost"
            );
        }
    }
}

#[test]
fn shared_logs_replicate_live_between_nodes_and_catch_up() {
    let (a, b, c) = (Home::new(), Home::new(), Home::new());
    let node_a = NodeProc::start(&a, "127.0.0.1:0", &[]);
    let a_addr = node_a.addr();
    let ticket = new_log(&a);
    ok(a.run(&["log", "append", &ticket, "before b"]));
    ok(a.run(&["log", "sync", &ticket]));
    // B knows A only by address; it shares the log too, and follows it.
    let _node_b = NodeProc::start(&b, "127.0.0.1:0", &["--peer", &a_addr.to_string()]);
    ok(b.run(&["log", "sync", &ticket]));
    let (mut follower, lines) = follow(&b, &ticket);
    collect_until(&lines, SHORT, |seen| seen.iter().any(|l| l == "before b"));
    ok(a.run(&["log", "append", &ticket, "live from a"]));
    collect_until(&lines, SHORT, |seen| {
        seen.iter().any(|l| l == "live from a")
    });

    // A restarts on the same address: it shares the log again by itself, and B reconnects.
    assert!(node_a.stop().success());
    let node_a = NodeProc::start(&a, &a_addr.to_string(), &[]);
    ok(a.run(&["log", "append", &ticket, "after restart"]));
    collect_until(&lines, Duration::from_secs(60), |seen| {
        seen.iter().any(|l| l == "after restart")
    });

    // 10,000 entries later, C joins knowing only B, and catches up.
    common::append_bulk(a.pairs(&["log", "append", &ticket, "-", "--lines"]), 10_000);
    let _node_c = NodeProc::start(&c, "127.0.0.1:0", &["--peer", &_node_b.addr().to_string()]);
    ok(c.run(&["log", "sync", &ticket]));
    let (mut c_follower, c_lines) = follow(&c, &ticket);
    let caught_up = collect_until(&c_lines, Duration::from_secs(60), |seen| {
        seen.len() >= 10_003
    });
    assert!(caught_up.iter().any(|l| l == "bulk 9999"));
    let _ = c_follower.kill();
    let _ = c_follower.wait();
    collect_until(&lines, SHORT, |seen| seen.iter().any(|l| l == "bulk 9999"));
    let _ = follower.kill();
    let _ = follower.wait();
    drop(node_a);
}

/// `pairs log cat TICKET --follow` in a lab host, with its stdout lines.
fn lab_follow(
    lab: &Lab,
    host: &str,
    home: &Home,
    ticket: &str,
) -> (Running, mpsc::Receiver<String>) {
    let mut child = lab
        .pairs(host, home, &["log", "cat", ticket, "--follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    (Running(child), lines)
}

fn lab_ok(lab: &Lab, host: &str, home: &Home, args: &[&str]) -> String {
    let child = lab
        .pairs(host, home, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ok(wait_output(child, SHORT))
}

/// Two nodes behind different NATs that know only a log ticket and one public member's address
/// replicate the log live, directly (a hole punched through the member), keep going across a
/// restart, and a third node that comes 10,000 entries later catches up.
#[test]
fn nodes_behind_nats_share_a_log_through_a_public_member() {
    let lab = Lab::two_lans(&["a1", "c1"]);
    lab.run(&["host", "pub", "wan", "203.0.113.10/24"]);
    lab.run(&["nat", "r1", "portrestricted"]);
    lab.run(&["nat", "r2", "portrestricted"]);
    let (a, b, c, public) = (Home::new(), Home::new(), Home::new(), Home::new());
    let peer = ["--peer", "203.0.113.10:4000"];
    let _public = NodeProc::spawn(lab.pairs("pub", &public, &["node", "--port", "4000"]));
    let _a = NodeProc::spawn(lab.pairs("a1", &a, &["node", peer[0], peer[1]]));
    let b_node = NodeProc::spawn(lab.pairs("b1", &b, &["node", peer[0], peer[1]]));
    let ticket = lab_ok(&lab, "a1", &a, &["log", "new"]).trim().to_owned();
    // The public member shares the log first, as a long-running member would: a member whose
    // connection was closed for sharing nothing is redialed only when the dialer's own topics change.
    for (host, home) in [("pub", &public), ("a1", &a), ("b1", &b)] {
        lab_ok(&lab, host, home, &["log", "sync", &ticket]);
    }
    let (_follower, lines) = lab_follow(&lab, "b1", &b, &ticket);
    lab_ok(
        &lab,
        "a1",
        &a,
        &["log", "append", &ticket, "across two NATs"],
    );
    collect_until(&lines, Duration::from_secs(60), |seen| {
        seen.iter().any(|l| l == "across two NATs")
    });
    // a1 and b1 replicate with each other, not only through the public member.
    let a_id = lab_ok(&lab, "a1", &a, &["id"]).trim().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = lab_ok(&lab, "b1", &b, &["node", "status", "--json"]);
        let json: serde_json::Value = serde_json::from_str(&status).unwrap();
        let peers = json["logs"][0]["peers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if peers.iter().any(|p| p.as_str() == Some(a_id.as_str())) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "b1 never replicated with a1 directly: {status}"
        );
        thread::sleep(Duration::from_millis(200));
    }

    // b1 restarts: it shares the log again by itself and entries keep flowing.
    drop(_follower);
    assert!(b_node.stop().success());
    let _b = NodeProc::spawn(lab.pairs("b1", &b, &["node", peer[0], peer[1]]));
    let (_follower, lines) = lab_follow(&lab, "b1", &b, &ticket);
    lab_ok(
        &lab,
        "a1",
        &a,
        &["log", "append", &ticket, "after the restart"],
    );
    collect_until(&lines, Duration::from_secs(60), |seen| {
        seen.iter().any(|l| l == "after the restart")
    });

    // 10,000 entries later, c1 joins with only the ticket and the public member, and catches up.
    common::append_bulk(
        lab.pairs("a1", &a, &["log", "append", &ticket, "-", "--lines"]),
        10_000,
    );
    let _c = NodeProc::spawn(lab.pairs("c1", &c, &["node", peer[0], peer[1]]));
    lab_ok(&lab, "c1", &c, &["log", "sync", &ticket]);
    let (_c_follower, c_lines) = lab_follow(&lab, "c1", &c, &ticket);
    let caught_up = collect_until(&c_lines, Duration::from_secs(60), |seen| {
        seen.len() >= 10_002
    });
    assert!(caught_up.iter().any(|l| l == "bulk 9999"));
    collect_until(&lines, SHORT, |seen| seen.iter().any(|l| l == "bulk 9999"));
}
