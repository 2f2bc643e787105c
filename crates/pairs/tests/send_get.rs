//! `pairs send` / `pairs get` / `pairs blobs` as processes: with and without a running node, a
//! download killed at random points resuming without fetching again what it wrote, and the memory a
//! large download takes.

mod common;

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::lab::{Lab, Running};
use common::node_proc::NodeProc;
use common::{Home, SHORT, lines_of, stderr_text, wait_output};

fn random_file(path: &Path, len: usize, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
    std::fs::write(path, bytes).unwrap();
}

/// A running `pairs send`, with the ticket it printed.
struct Sender {
    child: Child,
    ticket: String,
}

impl Sender {
    fn start(home: &Home, paths: &[&Path]) -> Self {
        let mut args = vec!["send".to_string(), "--bind".into(), "127.0.0.1:0".into()];
        args.extend(paths.iter().map(|p| p.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = home
            .pairs(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("blob"), "send printed {line:?}");
        Sender {
            child,
            ticket: line.trim().to_string(),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pairs get TICKET -o OUT` running, its stderr as asked.
fn spawn_get(home: &Home, ticket: &str, out: &Path, stderr: Stdio) -> Child {
    home.pairs(&[
        "get",
        ticket,
        "-o",
        out.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(stderr)
    .spawn()
    .unwrap()
}

fn get_json(home: &Home, ticket: &str, out: &Path) -> serde_json::Value {
    let child = home
        .pairs(&[
            "get",
            ticket,
            "-o",
            out.to_str().unwrap(),
            "--json",
            "--bind",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_output(child, Duration::from_secs(120));
    assert!(
        output.status.success(),
        "get failed: {}",
        stderr_text(&output)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON summary")
}

#[test]
fn send_and_get_with_and_without_a_running_node() {
    let files = tempfile::tempdir().unwrap();
    let movie = files.path().join("movie.bin");
    random_file(&movie, 3_000_000, 1);
    let site = files.path().join("site");
    std::fs::create_dir_all(site.join("img")).unwrap();
    std::fs::write(site.join("index.html"), b"<p>hello</p>").unwrap();
    random_file(&site.join("img/logo.png"), 40_000, 2);

    let sender_home = Home::new();
    let sender = Sender::start(&sender_home, &[&movie, &site]);

    // No node running: get runs its own for its duration.
    let home = Home::new();
    let out = files.path().join("out");
    let summary = get_json(&home, &sender.ticket, &out);
    assert_eq!(summary["files"], 3);
    assert_eq!(summary["size"], 3_000_000 + 12 + 40_000);
    for (got, want) in [
        (out.join("movie.bin"), movie.clone()),
        (out.join("site/index.html"), site.join("index.html")),
        (out.join("site/img/logo.png"), site.join("img/logo.png")),
    ] {
        assert!(
            std::fs::read(&got).unwrap() == std::fs::read(&want).unwrap(),
            "{} differs",
            got.display()
        );
    }
    assert!(!out.join("movie.bin.pairs-part").exists());

    // A node running: get goes through it, and the node keeps what it fetched (and serves it).
    let node_home = Home::new();
    let node = NodeProc::start(&node_home, "127.0.0.1:0", &[]);
    let out2 = files.path().join("out2");
    let summary = get_json(&node_home, &sender.ticket, &out2);
    assert_eq!(summary["files"], 3);
    assert!(std::fs::read(out2.join("movie.bin")).unwrap() == std::fs::read(&movie).unwrap());
    let listed = node_home.run(&["blobs", "ls", "--json"]);
    assert!(listed.status.success(), "{}", stderr_text(&listed));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "three files and the collection: {rows:?}");
    assert!(rows.iter().all(|r| r["held"] == r["size"]));
    node.stop();

    // Mistakes say what to do.
    let bad = home.run(&["get", "blobnotaticket"]);
    assert!(!bad.status.success());
    assert!(
        stderr_text(&bad).contains("ticket `pairs send` printed"),
        "{}",
        stderr_text(&bad)
    );
    let hash_only = home.run(&["get", &"ab".repeat(32)]);
    assert!(
        stderr_text(&hash_only).contains("-o FILE"),
        "{}",
        stderr_text(&hash_only)
    );
}

/// Bytes of the file actually written (its allocated blocks): a sparse download file grows as
/// groups land.
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

#[test]
fn a_download_killed_at_random_points_resumes_without_fetching_again_what_it_wrote() {
    let files = tempfile::tempdir().unwrap();
    let size = 48 << 20;
    let file = files.path().join("big.bin");
    random_file(&file, size, 3);
    let sender_home = Home::new();
    let sender = Sender::start(&sender_home, &[&file]);
    let mut rng = fastrand::Rng::with_seed(4);
    let mut interrupted = 0;
    for trial in 0..20 {
        let home = Home::new();
        let out = files.path().join(format!("out{trial}"));
        let part = out.join("big.bin.pairs-part");
        let target = size as u64 * rng.u64(5..85) / 100;
        let mut child = spawn_get(&home, &sender.ticket, &out, Stdio::null());
        let deadline = Instant::now() + Duration::from_secs(60);
        let written = loop {
            let now = allocated(&part);
            if now >= target || child.try_wait().unwrap().is_some() {
                break now;
            }
            assert!(Instant::now() < deadline, "trial {trial}: no progress");
            std::thread::sleep(Duration::from_millis(2));
        };
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let summary = get_json(&home, &sender.ticket, &out);
        assert!(
            std::fs::read(out.join("big.bin")).unwrap() == std::fs::read(&file).unwrap(),
            "trial {trial}"
        );
        if finished {
            continue;
        }
        interrupted += 1;
        let resumed = summary["resumed"].as_u64().unwrap();
        let received = summary["received"].as_u64().unwrap();
        // Everything written before the kill was kept (the last group may have been torn) ...
        assert!(
            resumed + (64 << 10) >= written,
            "trial {trial}: wrote {written}, resumed from {resumed}"
        );
        // ... and only what was missing was fetched again.
        assert_eq!(
            received,
            size as u64 - resumed,
            "trial {trial}: fetched more than was missing"
        );
    }
    assert!(
        interrupted >= 15,
        "only {interrupted} of 20 downloads were caught mid-way"
    );
}

/// Peak resident memory of a process, from /proc, sampled until it exits.
fn peak_rss_until_exit(child: &mut Child, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    let mut peak = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) {
            for line in status.lines() {
                if let Some(kb) = line.strip_prefix("VmHWM:") {
                    let kb: u64 = kb.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                    peak = peak.max(kb * 1024);
                }
            }
        }
        if child.try_wait().unwrap().is_some() {
            return peak;
        }
        assert!(
            Instant::now() < deadline,
            "download did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_gigabyte_download_stays_under_64_mib() {
    let files = tempfile::tempdir().unwrap();
    let size: u64 = 1 << 30;
    let file = files.path().join("huge.bin");
    {
        // Written in pieces: the test itself must not hold a gigabyte either.
        use std::io::Write as _;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let mut rng = fastrand::Rng::with_seed(5);
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..size >> 20 {
            rng.fill(&mut block);
            f.write_all(&block).unwrap();
        }
    }
    let sender_home = Home::new();
    let sender = Sender::start(&sender_home, &[&file]);
    let home = Home::new();
    let out = files.path().join("out");
    let mut child = spawn_get(&home, &sender.ticket, &out, Stdio::piped());
    let started = Instant::now();
    let peak = peak_rss_until_exit(&mut child, Duration::from_secs(300));
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr_text(&output));
    eprintln!(
        "1 GiB in {:.1} s, peak RSS {} MiB",
        started.elapsed().as_secs_f64(),
        peak >> 20
    );
    assert_eq!(std::fs::metadata(out.join("huge.bin")).unwrap().len(), size);
    assert!(peak <= 64 << 20, "peak RSS {} MiB", peak >> 20);
    drop(sender);
    let _ = SHORT;
}

/// A disk that fills up mid-download: a clear error naming what to do, nothing verified lost, and
/// the next `get` (with room again) fetches only what was missing. The output directory is a small
/// tmpfs in a mount namespace of its own (`unshare -m`, as root), so nothing outside is touched.
#[test]
fn a_full_disk_stops_a_download_with_a_clear_error_and_keeps_what_was_verified() {
    let files = tempfile::tempdir().unwrap();
    let size: u64 = 24 << 20;
    let file = files.path().join("big.bin");
    random_file(&file, size as usize, 5);
    let sender_home = Home::new();
    let sender = Sender::start(&sender_home, &[&file]);
    let home = Home::new();
    let out = files.path().join("small-disk");
    std::fs::create_dir(&out).unwrap();
    let first_err = files.path().join("first.err");
    let second = files.path().join("second.json");
    let copy = files.path().join("copy.bin");
    // Run both gets inside one mount namespace: the tmpfs lives as long as the script.
    let script = r#"
        set -u
        mount -t tmpfs -o size=12m pairs-small-disk "$OUT" || exit 90
        "$PAIRS" get "$TICKET" -o "$OUT" --bind 127.0.0.1:0 </dev/null >/dev/null 2>"$FIRST_ERR"
        echo "first=$?"
        mount -o remount,size=64m "$OUT" || exit 91
        "$PAIRS" get "$TICKET" -o "$OUT" --json --bind 127.0.0.1:0 </dev/null >"$SECOND" 2>"$SECOND.err"
        echo "second=$?"
        cp "$OUT/big.bin" "$COPY"
    "#;
    let cmd = home.pairs(&[]);
    let output = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("PAIRS", cmd.get_program())
        .env("TICKET", &sender.ticket)
        .env("OUT", &out)
        .env("FIRST_ERR", &first_err)
        .env("SECOND", &second)
        .env("COPY", &copy)
        .stdin(Stdio::null())
        .output()
        .expect("unshare runs (the tests run as root)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the script failed ({:?}): {stdout} {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let first = std::fs::read_to_string(&first_err).unwrap();
    assert!(
        stdout.contains("first=1"),
        "a full disk fails the get: {stdout}\n{first}"
    );
    assert!(
        first.contains("disk full") && first.contains("free some space"),
        "the error says what happened and what to do: {first}"
    );
    assert!(
        first.lines().filter(|l| !l.trim().is_empty()).count() <= 3,
        "a short message, not a trace: {first}"
    );
    assert!(
        stdout.contains("second=0"),
        "{stdout}\n{}",
        std::fs::read_to_string(files.path().join("second.json.err")).unwrap_or_default()
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&second).unwrap()).unwrap();
    let resumed = summary["resumed"].as_u64().unwrap();
    let received = summary["received"].as_u64().unwrap();
    assert!(
        resumed >= 8 << 20,
        "what fit before the disk filled was kept: resumed from {resumed}"
    );
    assert_eq!(
        received,
        size - resumed,
        "only what was missing was fetched"
    );
    assert!(std::fs::read(&copy).unwrap() == std::fs::read(&file).unwrap());
}

/// `pairs send --code` and `pairs get CODE` on a LAN: the code finds the sender (mDNS), the files
/// arrive with their names and the sender exits once the receiver has them; a wrong code is
/// refused on both sides, fetches nothing and spends the code.
#[test]
fn a_short_code_carries_files_on_a_lan_and_a_wrong_one_is_refused() {
    let lab = Lab::new();
    lab.run(&["lan", "2"]);
    let files = tempfile::tempdir().unwrap();
    let dir = files.path().join("photos");
    std::fs::create_dir_all(&dir).unwrap();
    random_file(&dir.join("a.jpg"), 1_500_000, 7);
    std::fs::write(dir.join("b.txt"), b"by code\n").unwrap();
    let (h1, h2) = (Home::new(), Home::new());
    let send = || {
        let mut child = lab
            .pairs("h1", &h1, &["send", "--code", dir.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut code = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut code)
            .unwrap();
        let stderr = lines_of(child.stderr.take().unwrap());
        (child, stderr, code.trim().to_owned())
    };
    let get = |code: &str, out: &Path| {
        wait_output(
            lab.pairs("h2", &h2, &["get", code, "-o", out.to_str().unwrap()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
            Duration::from_secs(60),
        )
    };

    let (child, first_stderr, code) = send();
    let mut parts = code.split('-');
    assert!(parts.next().unwrap().parse::<u16>().is_ok(), "{code}");
    assert_eq!(parts.count(), 2, "{code}");
    let out = files.path().join("out");
    let got = get(&code, &out);
    assert!(
        got.status.success(),
        "{}\nsender: {:?}",
        stderr_text(&got),
        first_stderr.try_iter().collect::<Vec<_>>()
    );
    for name in ["a.jpg", "b.txt"] {
        assert!(
            std::fs::read(out.join("photos").join(name)).unwrap()
                == std::fs::read(dir.join(name)).unwrap(),
            "{name} differs"
        );
    }
    let sender = wait_output(child, SHORT);
    let said: Vec<String> = first_stderr.iter().collect();
    assert!(sender.status.success(), "{said:?}");
    assert!(
        said.iter().any(|l| l.contains("received 1.43 MiB")),
        "{said:?}"
    );

    let (child, stderr, code) = send();
    let sender = Running(child);
    let nameplate = code.split('-').next().unwrap();
    let wrong = if code.ends_with("-acid-acid") {
        format!("{nameplate}-acid-acorn")
    } else {
        format!("{nameplate}-acid-acid")
    };
    let out = files.path().join("wrong");
    let got = get(&wrong, &out);
    let err = stderr_text(&got);
    assert_eq!(got.status.code(), Some(1), "{err}");
    assert!(err.contains("wrong code"), "{err}");
    assert!(err.contains("pairs send --code"), "{err}");
    assert!(!out.exists(), "a wrong code wrote {}", out.display());
    let mut sender = sender;
    let child = std::mem::replace(
        &mut sender.0,
        std::process::Command::new("true").spawn().unwrap(),
    );
    let sender = wait_output(child, SHORT);
    assert_eq!(sender.status.code(), Some(1));
    let said: Vec<String> = stderr.iter().collect();
    assert!(said.iter().any(|l| l.contains("wrong code")), "{said:?}");
}
