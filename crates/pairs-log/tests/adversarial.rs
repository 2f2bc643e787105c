//! A rogue peer that knows the log (so it passes the knowledge proof) and then misbehaves. Every case
//! must end the session with a reason and leave the honest replica's store exactly as it was.

use std::time::Duration;

use pairs_base::SecretKey;
use pairs_log::entry::{Entry, EntryBody, EntryId, Payload};
use pairs_log::wire::{FrameDecoder, Message, VERSION, WireBatch};
use pairs_log::{Log, SyncError};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const WAIT: Duration = Duration::from_secs(30);

struct Rogue {
    stream: DuplexStream,
    decoder: FrameDecoder,
}

impl Rogue {
    async fn send(&mut self, message: &Message) {
        let _ = self.stream.write_all(&message.to_frame()).await;
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
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

    /// Completes Hello and Auth as a peer that knows `log`, claiming to have nothing.
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

    /// Drains messages until the honest side closes; returns the reason it gave, if any.
    async fn closing_reason(&mut self) -> Option<String> {
        while let Some(message) = self.recv().await {
            if let Message::Error(reason) = message {
                return Some(reason);
            }
        }
        None
    }
}

/// A log with a few entries, and a rogue connected to a replication of it.
fn setup() -> (SecretKey, Log, Rogue, DuplexStream) {
    let owner = SecretKey::generate();
    let log = Log::in_memory(owner.node_id());
    log.append_batch(&owner, (0..5u8).map(|i| Payload::Data(vec![i])).collect())
        .unwrap();
    let (honest, rogue) = tokio::io::duplex(1 << 20);
    (
        owner,
        log,
        Rogue {
            stream: rogue,
            decoder: FrameDecoder::default(),
        },
        honest,
    )
}

/// Runs the honest side against `script`; asserts the session fails with a reason containing
/// `expected` and that the store did not change.
async fn expect_rejection<F, Fut>(expected: &str, script: F)
where
    F: FnOnce(SecretKey, Log, Rogue) -> Fut,
    Fut: std::future::Future<Output = Rogue>,
{
    let (owner, log, rogue, honest) = setup();
    let before = (log.len(), log.heads());
    let replica = log.clone();
    let session = tokio::spawn(async move { replica.replicate(honest, false).await });
    let mut rogue = tokio::time::timeout(WAIT, script(owner, log.clone(), rogue))
        .await
        .expect("script ran");
    let result = tokio::time::timeout(WAIT, session)
        .await
        .expect("session ended")
        .unwrap();
    let err = result.expect_err("session must fail");
    assert!(
        err.to_string().contains(expected),
        "expected {expected:?}, got {err}"
    );
    if matches!(err, SyncError::Protocol(_)) {
        let reason = rogue.closing_reason().await.unwrap_or_default();
        assert!(reason.contains(expected), "peer told {reason:?}");
    }
    assert_eq!((log.len(), log.heads()), before, "store unchanged");
}

fn body(log: &Log, author: &SecretKey, parents: Vec<EntryId>, clock: u64, seq: u64) -> EntryBody {
    EntryBody {
        log: log.id(),
        author: author.node_id(),
        seq,
        clock,
        parents,
        timestamp: 0,
        payload: Payload::Data(b"rogue".to_vec()),
    }
}

fn entries(batch: &[Entry]) -> Message {
    Message::Entries(WireBatch::encode(batch))
}

#[tokio::test]
async fn forged_signature() {
    expect_rejection("forged signature", |owner, log, mut rogue| async move {
        rogue.handshake(&log).await;
        let head = log.heads()[0];
        let real = Entry::signed(body(&log, &owner, vec![head], 5, 5), &owner);
        let mut altered = real.body().clone();
        altered.payload = Payload::Data(b"altered".to_vec());
        let forged = Entry::from_parts(altered, real.signature());
        rogue.send(&entries(&[forged])).await;
        rogue
    })
    .await;
}

#[tokio::test]
async fn wrong_lamport_clock() {
    expect_rejection("Lamport clock", |owner, log, mut rogue| async move {
        rogue.handshake(&log).await;
        let head = log.heads()[0];
        let entry = Entry::signed(body(&log, &owner, vec![head], 99, 5), &owner);
        rogue.send(&entries(&[entry])).await;
        rogue
    })
    .await;
}

#[tokio::test]
async fn entry_from_a_non_writer() {
    expect_rejection("not a writer", |_owner, log, mut rogue| async move {
        rogue.handshake(&log).await;
        let stranger = SecretKey::generate();
        let head = log.heads()[0];
        let entry = Entry::signed(body(&log, &stranger, vec![head], 5, 0), &stranger);
        rogue.send(&entries(&[entry])).await;
        rogue
    })
    .await;
}

#[tokio::test]
async fn membership_change_by_a_non_owner() {
    expect_rejection("only the owner", |_owner, log, mut rogue| async move {
        rogue.handshake(&log).await;
        let stranger = SecretKey::generate();
        let head = log.heads()[0];
        let mut b = body(&log, &stranger, vec![head], 5, 0);
        b.payload = Payload::AddWriter(stranger.node_id());
        rogue.send(&entries(&[Entry::signed(b, &stranger)])).await;
        rogue
    })
    .await;
}

#[tokio::test]
async fn parents_that_never_come() {
    expect_rejection(
        "parents it does not have",
        |owner, log, mut rogue| async move {
            rogue.handshake(&log).await;
            let nowhere = EntryId([42; 32]);
            let orphan = Entry::signed(body(&log, &owner, vec![nowhere], 1, 9), &owner);
            rogue.send(&entries(&[orphan])).await;
            rogue.send(&Message::Ranges(vec![])).await;
            rogue.send(&Message::Done).await;
            // Answer every want with "missing".
            while let Some(message) = rogue.recv().await {
                match message {
                    Message::Want(ids) => {
                        rogue.send(&Message::Missing(ids)).await;
                        break;
                    }
                    Message::Error(_) => break,
                    _ => {}
                }
            }
            rogue
        },
    )
    .await;
}

#[tokio::test]
async fn oversized_frame() {
    expect_rejection("frame too large", |_owner, log, mut rogue| async move {
        rogue.handshake(&log).await;
        rogue.send_raw(&(64u32 << 20).to_be_bytes()).await;
        rogue
    })
    .await;
}

#[tokio::test]
async fn length_prefix_of_all_ones() {
    expect_rejection("frame too large", |_owner, _log, mut rogue| async move {
        rogue.send_raw(&u32::MAX.to_be_bytes()).await;
        rogue
    })
    .await;
}

#[tokio::test]
async fn truncated_frame() {
    expect_rejection("truncated frame", |_owner, log, mut rogue| async move {
        rogue.handshake(&log).await;
        let frame = Message::Done.to_frame();
        rogue.send_raw(&frame[..3]).await;
        rogue.stream.shutdown().await.unwrap();
        rogue
    })
    .await;
}

#[tokio::test]
async fn garbage() {
    expect_rejection("malformed message", |_owner, _log, mut rogue| async move {
        let mut frame = 16u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&[0xff; 16]);
        rogue.send_raw(&frame).await;
        rogue
    })
    .await;
}

