//! Replicas converge: any split of entries, any sync order, the same entries and the same views.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use pairs_base::SecretKey;
use pairs_log::{EntryId, Log, Op, Payload, Views};
use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const WAIT: Duration = Duration::from_secs(60);

async fn sync(a: &Log, b: &Log) {
    let (x, y) = tokio::io::duplex(64 * 1024);
    let (ra, rb) = tokio::time::timeout(WAIT, async {
        tokio::join!(a.replicate(x, false), b.replicate(y, false))
    })
    .await
    .expect("sync finished in time");
    ra.expect("a side");
    rb.expect("b side");
}

fn sorted_ids(log: &Log) -> Vec<EntryId> {
    let mut ids: Vec<_> = log.entries().unwrap().iter().map(|e| e.id()).collect();
    ids.sort();
    ids
}

/// Owner plus two writers, each replica writing with its own key, all admitted up front.
/// Replica 1 keeps its entries in a file, so both stores take part.
fn three_replicas() -> (Vec<SecretKey>, Vec<Log>, tempfile::TempDir) {
    let keys: Vec<SecretKey> = (0..3).map(|_| SecretKey::generate()).collect();
    let dir = tempfile::tempdir().unwrap();
    let logs: Vec<Log> = (0..3)
        .map(|i| match i {
            1 => Log::open(&dir.path().join("1.redb"), keys[0].node_id()).unwrap(),
            _ => Log::in_memory(keys[0].node_id()),
        })
        .collect();
    logs[0]
        .append_batch(
            &keys[0],
            vec![
                Payload::AddWriter(keys[1].node_id()),
                Payload::AddWriter(keys[2].node_id()),
            ],
        )
        .unwrap();
    (keys, logs, dir)
}

fn op_for(n: u8) -> Op {
    let key = vec![b'k', n % 4];
    match n % 5 {
        0 => Op::MapSet {
            key,
            value: vec![n],
        },
        1 => Op::MapDelete { key },
        2 => Op::CounterAdd {
            counter: b"c".to_vec(),
            delta: n as i64 - 100,
        },
        3 => Op::SetAdd {
            set: b"s".to_vec(),
            element: key,
        },
        _ => Op::RegisterSet {
            register: b"r".to_vec(),
            value: vec![n],
            supersedes: vec![],
        },
    }
}

#[derive(Debug, Clone)]
enum Action {
    /// Replica appends `count` ops in one batch.
    Append { replica: usize, count: u8, seed: u8 },
    /// Two replicas sync.
    Sync(usize, usize),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (0..3usize, 1..5u8, any::<u8>()).prop_map(|(replica, count, seed)| Action::Append {
            replica,
            count,
            seed
        }),
        (0..3usize, 0..3usize).prop_map(|(a, b)| Action::Sync(a, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn any_split_any_order_same_entries_same_views(actions in proptest::collection::vec(action(), 1..30)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (keys, logs, _dir) = three_replicas();
            // Writers learn they were admitted before they write.
            sync(&logs[0], &logs[1]).await;
            sync(&logs[0], &logs[2]).await;
            for action in &actions {
                match *action {
                    Action::Append { replica, count, seed } => {
                        let payloads = (0..count).map(|i| op_for(seed.wrapping_add(i)).to_payload()).collect();
                        logs[replica].append_batch(&keys[replica], payloads).unwrap();
                    }
                    Action::Sync(a, b) if a != b => sync(&logs[a], &logs[b]).await,
                    Action::Sync(..) => {}
                }
            }
            for (a, b) in [(0, 1), (1, 2), (2, 0), (0, 1)] {
                sync(&logs[a], &logs[b]).await;
            }
            let ids = sorted_ids(&logs[0]);
            let views = Views::of(&logs[0]).unwrap();
            for log in &logs[1..] {
                assert_eq!(sorted_ids(log), ids);
                assert_eq!(log.heads(), logs[0].heads());
                assert_eq!(Views::of(log).unwrap(), views);
            }
            // The fold does not depend on the order entries are presented in.
            let mut shuffled = logs[0].entries().unwrap();
            shuffled.reverse();
            assert_eq!(Views::fold(shuffled.iter()), views);
        });
    }
}

