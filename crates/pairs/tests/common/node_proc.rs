//! A `pairs node` process for tests: started on loopback, its ticket read from stderr, stopped
//! with SIGTERM (or killed) on demand.

use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Home, SHORT, lines_of, wait_status};

/// A running `pairs node`.
pub struct NodeProc {
    pub child: Child,
    pub ticket: String,
    pub stderr: mpsc::Receiver<String>,
}

impl NodeProc {
    /// Starts `pairs node --bind BIND EXTRA` in `home` and waits until its control socket answers.
    pub fn start(home: &Home, bind: &str, extra: &[&str]) -> Self {
        let mut args = vec!["node", "--bind", bind];
        args.extend_from_slice(extra);
        Self::spawn(home.pairs(&args))
    }

    /// Runs `command` (a `pairs node …` command line) and waits until its control socket answers.
    pub fn spawn(mut command: std::process::Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pairs node");
        let stderr = lines_of(child.stderr.take().unwrap());
        let deadline = Instant::now() + SHORT;
        let mut ticket = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = stderr
                .recv_timeout(left)
                .expect("pairs node printed its ticket and control socket");
            if let Some(t) = line.strip_prefix("pairs: ticket ") {
                ticket = Some(t.trim().to_owned());
            }
            if line.starts_with("pairs: control socket ") {
                break;
            }
        }
        Self {
            child,
            ticket: ticket.expect("ticket printed before the control socket"),
            stderr,
        }
    }

    /// The address the node is bound to, from its ticket.
    pub fn addr(&self) -> std::net::SocketAddr {
        use pairs::base::Ticket as _;
        pairs::base::NodeAddr::from_ticket(&self.ticket)
            .expect("node ticket")
            .addrs[0]
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) -> ExitStatus {
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let child = std::mem::replace(
            &mut self.child,
            std::process::Command::new("true")
                .spawn()
                .expect("spawn true"),
        );
        wait_status(child, Duration::from_secs(20))
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
