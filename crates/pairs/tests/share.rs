//! Shared folders between in-process nodes on loopback: publish, mirror, edits on both sides,
//! conflicts, deletes, renames, block-level delta and hostile writers.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use pairs::Node;
use pairs::share::model::{Change, FileState, encode_changes};
use pairs::share::{FolderStatus, Quota, ShareHandle};

const WAIT: Duration = Duration::from_secs(60);

/// The tests here each run two nodes that hash and move many megabytes: one at a time, so that two
/// cores are not shared four ways.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn node(dir: &Path) -> Node {
    Node::builder()
        .data_dir(dir)
        .fresh_key()
        .isolated(true)
        .bind(Some("127.0.0.1:0".parse().unwrap()))
        .spawn()
        .await
        .expect("node starts")
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// Every file and link under `dir` (no `.pairs-part` files), with contents or link targets.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let name = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let kind = entry.file_type().unwrap();
            if kind.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(name, format!("-> {}", target.display()).into_bytes());
            } else if kind.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// What a folder shares: its files but those `.pairsignore` leaves out (`*.tmp` here).
fn shared(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = snapshot(dir);
    files.retain(|name, _| !name.ends_with(".tmp"));
    files
}

/// Waits until both folders hold the same files and both replicas are in step.
async fn converge(a: &ShareHandle, a_dir: &Path, b: &ShareHandle, b_dir: &Path) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (sa, sb) = (a.status(), b.status());
        if sa.in_step && sb.in_step && shared(a_dir) == shared(b_dir) {
            return;
        }
        if Instant::now() > deadline {
            let (x, y) = (shared(a_dir), shared(b_dir));
            panic!(
                "folders differ after {WAIT:?}:\n a: {:?}\n b: {:?}\n a status: {sa:?}\n b status: {sb:?}",
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>()
            );
        }
        // Wake on a status change; the filesystem itself is read on each wake.
        let _ = a.wait_for(Duration::from_millis(200), |_| false).await;
    }
}

