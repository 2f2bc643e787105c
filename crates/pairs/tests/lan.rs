//! LAN discovery end to end, in network namespaces built by the project's lab (`lab/lab.sh`):
//! hosts on one LAN find each other with mDNS, a LAN behind a router stays out of reach, pastes
//! arrive whole, avahi sees our nodes and we see avahi's, and rogue hosts get nothing.
//!
//! Needs root (run through `./test.sh`).

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::lab::{Lab, Running};
use common::swarm_proc::{SwarmProc, WAIT};
use common::{Home, lines_of, wait_output};

#[test]
fn three_hosts_on_a_lan_mesh_and_a_host_behind_a_router_is_not_found() {
    let lab = Lab::two_lans(&["a1", "a2", "a3"]);
    let mut a: Vec<SwarmProc> = ["a1", "a2", "a3"]
        .iter()
        .map(|n| SwarmProc::start(&lab, n, "lab-chat", &[]))
        .collect();
    let b1 = SwarmProc::start(&lab, "b1", "lab-chat", &[]);
    for (i, node) in a.iter().enumerate() {
        let others: BTreeSet<String> = a
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| n.short.clone())
            .collect();
        assert_eq!(
            node.wait_joined(2),
            others,
            "{} meshes with its LAN",
            node.short
        );
    }
    let a1_short = a[0].short.clone();
    a[0].say("hello from a1");
    a[1].wait_line(&format!("{a1_short} hello from a1"));
    a[2].wait_line(&format!("{a1_short} hello from a1"));
    // By now every LAN host has answered several mDNS rounds; the other LAN heard none of them.
    let (out, err) = b1.drain();
    assert!(out.is_empty(), "b1 received {out:?}");
    assert!(
        !err.iter().any(|l| l.contains(" joined")),
        "b1 met someone: {err:?}"
    );
}

#[test]
fn a_paste_reaches_two_receivers_byte_identical() {
    let lab = Lab::two_lans(&["a1", "a2", "a3"]);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    {
        // 100 MiB of pseudo-random bytes (incompressible, cheap to make).
        let mut f = File::create(&input).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..100 {
            for word in block.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes());
            }
            f.write_all(&block).unwrap();
        }
    }
    let homes = [Home::new(), Home::new(), Home::new()];
    let mut receivers = Vec::new();
    for (i, node) in ["a2", "a3"].iter().enumerate() {
        let out = dir.path().join(format!("out{i}"));
        let child = lab
            .pairs(
                node,
                &homes[i + 1],
                &["paste", "big", "--receive", "--timeout", "60"],
            )
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        receivers.push((child, out));
    }
    let sender = lab
        .pairs("a1", &homes[0], &["paste", "big", "--timeout", "60"])
        .stdin(File::open(&input).unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sent = wait_output(sender, Duration::from_secs(90));
    let sent_err = common::stderr_text(&sent);
    assert!(sent.status.success(), "sender: {sent_err}");
    assert!(sent_err.contains("sent to 2 peer(s)"), "{sent_err}");
    let want = blake3::hash(&std::fs::read(&input).unwrap());
    for (child, out) in receivers {
        let done = wait_output(child, Duration::from_secs(90));
        assert!(
            done.status.success(),
            "receiver: {}",
            common::stderr_text(&done)
        );
        let got = std::fs::read(&out).unwrap();
        assert_eq!(got.len(), 100 << 20);
        assert_eq!(blake3::hash(&got), want, "receiver's copy differs");
    }
}

/// DNS seeds served by dnsmasq on the public host let nodes behind a NAT in, with mDNS off: one
/// through A records (the seed's address, the port given), one through a TXT record holding the
/// seed's ticket; an unrelated TXT record next to it is ignored.
#[test]
fn dns_seeds_from_the_lab_dns_server_bring_nodes_in() {
    use pairs_base::{NodeAddr, NodeId, Ticket as _};

    let lab = Lab::two_lans(&["a1", "a2"]);
    lab.run(&["host", "pub", "wan", "203.0.113.10/24"]);
    let seed_home = Home::new();
    let seed_id: NodeId = full_id(&seed_home).parse().unwrap();
    let ticket = NodeAddr::new(seed_id, ["203.0.113.10:4000".parse().unwrap()]).to_ticket();
    lab.run(&[
        "dns",
        "pub",
        "host-record=seed.pairs.test,203.0.113.10",
        &format!("txt-record=peers.pairs.test,\"pairs={ticket}\""),
        "txt-record=peers.pairs.test,\"v=unrelated\"",
    ]);
    for host in ["a1", "a2"] {
        lab.run(&["resolver", host, "203.0.113.10"]);
    }
    let seed = SwarmProc::start_with_home(
        &lab,
        "pub",
        "seeded",
        &["--node-key", "--port", "4000", "--no-lan"],
        seed_home,
    );
    let by_a = SwarmProc::start(
        &lab,
        "a1",
        "seeded",
        &["--no-lan", "--seed", "seed.pairs.test:4000"],
    );
    let by_txt = SwarmProc::start(
        &lab,
        "a2",
        "seeded",
        &["--no-lan", "--seed", "peers.pairs.test"],
    );
    assert!(by_a.wait_joined(1).contains(&seed.short));
    assert!(by_txt.wait_joined(1).contains(&seed.short));
}

