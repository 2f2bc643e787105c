//! Helpers for driving the `pairs` binary in tests: an isolated home per node, loopback-only sockets,
//! and waits that are bounded by timeouts rather than sleeps.

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tempfile::TempDir;

pub mod lab;
pub mod node_proc;
pub mod swarm_proc;

/// Generous bound for anything that should take well under a second.
pub const SHORT: Duration = Duration::from_secs(20);

/// A node's private home directory (key, data). Removed when dropped.
pub struct Home(TempDir);

impl Home {
    pub fn new() -> Self {
        Self(tempfile::tempdir().expect("temporary directory"))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// `pairs ARGS` with this home, no inherited logging settings, and isolated: no discovery
    /// reaches the network unless a test names its own (`--peer`, `--dht-bootstrap`).
    pub fn pairs(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pairs"));
        cmd.args(args)
            .env("PAIRS_HOME", self.path())
            .env("PAIRS_ISOLATED", "1")
            .env_remove("PAIRS_NO_DHT")
            .env_remove("RUST_LOG");
        cmd
    }

    /// Runs `pairs ARGS` to completion with empty stdin.
    pub fn run(&self, args: &[&str]) -> Output {
        let child = self
            .pairs(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pairs");
        wait_output(child, SHORT)
    }
}

/// A running `pairs listen`, bound to loopback, with its ticket.
pub struct Listener {
    pub child: Child,
    pub ticket: String,
    pub stderr: mpsc::Receiver<String>,
}

impl Listener {
    /// Starts `pairs listen --bind 127.0.0.1:0 EXTRA` and waits for its ticket.
    pub fn start(home: &Home, extra: &[&str], stdin: Stdio) -> Self {
        let mut args = vec!["listen", "--bind", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut child = home
            .pairs(&args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pairs listen");
        let stderr = lines_of(child.stderr.take().unwrap());
        let ticket = loop {
            let line = stderr
                .recv_timeout(SHORT)
                .expect("listener printed its ticket");
            if let Some(ticket) = line.trim().strip_prefix("pairs connect ") {
                break ticket.to_owned();
            }
        };
        Self {
            child,
            ticket,
            stderr,
        }
    }

    /// Waits for the listener to exit on its own.
    pub fn wait(mut self, limit: Duration) -> ExitStatus {
        let child = std::mem::replace(
            &mut self.child,
            Command::new("true").spawn().expect("spawn true"),
        );
        wait_status(child, limit)
    }

    /// Waits for a stderr line containing `needle`.
    pub fn wait_for_stderr(&self, needle: &str) -> String {
        loop {
            let line = self
                .stderr
                .recv_timeout(SHORT)
                .unwrap_or_else(|_| panic!("listener never printed {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Forwards each line a reader produces to a channel, from a thread.
pub fn lines_of(reader: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for `child` to exit, killing it and failing the test after `limit`.
pub fn wait_status(mut child: Child, limit: Duration) -> ExitStatus {
    wait_with(child.id(), limit, move || child.wait(), |_| String::new())
}

/// Waits for `child` to exit and collects its output, failing the test after `limit` with what
/// the process wrote to stderr until then.
pub fn wait_output(child: Child, limit: Duration) -> Output {
    wait_with(
        child.id(),
        limit,
        move || child.wait_with_output(),
        |out| format!("; its stderr:\n{}", stderr_text(out)),
    )
}

/// Runs a blocking wait on a thread; kills process `pid` and fails the test if it takes over
/// `limit`, with `describe` of what the killed process left behind.
fn wait_with<T: Send + 'static>(
    pid: u32,
    limit: Duration,
    wait: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    describe: impl FnOnce(&T) -> String,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(wait());
    });
    match rx.recv_timeout(limit) {
        Ok(result) => result.expect("wait for child"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            let left = match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(Ok(out)) => describe(&out),
                _ => String::new(),
            };
            panic!("process {pid} did not exit within {limit:?}{left}");
        }
    }
}

/// Text of a process's stderr.
pub fn stderr_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The ids in `pairs log cat --json` output.
pub fn ids_in_json(json: &str) -> std::collections::HashSet<String> {
    json.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Feeds `lines` lines `bulk I` to a `pairs log append TICKET - --lines` command and waits for it.
pub fn append_bulk(mut command: Command, lines: usize) {
    let mut appender = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = appender.stdin.take().unwrap();
    for i in 0..lines {
        std::io::Write::write_all(&mut stdin, format!("bulk {i}\n").as_bytes()).unwrap();
    }
    drop(stdin);
    assert!(wait_status(appender, SHORT).success());
}