#[tokio::test]
async fn messages_before_authentication() {
    expect_rejection(
        "before authentication",
        |_owner, _log, mut rogue| async move {
            rogue
                .send(&Message::Hello {
                    version: VERSION,
                    nonce: [1; 16],
                })
                .await;
            rogue.send(&Message::Want(vec![EntryId([0; 32])])).await;
            rogue
        },
    )
    .await;
}

#[tokio::test]
async fn endless_duplicates_are_cut_off() {
    expect_rejection(
        "keeps sending entries we have",
        |_owner, log, mut rogue| async move {
            rogue.handshake(&log).await;
            let known = log.entries().unwrap();
            let message = entries(&known);
            for _ in 0..5000 {
                rogue.send(&message).await;
            }
            rogue
        },
    )
    .await;
}

#[tokio::test]
async fn endless_reconciliation_is_cut_off() {
    expect_rejection("does not converge", |_owner, log, mut rogue| async move {
        rogue.handshake(&log).await;
        // A fingerprint that never matches, over and over.
        let ranges = vec![pairs_log::wire::WireRange {
            upper: None,
            mode: pairs_log::wire::RangeMode::Fingerprint([9; 16]),
        }];
        for _ in 0..100 {
            rogue.send(&Message::Ranges(ranges.clone())).await;
        }
        rogue
    })
    .await;
}

#[tokio::test]
async fn unsealed_entries_cannot_fill_memory() {
    expect_rejection(
        "too many entries waiting",
        |owner, log, mut rogue| async move {
            rogue.handshake(&log).await;
            // Large unsigned entries on a chain whose seal never comes: unverifiable, so they must be
            // bounded in bytes, not only in number.
            let mut previous = log.heads()[0];
            // The log holds clocks and sequence numbers 0..5; the rogue chain continues it.
            for n in 5u64..5000 {
                let mut b = body(&log, &owner, vec![previous], n, n);
                b.payload = Payload::Data(vec![0; 60_000]);
                let entry = Entry::unsigned(b);
                previous = entry.id();
                rogue.send(&entries(&[entry])).await;
            }
            rogue
        },
    )
    .await;
}

#[tokio::test]
async fn endless_wants_are_cut_off() {
    expect_rejection("keeps asking", |_owner, log, mut rogue| async move {
        rogue.handshake(&log).await;
        let ids: Vec<EntryId> = log.entries().unwrap().iter().map(|e| e.id()).collect();
        let want = Message::Want(ids.repeat(1000));
        for _ in 0..30 {
            rogue.send(&want).await;
        }
        rogue
    })
    .await;
}
