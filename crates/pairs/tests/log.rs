//! `pairs log` and `pairs kv` end to end.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Child, Stdio};
use std::thread;

use common::node_proc::NodeProc;
use common::{Home, SHORT, lines_of, stderr_text, wait_output, wait_status};

fn ok(output: std::process::Output) -> String {
    assert!(output.status.success(), "{}", stderr_text(&output));
    String::from_utf8(output.stdout).unwrap()
}

fn new_log(home: &Home) -> String {
    ok(home.run(&["log", "new"])).trim().to_owned()
}

fn entries(home: &Home, ticket: &str) -> Vec<String> {
    ok(home.run(&["log", "cat", ticket]))
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn append_cat_heads_and_kv() {
    let home = Home::new();
    let ticket = new_log(&home);
    assert!(ticket.starts_with("log"));
    ok(home.run(&["log", "append", &ticket, "first"]));
    ok(home.run(&["log", "append", &ticket, "second"]));
    assert_eq!(entries(&home, &ticket), ["first", "second"]);
    let heads = ok(home.run(&["log", "heads", &ticket]));
    assert_eq!(heads.lines().count(), 1);
    let json = ok(home.run(&["log", "cat", &ticket, "--json"]));
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["payload"], "first");
    assert_eq!(first["clock"], 0);
    ok(home.run(&["kv", "set", &ticket, "colour", "blue"]));
    ok(home.run(&["kv", "set", &ticket, "colour", "green"]));
    ok(home.run(&["kv", "set", &ticket, "size", "9"]));
    ok(home.run(&["kv", "del", &ticket, "size"]));
    assert_eq!(ok(home.run(&["kv", "get", &ticket, "colour"])), "green\n");
    assert_eq!(ok(home.run(&["kv", "ls", &ticket])), "colour\tgreen\n");
    let missing = home.run(&["kv", "get", &ticket, "size"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr_text(&missing).contains("no key"));
}

#[test]
fn a_stranger_cannot_append_until_admitted() {
    let (owner, writer) = (Home::new(), Home::new());
    let ticket = new_log(&owner);
    let refused = writer.run(&["log", "append", &ticket, "hello"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr_text(&refused).contains("not a writer"),
        "{}",
        stderr_text(&refused)
    );
    let writer_id = ok(writer.run(&["id"])).trim().to_owned();
    ok(owner.run(&["log", "add-writer", &ticket, &writer_id]));
    replicate_stdio(&owner, &writer, &ticket);
    ok(writer.run(&["log", "append", &ticket, "hello"]));
    replicate_stdio(&owner, &writer, &ticket);
    assert!(entries(&owner, &ticket).contains(&"hello".to_owned()));
    let info = ok(owner.run(&["log", "info", &ticket]));
    assert!(info.contains(&writer_id), "{info}");
}

fn spawn_replicate(home: &Home, ticket: &str) -> Child {
    home.pairs(&["log", "replicate", "--stdio", ticket])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Connects two `pairs log replicate --stdio` processes stdout-to-stdin, both ways.
fn replicate_stdio(a: &Home, b: &Home, ticket: &str) {
    let (oa, ob) = replicate_pair(a, ticket, b, ticket);
    assert!(oa.status.success(), "{}", stderr_text(&oa));
    assert!(ob.status.success(), "{}", stderr_text(&ob));
}

/// `pairs log replicate --stdio` of `ta` in `a` and of `tb` in `b`, stdout-to-stdin both ways.
fn replicate_pair(
    a: &Home,
    ta: &str,
    b: &Home,
    tb: &str,
) -> (std::process::Output, std::process::Output) {
    let mut pa = spawn_replicate(a, ta);
    let mut pb = spawn_replicate(b, tb);
    let pump = |mut from: std::process::ChildStdout, mut to: std::process::ChildStdin| {
        thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        })
    };
    let ab = pump(pa.stdout.take().unwrap(), pb.stdin.take().unwrap());
    let ba = pump(pb.stdout.take().unwrap(), pa.stdin.take().unwrap());
    let (oa, ob) = (wait_output(pa, SHORT), wait_output(pb, SHORT));
    ab.join().unwrap();
    ba.join().unwrap();
    (oa, ob)
}

#[test]
fn replicating_two_different_logs_says_so_on_both_sides() {
    let (a, b) = (Home::new(), Home::new());
    let (ta, tb) = (new_log(&a), new_log(&b));
    ok(a.run(&["log", "append", &ta, "only in a"]));
    let (oa, ob) = replicate_pair(&a, &ta, &b, &tb);
    for out in [oa, ob] {
        let err = stderr_text(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("replicates another log"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

/// Through a running `pairs node` the command reports what the node's replication came to: the
/// same error as without a node for two different logs, the counts when it worked.
#[test]
fn replicate_through_a_running_node_reports_its_outcome() {
    let (a, b) = (Home::new(), Home::new());
    let (ta, tb) = (new_log(&a), new_log(&b));
    ok(a.run(&["log", "append", &ta, "only in a"]));
    let _node = NodeProc::start(&a, "127.0.0.1:0", &[]);
    let (oa, ob) = replicate_pair(&a, &ta, &b, &tb);
    for out in [oa, ob] {
        let err = stderr_text(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("replicates another log"), "{err}");
        assert!(!err.contains("replicated"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let (oa, ob) = replicate_pair(&a, &ta, &b, &ta);
    assert!(oa.status.success(), "{}", stderr_text(&oa));
    assert!(ob.status.success(), "{}", stderr_text(&ob));
    // "pairs: replicated: R entries received, S sent" on both sides, mirrored.
    let counts = |out: &std::process::Output| -> (u64, u64) {
        let err = stderr_text(out);
        let rest = err
            .trim()
            .strip_prefix("pairs: replicated: ")
            .unwrap_or_else(|| panic!("{err}"));
        let numbers: Vec<u64> = rest
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        (numbers[0], numbers[1])
    };
    let (received, sent) = counts(&oa);
    assert!(sent > 0);
    assert_eq!(counts(&ob), (sent, received));
    assert_eq!(entries(&b, &ta), ["only in a"]);
}

#[test]
fn replicate_whose_other_side_vanishes_says_so_once() {
    let home = Home::new();
    let ticket = new_log(&home);
    ok(home.run(&["log", "append", &ticket, "x"]));
    // The other side: input that ends at once, and output nobody reads.
    let mut child = home
        .pairs(&["log", "replicate", "--stdio", &ticket])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = wait_output(child, SHORT);
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim(),
        "pairs: error: the other side ended before the logs were in sync"
    );
}

/// `pairs log sync TICKET --bind 127.0.0.1:0` run by `home`, and the node ticket it prints.
fn serve_log(home: &Home, ticket: &str) -> (Child, String) {
    let mut server = home
        .pairs(&["log", "sync", ticket, "--bind", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines_of(server.stderr.take().unwrap());
    let node_ticket = loop {
        let line = stderr
            .recv_timeout(SHORT)
            .expect("server printed its ticket");
        if let Some(rest) = line.trim().strip_prefix("pairs log sync ") {
            break rest.split_whitespace().nth(1).unwrap().to_owned();
        }
    };
    (server, node_ticket)
}

#[test]
fn sync_with_a_node_without_the_log_says_so_at_once() {
    let (a, b) = (Home::new(), Home::new());
    let (served, asked) = (new_log(&a), new_log(&b));
    let (mut server, node_ticket) = serve_log(&a, &served);
    let started = std::time::Instant::now();
    let out = b.run(&["log", "sync", &asked, &node_ticket]);
    let took = started.elapsed();
    server.kill().unwrap();
    let _ = server.wait();
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("does not hold log"), "{err}");
    assert!(!err.contains("connection lost"), "{err}");
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
}

#[test]
fn sync_with_a_listen_ticket_says_that_node_serves_no_logs() {
    let home = Home::new();
    let ticket = new_log(&home);
    let listener = common::Listener::start(&Home::new(), &[], Stdio::null());
    let started = std::time::Instant::now();
    let out = home.run(&["log", "sync", &ticket, &listener.ticket]);
    let took = started.elapsed();
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("serves no logs"), "{err}");
    assert!(err.contains("pairs listen"), "{err}");
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
}

#[test]
fn replicate_over_stdio_pipes_ends_with_the_union() {
    let (a, b) = (Home::new(), Home::new());
    let ticket = new_log(&a);
    for i in 0..20 {
        ok(a.run(&["log", "append", &ticket, &format!("entry {i}")]));
    }
    replicate_stdio(&a, &b, &ticket);
    assert_eq!(entries(&a, &ticket), entries(&b, &ticket));
    assert_eq!(entries(&b, &ticket).len(), 20);
}

#[test]
fn sync_over_the_network() {
    let (a, b) = (Home::new(), Home::new());
    let ticket = new_log(&a);
    ok(a.run(&["kv", "set", &ticket, "k", "v"]));
    let (mut server, node_ticket) = serve_log(&a, &ticket);
    let synced = b.run(&["log", "sync", &ticket, &node_ticket]);
    assert!(synced.status.success(), "{}", stderr_text(&synced));
    server.kill().unwrap();
    let _ = server.wait();
    assert_eq!(ok(b.run(&["kv", "get", &ticket, "k"])), "v\n");
}

#[test]
fn committed_appends_survive_sigkill() {
    let home = Home::new();
    let ticket = new_log(&home);
    let mut committed: Vec<String> = Vec::new();
    for round in 0..12usize {
        let mut appender = home
            .pairs(&["log", "append", &ticket, "-", "--lines"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = appender.stdin.take().unwrap();
        let feeder = thread::spawn(move || {
            for i in 0.. {
                if writeln!(stdin, "round {round} line {i}").is_err() {
                    return;
                }
            }
        });
        let mut ids = BufReader::new(appender.stdout.take().unwrap()).lines();
        // Kill at a different point each round, right after a reported commit.
        for _ in 0..(5 + round * 7) {
            committed.push(ids.next().expect("an id").unwrap());
        }
        appender.kill().unwrap();
        wait_status(appender, SHORT);
        feeder.join().unwrap();
        // Ids reported before the kill but read after it are committed too.
        committed.extend(ids.map_while(Result::ok));
        let json = ok(home.run(&["log", "cat", &ticket, "--json"]));
        let stored = common::ids_in_json(&json);
        for id in &committed {
            assert!(
                stored.contains(id),
                "round {round}: committed entry {id} lost"
            );
        }
    }
}

/// Appends `data` (from stdin) to the log; returns the entry id.
fn append_stdin(home: &Home, ticket: &str, data: &[u8]) -> String {
    let mut child = home
        .pairs(&["log", "append", ticket, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    ok(wait_output(child, SHORT)).trim().to_owned()
}

#[test]
fn a_binary_entry_comes_back_byte_for_byte_and_losslessly_in_json() {
    let home = Home::new();
    let ticket = new_log(&home);
    // 1,024 bytes that are not UTF-8 (every byte value, 0xff and 0xfe among them).
    let binary: Vec<u8> = (0..1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert!(std::str::from_utf8(&binary).is_err());
    let id = append_stdin(&home, &ticket, &binary);
    let text_id = append_stdin(&home, &ticket, "héllo\n".as_bytes());

    let raw = home.run(&["log", "get", &ticket, &id]);
    assert!(raw.status.success(), "{}", stderr_text(&raw));
    assert!(raw.stdout == binary, "log get changed the bytes");
    assert_eq!(
        home.run(&["log", "get", &ticket, &text_id]).stdout,
        "héllo\n".as_bytes()
    );

    let json = ok(home.run(&["log", "cat", &ticket, "--json"]));
    let objects: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |id: &str| objects.iter().find(|o| o["id"] == id).unwrap().clone();
    let bin = of(&id);
    assert_eq!(bin["kind"], "data");
    assert_eq!(bin["encoding"], "base64");
    let decoded = data_encoding::BASE64
        .decode(bin["payload"].as_str().unwrap().as_bytes())
        .unwrap();
    assert!(decoded == binary, "--json lost bytes");
    let text = of(&text_id);
    assert_eq!(text["encoding"], "utf-8");
    assert_eq!(text["payload"], "héllo\n");

    // In text, a binary entry is a note naming the command that gives its bytes.
    let cat = ok(home.run(&["log", "cat", &ticket]));
    let first = cat.lines().next().unwrap();
    assert_eq!(
        first,
        format!("[1024 bytes of binary data: pairs log get TICKET {id}]")
    );
    assert!(!cat.contains('\u{fffd}'), "{cat}");
}

#[test]
fn kv_operations_show_as_operations() {
    let home = Home::new();
    let ticket = new_log(&home);
    ok(home.run(&["kv", "set", &ticket, "colour", "blue"]));
    ok(home.run(&["kv", "del", &ticket, "colour"]));
    assert_eq!(
        entries(&home, &ticket),
        ["[kv set \"colour\" = \"blue\"]", "[kv del \"colour\"]"]
    );
    let json = ok(home.run(&["log", "cat", &ticket, "--json"]));
    let ops: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ops[0]["kind"], "op");
    assert_eq!(
        ops[0]["op"],
        serde_json::json!({"type": "map-set", "key": "colour", "value": "blue"})
    );
    assert_eq!(
        ops[1]["op"],
        serde_json::json!({"type": "map-delete", "key": "colour"})
    );
    assert!(ops.iter().all(|o| o.get("payload").is_none()));
}

#[test]
fn log_get_of_an_unknown_id_names_the_problem() {
    let home = Home::new();
    let ticket = new_log(&home);
    let id = ok(home.run(&["log", "append", &ticket, "x"]))
        .trim()
        .to_owned();
    let mut other = id.clone().into_bytes();
    other[0] = if other[0] == b'a' { b'b' } else { b'a' };
    let other = String::from_utf8(other).unwrap();
    let missing = home.run(&["log", "get", &ticket, &other]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr_text(&missing).contains("has no entry"),
        "{}",
        stderr_text(&missing)
    );
    let bad = home.run(&["log", "get", &ticket, "nonsense"]);
    assert!(
        stderr_text(&bad).contains("not an entry id"),
        "{}",
        stderr_text(&bad)
    );
}

#[test]
fn an_oversized_entry_is_refused_from_its_size_naming_the_limit() {
    let home = Home::new();
    let ticket = new_log(&home);
    // 200 MiB offered on stdin: refused after reading just past the limit, so the writer sees
    // the pipe close long before it wrote everything.
    let mut child = home
        .pairs(&["log", "append", &ticket, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        let mut written = 0usize;
        while written < 200 << 20 {
            if stdin.write_all(&chunk).is_err() {
                break;
            }
            written += chunk.len();
        }
        written
    });
    let out = wait_output(child, SHORT);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_text(&out);
    assert!(err.contains("at most 64 KiB"), "{err}");
    assert!(
        writer.join().unwrap() < 200 << 20,
        "the whole input was read"
    );

    let line = format!("short\n{}\n", "y".repeat(70_000));
    let mut child = home
        .pairs(&["log", "append", &ticket, "-", "--lines"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(line.as_bytes())
        .unwrap();
    let out = wait_output(child, SHORT);
    let err = stderr_text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("line 2") && err.contains("at most 64 KiB"),
        "{err}"
    );
}
