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
