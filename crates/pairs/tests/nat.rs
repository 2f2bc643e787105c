//! NAT traversal in the lab: a1 behind router r1 and b1 behind r2, each router in one of the four NAT
//! behaviours, and a helper (`pairs serve`) on the public segment. a1 knows only b1's node id and
//! the helper's ticket. Every combination must connect: directly (hole punched) where the lab's
//! reference punch works, through the helper's relay in the two combinations where it cannot.

mod common;

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use common::lab::{Lab, Running};
use common::swarm_proc::SwarmProc;
use common::{Home, lines_of, wait_output};

const WAIT: Duration = Duration::from_secs(40);
const MODES: [&str; 4] = ["fullcone", "restricted", "portrestricted", "symmetric"];

/// Two NATed LANs and a public host `pub` (203.0.113.10) running a helper on port 4000.
struct NatLab {
    lab: Lab,
    helper_ticket: String,
    _helper: Running,
}

impl NatLab {
    fn new() -> Self {
        let lab = Lab::two_lans(&["a1"]);
        lab.run(&["host", "pub", "wan", "203.0.113.10/24"]);
        let home = Home::new();
        let mut helper = lab
            .pairs("pub", &home, &["serve", "--port", "4000"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pairs serve");
        let stdout = lines_of(helper.stdout.take().unwrap());
        let helper_ticket = stdout
            .recv_timeout(WAIT)
            .expect("helper printed its ticket");
        std::mem::forget(home);
        Self {
            lab,
            helper_ticket,
            _helper: Running(helper),
        }
    }

    /// Sets both NATs, connects a1 to b1 by id through the helper, checks the bytes both ways, and
    /// returns how `pairs connect` says it connected.
    fn connect(&self, nat1: &str, nat2: &str) -> String {
        self.lab.run(&["nat", "r1", nat1]);
        self.lab.run(&["nat", "r2", nat2]);
        let (a_home, b_home) = (Home::new(), Home::new());
        let b_id = node_id(&b_home);
        let mut listener = start_with_input(
            self.lab
                .pairs("b1", &b_home, &["listen", "--via", &self.helper_ticket])
                // Logs of the traversal, shown if the test fails.
                .env("RUST_LOG", "pairs_net::nat=debug"),
            b"hello from b1\n",
        );
        let b_err = lines_of(listener.stderr.take().unwrap());
        loop {
            let line = b_err
                .recv_timeout(WAIT)
                .expect("b1 registered with the helper");
            if line.contains("reachable through helper") {
                break;
            }
        }
        let dialer = start_with_input(
            self.lab
                .pairs(
                    "a1",
                    &a_home,
                    &["connect", &b_id, "--via", &self.helper_ticket],
                )
                .env("RUST_LOG", "pairs_net::nat=debug"),
            b"hello from a1\n",
        );
        let a_out = wait_output(dialer, WAIT);
        let a_err = String::from_utf8_lossy(&a_out.stderr).into_owned();
        if !a_out.status.success() {
            let _ = listener.kill();
            let b_err: Vec<String> = b_err.try_iter().collect();
            panic!(
                "{nat1} -> {nat2}: connect failed: {a_err}\nthe listener said:\n{}",
                b_err.join("\n")
            );
        }
        assert_eq!(
            String::from_utf8_lossy(&a_out.stdout),
            "hello from b1\n",
            "{nat1} -> {nat2}: {a_err}"
        );
        let b_out = wait_output(listener, WAIT);
        assert_eq!(String::from_utf8_lossy(&b_out.stdout), "hello from a1\n");
        a_err
            .lines()
            .find(|l| l.contains("pairs: connected to"))
            .unwrap_or_else(|| panic!("no connected line in {a_err}"))
            .to_string()
    }
}

/// Starts `command` with its output captured and `input` as its whole stdin.
fn start_with_input(command: &mut std::process::Command, input: &[u8]) -> std::process::Child {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pairs");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child
}

fn node_id(home: &Home) -> String {
    let out = home.run(&["id"]);
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The lab's reference punch fails exactly between a symmetric NAT and a symmetric or
/// port-restricted one.
fn punchable(nat1: &str, nat2: &str) -> bool {
    let hard = |a: &str, b: &str| a == "symmetric" && (b == "symmetric" || b == "portrestricted");
    !(hard(nat1, nat2) || hard(nat2, nat1))
}

/// One row of the matrix: r1 in `nat1`, r2 in each mode.
fn matrix_row(nat1: &str) {
    let lab = NatLab::new();
    let mut report = Vec::new();
    for nat2 in MODES {
        let started = std::time::Instant::now();
        let how = lab.connect(nat1, nat2);
        let how = format!("{how} [{} ms in all]", started.elapsed().as_millis());
        let expected = if punchable(nat1, nat2) {
            "(hole punched"
        } else {
            "(relayed by"
        };
        report.push(format!("{nat1} -> {nat2}: {how}"));
        assert!(
            how.contains(expected),
            "{nat1} -> {nat2}: expected {expected}, got: {how}\n{}",
            report.join("\n")
        );
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn nat_matrix_from_full_cone() {
    matrix_row("fullcone");
}

#[test]
fn nat_matrix_from_restricted_cone() {
    matrix_row("restricted");
}

#[test]
fn nat_matrix_from_port_restricted_cone() {
    matrix_row("portrestricted");
}

#[test]
fn nat_matrix_from_symmetric() {
    matrix_row("symmetric");
}

/// a1 behind r1 (port-restricted), with miniupnpd on r1 speaking `protocol` (it speaks all three; the
/// node is told to use only this one): the node maps its port, a node on the public host connects
/// straight to the mapped address, and the mapping is gone once the node exits.
fn port_mapping_makes_a_node_reachable(protocol: &str) {
    let lab = Lab::two_lans(&["a1"]);
    lab.run(&["host", "pub", "wan", "203.0.113.10/24"]);
    lab.run(&["addr", "pub", "203.0.113.20/24"]);
    lab.run(&["turn", "pub", "start"]);
    lab.run(&["upnp", "r1", "start", "203.0.113.10"]);
    let (a_home, pub_home) = (Home::new(), Home::new());
    let listen = ["listen", "--port", "5000", "--port-mapping", protocol];
    let mut listener = start_with_input(&mut lab.pairs("a1", &a_home, &listen), b"hello from a1\n");
    let a_err = lines_of(listener.stderr.take().unwrap());
    let mut seen = Vec::new();
    let ticket = loop {
        let line = a_err.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!(
                "{protocol}: no port mapping announced:\n{}",
                seen.join("\n")
            )
        });
        seen.push(line.clone());
        if seen.iter().any(|l| l.contains("port mapped with"))
            && let Some(ticket) = line.trim().strip_prefix("pairs connect ")
        {
            break ticket.to_string();
        }
    };
    let mapped_line = seen
        .iter()
        .find(|l| l.contains("port mapped with"))
        .unwrap();
    assert!(
        mapped_line.contains("reachable at 203.0.113.1:5000"),
        "{mapped_line}"
    );
    let connect = ["connect", &ticket];
    let dialer = start_with_input(
        &mut lab.pairs("pub", &pub_home, &connect),
        b"hello from pub\n",
    );
    let out = wait_output(dialer, WAIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{protocol}: {err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from a1\n");
    assert!(
        err.contains("at 203.0.113.1:5000 (direct)"),
        "{protocol}: not through the mapping: {err}"
    );
    let listened = wait_output(listener, WAIT);
    assert_eq!(
        String::from_utf8_lossy(&listened.stdout),
        "hello from pub\n"
    );
    // The forward is gone from the router's ruleset.
    let rules = lab
        .exec("r1", "nft", &["list", "table", "inet", "miniupnpd"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(
        !rules.contains("dnat"),
        "{protocol}: mapping left behind:\n{rules}"
    );
}

#[test]
fn port_mapping_with_pcp() {
    port_mapping_makes_a_node_reachable("pcp");
}

#[test]
fn port_mapping_with_nat_pmp() {
    port_mapping_makes_a_node_reachable("natpmp");
}

#[test]
fn port_mapping_with_upnp() {
    port_mapping_makes_a_node_reachable("upnp");
}

/// `pairs doctor` behind r1 names the NAT type r1 is set to, from the RFC 5780 answers of a coturn
/// with two addresses, and reports the helper's view.
#[test]
fn doctor_names_the_nat_type_of_each_mode() {
    let lab = NatLab::new();
    lab.lab.run(&["addr", "pub", "203.0.113.20/24"]);
    lab.lab.run(&["turn", "pub", "start"]);
    let home = Home::new();
    for (mode, expected) in [
        ("fullcone", "full-cone"),
        ("restricted", "restricted-cone"),
        ("portrestricted", "port-restricted-cone"),
        ("symmetric", "symmetric"),
    ] {
        lab.lab.run(&["nat", "r1", mode]);
        let child = lab
            .lab
            .pairs(
                "a1",
                &home,
                &[
                    "doctor",
                    "--json",
                    "--stun",
                    "203.0.113.10:3478",
                    "--port-mapping",
                    "off",
                    "--via",
                    &lab.helper_ticket,
                ],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_output(child, WAIT);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["nat"]["nat_type"], expected, "{mode}: {report:#}");
        assert_eq!(
            report["publicly_reachable"],
            mode == "fullcone",
            "{mode}: {report:#}"
        );
        let mapped = report["stun"][0]["mapped"].as_str().unwrap();
        assert!(mapped.starts_with("203.0.113.1:"), "{mapped}");
        assert_eq!(report["stun"][0]["other_address"], "203.0.113.20:3479");
        let seen_by_helper = report["helper"]["observed"].as_str().unwrap();
        assert!(seen_by_helper.starts_with("203.0.113.1:"), "{report:#}");
    }
}

/// Only TURN: a1 and b1 behind symmetric NATs, no helper, both with an allocation on the coturn on the
/// public host. 10 MiB go from a1 to b1 intact, through the relay.
#[test]
fn turn_carries_ten_mib_between_two_symmetric_nats() {
    use sha2::{Digest, Sha256};
    let lab = NatLab::new();
    lab.lab.run(&["turn", "pub", "start"]);
    lab.lab.run(&["nat", "r1", "symmetric"]);
    lab.lab.run(&["nat", "r2", "symmetric"]);
    let turn = "test:test123@203.0.113.10:3478";
    let (a_home, b_home) = (Home::new(), Home::new());
    let mut listener = lab
        .lab
        .pairs(
            "b1",
            &b_home,
            &["listen", "--turn", turn, "--port-mapping", "off"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pairs listen");
    let b_err = lines_of(listener.stderr.take().unwrap());
    let mut seen = Vec::new();
    let ticket = loop {
        let line = b_err
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no TURN ticket:\n{}", seen.join("\n")));
        seen.push(line.clone());
        if seen
            .iter()
            .any(|l| l.contains("TURN relay at 203.0.113.10:"))
            && let Some(rest) = line.trim().strip_prefix("pairs connect ")
        {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let data: Vec<u8> = (0..10 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), &data).unwrap();
    // The listener's output is collected while the dialer runs (a full pipe would stall the transfer).
    let listened = std::thread::spawn(move || wait_output(listener, Duration::from_secs(120)));
    let dialer = lab
        .lab
        .pairs("a1", &a_home, &["connect", &ticket, "--turn", turn])
        .stdin(std::fs::File::open(input.path()).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pairs connect");
    let a_out = wait_output(dialer, Duration::from_secs(120));
    let a_err = String::from_utf8_lossy(&a_out.stderr);
    assert!(a_out.status.success(), "connect failed: {a_err}");
    assert!(
        a_err.contains("relayed by TURN server 203.0.113.10:3478"),
        "{a_err}"
    );
    let b_out = listened.join().unwrap();
    assert!(b_out.status.success());
    assert_eq!(b_out.stdout.len(), data.len());
    assert_eq!(
        Sha256::digest(&b_out.stdout),
        Sha256::digest(&data),
        "the 10 MiB arrived altered"
    );
}

/// The topic of the swarm tests, and what their members log.
const TOPIC: &str = "meet-through-nats";
const SWARM_LOG: &str = "pairs_net::swarm=debug,pairs_net::nat=debug";

/// Two swarm members behind NATs, each knowing only a public member's address, meet: the public
/// member tells each of the other (peer exchange) and introduces them. Returns how the member that
/// asked for the introduction reached the other.
fn swarm_members_meet(nat1: &str, nat2: &str) -> String {
    let (_lab, _public, mut a1, mut b1) = members_behind_nats(nat1, nat2, &[]);
    a1.wait_joined_by(&b1.short.clone());
    b1.wait_joined_by(&a1.short.clone());
    a1.say("across two NATs");
    b1.wait_line(&format!("{} across two NATs", a1.short));
    b1.say("and back");
    a1.wait_line(&format!("{} and back", b1.short));
    let mut paths = a1.lines_with("reached through a helper");
    paths.extend(b1.lines_with("reached through a helper"));
    assert_eq!(paths.len(), 1, "one introduction: {paths:?}");
    paths.remove(0)
}

/// The lab with both NATs set, a public member started with `public_args`, and a1 and b1 started
/// knowing only its address.
fn members_behind_nats(
    nat1: &str,
    nat2: &str,
    public_args: &[&str],
) -> (Lab, SwarmProc, SwarmProc, SwarmProc) {
    let lab = Lab::two_lans(&["a1"]);
    lab.run(&["host", "pub", "wan", "203.0.113.10/24"]);
    lab.run(&["nat", "r1", nat1]);
    lab.run(&["nat", "r2", nat2]);
    let mut args = vec!["--port", "4000"];
    args.extend_from_slice(public_args);
    let public = SwarmProc::start_logged(&lab, "pub", TOPIC, &args, SWARM_LOG);
    let peer = ["--peer", "203.0.113.10:4000"];
    let a1 = SwarmProc::start_logged(&lab, "a1", TOPIC, &peer, SWARM_LOG);
    let b1 = SwarmProc::start_logged(&lab, "b1", TOPIC, &peer, SWARM_LOG);
    (lab, public, a1, b1)
}

#[test]
fn swarm_members_behind_port_restricted_nats_punch_through_a_public_member() {
    let path = swarm_members_meet("portrestricted", "portrestricted");
    assert!(path.contains("Punched"), "{path}");
}

#[test]
fn swarm_members_behind_symmetric_nats_are_relayed_by_a_public_member() {
    let path = swarm_members_meet("symmetric", "symmetric");
    assert!(path.contains("Relayed"), "{path}");
}

/// A public member started with `--no-relay` still introduces, but refuses the circuit that two
/// symmetric NATs would need, and says so to the member that asked.
#[test]
fn a_member_with_no_relay_refuses_circuits() {
    let (_lab, _public, mut a1, _b1) =
        members_behind_nats("symmetric", "symmetric", &["--no-relay"]);
    // a1 asks first if its id is the smaller, else after the larger id's wait: either way it asks.
    let line = a1.wait_said("introduction failed");
    assert!(line.contains("does not relay"), "{line}");
}
