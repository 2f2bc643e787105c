//! Entries appended one by one each carry a signature, but a receiver checks only the newest of each
//! author's run in a batch: it vouches for the earlier ones through the chain of hashes, and they are
//! stored as sealed by it. These tests pin down what that means when signatures are forged, and that
//! what is stored this way replicates on.

use std::time::Duration;

use pairs_base::SecretKey;
use pairs_log::entry::{Entry, EntryBody, EntryId, Payload};
use pairs_log::wire::{FrameDecoder, Message, VERSION, WireBatch};
use pairs_log::{Log, SyncError};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const WAIT: Duration = Duration::from_secs(30);

/// A scripted peer that knows the log.
struct Peer {
    stream: DuplexStream,
    decoder: FrameDecoder,
}

impl Peer {
    async fn send(&mut self, message: &Message) {
        let _ = self.stream.write_all(&message.to_frame()).await;
    }

    async fn recv(&mut self) -> Option<Message> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(frame) = self.decoder.next_frame().unwrap() {
                return Some(Message::from_body(&frame).unwrap());
            }
            let n = self.stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            self.decoder.push(&buf[..n]);
        }
    }

    /// Completes Hello and Auth, claiming to have nothing.
    async fn handshake(&mut self, log: &Log) {
        let nonce = [7u8; 16];
        self.send(&Message::Hello {
            version: VERSION,
            nonce,
        })
        .await;
        let Some(Message::Hello { nonce: theirs, .. }) = self.recv().await else {
            panic!("expected hello")
        };
        let key = blake3::derive_key("pairs log knowledge proof v1", log.id().as_bytes());
        let mut proof = blake3::Hasher::new_keyed(&key);
        proof.update(&theirs);
        proof.update(&nonce);
        self.send(&Message::Auth {
            proof: *proof.finalize().as_bytes(),
            heads: vec![],
            len: 0,
        })
        .await;
    }

    /// Sends `batches`, ends reconciliation and says done; then reads until the other side closes,
    /// returning the reason it gave if it closed with one.
    async fn deliver(mut self, batches: Vec<Vec<Entry>>) -> Option<String> {
        for batch in batches {
            self.send(&Message::Entries(WireBatch::encode(&batch)))
                .await;
        }
        self.send(&Message::Ranges(vec![])).await;
        self.send(&Message::Done).await;
        while let Some(message) = self.recv().await {
            if let Message::Error(reason) = message {
                return Some(reason);
            }
        }
        None
    }
}

/// An owner's log with a few entries, and a peer connected to a replication of it.
fn setup() -> (SecretKey, Log, Peer, DuplexStream) {
    let owner = SecretKey::generate();
    let log = Log::in_memory(owner.node_id());
    log.append_batch(&owner, (0..5u8).map(|i| Payload::Data(vec![i])).collect())
        .unwrap();
    let (honest, peer) = tokio::io::duplex(1 << 20);
    let peer = Peer {
        stream: peer,
        decoder: FrameDecoder::default(),
    };
    (owner, log, peer, honest)
}

fn body(log: &Log, author: &SecretKey, parents: &[&Entry], seq: u64) -> EntryBody {
    let mut ids: Vec<EntryId> = parents.iter().map(|p| p.id()).collect();
    ids.sort();
    EntryBody {
        log: log.id(),
        author: author.node_id(),
        seq,
        clock: parents
            .iter()
            .map(|p| p.body().clock + 1)
            .max()
            .unwrap_or(0),
        parents: ids,
        timestamp: seq,
        payload: Payload::Data(format!("entry {seq}").into_bytes()),
    }
}

/// `count` entries by the owner continuing the log's chain, each signed on its own, as
/// `Log::append` makes them.
fn one_by_one(log: &Log, owner: &SecretKey, count: u64) -> Vec<Entry> {
    let head = log.get(&log.heads()[0]).unwrap().unwrap();
    let mut previous = head;
    let mut out = Vec::new();
    for _ in 0..count {
        let seq = previous.body().seq + 1;
        let entry = Entry::signed(body(log, owner, &[&previous], seq), owner);
        previous = entry.clone();
        out.push(entry);
    }
    out
}

