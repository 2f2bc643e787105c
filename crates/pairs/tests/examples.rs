//! The examples in `examples/` run as their README says, each in its own home with no discovery
//! beyond the peers its `config.toml` names.

mod common;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use common::{Home, Listener, SHORT, lines_of, wait_output};
use pairs::base::{NodeAddr, Ticket as _};

/// The example's binary, built next to the `pairs` binary by `cargo test`.
fn example(name: &str) -> Command {
    let bin: PathBuf = PathBuf::from(env!("CARGO_BIN_EXE_pairs"))
        .parent()
        .expect("target dir")
        .join("examples")
        .join(name);
    assert!(
        bin.exists(),
        "{} is not built (cargo test builds the examples)",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    cmd.env("PAIRS_ISOLATED", "1")
        .env_remove("PAIRS_NO_DHT")
        .env_remove("RUST_LOG");
    cmd
}

/// A home whose `config.toml` fixes the node's port and names its peers.
fn home_with(port: u16, peers: &[String]) -> Home {
    let home = Home::new();
    let peers: Vec<String> = peers.iter().map(|p| format!("{p:?}")).collect();
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "port = {port}\nlan = false\npeers = [{}]\n\n[dht]\nenabled = false\n",
            peers.join(", ")
        ),
    )
    .unwrap();
    home
}

/// A UDP port for a node of test `n`: below the kernel's ephemeral range (32768 and up), where
/// nodes binding port 0 and other tests' sockets never land, and distinct per test process.
fn fixed_port(n: u16) -> u16 {
    20_000 + (std::process::id() % 1_000) as u16 * 10 + n
}

fn spawn(mut cmd: Command, home: &Home) -> Child {
    cmd.env("PAIRS_HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn example")
}

fn wait_line(lines: &mpsc::Receiver<String>, what: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + SHORT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).expect("the expected line in time");
        if what(&line) {
            return line;
        }
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn hyperlog_replicas_end_with_the_same_entries() {
    let home = Home::new();
    let mut child = spawn(example("hyperlog"), &home);
    drop(child.stdin.take());
    let out = wait_output(child, SHORT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("hello from a\n") && text.contains("hello from b\n"),
        "{text}"
    );
}

#[test]
fn airswarm_peers_greet_each_other() {
    let (port_a, port_b) = (fixed_port(0), fixed_port(1));
    let a = home_with(port_a, &[]);
    let b = home_with(port_b, &[format!("127.0.0.1:{port_a}")]);
    let mut one = Killed(spawn(example("airswarm"), &a));
    let mut two = Killed(spawn(example("airswarm"), &b));
    let (out_one, out_two) = (
        lines_of(one.0.stdout.take().unwrap()),
        lines_of(two.0.stdout.take().unwrap()),
    );
    wait_line(&out_one, |l| l.starts_with("hello from "));
    wait_line(&out_two, |l| l.starts_with("hello from "));
}

#[test]
fn shared_log_entries_reach_a_node_that_has_only_the_ticket() {
    let port = fixed_port(2);
    let a = home_with(port, &[]);
    let b = home_with(fixed_port(3), &[format!("127.0.0.1:{port}")]);
    let mut owner = Killed(spawn(example("shared_log"), &a));
    let owner_out = lines_of(owner.0.stdout.take().unwrap());
    let ticket = wait_line(&owner_out, |l| l.starts_with("log"));
    let mut cmd = example("shared_log");
    cmd.arg(&ticket);
    let mut reader = Killed(spawn(cmd, &b));
    let reader_out = lines_of(reader.0.stdout.take().unwrap());
    wait_line(&reader_out, |l| l == ticket);
    let mut stdin = owner.0.stdin.take().unwrap();
    writeln!(stdin, "hello over the swarm").unwrap();
    wait_line(&reader_out, |l| l == "hello over the swarm");
}

#[test]
fn pipe_to_reaches_a_node_by_its_id() {
    let there = Home::new();
    let listener = Listener::start(&there, &[], Stdio::piped());
    let node = NodeAddr::from_ticket(&listener.ticket).unwrap().node_id;
    let here = home_with(0, std::slice::from_ref(&listener.ticket));
    let mut cmd = example("pipe_to");
    cmd.arg(node.to_string());
    let mut child = spawn(cmd, &here);
    child.stdin.take().unwrap().write_all(b"ping\n").unwrap();
    let mut listener = listener;
    listener
        .child
        .stdin
        .take()
        .unwrap()
        .write_all(b"pong\n")
        .unwrap();
    let out = wait_output(child, SHORT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pong\n");
    // What the listener printed: read as it comes (whether `pairs listen` then exits at once is
    // the pipe command's business, not this example's).
    let printed = lines_of(listener.child.stdout.take().unwrap());
    assert_eq!(
        printed.recv_timeout(SHORT).expect("the listener printed"),
        "ping"
    );
}

#[test]
fn share_file_fetches_what_the_ticket_names() {
    let port = fixed_port(4);
    let a = home_with(port, &[]);
    let b = home_with(fixed_port(5), &[format!("127.0.0.1:{port}")]);
    let file = a.path().join("notes.txt");
    std::fs::write(&file, "shared by hash\n".repeat(10_000)).unwrap();
    let mut cmd = example("share_file");
    cmd.arg(&file);
    let mut sender = Killed(spawn(cmd, &a));
    let sender_out = lines_of(sender.0.stdout.take().unwrap());
    let ticket = wait_line(&sender_out, |l| l.starts_with("blob"));
    let out = b.path().join("got");
    let mut cmd = example("share_file");
    cmd.arg(&ticket).arg(&out);
    let mut getter = Killed(spawn(cmd, &b));
    let getter_out = lines_of(getter.0.stdout.take().unwrap());
    wait_line(&getter_out, |l| {
        l.starts_with("got 150000 bytes in 1 files")
    });
    assert_eq!(
        std::fs::read(out.join("notes.txt")).unwrap(),
        std::fs::read(&file).unwrap()
    );
}

#[test]
fn chat_room_members_see_each_others_messages_by_name() {
    let port = fixed_port(8);
    let a = home_with(port, &[]);
    let b = home_with(fixed_port(9), &[format!("127.0.0.1:{port}")]);
    let mut cmd = example("chat_room");
    cmd.arg("ana");
    let mut owner = Killed(spawn(cmd, &a));
    let owner_out = lines_of(owner.0.stdout.take().unwrap());
    let ticket = wait_line(&owner_out, |l| l.starts_with("room"));
    let mut cmd = example("chat_room");
    cmd.args(["bruno", &ticket]);
    let mut member = Killed(spawn(cmd, &b));
    let member_out = lines_of(member.0.stdout.take().unwrap());
    wait_line(&member_out, |l| l == ticket);
    let mut stdin = owner.0.stdin.take().unwrap();
    writeln!(stdin, "hello room").unwrap();
    wait_line(&member_out, |l| l == "ana: hello room");
    let mut stdin = member.0.stdin.take().unwrap();
    writeln!(stdin, "hi ana").unwrap();
    wait_line(&owner_out, |l| l == "bruno: hi ana");
}