#[tokio::test]
async fn three_writers_with_cross_links_replicate_to_completion() {
    // hyperlog can hang forever on this shape of history.
    let (keys, logs, _dir) = three_replicas();
    sync(&logs[0], &logs[1]).await;
    sync(&logs[0], &logs[2]).await;
    for round in 0..20u8 {
        for r in 0..3 {
            logs[r]
                .append(&keys[r], Payload::Data(vec![round, r as u8]))
                .unwrap();
        }
        // Rotate who syncs with whom, so every entry links to others' concurrent heads.
        let (a, b) = [(0, 1), (1, 2), (2, 0)][round as usize % 3];
        sync(&logs[a], &logs[b]).await;
    }
    let fresh = Log::in_memory(keys[0].node_id());
    for log in &logs {
        sync(&fresh, log).await;
    }
    assert_eq!(fresh.len(), 2 + 60);
    for log in &logs {
        sync(log, &fresh).await;
        assert_eq!(sorted_ids(log), sorted_ids(&fresh));
    }
    let parents_from_other_authors = fresh
        .entries()
        .unwrap()
        .iter()
        .filter(|e| e.body().parents.len() > 1)
        .count();
    assert!(parents_from_other_authors > 10, "history is cross-linked");
}

/// A stream wrapper counting the bytes written through it.
struct Counted<S> {
    inner: S,
    written: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &result {
            self.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        result
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Starts a live session between two replicas; returns the bytes each side has written so far.
fn live_link(a: &Log, b: &Log) -> (Arc<AtomicU64>, Arc<AtomicU64>) {
    let (x, y) = tokio::io::duplex(256 * 1024);
    let (wa, wb) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (a, b) = (a.clone(), b.clone());
    let sa = Counted {
        inner: x,
        written: wa.clone(),
    };
    let sb = Counted {
        inner: y,
        written: wb.clone(),
    };
    // A live session only ends with its stream; an early end is a failure worth seeing.
    tokio::spawn(async move {
        if let Err(err) = a.replicate(sa, true).await {
            eprintln!("live session ended: {err}");
        }
    });
    tokio::spawn(async move {
        if let Err(err) = b.replicate(sb, true).await {
            eprintln!("live session ended: {err}");
        }
    });
    (wa, wb)
}

async fn wait_for_len(log: &Log, len: usize) {
    let mut events = log.subscribe();
    tokio::time::timeout(WAIT, async {
        while log.len() < len {
            let _ = events.recv().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("log reached {} of {len} entries", log.len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_entries_reach_everyone_and_are_not_echoed() {
    let owner = SecretKey::generate();
    let (a, b, c) = (
        Log::in_memory(owner.node_id()),
        Log::in_memory(owner.node_id()),
        Log::in_memory(owner.node_id()),
    );
    // A - B - C in a line: C only hears A through B.
    let (a_wrote, b_wrote_to_a) = live_link(&a, &b);
    let (_b_wrote_to_c, c_wrote) = live_link(&b, &c);
    a.append(&owner, Payload::Data(b"first".to_vec())).unwrap();
    wait_for_len(&c, 1).await;
    let n = 200;
    for i in 0..n {
        a.append(&owner, Payload::Data(format!("entry {i}").into_bytes()))
            .unwrap();
    }
    wait_for_len(&b, n + 1).await;
    wait_for_len(&c, n + 1).await;
    let forward = a_wrote.load(Ordering::Relaxed);
    assert!(
        forward > (n * 100) as u64,
        "entries flowed from A: {forward} bytes"
    );
    // Everything B ever sent A, handshake included, stays a small constant: one entry alone is
    // over 100 bytes, so any echo of the 201 entries would show.
    let back = b_wrote_to_a.load(Ordering::Relaxed);
    assert!(
        back < 512,
        "B sent {back} bytes back to A for {n} entries from A"
    );
    let c_back = c_wrote.load(Ordering::Relaxed);
    assert!(
        c_back < 512,
        "C sent {c_back} bytes back to B for {n} entries"
    );
    // And the other way: C's entry reaches A through B.
    let writer_c = SecretKey::generate();
    a.append(&owner, Payload::AddWriter(writer_c.node_id()))
        .unwrap();
    wait_for_len(&c, n + 2).await;
    c.append(&writer_c, Payload::Data(b"from c".to_vec()))
        .unwrap();
    wait_for_len(&a, n + 3).await;
    assert_eq!(sorted_ids(&a), sorted_ids(&c));
}

#[tokio::test]
async fn reconciliation_cost_grows_with_the_difference_not_the_log() {
    let owner = SecretKey::generate();
    let base = Log::in_memory(owner.node_id());
    for _ in 0..20 {
        base.append_batch(
            &owner,
            (0..1000u32)
                .map(|i| Payload::Data(i.to_le_bytes().to_vec()))
                .collect(),
        )
        .unwrap();
    }
    let mut costs = Vec::new();
    for d in [1usize, 10, 100] {
        let a = Log::in_memory(owner.node_id());
        let b = Log::in_memory(owner.node_id());
        sync(&a, &base).await;
        sync(&b, &base).await;
        // a gets d entries b lacks, appended by the owner one by one.
        for i in 0..d {
            a.append(&owner, Payload::Data(vec![i as u8; 8])).unwrap();
        }
        let (x, y) = tokio::io::duplex(64 * 1024);
        let (sa, sb) = tokio::join!(a.replicate(x, false), b.replicate(y, false));
        let (sa, sb) = (sa.unwrap(), sb.unwrap());
        assert_eq!(sorted_ids(&a), sorted_ids(&b));
        let bytes = sa.bytes_sent + sb.bytes_sent;
        costs.push((d, bytes, sa.rounds + sb.rounds));
    }
    // 20 000 entries in common: one new entry costs a handshake and the entry, nothing like the log.
    assert!(costs[0].1 < 2048, "{costs:?}");
    assert!(costs[2].1 < 100 * 200, "{costs:?}");
    assert!(costs[0].2 <= 2, "{costs:?}");
}

#[tokio::test]
async fn a_forking_author_is_recorded_and_the_log_keeps_working() {
    // The same owner key appends on two replicas that have not synced: two entries with one
    // sequence number, as a cloned device or a malicious writer would produce.
    let owner = SecretKey::generate();
    let a = Log::in_memory(owner.node_id());
    a.append(&owner, Payload::Data(b"shared".to_vec())).unwrap();
    let b = Log::in_memory(owner.node_id());
    sync(&a, &b).await;
    let left = a.append(&owner, Payload::Data(b"left".to_vec())).unwrap();
    let right = b.append(&owner, Payload::Data(b"right".to_vec())).unwrap();
    sync(&a, &b).await;
    for log in [&a, &b] {
        assert_eq!(log.len(), 3, "both branches are kept");
        let forks = log.equivocations().unwrap();
        assert_eq!(forks.len(), 1);
        assert_eq!(forks[0].author, owner.node_id());
        assert_eq!(forks[0].seq, 1);
        let mut pair = [forks[0].first, forks[0].second];
        pair.sort();
        let mut expected = [left, right];
        expected.sort();
        assert_eq!(pair, expected);
    }
    // Appending goes on, merging both branches.
    a.append(&owner, Payload::Data(b"after".to_vec())).unwrap();
    sync(&a, &b).await;
    assert_eq!(b.len(), 4);
    assert_eq!(a.heads(), b.heads());
    assert_eq!(a.heads().len(), 1);
}

#[tokio::test]
async fn forks_made_of_sealed_batches_replicate() {
    // One key appends batches on two replicas from the same base: two chains of unsigned entries
    // share sequence numbers, each sealed by its own signed entry.
    let owner = SecretKey::generate();
    let a = Log::in_memory(owner.node_id());
    a.append(&owner, Payload::Data(b"base".to_vec())).unwrap();
    let b = Log::in_memory(owner.node_id());
    sync(&a, &b).await;
    let batch = |tag: &str| {
        (0..5)
            .map(|i| Payload::Data(format!("{tag}{i}").into_bytes()))
            .collect()
    };
    a.append_batch(&owner, batch("a")).unwrap();
    b.append_batch(&owner, batch("b")).unwrap();
    sync(&a, &b).await;
    assert_eq!(a.len(), 11);
    assert_eq!(a.equivocations().unwrap().len(), 5);
    // A fresh replica learns both forks from one that holds them.
    let fresh = Log::in_memory(owner.node_id());
    sync(&fresh, &a).await;
    assert_eq!(sorted_ids(&fresh), sorted_ids(&a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncing_from_two_peers_at_once() {
    let owner = SecretKey::generate();
    let a = Log::in_memory(owner.node_id());
    for _ in 0..5 {
        a.append_batch(
            &owner,
            (0..500u32)
                .map(|i| Payload::Data(i.to_le_bytes().to_vec()))
                .collect(),
        )
        .unwrap();
    }
    let b = Log::in_memory(owner.node_id());
    sync(&a, &b).await;
    for _ in 0..10 {
        let fresh = Log::in_memory(owner.node_id());
        let (f1, f2) = (fresh.clone(), fresh.clone());
        let (a2, b2) = (a.clone(), b.clone());
        let one = tokio::spawn(async move { sync(&f1, &a2).await });
        let two = tokio::spawn(async move { sync(&f2, &b2).await });
        tokio::time::timeout(WAIT, async {
            one.await.unwrap();
            two.await.unwrap();
        })
        .await
        .expect("both syncs finished");
        assert_eq!(sorted_ids(&fresh), sorted_ids(&a));
    }
}
