//! Replication between replicas over in-memory pipes.

use std::time::Duration;

use pairs_base::SecretKey;
use pairs_log::{Log, Payload, SyncError, SyncStats};

const WAIT: Duration = Duration::from_secs(30);

async fn sync(a: &Log, b: &Log) -> (SyncStats, SyncStats) {
    let (x, y) = tokio::io::duplex(64 * 1024);
    let (ra, rb) = tokio::time::timeout(WAIT, async {
        tokio::join!(a.replicate(x, false), b.replicate(y, false))
    })
    .await
    .expect("sync finished in time");
    (ra.expect("a side"), rb.expect("b side"))
}

fn ids(log: &Log) -> Vec<pairs_log::EntryId> {
    let mut ids: Vec<_> = log.entries().unwrap().iter().map(|e| e.id()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn empty_replica_gets_everything() {
    let owner = SecretKey::generate();
    let a = Log::in_memory(owner.node_id());
    for i in 0..10 {
        a.append_batch(
            &owner,
            (0..100)
                .map(|j| Payload::Data(format!("{i}-{j}").into_bytes()))
                .collect(),
        )
        .unwrap();
    }
    let b = Log::in_memory(owner.node_id());
    let (sa, sb) = sync(&a, &b).await;
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(b.len(), 1000);
    assert_eq!(a.heads(), b.heads());
    assert_eq!(sa.entries_sent + sb.entries_sent, 1000);
    assert_eq!(sa.duplicates_received + sb.duplicates_received, 0);
}

#[tokio::test]
async fn both_sides_end_with_the_union() {
    let owner = SecretKey::generate();
    let writer = SecretKey::generate();
    let a = Log::in_memory(owner.node_id());
    a.append(&owner, Payload::AddWriter(writer.node_id()))
        .unwrap();
    let b = Log::in_memory(owner.node_id());
    sync(&a, &b).await;
    for i in 0..50 {
        a.append(&owner, Payload::Data(vec![i])).unwrap();
        b.append(&writer, Payload::Data(vec![i])).unwrap();
    }
    sync(&a, &b).await;
    assert_eq!(a.len(), 101);
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(a.heads(), b.heads());
}

#[tokio::test]
async fn in_sync_replicas_exchange_only_a_handshake() {
    let owner = SecretKey::generate();
    let a = Log::in_memory(owner.node_id());
    a.append_batch(
        &owner,
        (0..1000u32)
            .map(|i| Payload::Data(i.to_le_bytes().to_vec()))
            .collect(),
    )
    .unwrap();
    let b = Log::in_memory(owner.node_id());
    sync(&a, &b).await;
    let (sa, sb) = sync(&a, &b).await;
    assert_eq!(sa.entries_sent + sb.entries_sent, 0);
    assert!(sa.bytes_sent < 200, "{sa:?}");
}

#[tokio::test]
async fn stranger_without_the_log_key_gets_nothing() {
    let owner = SecretKey::generate();
    let a = Log::in_memory(owner.node_id());
    a.append(&owner, Payload::Data(b"secret".to_vec())).unwrap();
    let stranger = Log::in_memory(SecretKey::generate().node_id());
    let (x, y) = tokio::io::duplex(64 * 1024);
    let (ra, rb) = tokio::join!(a.replicate(x, false), stranger.replicate(y, false));
    // Each side says what went wrong, not that the other broke the protocol.
    for err in [ra.unwrap_err(), rb.unwrap_err()] {
        assert!(matches!(err, SyncError::OtherLog), "{err}");
        assert!(err.to_string().contains("another log"), "{err}");
    }
    assert!(stranger.is_empty());
}

#[tokio::test]
async fn a_batch_larger_than_one_seal_span_replicates() {
    let owner = SecretKey::generate();
    let a = Log::in_memory(owner.node_id());
    let n = pairs_log::store::SEAL_SPAN * 2 + 10;
    let ids = a
        .append_batch(
            &owner,
            (0..n as u32)
                .map(|i| Payload::Data(i.to_le_bytes().to_vec()))
                .collect(),
        )
        .unwrap();
    let signed = a
        .entries()
        .unwrap()
        .iter()
        .filter(|e| e.signature().is_some())
        .count();
    assert_eq!(signed, 3, "one signature per seal span");
    let b = Log::in_memory(owner.node_id());
    sync(&a, &b).await;
    assert_eq!(b.len(), n);
    assert!(b.contains(&ids[0]) && b.contains(&ids[n - 1]));
}
