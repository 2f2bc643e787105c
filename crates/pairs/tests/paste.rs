//! `pairs paste` on loopback: a sender (isolated) and receivers given its ticket with `--peer`.

mod common;

use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{Home, lines_of, stderr_text, wait_output};

/// A running sender of `data` and the ticket receivers reach it with.
struct Sender {
    child: Child,
    ticket: String,
    stderr: Receiver<String>,
    _home: Home,
}

impl Sender {
    fn start(data: &[u8], extra: &[&str]) -> Self {
        let home = Home::new();
        let mut args = vec!["paste", "--send", "--bind", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut child = home
            .pairs(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pairs paste");
        let mut stdin = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut stdin, data).unwrap();
        drop(stdin);
        let stderr = lines_of(child.stderr.take().unwrap());
        let ticket = loop {
            let line = stderr
                .recv_timeout(Duration::from_secs(20))
                .expect("the sender printed its ticket");
            if let Some((_, ticket)) = line.split_once("peers reach this node with --peer ") {
                break ticket.to_string();
            }
        };
        Self {
            child,
            ticket,
            stderr,
            _home: home,
        }
    }

    /// Whether the sender is still running.
    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a receiver to completion.
fn receive(args: &[&str]) -> std::process::Output {
    let home = Home::new();
    let mut all = vec!["paste", "--receive", "--bind", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let child = home
        .pairs(&all)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pairs paste --receive");
    wait_output(child, Duration::from_secs(30))
}

#[test]
fn a_receiver_started_3_s_after_another_still_gets_the_paste() {
    let data: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let mut sender = Sender::start(&data, &[]);
    let first_started = Instant::now();
    let first = receive(&["--peer", &sender.ticket, "--timeout", "20"]);
    assert!(first.status.success(), "{}", stderr_text(&first));
    assert!(first.stdout == data, "the first copy differs");
    // The scenario, not a synchronisation: the second receiver comes 3 s after the first.
    std::thread::sleep(
        (first_started + Duration::from_secs(3)).saturating_duration_since(Instant::now()),
    );
    assert!(
        sender.running(),
        "the sender left within 3 s of its first copy"
    );
    let late = receive(&["--peer", &sender.ticket, "--timeout", "20"]);
    assert!(late.status.success(), "{}", stderr_text(&late));
    assert!(late.stdout == data, "the late copy differs");
    let said: Vec<String> = sender.stderr.try_iter().collect();
    assert_eq!(
        said.iter()
            .filter(|l| l.contains("sent 1200000 bytes"))
            .count(),
        2,
        "{said:#?}"
    );
}

#[test]
fn a_receiver_that_finds_nothing_says_so_in_plain_words() {
    let out = receive(&["--timeout", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_text(&out);
    assert!(
        err.contains("found no sender of the default paste within 1 s"),
        "{err}"
    );
    assert!(!err.contains("no the default"), "{err}");
    let named = receive(&["holiday", "--timeout", "1"]);
    let err = stderr_text(&named);
    assert!(err.contains("found no sender of paste 'holiday'"), "{err}");
}

/// `pairs paste --code` and `pairs paste CODE` on loopback (the receiver given the sender with
/// `--peer`): the paste arrives and the sender exits; a wrong code is refused on both sides and
/// nothing is received.
#[test]
fn a_short_code_carries_a_paste_and_a_wrong_one_is_refused() {
    let code_of = |sender: &Sender| loop {
        let line = sender
            .stderr
            .recv_timeout(Duration::from_secs(20))
            .expect("the sender printed a code");
        if let Some(code) = line.trim().strip_prefix("pairs paste ") {
            break code.to_owned();
        }
    };
    let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_be_bytes()).collect();
    let sender = Sender::start(&data, &["--code"]);
    let code = code_of(&sender);
    let got = receive_by_code(&[&code, "--peer", &sender.ticket, "--timeout", "20"]);
    assert!(got.status.success(), "{}", stderr_text(&got));
    assert!(got.stdout == data, "the copy differs");
    let said = wait_sender(sender);
    assert!(said.0.success(), "{:?}", said.1);
    assert!(
        said.1.iter().any(|l| l.contains("sent 400000 bytes")),
        "{:?}",
        said.1
    );

    let sender = Sender::start(b"secret", &["--code"]);
    let code = code_of(&sender);
    let nameplate = code.split('-').next().unwrap();
    let wrong = if code.ends_with("-acid-acid") {
        format!("{nameplate}-acid-acorn")
    } else {
        format!("{nameplate}-acid-acid")
    };
    let got = receive_by_code(&[&wrong, "--peer", &sender.ticket, "--timeout", "20"]);
    let err = stderr_text(&got);
    assert_eq!(got.status.code(), Some(1), "{err}");
    assert!(err.contains("wrong code"), "{err}");
    assert!(err.contains("pairs paste --code"), "{err}");
    assert!(got.stdout.is_empty());
    let said = wait_sender(sender);
    assert_eq!(said.0.code(), Some(1));
    assert!(
        said.1.iter().any(|l| l.contains("wrong code")),
        "{:?}",
        said.1
    );
}

/// `pairs paste ARGS` (a code first) to completion, stdin not a terminal and no `--receive`: a
/// code always receives.
fn receive_by_code(args: &[&str]) -> std::process::Output {
    let home = Home::new();
    let mut all = vec!["paste"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--bind", "127.0.0.1:0"]);
    let child = home
        .pairs(&all)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pairs paste CODE");
    wait_output(child, Duration::from_secs(30))
}

/// Waits for a sender to exit: its status and what it said on stderr.
fn wait_sender(mut sender: Sender) -> (std::process::ExitStatus, Vec<String>) {
    let status = common::wait_status(
        std::mem::replace(
            &mut sender.child,
            std::process::Command::new("true").spawn().unwrap(),
        ),
        Duration::from_secs(20),
    );
    (status, sender.stderr.iter().collect())
}
