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