async fn in_step(h: &ShareHandle) -> FolderStatus {
    let rounds = h.status().rounds;
    h.wait_for(WAIT, |s| s.in_step && s.rounds > rounds)
        .await
        .expect("in step")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_edit_delete_rename_and_conflict_without_losing_anything() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let owner = node(&tmp.path().join("owner")).await;
    let other = node(&tmp.path().join("other")).await;
    let a_dir = tmp.path().join("a");
    let b_dir = tmp.path().join("b");
    std::fs::create_dir_all(a_dir.join("docs/deep")).unwrap();
    std::fs::write(a_dir.join("readme.txt"), b"hello").unwrap();
    std::fs::write(a_dir.join("docs/deep/big.bin"), random_bytes(3_000_000, 1)).unwrap();
    std::fs::write(a_dir.join("empty"), b"").unwrap();
    std::fs::write(a_dir.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(a_dir.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("docs/deep/big.bin", a_dir.join("link")).unwrap();
    std::fs::write(a_dir.join(".pairsignore"), b"*.tmp\n").unwrap();
    std::fs::write(a_dir.join("scratch.tmp"), b"not shared").unwrap();

    let a = owner.shares().create(&a_dir).await.unwrap();
    in_step(&a).await;
    let b = other.shares().sync(&a.ticket(), &b_dir).await.unwrap();
    b.wait_for(WAIT, |s| s.in_step && s.files == 6)
        .await
        .unwrap();
    let mut expected = snapshot(&a_dir);
    expected.remove("scratch.tmp");
    assert_eq!(snapshot(&b_dir), expected, "the mirror holds the share");
    let mode = std::fs::metadata(b_dir.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert!(mode & 0o111 != 0, "executable bit kept: {mode:o}");
    assert!(!b.status().writable, "not admitted yet");

    // A mirror that is not a writer keeps its own change and reports it.
    std::fs::write(b_dir.join("readme.txt"), b"mine").unwrap();
    let status = b
        .wait_for(WAIT, |s| s.kept_local.contains(&"readme.txt".to_string()))
        .await
        .unwrap();
    assert_eq!(status.published, 0);
    assert_eq!(std::fs::read(b_dir.join("readme.txt")).unwrap(), b"mine");

    // Admitted, it publishes; the owner takes its change.
    a.log().add_writer(other.id()).await.unwrap();
    b.wait_for(WAIT, |s| s.writable).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while std::fs::read(a_dir.join("readme.txt")).unwrap() != b"mine" {
        assert!(
            Instant::now() < deadline,
            "the writer's change never arrived"
        );
        let _ = a.wait_for(Duration::from_millis(200), |_| false).await;
    }

    // Both edit one file at once, and different files: every version kept, the same names on both.
    std::fs::write(a_dir.join("readme.txt"), b"owner's edit").unwrap();
    std::fs::write(b_dir.join("readme.txt"), b"other's edit").unwrap();
    std::fs::write(a_dir.join("from-a.txt"), b"a").unwrap();
    std::fs::write(b_dir.join("from-b.txt"), b"b").unwrap();
    converge(&a, &a_dir, &b, &b_dir).await;
    let files = shared(&a_dir);
    let versions: Vec<&Vec<u8>> = files
        .iter()
        .filter(|(k, _)| k.starts_with("readme"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(versions.len(), 2, "both edits kept: {:?}", files.keys());
    assert!(versions.contains(&&b"owner's edit".to_vec()));
    assert!(versions.contains(&&b"other's edit".to_vec()));
    assert!(files.contains_key("from-a.txt") && files.contains_key("from-b.txt"));

    // Deleting the conflict copy on one side resolves it everywhere.
    let copy = files
        .keys()
        .find(|k| k.contains(".conflict-"))
        .unwrap()
        .clone();
    std::fs::remove_file(a_dir.join(&copy)).unwrap();
    converge(&a, &a_dir, &b, &b_dir).await;
    assert!(!b_dir.join(&copy).exists());
    assert!(b_dir.join("readme.txt").exists());

    // A rename moves metadata: nothing is fetched again.
    let fetched = b.status().fetched;
    std::fs::rename(
        a_dir.join("docs/deep/big.bin"),
        a_dir.join("big-renamed.bin"),
    )
    .unwrap();
    std::fs::remove_file(a_dir.join("link")).unwrap();
    converge(&a, &a_dir, &b, &b_dir).await;
    assert!(b_dir.join("big-renamed.bin").exists());
    assert!(!b_dir.join("docs").exists(), "emptied directories go too");
    assert!(
        b.status().fetched - fetched < 64 * 1024,
        "a rename fetched {} bytes",
        b.status().fetched - fetched
    );
    owner.shutdown().await;
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_megabyte_of_a_large_file_moves_about_a_megabyte() {
    let _serial = ONE_AT_A_TIME.lock().await;
    const SIZE: usize = 256 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let owner = node(&tmp.path().join("owner")).await;
    let other = node(&tmp.path().join("other")).await;
    let a_dir = tmp.path().join("a");
    let b_dir = tmp.path().join("b");
    std::fs::create_dir_all(&a_dir).unwrap();
    let mut content = random_bytes(SIZE, 7);
    std::fs::write(a_dir.join("disk.img"), &content).unwrap();
    let a = owner.shares().create(&a_dir).await.unwrap();
    in_step(&a).await;
    let b = other.shares().sync(&a.ticket(), &b_dir).await.unwrap();
    b.wait_for(WAIT, |s| s.in_step && s.files == 1)
        .await
        .unwrap();
    let before = b.status();
    assert!(before.fetched >= SIZE as u64);

    // 1 MiB rewritten in place, a third of the way in.
    let at = SIZE / 3;
    content[at..at + (1 << 20)].copy_from_slice(&random_bytes(1 << 20, 8));
    {
        use std::io::{Seek as _, SeekFrom, Write as _};
        let mut f = std::fs::File::options()
            .write(true)
            .open(a_dir.join("disk.img"))
            .unwrap();
        f.seek(SeekFrom::Start(at as u64)).unwrap();
        f.write_all(&content[at..at + (1 << 20)]).unwrap();
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let s = b.status();
        if s.in_step && s.fetched > before.fetched {
            break;
        }
        assert!(Instant::now() < deadline, "the change never arrived: {s:?}");
        let _ = b.wait_for(Duration::from_millis(200), |_| false).await;
    }
    assert!(
        std::fs::read(b_dir.join("disk.img")).unwrap() == content,
        "content differs"
    );
    let after = b.status();
    let moved = after.fetched - before.fetched;
    println!(
        "changed 1 MiB of {} MiB: fetched {moved} bytes, reused {} bytes",
        SIZE >> 20,
        after.reused - before.reused
    );
    assert!(
        moved <= (1 << 20) + (1 << 20) / 2,
        "fetched {moved} bytes for a 1 MiB change"
    );
    assert!(after.reused - before.reused >= SIZE as u64 - (2 << 20));
    owner.shutdown().await;
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admitted_writer_cannot_write_outside_the_folder() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let owner = node(&tmp.path().join("owner")).await;
    let rogue = node(&tmp.path().join("rogue")).await;
    let a_dir = tmp.path().join("inner/a");
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::write(a_dir.join("ok.txt"), b"fine").unwrap();
    let a = owner.shares().create(&a_dir).await.unwrap();
    in_step(&a).await;
    a.log().add_writer(rogue.id()).await.unwrap();

    // The rogue writes changes no folder engine would: escapes, absolute paths, outward links,
    // and a file through a link it planted.
    let ticket = a.ticket();
    let r = rogue
        .shares()
        .sync(&ticket, &tmp.path().join("rogue-dir"))
        .await
        .unwrap();
    r.wait_for(WAIT, |s| s.writable).await.unwrap();
    let rogue_log = r.log().clone();
    let content = b"pwned".to_vec();
    let added = {
        let f = tmp.path().join("payload");
        std::fs::write(&f, &content).unwrap();
        rogue
            .blobs()
            .add(&f, pairs::blobs::store::ImportMode::Copy)
            .await
            .unwrap()
    };
    let file = |path: &str| Change {
        path: path.into(),
        state: FileState::File {
            hash: added.hash.0,
            size: content.len() as u64,
            executable: false,
            mtime: 0,
        },
        supersedes: vec![],
    };
    let link = |path: &str, target: &str| Change {
        path: path.into(),
        state: FileState::Symlink {
            target: target.into(),
        },
        supersedes: vec![],
    };
    let changes = vec![
        file("../escaped.txt"),
        file("/tmp/absolute.txt"),
        file("a/../../escaped2.txt"),
        link("out", "../../"),
        link("abs", "/etc"),
        file("out/escaped3.txt"),
        file("ok.txt/under-a-file"),
        file("fine.txt"),
    ];
    rogue_log
        .append_payloads(encode_changes(&changes))
        .await
        .unwrap();

    let status = a
        .wait_for(WAIT, |s| {
            s.in_step && s.files >= 2 && a_dir.join("fine.txt").exists()
        })
        .await
        .unwrap();
    assert_eq!(std::fs::read(a_dir.join("fine.txt")).unwrap(), content);
    let outside = snapshot(tmp.path().join("inner").as_path());
    let names: Vec<&str> = outside.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["a/fine.txt", "a/ok.txt", "a/out/escaped3.txt"],
        "nothing written outside the folder (the refused link's path is an ordinary directory)"
    );
    assert!(!tmp.path().join("escaped.txt").exists());
    assert!(!tmp.path().join("escaped2.txt").exists());
    assert!(std::fs::read(a_dir.join("ok.txt")).unwrap() == b"fine");
    let rejected: Vec<&str> = status.rejected.iter().map(|r| r.path.as_str()).collect();
    for bad in [
        "../escaped.txt",
        "/tmp/absolute.txt",
        "out",
        "abs",
        "ok.txt/under-a-file",
    ] {
        assert!(rejected.contains(&bad), "{bad} not reported: {rejected:?}");
    }
    owner.shutdown().await;
    rogue.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_fetches_one_path_without_the_rest() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let owner = node(&tmp.path().join("owner")).await;
    let other = node(&tmp.path().join("other")).await;
    let a_dir = tmp.path().join("a");
    std::fs::create_dir_all(a_dir.join("sub")).unwrap();
    for i in 0..200 {
        std::fs::write(a_dir.join(format!("f{i:03}.bin")), random_bytes(10_000, i)).unwrap();
    }
    std::fs::write(a_dir.join("sub/wanted.txt"), b"just this").unwrap();
    let a = owner.shares().create(&a_dir).await.unwrap();
    in_step(&a).await;
    let out = tmp.path().join("out");
    let done = other
        .shares()
        .get(&a.ticket(), &["sub".to_string()], &out, None, |_| {})
        .await
        .unwrap();
    assert_eq!(done.files, 1);
    assert_eq!(
        std::fs::read(out.join("sub/wanted.txt")).unwrap(),
        b"just this"
    );
    assert_eq!(snapshot(&out).len(), 1, "only what was asked");
    let missing = other
        .shares()
        .get(&a.ticket(), &["nope".to_string()], &out, None, |_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(missing.contains("no nope"), "{missing}");
    owner.shutdown().await;
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_small_files_and_large_ones_sync_and_stay_identical() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let owner = node(&tmp.path().join("owner")).await;
    let other = node(&tmp.path().join("other")).await;
    let a_dir = tmp.path().join("a");
    let b_dir = tmp.path().join("b");
    for i in 0..10_000u64 {
        let dir = a_dir.join(format!("d{:02}", i % 100));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("f{i:05}.txt")),
            format!("file {i}\n").repeat((i % 7 + 1) as usize),
        )
        .unwrap();
    }
    for i in 0..3 {
        std::fs::write(
            a_dir.join(format!("large-{i}.bin")),
            random_bytes(8 << 20, 100 + i),
        )
        .unwrap();
    }
    let started = Instant::now();
    let a = owner.shares().create(&a_dir).await.unwrap();
    in_step(&a).await;
    let published = started.elapsed();
    let b = other.shares().sync(&a.ticket(), &b_dir).await.unwrap();
    b.wait_for(Duration::from_secs(300), |s| s.in_step && s.files == 10_003)
        .await
        .unwrap();
    let synced = started.elapsed() - published;
    println!("10,003 files: published in {published:.1?}, mirrored in {synced:.1?}");
    assert_eq!(shared(&a_dir), shared(&b_dir));

    // Both sides change at once: different files, one file on both, a delete and a new file.
    a.log().add_writer(other.id()).await.unwrap();
    b.wait_for(WAIT, |s| s.writable).await.unwrap();
    std::fs::write(a_dir.join("d01/f00001.txt"), b"changed by a").unwrap();
    std::fs::write(b_dir.join("d02/f00002.txt"), b"changed by b").unwrap();
    std::fs::write(a_dir.join("d03/f00003.txt"), b"a's version").unwrap();
    std::fs::write(b_dir.join("d03/f00003.txt"), b"b's version").unwrap();
    std::fs::remove_file(b_dir.join("d04/f00004.txt")).unwrap();
    std::fs::write(a_dir.join("large-0.bin"), random_bytes(8 << 20, 200)).unwrap();
    converge(&a, &a_dir, &b, &b_dir).await;
    let files = shared(&b_dir);
    assert_eq!(files["d01/f00001.txt"], b"changed by a");
    assert_eq!(files["d02/f00002.txt"], b"changed by b");
    assert!(!files.contains_key("d04/f00004.txt"));
    let versions: Vec<&Vec<u8>> = files
        .iter()
        .filter(|(k, _)| k.starts_with("d03/f00003"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        versions.len(),
        2,
        "both versions of the file edited on both sides are kept"
    );
    owner.shutdown().await;
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_holds_back_what_passes_it_and_is_kept_across_restarts() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let owner = node(&tmp.path().join("owner")).await;
    let other_home = tmp.path().join("other");
    let other = node(&other_home).await;
    let a_dir = tmp.path().join("a");
    std::fs::create_dir_all(&a_dir).unwrap();
    for name in ["a", "b", "c", "d", "e", "f"] {
        std::fs::write(a_dir.join(name), random_bytes(1000, name.len() as u64)).unwrap();
    }
    let a = owner.shares().create(&a_dir).await.unwrap();
    in_step(&a).await;
    let b_dir = tmp.path().join("b");
    let quota = Quota {
        max_bytes: Some(3_500),
        max_files: Some(100),
    };
    let b = other
        .shares()
        .sync_with(&a.ticket(), &b_dir, quota)
        .await
        .unwrap();
    let status = b
        .wait_for(WAIT, |s| s.in_step && s.files == 6)
        .await
        .expect("in step");
    assert_eq!(status.held_back, 3, "{status:?}");
    assert_eq!(status.quota, quota);
    let names: Vec<String> = snapshot(&b_dir).into_keys().collect();
    assert_eq!(
        names,
        ["a", "b", "c"],
        "files in path order until 3,500 bytes"
    );

    // A new file that sorts first is taken, pushing "c" past the quota: it stays, as nothing here
    // is deleted to make room.
    std::fs::write(a_dir.join("0"), random_bytes(600, 9)).unwrap();
    let status = b
        .wait_for(WAIT, |s| s.in_step && s.files == 7)
        .await
        .expect("in step");
    assert_eq!(status.held_back, 4, "{status:?}");
    let names: Vec<String> = snapshot(&b_dir).into_keys().collect();
    assert_eq!(names, ["0", "a", "b", "c"]);

    // Syncing again with a larger quota takes the rest at once.
    let larger = Quota {
        max_bytes: Some(1 << 20),
        max_files: None,
    };
    other
        .shares()
        .sync_with(&a.ticket(), &b_dir, larger)
        .await
        .unwrap();
    let status = b
        .wait_for(WAIT, |s| s.in_step && s.held_back == 0 && s.quota == larger)
        .await
        .expect("in step with the larger quota");
    assert_eq!(status.files, 7);
    assert_eq!(snapshot(&b_dir), snapshot(&a_dir));

    // The quota stays with the folder when its node starts again.
    other.shutdown().await;
    drop((b, other));
    let other = node(&other_home).await;
    assert_eq!(other.shares().resume().await.unwrap(), 1);
    let (_, status) = other.shares().list().into_iter().next().unwrap();
    assert_eq!(status.quota, larger);
    owner.shutdown().await;
    other.shutdown().await;
}
