//! Drives the project's network-namespace lab (`lab/lab.sh`) from tests: each `Lab` has its own
//! prefix, so tests run in parallel, and is torn down when dropped. Needs root.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A lab of namespaces; `down` when dropped.
pub struct Lab {
    prefix: String,
}

impl Lab {
    /// A new, empty lab. Panics with a clear message when not root: these tests build namespaces.
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        assert!(
            is_root(),
            "LAN tests build network namespaces and must run as root: use ./test.sh"
        );
        let prefix = format!(
            "t{}{}",
            std::process::id() % 100_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Self { prefix };
        lab.run(&["down"]);
        lab
    }

    /// Two LANs behind routers (port-restricted NAT by default) on a WAN switch `wan`
    /// (203.0.113.0/24, r1 at .1, r2 at .2): `lan1_hosts` on lan1 (192.168.1.11 and up, behind r1),
    /// and b1 on lan2 (192.168.2.11, behind r2).
    pub fn two_lans(lan1_hosts: &[&str]) -> Self {
        let lab = Self::new();
        lab.run(&["switch", "wan"]);
        lab.run(&["switch", "lan1"]);
        lab.run(&["switch", "lan2"]);
        lab.run(&[
            "router",
            "r1",
            "lan1",
            "192.168.1.1/24",
            "wan",
            "203.0.113.1/24",
        ]);
        lab.run(&[
            "router",
            "r2",
            "lan2",
            "192.168.2.1/24",
            "wan",
            "203.0.113.2/24",
        ]);
        for (i, host) in lan1_hosts.iter().enumerate() {
            let addr = format!("192.168.1.{}/24", 11 + i);
            lab.run(&["host", host, "lan1", &addr, "192.168.1.1"]);
        }
        lab.run(&["host", "b1", "lan2", "192.168.2.11/24", "192.168.2.1"]);
        lab
    }

    /// Runs `lab.sh -p PREFIX ARGS` and asserts it succeeded.
    pub fn run(&self, args: &[&str]) {
        let out = self
            .script()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run lab.sh");
        assert!(
            out.status.success(),
            "lab.sh {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A command running `program args` inside node `node`'s namespace.
    pub fn exec(&self, node: &str, program: &str, args: &[&str]) -> Command {
        let mut cmd = self.script();
        cmd.args(["exec", node, program]).args(args);
        cmd
    }

    /// `pairs ARGS` inside `node`, with its own home directory.
    pub fn pairs(&self, node: &str, home: &super::Home, args: &[&str]) -> Command {
        let mut cmd = self.exec(node, env!("CARGO_BIN_EXE_pairs"), args);
        cmd.env("PAIRS_HOME", home.path())
            .env_remove("RUST_LOG")
            .env_remove("PAIRS_ISOLATED")
            // The lab has no internet: tests that want a DHT start one and name it.
            .env("PAIRS_NO_DHT", "1");
        cmd
    }

    /// An avahi client command against `node`'s private avahi daemon.
    pub fn avahi(&self, node: &str, program: &str, args: &[&str]) -> Command {
        let mut cmd = self.script();
        cmd.args(["avahi-exec", node, program]).args(args);
        cmd
    }

    fn script(&self) -> Command {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../lab/lab.sh");
        let mut cmd = Command::new(path);
        cmd.args(["-p", &self.prefix]);
        cmd
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.script().arg("down").stdin(Stdio::null()).output();
    }
}

/// A child process killed when dropped, so a failing test leaves nothing running in its lab.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
