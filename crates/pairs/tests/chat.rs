//! `pairs chat` as people use it, with real processes: hosts on a LAN with no route out, one of
//! them posting offline and carrying its posts across another network through a public member;
//! one person on two devices and a device restored from an old copy; a flood and the owner's mute;
//! the terminal UI driven in tmux.

mod common;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::lab::Lab;
use common::node_proc::NodeProc;
use common::{Home, SHORT, lines_of, stderr_text, wait_output};

const WAIT: Duration = Duration::from_secs(60);

/// A `pairs chat ROOM --lines --json` process: what it prints, and a stdin to post through.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<serde_json::Value>,
}

impl Follower {
    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pairs chat --lines");
        let lines = lines_of(child.stdout.take().unwrap());
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn post(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{text}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for a message whose text is `text`.
    fn wait_text(&mut self, text: &str) -> serde_json::Value {
        if let Some(found) = self.seen.iter().find(|m| m["text"] == text) {
            return found.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{text:?} never arrived; saw {:?}", self.seen));
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            self.seen.push(value.clone());
            if value["text"] == text {
                return value;
            }
        }
    }

    /// Waits for a line held back as a flood.
    fn wait_flood(&mut self) -> serde_json::Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(found) = self.seen.iter().find(|m| m["flood"] == true) {
                return found.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no flood line; saw {:?}", self.seen));
            self.seen.push(serde_json::from_str(&line).unwrap());
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command to completion and returns its stdout; fails the test with its stderr otherwise.
fn run_ok(mut command: Command) -> String {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pairs");
    let out = wait_output(child, WAIT);
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        stderr_text(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What `pairs chat ROOM --lines --json` printed, one value per line.
fn dump(command: Command) -> Vec<serde_json::Value> {
    run_ok(command)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every message of a room as one replica shows it: (id, text, person), floods left out.
fn history(command: Command) -> BTreeSet<(String, String, String)> {
    dump(command)
        .into_iter()
        .filter(|m| m["flood"] != true)
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["text"].as_str().unwrap().to_owned(),
                m["person"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn dump_args(room: &str) -> Vec<&str> {
    vec!["chat", room, "--lines", "--json", "--history", "100000"]
}

fn node_id(home: &Home) -> String {
    let out = home.run(&["id"]);
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Waits until `check` holds, asking again every 100 ms (the CLI's answer is the only signal).
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: never");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_lan_hosts_chat_offline_and_one_carries_its_posts_across_through_a_public_member() {
    let lab = Lab::two_lans(&["a1", "a2", "a3"]);
    lab.run(&["host", "pub", "wan", "203.0.113.10/24"]);
    let public = "203.0.113.10:4000";
    let homes: Vec<Home> = (0..4).map(|_| Home::new()).collect();
    let (h1, h2, h3, hp) = (&homes[0], &homes[1], &homes[2], &homes[3]);
    let pairs = |host: &str, home: &Home, args: &[&str]| lab.pairs(host, home, args);
    let _pub_node = NodeProc::spawn(pairs("pub", hp, &["node", "--bind", "0.0.0.0:4000"]));
    // The LAN hosts meet by mDNS; a1 and a2 also keep a connection to the public member.
    let _a1 = NodeProc::spawn(pairs("a1", h1, &["node", "--peer", public]));
    let _a2 = NodeProc::spawn(pairs("a2", h2, &["node", "--peer", public]));
    let a3 = NodeProc::spawn(pairs("a3", h3, &["node"]));
    for (host, home, name) in [("a1", h1, "ana"), ("a2", h2, "ben"), ("a3", h3, "chloe")] {
        run_ok(pairs(host, home, &["chat", "name", name]));
    }
    let ticket = run_ok(pairs("a1", h1, &["chat", "new", "lab room"]))
        .trim()
        .to_owned();
    // The public member joins first, as a long-running member would (a NATed member's connection
    // to it closes while they share nothing, and only the NATed side can dial again). It meets no
    // member yet, so it names the room itself.
    run_ok(pairs(
        "pub",
        hp,
        &["chat", "join", &ticket, "--as", "lab-room"],
    ));
    for (host, home) in [("a2", h2), ("a3", h3)] {
        run_ok(pairs(host, home, &["chat", "join", &ticket]));
    }
    let mut on_a1 = Follower::spawn(pairs("a1", h1, &["chat", "lab-room", "--lines", "--json"]));
    let mut on_a2 = Follower::spawn(pairs("a2", h2, &["chat", "lab-room", "--lines", "--json"]));
    for (host, home, text) in [
        ("a1", h1, "hello from a1"),
        ("a2", h2, "hello from a2"),
        ("a3", h3, "hello from a3"),
    ] {
        run_ok(pairs(host, home, &["chat", "post", "lab-room", text]));
    }
    for follower in [&mut on_a1, &mut on_a2] {
        for text in ["hello from a1", "hello from a2", "hello from a3"] {
            follower.wait_text(text);
        }
    }
    assert_eq!(on_a2.wait_text("hello from a3")["name"], "chloe");

    // a3 leaves the LAN and writes while away from everyone.
    assert!(a3.stop().success());
    let out = wait_output(
        pairs("a3", h3, &["chat", "post", "lab-room", "written offline"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        SHORT,
    );
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert!(stderr_text(&out).contains("goes out the next time"));
    on_a1.post("while a3 was away");
    on_a2.wait_text("while a3 was away");

    // Later it comes up on another network, behind another router, knowing only the public member.
    let _b1 = NodeProc::spawn(pairs("b1", h3, &["node", "--peer", public]));
    let mut on_b1 = Follower::spawn(pairs("b1", h3, &["chat", "lab-room", "--lines", "--json"]));
    on_b1.wait_text("while a3 was away");
    on_a1.wait_text("written offline");
    on_a2.wait_text("written offline");

    // Every replica shows the same history, the public member's too.
    let expected = history(pairs("a1", h1, &dump_args("lab-room")));
    assert_eq!(expected.len(), 5, "{expected:?}");
    for (host, home) in [("a2", h2), ("b1", h3), ("pub", hp)] {
        assert_eq!(
            history(pairs(host, home, &dump_args("lab-room"))),
            expected,
            "{host} shows another history"
        );
    }
}

/// Two nodes on loopback next to an owner's: `pairs node --peer OWNER`.
fn node_near(home: &Home, owner: Option<&NodeProc>) -> NodeProc {
    match owner {
        Some(owner) => NodeProc::start(home, "127.0.0.1:0", &["--peer", &owner.addr().to_string()]),
        None => NodeProc::start(home, "127.0.0.1:0", &[]),
    }
}

#[test]
fn a_flood_is_held_back_and_the_owners_mute_hides_it_on_every_replica() {
    let (owner_home, flooder_home, reader_home) = (Home::new(), Home::new(), Home::new());
    let owner = node_near(&owner_home, None);
    let _flooder = node_near(&flooder_home, Some(&owner));
    let _reader = node_near(&reader_home, Some(&owner));
    let ticket = run_ok(owner_home.pairs(&["chat", "new", "town square"]))
        .trim()
        .to_owned();
    for home in [&flooder_home, &reader_home] {
        run_ok(home.pairs(&["chat", "join", &ticket]));
    }
    let mut reader =
        Follower::spawn(reader_home.pairs(&["chat", "town-square", "--lines", "--json"]));
    let mut flood =
        Follower::spawn(flooder_home.pairs(&["chat", "town-square", "--lines", "--json"]));
    for i in 0..300 {
        flood.post(&format!("spam {i}"));
    }
    // The reader sees the flood folded into one line, and the room goes on.
    let held = reader.wait_flood();
    assert_eq!(held["person"], node_id(&flooder_home));
    reader.post("the room still works");
    wait_until("the whole flood reaches the reader, folded", || {
        let held: u64 = dump(reader_home.pairs(&dump_args("town-square")))
            .iter()
            .filter(|line| line["flood"] == true)
            .map(|line| line["count"].as_u64().unwrap())
            .sum();
        held == 300 - 12
    });
    drop(flood);
    let shown = history(reader_home.pairs(&dump_args("town-square")));
    let spam = shown
        .iter()
        .filter(|(_, t, _)| t.starts_with("spam"))
        .count();
    assert_eq!(spam, 12, "flood messages shown");
    assert!(shown.iter().any(|(_, t, _)| t == "the room still works"));

    let flooder_id = node_id(&flooder_home);
    run_ok(owner_home.pairs(&["chat", "mute", "town-square", &flooder_id]));
    for home in [&reader_home, &flooder_home, &owner_home] {
        wait_until("the mute reaches every replica", || {
            let who = run_ok(home.pairs(&["chat", "who", "town-square", "--json"]));
            who.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .any(|p| p["person"] == flooder_id.as_str() && p["muted"] == true)
        });
        let shown = history(home.pairs(&dump_args("town-square")));
        assert!(
            shown.iter().all(|(_, _, person)| *person != flooder_id),
            "muted messages still shown"
        );
        assert!(shown.iter().any(|(_, t, _)| t == "the room still works"));
    }
    // A member's mute changes nothing.
    let out = reader_home.run(&["chat", "mute", "town-square", &node_id(&owner_home)]);
    assert!(stderr_text(&out).contains("only the owner's mutes count"));
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .args(["-a", "--"])
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn one_person_on_two_devices_and_a_device_restored_from_an_old_copy_lose_nothing() {
    let (owner_home, laptop, phone) = (Home::new(), Home::new(), Home::new());
    let owner = node_near(&owner_home, None);
    let ticket = run_ok(owner_home.pairs(&["chat", "new", "family"]))
        .trim()
        .to_owned();
    // The phone speaks for the person whose usual device is the laptop.
    run_ok(laptop.pairs(&["chat", "name", "camille"]));
    let link = run_ok(laptop.pairs(&["chat", "vouch", &node_id(&phone)]));
    run_ok(phone.pairs(&["chat", "link", link.trim()]));
    let laptop_node = node_near(&laptop, Some(&owner));
    let phone_node = node_near(&phone, Some(&owner));
    for home in [&laptop, &phone] {
        run_ok(home.pairs(&["chat", "join", &ticket]));
    }
    let mut watcher = Follower::spawn(owner_home.pairs(&["chat", "family", "--lines", "--json"]));
    // Both devices post at once.
    let posting: Vec<Child> = (0..5)
        .flat_map(|i| {
            [(&laptop, "laptop"), (&phone, "phone")].map(|(home, device)| {
                home.pairs(&["chat", "post", "family", &format!("{device} {i}")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
        })
        .collect();
    for child in posting {
        assert!(common::wait_status(child, WAIT).success());
    }
    let person = node_id(&laptop);
    for i in 0..5 {
        for device in ["laptop", "phone"] {
            let message = watcher.wait_text(&format!("{device} {i}"));
            assert_eq!(message["person"], person.as_str(), "{message}");
            assert_eq!(message["name"], "camille");
        }
    }

    // A copy of the phone's data, then more posts; later the phone is restored from the copy.
    assert!(phone_node.stop().success());
    let backup = tempfile::tempdir().unwrap();
    copy_dir(phone.path(), &backup.path().join("copy"));
    let phone_node = node_near(&phone, Some(&owner));
    run_ok(phone.pairs(&["chat", "post", "family", "after the backup"]));
    watcher.wait_text("after the backup");
    assert!(phone_node.stop().success());
    std::fs::remove_dir_all(phone.path()).unwrap();
    copy_dir(&backup.path().join("copy"), phone.path());
    // The restored phone writes before it has heard of its own later post: its chain forks.
    run_ok(phone.pairs(&["chat", "post", "family", "from the restored copy"]));
    let _phone_node = node_near(&phone, Some(&owner));
    watcher.wait_text("from the restored copy");
    run_ok(phone.pairs(&["chat", "post", "family", "after the fork"]));
    watcher.wait_text("after the fork");
    assert!(laptop_node.stop().success());

    let shown = history(owner_home.pairs(&dump_args("family")));
    assert_eq!(shown.len(), 13, "{shown:?}");
    let who = run_ok(owner_home.pairs(&["chat", "who", "family", "--json"]));
    let camille = who
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|p| p["person"] == person.as_str())
        .expect("camille listed");
    assert_eq!(camille["devices"].as_array().unwrap().len(), 2, "{camille}");
    assert_eq!(camille["forked"], true, "{camille}");
}

/// tmux with its own socket, killed when dropped.
struct Tmux {
    socket: String,
    /// Where the program's stderr goes, to show when a wait fails.
    stderr: std::path::PathBuf,
}

impl Tmux {
    fn new(home: &Home, width: u16, height: u16) -> Self {
        let socket = format!("pairs-chat-test-{}", std::process::id());
        let pairs = env!("CARGO_BIN_EXE_pairs");
        let stderr = home.path().join("tui.stderr");
        let status = Command::new("tmux")
            .args(["-L", &socket, "new-session", "-d", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .arg("-e")
            .arg(format!("PAIRS_HOME={}", home.path().display()))
            .args(["-e", "PAIRS_ISOLATED=1"])
            .arg(format!("{pairs} chat 2>{}", stderr.display()))
            .status()
            .expect("tmux is installed (./.ci/run installs it)");
        assert!(status.success());
        Self { socket, stderr }
    }

    fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys"])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows `text` (the screen is the only signal a terminal UI gives).
    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {text:?}:\n{screen}\nstderr: {}",
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

#[test]
fn the_terminal_ui_joins_sends_receives_and_scrolls() {
    let (a, b) = (Home::new(), Home::new());
    let a_node = node_near(&a, None);
    let _b_node = node_near(&b, Some(&a_node));
    run_ok(a.pairs(&["chat", "name", "ana"]));
    run_ok(b.pairs(&["chat", "name", "bruno"]));
    let ticket = run_ok(a.pairs(&["chat", "new", "general"]))
        .trim()
        .to_owned();
    let other = run_ok(a.pairs(&["chat", "new", "random"]))
        .trim()
        .to_owned();
    run_ok(b.pairs(&["chat", "join", &ticket]));
    run_ok(b.pairs(&["chat", "join", &other]));
    // Fewer than a flood (a dozen in ten seconds), more than the screen holds.
    for i in 0..10 {
        run_ok(a.pairs(&["chat", "post", "general", &format!("early message {i}")]));
    }
    let mut on_a = Follower::spawn(a.pairs(&["chat", "general", "--lines", "--json"]));

    let tui = Tmux::new(&b, 120, 14);
    let screen = tui.wait_for("early message 9");
    assert!(screen.contains("Rooms"), "{screen}");
    assert!(!screen.contains("early message 0 "), "{screen}");
    tui.keys(&["hello from the terminal", "Enter"]);
    let sent = on_a.wait_text("hello from the terminal");
    assert_eq!(sent["name"], "bruno");
    on_a.post("welcome, bruno");
    tui.wait_for("ana: welcome, bruno");
    // Scroll back to the start of the history, then to the end again.
    tui.keys(&["PPage"]);
    tui.wait_for("early message 0");
    tui.wait_for("scrolled");
    tui.keys(&["End"]);
    tui.wait_for("welcome, bruno");
    // A message in the other room shows as unread there.
    run_ok(a.pairs(&["chat", "post", "random", "over here"]));
    tui.wait_for("random (1)");
    tui.keys(&["Tab"]);
    tui.wait_for("ana: over here");
    tui.keys(&["Escape"]);
}

/// Files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[test]
fn a_private_room_is_ciphertext_to_a_node_that_stores_it_and_a_removed_member_reads_no_more() {
    use pairs::base::Ticket as _;
    let (owner, member, storer) = (Home::new(), Home::new(), Home::new());
    let owner_node = node_near(&owner, None);
    let _member_node = node_near(&member, Some(&owner_node));
    let _storer_node = node_near(&storer, Some(&owner_node));
    let ticket = run_ok(owner.pairs(&["chat", "new", "kinfolk hideout", "--private"]))
        .trim()
        .to_owned();
    let member_id = node_id(&member);
    run_ok(owner.pairs(&["chat", "admit", "kinfolk-hideout", &member_id]));
    // The member opens the title and names the room by it; the storer cannot, and names it.
    run_ok(member.pairs(&["chat", "join", &ticket]));
    run_ok(storer.pairs(&["chat", "join", &ticket, "--as", "stored"]));
    let mut on_member =
        Follower::spawn(member.pairs(&["chat", "kinfolk-hideout", "--lines", "--json"]));
    run_ok(owner.pairs(&["chat", "post", "kinfolk-hideout", "secret launch code 4242"]));
    on_member.wait_text("secret launch code 4242");
    on_member.post("bravo secret reply");
    let mut on_owner =
        Follower::spawn(owner.pairs(&["chat", "kinfolk-hideout", "--lines", "--json"]));
    on_owner.wait_text("bravo secret reply");

    // The storing node holds every entry, and none of the words.
    let log = pairs::chat::RoomTicket::parse(&ticket).unwrap().log;
    let log_ticket = pairs::log::LogTicket { log }.to_ticket();
    let entries = |home: &Home| {
        common::ids_in_json(&run_ok(home.pairs(&["log", "cat", &log_ticket, "--json"])))
    };
    wait_until("the storing node holds the room", || {
        entries(&storer) == entries(&owner)
    });
    for needle in ["secret launch code", "bravo secret", "kinfolk"] {
        let found = files_containing(storer.path(), needle.as_bytes());
        assert!(found.is_empty(), "{needle:?} in the clear in {found:?}");
    }
    assert!(history(storer.pairs(&dump_args("stored"))).is_empty());
    // The storer cannot post either: the room is closed to it.
    let out = storer.run(&["chat", "post", "stored", "let me in"]);
    assert!(!out.status.success());

    // The member is removed: the owner's next message uses a key it never gets.
    run_ok(owner.pairs(&["chat", "remove", "kinfolk-hideout", &member_id]));
    on_owner.post("after the removal");
    on_owner.wait_text("after the removal");
    wait_until("the removed member holds the room", || {
        entries(&member) == entries(&owner)
    });
    let seen_by_member = history(member.pairs(&dump_args("kinfolk-hideout")));
    let texts: Vec<&str> = seen_by_member.iter().map(|(_, t, _)| t.as_str()).collect();
    assert!(texts.contains(&"bravo secret reply"), "{texts:?}");
    assert!(!texts.contains(&"after the removal"), "{texts:?}");
    assert!(files_containing(member.path(), b"after the removal").is_empty());
}