fn full_id(home: &Home) -> String {
    let out = home.run(&["id"]);
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs `avahi-browse` in `node` until a line matches, or fails after the wait.
fn avahi_browse_until(lab: &Lab, node: &str, matches: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = lab
            .avahi(
                node,
                "timeout",
                &["5", "avahi-browse", "-rpt", "_pairs._udp"],
            )
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(line) = text.lines().find(|l| l.starts_with('=') && matches(l)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "avahi-browse never listed it:\n{text}"
        );
    }
}

#[test]
fn avahi_lists_our_nodes_and_we_find_what_avahi_publishes() {
    let lab = Lab::two_lans(&["a1", "a2", "a3"]);
    lab.run(&["avahi", "a1", "start"]);
    lab.run(&["avahi", "a2", "start"]);

    // Our advertisement, seen by avahi on another host: right port, our id in the TXT record.
    let home1 = Home::new();
    let id1 = full_id(&home1);
    let mut ours = lab
        .pairs(
            "a1",
            &home1,
            &["swarm", "avahi-t", "--node-key", "--port", "45000"],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ours_stdin = ours.stdin.take();
    let _ours = Running(ours);
    let line = avahi_browse_until(&lab, "a2", |l| l.contains(&id1));
    assert!(line.contains(";192.168.1.11;45000;"), "{line}");
    assert!(line.contains(&format!("\"id={id1}\"")), "{line}");
    assert!(line.contains("\"v=1\""), "{line}");

    // avahi's advertisement, found by our browser: a node that does not advertise itself
    // (--isolated) is published by avahi-publish, and a node on another host joins it.
    let home2 = Home::new();
    let id2 = full_id(&home2);
    let hidden = SwarmProc::start_with_home(
        &lab,
        "a2",
        "avahi-t",
        &["--isolated", "--node-key", "--port", "45001"],
        home2,
    );
    let txt_id = format!("id={id2}");
    let publish = lab
        .avahi(
            "a2",
            "avahi-publish",
            &[
                "-s",
                "published-by-avahi",
                "_pairs._udp",
                "45001",
                &txt_id,
                "v=1",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _publish = Running(publish);
    let mut finder = SwarmProc::start(&lab, "a3", "avahi-t", &[]);
    // a3 joins the node published by avahi.
    finder.wait_joined_by(&hidden.short);
}

/// A rogue host on the LAN answers mDNS with its own address for the sender's id, runs a listener
/// there, and joins under guessed names: it gets none of the paste and none of the swarm's lines.
#[test]
fn a_rogue_host_gets_neither_the_paste_nor_the_lines() {
    let lab = Lab::two_lans(&["a1", "a2", "rg"]);
    lab.run(&["avahi", "rg", "start"]);
    let sender_home = Home::new();
    let sender_id = full_id(&sender_home);

    // The spoof: "the sender is at 192.168.1.13:46000", where the rogue listens with its own key.
    let rogue_home = Home::new();
    let listener = lab
        .pairs("rg", &rogue_home, &["listen", "--keep", "--port", "46000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut listener = Running(listener);
    let rogue_out = lines_of(listener.0.stdout.take().unwrap());
    let txt_id = format!("id={sender_id}");
    let spoof = lab
        .avahi(
            "rg",
            "avahi-publish",
            &["-s", "spoof", "_pairs._udp", "46000", &txt_id, "v=1"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _spoof = Running(spoof);
    // The rogue also tries to receive a paste and to join the chat under names it guesses.
    let rogue_paste = lab
        .pairs(
            "rg",
            &Home::new(),
            &["paste", "--receive", "--timeout", "15"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rogue_swarm = SwarmProc::start(&lab, "rg", "lab-chaT", &[]);

    // Both give up (--timeout) before the test's WAIT, so a failure shows their own message.
    let receiver = lab
        .pairs(
            "a2",
            &Home::new(),
            &["paste", "secret-name", "--receive", "--timeout", "25"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sender = lab
        .pairs(
            "a1",
            &sender_home,
            &["paste", "secret-name", "--node-key", "--timeout", "25"],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = sender.stdin.take().unwrap();
        stdin.write_all(b"the secret paste\n").unwrap();
    }
    let sent = wait_output(sender, WAIT);
    assert!(sent.status.success(), "{}", common::stderr_text(&sent));
    let received = wait_output(receiver, WAIT);
    assert_eq!(received.stdout, b"the secret paste\n");

    let mut chat1 = SwarmProc::start(&lab, "a1", "lab-chat", &[]);
    let chat2 = SwarmProc::start(&lab, "a2", "lab-chat", &[]);
    chat1.wait_joined(1);
    chat1.say("for members only");
    chat2.wait_line(&format!("{} for members only", chat1.short));

    let rogue_paste = wait_output(rogue_paste, WAIT);
    assert!(!rogue_paste.status.success(), "the rogue found a paste");
    assert!(
        rogue_paste.stdout.is_empty(),
        "the rogue received paste data"
    );
    let (out, err) = rogue_swarm.drain();
    assert!(out.is_empty(), "the rogue received lines: {out:?}");
    assert!(
        !err.iter().any(|l| l.contains(" joined")),
        "the rogue met someone: {err:?}"
    );
    let heard: Vec<String> = rogue_out.try_iter().collect();
    assert!(heard.is_empty(), "the rogue's listener received {heard:?}");
}

/// Malformed mDNS packets on the LAN and garbage on a node's port neither crash nor stall it.
#[test]
fn malformed_mdns_and_garbage_do_not_stop_a_node() {
    let lab = Lab::two_lans(&["a1", "a2", "rg"]);
    let mut a1 = SwarmProc::start(&lab, "a1", "sturdy", &["--port", "47000"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/udp_garbage.py");
    let out = lab
        .exec("rg", "python3", &[script, "3000", "192.168.1.11:47000"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // After the flood, a new node still finds a1 and they talk.
    let a2 = SwarmProc::start(&lab, "a2", "sturdy", &[]);
    assert_eq!(a1.wait_joined(1), BTreeSet::from([a2.short.clone()]));
    assert_eq!(a2.wait_joined(1), BTreeSet::from([a1.short.clone()]));
    a1.say("still here");
    a2.wait_line(&format!("{} still here", a1.short));
}

/// Runs `program args` in `node` and asserts it succeeded.
fn run_in(lab: &Lab, node: &str, program: &str, args: &[&str]) {
    let out = lab.exec(node, program, args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} in {node}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Hosts with no IPv4 at all find each other by their IPv6 link-local addresses (AAAA records
/// scoped to the interface they were heard on) and talk over them.
#[test]
fn hosts_with_only_ipv6_link_local_addresses_meet() {
    let lab = Lab::two_lans(&["a1", "a2"]);
    for host in ["a1", "a2"] {
        run_in(&lab, host, "ip", &["-4", "addr", "flush", "dev", "eth0"]);
    }
    let mut a1 = SwarmProc::start(&lab, "a1", "six", &[]);
    let a2 = SwarmProc::start(&lab, "a2", "six", &[]);
    assert_eq!(a1.wait_joined(1), BTreeSet::from([a2.short.clone()]));
    assert_eq!(a2.wait_joined(1), BTreeSet::from([a1.short.clone()]));
    a1.say("over link-local");
    a2.wait_line(&format!("{} over link-local", a1.short));
}

/// A node started on a host with no address yet is found once the address arrives: the mDNS
/// responder picks up interfaces that appear while it runs.
#[test]
fn a_host_that_gets_its_address_after_start_is_found() {
    let lab = Lab::two_lans(&["a1", "a2"]);
    run_in(
        &lab,
        "a2",
        "sysctl",
        &["-qw", "net.ipv6.conf.eth0.disable_ipv6=1"],
    );
    run_in(&lab, "a2", "ip", &["-4", "addr", "flush", "dev", "eth0"]);
    let a2 = SwarmProc::start(&lab, "a2", "late", &[]);
    let mut a1 = SwarmProc::start(&lab, "a1", "late", &[]);
    run_in(
        &lab,
        "a2",
        "ip",
        &["addr", "add", "192.168.1.12/24", "dev", "eth0"],
    );
    run_in(
        &lab,
        "a2",
        "ip",
        &["route", "replace", "224.0.0.0/4", "dev", "eth0"],
    );
    run_in(
        &lab,
        "a2",
        "sysctl",
        &["-qw", "net.ipv6.conf.eth0.disable_ipv6=0"],
    );
    assert_eq!(a1.wait_joined(1), BTreeSet::from([a2.short.clone()]));
    assert_eq!(a2.wait_joined(1), BTreeSet::from([a1.short.clone()]));
    a1.say("welcome");
    a2.wait_line(&format!("{} welcome", a1.short));
}