/// The same entry carrying another entry's signature.
fn forged(entry: &Entry, signature_of: &Entry) -> Entry {
    Entry::from_parts(entry.body().clone(), signature_of.signature())
}

async fn run(
    log: &Log,
    peer: Peer,
    honest: DuplexStream,
    batches: Vec<Vec<Entry>>,
) -> (Result<pairs_log::SyncStats, SyncError>, Option<String>) {
    let replica = log.clone();
    let session = tokio::spawn(async move { replica.replicate(honest, false).await });
    let mut peer = peer;
    let reason = tokio::time::timeout(WAIT, async {
        peer.handshake(log).await;
        peer.deliver(batches).await
    })
    .await
    .expect("peer finished");
    let result = tokio::time::timeout(WAIT, session)
        .await
        .expect("session ended")
        .unwrap();
    (result, reason)
}

async fn sync(a: &Log, b: &Log) {
    let (x, y) = tokio::io::duplex(1 << 20);
    let (ra, rb) = tokio::time::timeout(WAIT, async {
        tokio::join!(a.replicate(x, false), b.replicate(y, false))
    })
    .await
    .expect("sync finished in time");
    ra.expect("a side");
    rb.expect("b side");
}

fn signed_count(log: &Log) -> usize {
    log.entries()
        .unwrap()
        .iter()
        .filter(|e| e.signature().is_some())
        .count()
}

/// Decided behaviour: a forged signature below a valid newest one in the same batch is never
/// checked, since the newest signature authenticates the entry's content through the chain. The
/// entry is stored as sealed by the newest one and the forged signature is dropped, so nothing
/// unchecked is kept or passed on.
#[tokio::test]
async fn a_forged_signature_under_a_valid_newest_one_is_dropped() {
    let (owner, log, peer, honest) = setup();
    let mut chain = one_by_one(&log, &owner, 5);
    chain[2] = forged(&chain[2], &chain[1]);
    assert!(!chain[2].verify_signature());
    let (result, reason) = run(&log, peer, honest, vec![chain.clone()]).await;
    result.expect("session succeeds");
    assert_eq!(reason, None);
    assert_eq!(log.len(), 10);
    let newest = chain[4].id();
    for entry in &chain[..4] {
        let stored = log.get(&entry.id()).unwrap().unwrap();
        assert_eq!(
            stored.signature(),
            None,
            "stored without the unchecked signature"
        );
        assert_eq!(log.seal_of(&entry.id()).unwrap(), Some(newest));
    }
    assert!(log.get(&newest).unwrap().unwrap().verify_signature());
    // What was stored this way is served verifiably.
    let other = Log::in_memory(owner.node_id());
    sync(&log, &other).await;
    assert_eq!(other.len(), 10);
}

/// A forged newest signature: nothing of the batch is stored.
#[tokio::test]
async fn a_forged_newest_signature_stores_nothing() {
    let (owner, log, peer, honest) = setup();
    let before = (log.len(), log.heads());
    let mut chain = one_by_one(&log, &owner, 5);
    chain[4] = forged(&chain[4], &chain[3]);
    let (result, reason) = run(&log, peer, honest, vec![chain]).await;
    let err = result.expect_err("session fails");
    assert!(err.to_string().contains("forged signature"), "{err}");
    assert!(reason.unwrap_or_default().contains("forged signature"));
    assert_eq!((log.len(), log.heads()), before, "store unchanged");
}

