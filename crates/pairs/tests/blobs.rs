//! Blobs between in-process nodes on loopback: a file and a directory fetched by ticket, verified.

use std::path::Path;
use std::time::Duration;

use pairs::Node;
use pairs::blobs::store::ImportMode;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_and_a_directory_arrive_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let seeder = node(&tmp.path().join("a")).await;
    let leecher = node(&tmp.path().join("b")).await;

    let file = tmp.path().join("movie.bin");
    let content = random_bytes(5 * 1024 * 1024 + 777, 1);
    std::fs::write(&file, &content).unwrap();
    let added = seeder
        .blobs()
        .add(&file, ImportMode::Reference)
        .await
        .unwrap();
    seeder.blobs().share(added.hash).await.unwrap();
    let ticket = seeder.blobs().ticket(added.hash, added.format);

    let out = tmp.path().join("got.bin");
    let done = tokio::time::timeout(
        Duration::from_secs(60),
        leecher.blobs().get(&ticket, &out, |_| {}),
    )
    .await
    .expect("file within 60 s")
    .unwrap();
    assert_eq!(done.held, content.len() as u64);
    assert!(std::fs::read(&out).unwrap() == content, "file differs");
    assert!(!tmp.path().join("got.bin.pairs-part").exists());

    // A directory: nested files, an empty one, an executable one.
    let dir = tmp.path().join("site");
    std::fs::create_dir_all(dir.join("css/deep")).unwrap();
    std::fs::write(dir.join("index.html"), b"<h1>hi</h1>").unwrap();
    std::fs::write(dir.join("css/deep/big.bin"), random_bytes(300_000, 2)).unwrap();
    std::fs::write(dir.join("empty"), b"").unwrap();
    std::fs::write(dir.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let added = seeder.blobs().add(&dir, ImportMode::Copy).await.unwrap();
    assert_eq!(added.files, 4);
    seeder.blobs().share(added.hash).await.unwrap();
    let ticket = seeder.blobs().ticket(added.hash, added.format);
    let out = tmp.path().join("site-copy");
    tokio::time::timeout(
        Duration::from_secs(60),
        leecher.blobs().get(&ticket, &out, |_| {}),
    )
    .await
    .expect("directory within 60 s")
    .unwrap();
    for name in ["index.html", "css/deep/big.bin", "empty", "run.sh"] {
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(dir.join(name)).unwrap(),
            "{name}"
        );
    }
    let mode = std::fs::metadata(out.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert!(mode & 0o111 != 0, "executable bit lost: {mode:o}");
    seeder.shutdown().await;
    leecher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_collections_write_nothing_outside_the_output_directory() {
    use pairs::blobs::ticket::BlobFormat;
    use pairs::blobs::{Collection, CollectionEntry};
    let tmp = tempfile::tempdir().unwrap();
    let seeder = node(&tmp.path().join("a")).await;
    let leecher = node(&tmp.path().join("b")).await;
    let evil = seeder
        .blobs()
        .store()
        .unwrap()
        .import_bytes(b"owned")
        .unwrap();
    let entry = |path: &str| CollectionEntry {
        path: path.into(),
        hash: evil,
        size: 5,
        executable: false,
    };
    let get = |collection: Collection, out: std::path::PathBuf| {
        let seeder = seeder.clone();
        let leecher = leecher.clone();
        async move {
            // Encoded as a hostile peer would: no checks on the way out.
            let hash = seeder
                .blobs()
                .store()
                .unwrap()
                .import_bytes(&collection.encode())
                .unwrap();
            seeder.blobs().share(hash).await.unwrap();
            let ticket = seeder.blobs().ticket(hash, BlobFormat::Collection);
            tokio::time::timeout(
                Duration::from_secs(30),
                leecher.blobs().get(&ticket, &out, |_| {}),
            )
            .await
            .expect("answers within 30 s")
        }
    };
    let out = tmp.path().join("jail/out");
    std::fs::create_dir_all(&out).unwrap();
    for bad in [
        "../escape.txt",
        "/tmp/absolute.txt",
        "a/../../escape2.txt",
        "..\\escape3.txt",
    ] {
        let err = get(
            Collection {
                entries: vec![entry("fine.txt"), entry(bad)],
            },
            out.clone(),
        )
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains("unsafe path"), "{bad}: {err:#}");
    }
    // Nothing was written anywhere: not even the harmless entry of a refused collection.
    let written: Vec<_> = walk(&tmp.path().join("jail"));
    assert_eq!(written, vec![out.clone()], "files appeared: {written:?}");

    // A symlink already in the output directory is never followed.
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("link")).unwrap();
    let err = get(
        Collection {
            entries: vec![entry("link/x.txt")],
        },
        out.clone(),
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("symlink"), "{err:#}");
    assert!(
        std::fs::read_dir(&elsewhere).unwrap().next().is_none(),
        "wrote through the symlink"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let inner = walk(&path);
            if inner.is_empty() {
                out.push(path);
            } else {
                out.extend(inner);
            }
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_many_small_files_arrives() {
    // More files than a connection has streams at once (256): finished files must give theirs back.
    let tmp = tempfile::tempdir().unwrap();
    let seeder = node(&tmp.path().join("a")).await;
    let leecher = node(&tmp.path().join("b")).await;
    let dir = tmp.path().join("many");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..400 {
        std::fs::write(
            dir.join(format!("f{i:03}")),
            random_bytes(1000 + i * 37, i as u64),
        )
        .unwrap();
    }
    let added = seeder
        .blobs()
        .add(&dir, ImportMode::Reference)
        .await
        .unwrap();
    seeder.blobs().share(added.hash).await.unwrap();
    let ticket = seeder.blobs().ticket(added.hash, added.format);
    let out = tmp.path().join("out");
    let started = std::time::Instant::now();
    let done = tokio::time::timeout(
        Duration::from_secs(60),
        leecher.blobs().get(&ticket, &out, |_| {}),
    )
    .await
    .expect("400 files within 60 s")
    .unwrap();
    eprintln!(
        "400 small files in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(done.files_done, 400);
    for i in [0, 255, 256, 399] {
        let name = format!("f{i:03}");
        assert_eq!(
            std::fs::read(out.join(&name)).unwrap(),
            std::fs::read(dir.join(&name)).unwrap(),
            "{name}"
        );
    }
    seeder.shutdown().await;
    leecher.shutdown().await;
}
