//! `pairs swarm` between two processes on loopback (isolated, the second given the first's ticket):
//! lines of any size arrive whole or are refused by name, and a peer is never lost over one.

mod common;

use std::io::Write as _;
use std::process::{ChildStdin, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::lab::Running;
use common::{Home, lines_of};

const WAIT: Duration = Duration::from_secs(30);

struct Swarm {
    _child: Running,
    stdin: ChildStdin,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    /// Every stderr line read so far.
    said: Vec<String>,
    _home: Home,
}

impl Swarm {
    fn start(args: &[&str]) -> Self {
        let home = Home::new();
        let mut all = vec!["swarm", "long lines", "--bind", "127.0.0.1:0", "--raw"];
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
            said: Vec::new(),
            _home: home,
        }
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_said(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .stderr
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("never said {needle:?}; said {:#?}", self.said));
            self.said.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// The next stdout line.
    fn next_line(&self) -> String {
        self.stdout
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("printed no line; said {:#?}", self.said))
    }

    fn say(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Every stderr line so far.
    fn all_said(&mut self) -> Vec<String> {
        self.said.extend(self.stderr.try_iter());
        self.said.clone()
    }
}

/// Two members that met: `a` was given `b`'s ticket.
fn pair() -> (Swarm, Swarm) {
    let mut b = Swarm::start(&[]);
    let ticket = b
        .wait_said("peers reach this node with --peer ")
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let mut a = Swarm::start(&["--peer", &ticket]);
    a.wait_said(" joined");
    b.wait_said(" joined");
    (a, b)
}

fn line_of(len: usize, seed: u8) -> String {
    (0..len)
        .map(|i| char::from(b'a' + ((i + seed as usize) % 26) as u8))
        .collect()
}

#[test]
fn lines_of_70_000_and_1_000_000_characters_arrive_whole_and_the_peer_stays() {
    let (mut a, mut b) = pair();
    let long = line_of(70_000, 1);
    let longer = line_of(1_000_000, 2);
    a.say(&long);
    a.say(&longer);
    a.say("after the long ones");
    b.say(&longer);
    b.say("and back");
    assert_eq!(b.next_line().len(), long.len());
    // Compared by value: one wrong byte or a cut line fails.
    assert!(
        b.next_line() == longer,
        "the million-character line changed"
    );
    assert_eq!(b.next_line(), "after the long ones");
    assert!(
        a.next_line() == longer,
        "the million-character line changed"
    );
    assert_eq!(a.next_line(), "and back");
    for member in [&mut a, &mut b] {
        let left: Vec<String> = member
            .all_said()
            .into_iter()
            .filter(|l| l.contains(" left") || l.contains("dropped"))
            .collect();
        assert!(left.is_empty(), "a peer was lost: {left:?}");
    }
}

#[test]
fn a_line_over_the_limit_is_refused_naming_it_and_the_next_line_arrives() {
    let (mut a, mut b) = pair();
    let huge = line_of(17 * 1024 * 1024, 3);
    a.say(&huge);
    a.say("still here");
    let refused = a.wait_said("not sent");
    assert!(refused.contains("16 MiB"), "{refused}");
    assert!(refused.contains(&huge.len().to_string()), "{refused}");
    assert_eq!(b.next_line(), "still here");
    assert!(!b.all_said().iter().any(|l| l.contains(" left")));
}