/// When another writer's entry sits between two of an author's entries, the later one does not
/// vouch for the earlier one: a forged signature there is caught.
#[tokio::test]
async fn a_forged_signature_is_caught_when_writers_take_turns() {
    let (owner, log, peer, honest) = setup();
    let writer = SecretKey::generate();
    let head = log.get(&log.heads()[0]).unwrap().unwrap();
    let add = Entry::signed(
        EntryBody {
            payload: Payload::AddWriter(writer.node_id()),
            ..body(&log, &owner, &[&head], 5)
        },
        &owner,
    );
    let before = (log.len(), log.heads());
    // The owner writes, the writer answers, the owner writes again on top of the answer.
    let o6 = Entry::signed(body(&log, &owner, &[&add], 6), &owner);
    let w0 = Entry::signed(body(&log, &writer, &[&o6], 0), &writer);
    let o7 = Entry::signed(body(&log, &owner, &[&o6, &w0], 7), &owner);
    let forged_o6 = forged(&o6, &add);
    let (result, _) = run(&log, peer, honest, vec![vec![add, forged_o6, w0, o7]]).await;
    let err = result.expect_err("session fails");
    assert!(err.to_string().contains("forged signature"), "{err}");
    assert_eq!((log.len(), log.heads()), before, "store unchanged");
}

/// Sealed entries whose seal names another writer's entry that comes in a later batch wait for it,
/// and are stored together with their seal.
#[tokio::test]
async fn a_sealed_run_waits_until_its_seal_can_be_stored() {
    let (owner, log, peer, honest) = setup();
    let writer = SecretKey::generate();
    let head = log.get(&log.heads()[0]).unwrap().unwrap();
    let add = Entry::signed(
        EntryBody {
            payload: Payload::AddWriter(writer.node_id()),
            ..body(&log, &owner, &[&head], 5)
        },
        &owner,
    );
    let w0 = Entry::signed(body(&log, &writer, &[&add], 0), &writer);
    // The owner's run: two entries sealed by a third, which also names the writer's entry.
    let o6 = Entry::unsigned(body(&log, &owner, &[&add], 6));
    let o7 = Entry::unsigned(body(&log, &owner, &[&o6], 7));
    let o8 = Entry::signed(body(&log, &owner, &[&o7, &w0], 8), &owner);
    let batches = vec![
        vec![add.clone(), o6.clone(), o7.clone(), o8.clone()],
        vec![w0],
    ];
    let (result, reason) = run(&log, peer, honest, batches).await;
    result.expect("session succeeds");
    assert_eq!(reason, None);
    assert_eq!(log.len(), 10);
    assert_eq!(log.seal_of(&o6.id()).unwrap(), Some(o8.id()));
    assert_eq!(log.seal_of(&o7.id()).unwrap(), Some(o8.id()));
}

/// Entries appended one by one and stored as sealed on the first replica travel on to others,
/// which check one signature per batch as well.
#[tokio::test]
async fn one_by_one_entries_replicate_over_two_hops() {
    let owner = SecretKey::generate();
    let a = Log::in_memory(owner.node_id());
    let n = 10_000u32;
    for i in 0..n {
        a.append(&owner, Payload::Data(i.to_le_bytes().to_vec()))
            .unwrap();
    }
    assert_eq!(signed_count(&a), n as usize);
    // The first hop keeps its entries in a file.
    let dir = tempfile::tempdir().unwrap();
    let b = Log::open(&dir.path().join("b.redb"), owner.node_id()).unwrap();
    sync(&a, &b).await;
    assert_eq!(b.len(), n as usize);
    // One signature kept per batch of at most 4096 entries.
    let kept = signed_count(&b);
    assert!((3..=6).contains(&kept), "{kept} signatures kept");
    let c = Log::in_memory(owner.node_id());
    sync(&b, &c).await;
    assert_eq!(c.len(), n as usize);
    assert_eq!(c.heads(), a.heads());
    // Writers taking turns, stored on b one signature each, reach c intact too.
    let writer = SecretKey::generate();
    a.append(&owner, Payload::AddWriter(writer.node_id()))
        .unwrap();
    let w = Log::in_memory(owner.node_id());
    sync(&a, &w).await;
    for i in 0..50u32 {
        a.append(&owner, Payload::Data(i.to_le_bytes().to_vec()))
            .unwrap();
        sync(&a, &w).await;
        w.append(&writer, Payload::Data(i.to_le_bytes().to_vec()))
            .unwrap();
        sync(&w, &a).await;
    }
    sync(&a, &b).await;
    sync(&b, &c).await;
    assert_eq!(c.len(), a.len());
    assert_eq!(c.heads(), a.heads());
}
