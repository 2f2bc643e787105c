//! A `pairs swarm` process in a lab node, driven line by line: what it is told to say, and waits
//! (bounded by [`WAIT`]) for what it prints.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::lab::{Lab, Running};
use super::{Home, lines_of};

/// Longest wait for anything a swarm process should print.
pub const WAIT: Duration = Duration::from_secs(30);

/// A running `pairs swarm`: its stdin, its stdout lines, and its stderr lines.
pub struct SwarmProc {
    _child: Running,
    stdin: ChildStdin,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// The short id it printed when it joined.
    pub short: String,
    /// Every stderr line the waits read past, for later checks and failure messages.
    said: Vec<String>,
    _home: Home,
}

impl SwarmProc {
    /// `pairs swarm TOPIC EXTRA…` in `node`, with a fresh home.
    pub fn start(lab: &Lab, node: &str, topic: &str, extra: &[&str]) -> Self {
        Self::spawn(lab, node, topic, extra, Home::new(), None)
    }

    /// As [`SwarmProc::start`], with the given home (a stored node key, a config file).
    pub fn start_with_home(lab: &Lab, node: &str, topic: &str, extra: &[&str], home: Home) -> Self {
        Self::spawn(lab, node, topic, extra, home, None)
    }

    /// As [`SwarmProc::start`], logging to stderr with the `RUST_LOG` filter `log`.
    pub fn start_logged(lab: &Lab, node: &str, topic: &str, extra: &[&str], log: &str) -> Self {
        Self::spawn(lab, node, topic, extra, Home::new(), Some(log))
    }

    fn spawn(
        lab: &Lab,
        node: &str,
        topic: &str,
        extra: &[&str],
        home: Home,
        log: Option<&str>,
    ) -> Self {
        let mut args = vec!["swarm", topic];
        args.extend_from_slice(extra);
        let mut command = lab.pairs(node, &home, &args);
        if let Some(filter) = log {
            command.env("RUST_LOG", filter);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pairs swarm");
        let stdin = child.stdin.take().unwrap();
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let joined = format!("pairs: joined '{topic}' as ");
        let mut said = Vec::new();
        let short = loop {
            let line = stderr.recv_timeout(WAIT).expect("swarm started");
            if let Some((_, short)) = line.split_once(&joined) {
                break short.to_string();
            }
            // Only log lines may come before the join line.
            assert!(log.is_some(), "unexpected first line: {line}");
            said.push(line);
        };
        Self {
            _child: Running(child),
            stdin,
            stdout,
            stderr,
            short,
            said,
            _home: home,
        }
    }

    /// The next stderr line before `deadline`, or a panic naming what was awaited and what it said.
    fn next_said(&self, deadline: Instant, awaited: &str) -> String {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.stderr.recv_timeout(left) {
            Ok(line) => line,
            Err(_) => panic!(
                "{} never {awaited}; it said:\n{}",
                self.short,
                self.said.join("\n")
            ),
        }
    }

    /// Waits until `n` peers joined; returns their short ids.
    pub fn wait_joined(&self, n: usize) -> BTreeSet<String> {
        let mut joined = BTreeSet::new();
        let deadline = Instant::now() + WAIT;
        while joined.len() < n {
            let line = self.next_said(deadline, &format!("saw {n} peers join"));
            if let Some(rest) = line.strip_prefix("pairs: + ") {
                joined.insert(rest.trim_end_matches(" joined").to_string());
            }
        }
        joined
    }

    /// Waits until `peer` (a short id) joined.
    pub fn wait_joined_by(&mut self, peer: &str) {
        let wanted = format!("pairs: + {peer} joined");
        let deadline = Instant::now() + WAIT;
        loop {
            let line = self.next_said(deadline, &format!("met {peer}"));
            let found = line == wanted;
            self.said.push(line);
            if found {
                return;
            }
        }
    }

    /// Waits for a stderr line containing `needle`; returns it.
    pub fn wait_said(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let line = self.next_said(deadline, &format!("said {needle:?}"));
            if line.contains(needle) {
                return line;
            }
            self.said.push(line);
        }
    }

    /// The stderr lines so far, read or not, that contain `needle`.
    pub fn lines_with(&mut self, needle: &str) -> Vec<String> {
        self.said.extend(self.stderr.try_iter());
        self.said
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Sends one line to every peer.
    pub fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Waits until it prints `expected` on stdout.
    pub fn wait_line(&self, expected: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.stdout.recv_timeout(left) else {
                let unread: Vec<String> = self.stderr.try_iter().collect();
                panic!(
                    "{} never printed {expected:?}; its stderr:\n{}\n{}",
                    self.short,
                    self.said.join("\n"),
                    unread.join("\n")
                )
            };
            if line == expected {
                return;
            }
        }
    }

    /// Everything printed and not yet read: stdout lines and stderr lines.
    pub fn drain(&self) -> (Vec<String>, Vec<String>) {
        (
            self.stdout.try_iter().collect(),
            self.stderr.try_iter().collect(),
        )
    }
}
