//! `pairs share` / `pairs sync` / `pairs get` of a share as processes: through running nodes and on
//! their own, and a mirror killed at random points that never leaves a partly written file in the
//! folder and completes on its next run.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::node_proc::NodeProc;
use common::{Home, stderr_text};

const WAIT: Duration = Duration::from_secs(60);

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// Regular files under `dir` by relative path (`.pairs-part` files, downloads under way, apart).
fn files(dir: &Path) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    let mut whole = BTreeMap::new();
    let mut parts = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path
                .strip_prefix(dir)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".pairs-part") {
                parts.push(name);
            } else {
                whole.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    (whole, parts)
}

/// Waits until `dir` holds exactly `expected` and no download is left half done.
fn wait_same(dir: &Path, expected: &BTreeMap<String, Vec<u8>>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (got, parts) = files(dir);
        if &got == expected && parts.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never matched: {} of {} files, parts {parts:?}",
            dir.display(),
            got.len(),
            expected.len()
        );
        std::thread::sleep(Duration::from_millis(100)); // polling the filesystem, the only signal
    }
}

/// A foreground `pairs share DIR` or `pairs sync TICKET DIR`, with the ticket it printed.
struct Foreground {
    child: Child,
    ticket: String,
}

impl Foreground {
    fn start(home: &Home, args: &[&str]) -> Self {
        let mut all = args.to_vec();
        all.extend(["--bind", "127.0.0.1:0"]);
        let mut child = home
            .pairs(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("share"), "printed {line:?}");
        Foreground {
            child,
            ticket: line.trim().to_string(),
        }
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn make_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    for i in 0..120u64 {
        let name = format!("sub/f{i:03}.bin");
        std::fs::write(dir.join(&name), random_bytes(20_000 + i as usize * 97, i)).unwrap();
    }
    std::fs::write(dir.join("sub/deeper/big.bin"), random_bytes(24 << 20, 999)).unwrap();
    std::fs::write(dir.join("readme.txt"), b"hello").unwrap();
    files(dir).0
}

#[test]
fn share_and_sync_through_running_nodes_and_get_one_path_without_one() {
    let tmp = tempfile::tempdir().unwrap();
    let a_home = Home::new();
    let b_home = Home::new();
    let a_dir = tmp.path().join("a");
    let expected = make_tree(&a_dir);
    let _a_node = NodeProc::start(&a_home, "127.0.0.1:0", &[]);
    let _b_node = NodeProc::start(&b_home, "127.0.0.1:0", &[]);

    let out = a_home.run(&["share", a_dir.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ticket = json["ticket"].as_str().unwrap().to_string();
    assert!(stderr_text(&out).contains("running node keeps"));

    let b_dir = tmp.path().join("b");
    let out = b_home.run(&["sync", &ticket, b_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    wait_same(&b_dir, &expected);

    // A change on the owner's side arrives through both nodes.
    std::fs::write(a_dir.join("readme.txt"), b"changed").unwrap();
    let mut expected = expected;
    expected.insert("readme.txt".into(), b"changed".to_vec());
    wait_same(&b_dir, &expected);

    let out = b_home.run(&["share", "ls", "--json"]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let row: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(row["status"]["files"], 122);
    assert_eq!(row["status"]["writable"], false);

    let out = b_home.run(&["share", "log", &ticket, "--json"]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        2,
        "two versions"
    );

    let out = b_home.run(&["share", "diff", &ticket, "1"]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "~ readme.txt");

    // A third machine with no node fetches one directory of the share, once.
    let c_home = Home::new();
    let c_out = tmp.path().join("c");
    let out = c_home.run(&[
        "get",
        &ticket,
        "sub/deeper",
        "-o",
        c_out.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let (got, parts) = files(&c_out);
    assert!(parts.is_empty());
    assert_eq!(got.keys().collect::<Vec<_>>(), ["sub/deeper/big.bin"]);
    assert!(got["sub/deeper/big.bin"] == expected["sub/deeper/big.bin"]);

    // Mistakes say what to do.
    let out = c_home.run(&["get", &ticket, "nope", "-o", c_out.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr_text(&out).contains("the share has no nope"),
        "{}",
        stderr_text(&out)
    );
    let out = a_home.run(&["share", tmp.path().join("missing").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr_text(&out).contains("not a directory"),
        "{}",
        stderr_text(&out)
    );
}

#[test]
fn a_mirror_killed_at_random_points_holds_only_whole_files_and_completes_next_time() {
    let tmp = tempfile::tempdir().unwrap();
    let a_home = Home::new();
    let b_home = Home::new();
    let a_dir = tmp.path().join("a");
    let expected = make_tree(&a_dir);
    let owner = Foreground::start(&a_home, &["share", a_dir.to_str().unwrap()]);
    let b_dir = tmp.path().join("b");
    let mut rng = fastrand::Rng::with_seed(42);
    for trial in 0..20 {
        let mut sync = b_home
            .pairs(&[
                "sync",
                &owner.ticket,
                b_dir.to_str().unwrap(),
                "--bind",
                "127.0.0.1:0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.u64(30..400))); // the random kill point
        let _ = sync.kill(); // SIGKILL
        let _ = sync.wait();
        let (got, _) = files(&b_dir);
        for (name, content) in &got {
            assert!(
                expected.get(name) == Some(content),
                "trial {trial}: {name} is not a whole file of the share"
            );
        }
    }
    // The next run completes: every file, no download left half done.
    let _sync = Foreground::start(&b_home, &["sync", &owner.ticket, b_dir.to_str().unwrap()]);
    wait_same(&b_dir, &expected);
}
