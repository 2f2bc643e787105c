//! The log protocol: frames and `WireBatch` decoding, and the replication session as a state machine.

use std::collections::VecDeque;
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use pairs_base::SecretKey;
use pairs_log::entry::EntrySignature;
use pairs_log::wire::{FrameDecoder, Message, RangeMode, WireBatch, WireRange};
use pairs_log::{Entry, EntryBody, EntryId, Log, Payload, Session};

/// A byte stream cut into log frames, each decoded as a message; a decoded batch is rebuilt into
/// entries, and every message must encode back to the same bytes.
pub fn frames(data: &[u8]) {
    let log = keys().owner.node_id();
    let mut decoder = FrameDecoder::default();
    // The first byte chooses how the stream is cut, so frames split across reads are covered.
    let (cut, data) = match data.split_first() {
        Some((&cut, rest)) => (usize::from(cut).max(1), rest),
        None => return,
    };
    for chunk in data.chunks(cut) {
        decoder.push(chunk);
        loop {
            let body = match decoder.next_frame() {
                Ok(Some(body)) => body,
                Ok(None) => break,
                Err(_) => return,
            };
            assert!(body.len() <= pairs_log::wire::MAX_FRAME);
            let Ok(message) = Message::from_body(&body) else {
                continue;
            };
            let frame = message.to_frame();
            assert_eq!(Message::from_body(&frame[4..]).as_ref(), Ok(&message));
            if let Message::Entries(batch) = message
                && let Ok(entries) = batch.clone().decode(log)
            {
                assert_eq!(entries.len(), batch.entries.len());
                for entry in &entries {
                    let _ = entry.body().check_limits();
                    let _ = entry.verify_signature();
                }
                // Re-encoding rebuilt entries gives back a batch that decodes to the same entries.
                let again = WireBatch::encode(&entries).decode(log);
                assert_eq!(again.as_ref(), Ok(&entries));
            }
        }
    }
}

struct Keys {
    owner: SecretKey,
    writer: SecretKey,
    stranger: SecretKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        owner: SecretKey::from_bytes(&[1; 32]),
        writer: SecretKey::from_bytes(&[2; 32]),
        stranger: SecretKey::from_bytes(&[3; 32]),
    })
}

/// Entries both sides may hold, in causal order, and one branch each beyond them.
struct Universe {
    common: Vec<Entry>,
    local_branch: Vec<Entry>,
    remote_branch: Vec<Entry>,
    /// Every entry above, for picking by index.
    all: Vec<Entry>,
}

fn universe() -> &'static Universe {
    static UNIVERSE: OnceLock<Universe> = OnceLock::new();
    UNIVERSE.get_or_init(|| {
        let k = keys();
        let log = Log::in_memory(k.owner.node_id());
        let data = |s: &str| Payload::Data(s.as_bytes().to_vec());
        log.append_batch(
            &k.owner,
            vec![data("a"), data("b"), Payload::AddWriter(k.writer.node_id())],
        )
        .expect("owner appends");
        log.append_batch(&k.writer, vec![data("w1"), data("w2"), data("w3")])
            .expect("writer appends");
        log.append(&k.owner, data("c")).expect("owner appends");
        let common = log.entries().expect("entries");
        let branch = |key: &SecretKey, payloads: Vec<Payload>| {
            let other = Log::in_memory(k.owner.node_id());
            other.apply(verified(&common), 0).expect("apply");
            other.append_batch(key, payloads).expect("append");
            let all = other.entries().expect("entries");
            all.into_iter()
                .filter(|e| !common.contains(e))
                .collect::<Vec<_>>()
        };
        let local_branch = branch(&k.owner, vec![data("local 1"), data("local 2")]);
        let remote_branch = branch(&k.writer, vec![data("remote")]);
        let all = common
            .iter()
            .chain(&local_branch)
            .chain(&remote_branch)
            .cloned()
            .collect();
        Universe {
            common,
            local_branch,
            remote_branch,
            all,
        }
    })
}

fn verified(entries: &[Entry]) -> Vec<pairs_log::store::Verified> {
    // Unsigned links of a batch append are sealed by the last entry of their chain.
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let seal = (entry.signature().is_none()).then(|| {
                entries[i + 1..]
                    .iter()
                    .find(|e| e.body().author == entry.body().author && e.signature().is_some())
                    .map(Entry::id)
                    .expect("a seal follows")
            });
            pairs_log::store::Verified {
                entry: entry.clone(),
                seal,
            }
        })
        .collect()
}

/// An entry sent by the fuzzed peer: one of the universe's, or one made up.
#[derive(Debug, Arbitrary)]
enum Sent {
    Known {
        index: u8,
        strip_signature: bool,
        forge_signature: bool,
    },
    Made {
        author: u8,
        seq: u8,
        clock: u8,
        parents: Vec<u8>,
        payload: Vec<u8>,
        sign: bool,
    },
}

/// A range: upper bound, mode (skip, fingerprint, id list) and the ids listed.
type RangeSpec = (Option<(u64, [u8; 8])>, u8, Vec<u8>);

#[derive(Debug, Arbitrary)]
enum Step {
    /// The honest peer's next frame reaches the session.
    Deliver,
    /// The session's next frame reaches the honest peer.
    Answer,
    /// The honest peer's next frame is lost (a broken relay).
    Drop,
    /// The honest peer's next frame arrives with one byte changed.
    Corrupt {
        at: u16,
        xor: u8,
    },
    Hello {
        version: u8,
        nonce: [u8; 16],
    },
    Auth {
        good: bool,
        heads: Vec<u8>,
        len: u64,
    },
    Entries(Vec<Sent>),
    Want(Vec<u8>),
    Missing(Vec<u8>),
    Ranges(Vec<RangeSpec>),
    Done,
    Error(String),
    Raw(Vec<u8>),
}

fn pick(index: u8) -> EntryId {
    let all = &universe().all;
    match all.get(usize::from(index)) {
        Some(entry) => entry.id(),
        None => EntryId([index; 32]),
    }
}

fn make_entry(sent: &Sent) -> Entry {
    let k = keys();
    match sent {
        Sent::Known {
            index,
            strip_signature,
            forge_signature,
        } => {
            let all = &universe().all;
            let entry = all[usize::from(*index) % all.len()].clone();
            if *forge_signature {
                Entry::from_parts(entry.body().clone(), Some(EntrySignature([7; 32], [9; 32])))
            } else if *strip_signature {
                Entry::from_parts(entry.body().clone(), None)
            } else {
                entry
            }
        }
        Sent::Made {
            author,
            seq,
            clock,
            parents,
            payload,
            sign,
        } => {
            let key = match author % 3 {
                0 => &k.owner,
                1 => &k.writer,
                _ => &k.stranger,
            };
            let mut parents: Vec<EntryId> = parents.iter().take(4).map(|&p| pick(p)).collect();
            parents.sort();
            parents.dedup();
            let body = EntryBody {
                log: k.owner.node_id(),
                author: key.node_id(),
                seq: u64::from(*seq),
                clock: u64::from(*clock),
                parents,
                timestamp: 1_700_000_000_000,
                payload: Payload::Data(payload.clone()),
            };
            if *sign {
                Entry::signed(body, key)
            } else {
                Entry::unsigned(body)
            }
        }
    }
}

fn frame_of(message: &Message) -> Vec<u8> {
    message.to_frame()[4..].to_vec()
}

fn proof(log: &pairs_log::LogId, receiver: &[u8; 16], sender: &[u8; 16]) -> [u8; 32] {
    // The knowledge proof, as the protocol defines it.
    let key = blake3::derive_key("pairs log knowledge proof v1", log.as_bytes());
    let mut hasher = blake3::Hasher::new_keyed(&key);
    hasher.update(receiver);
    hasher.update(sender);
    *hasher.finalize().as_bytes()
}

struct Side {
    session: Session,
    inbox: VecDeque<Vec<u8>>,
    failed: bool,
}

impl Side {
    /// Moves the session's frames (bodies) to `to`; at most a bounded number per call.
    fn drain(&mut self, to: &mut VecDeque<Vec<u8>>) {
        if self.failed {
            return;
        }
        for _ in 0..256 {
            match self.session.poll_transmit() {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= pairs_log::wire::MAX_FRAME + 4);
                    to.push_back(frame[4..].to_vec());
                }
                Ok(None) => return,
                Err(_) => {
                    self.failed = true;
                    return;
                }
            }
        }
    }

    fn receive(&mut self, body: &[u8]) {
        if !self.failed && self.session.handle_frame(body).is_err() {
            self.failed = true;
        }
    }
}

/// Checks what a replica promises whatever its peers sent: every stored entry is signed with a
/// signature that holds, or sealed by a stored, validly signed later entry of its author whose chain
/// of direct parents reaches it; and every parent is stored.
fn check_store(log: &Log) {
    let entries = log.entries().expect("entries");
    for entry in &entries {
        for parent in &entry.body().parents {
            assert!(log.contains(parent), "parent of a stored entry missing");
        }
        if entry.signature().is_some() {
            assert!(
                entry.verify_signature(),
                "stored entry with a bad signature"
            );
            continue;
        }
        let seal = log
            .seal_of(&entry.id())
            .expect("seal")
            .expect("an unsigned entry is stored with its seal");
        let mut link = log.get(&seal).expect("get").expect("the seal is stored");
        assert!(link.verify_signature(), "seal with a bad signature");
        let author = entry.body().author;
        assert_eq!(link.body().author, author, "seal by another author");
        while link.body().seq > entry.body().seq {
            let previous = link
                .body()
                .parents
                .iter()
                .filter_map(|p| log.get(p).expect("get"))
                .find(|p| p.body().author == author && p.body().seq + 1 == link.body().seq)
                .expect("the chain from the seal is stored");
            link = previous;
        }
        assert_eq!(
            link.id(),
            entry.id(),
            "the seal's chain does not reach the entry"
        );
    }
}

/// One replication session (the replica under test) against a peer that is partly an honest
/// session and partly the fuzzer: the fuzzer schedules, drops and corrupts the honest peer's frames
/// and injects its own messages (hellos, proofs, made-up or forged entries, wants, ranges).
/// Whatever happens, the replica stores nothing unverified; and when the fuzzer only scheduled,
/// both replicas end with the same entries.
pub fn session(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok((local_len, remote_len)) = <(u8, u8)>::arbitrary(&mut u) else {
        return;
    };
    let world = universe();
    let log_id = keys().owner.node_id();
    let holding = |len: u8, branch: &[Entry]| {
        // Cut only after a signed entry: a prefix never holds a link without its seal.
        let cuts: Vec<usize> = std::iter::once(0)
            .chain((1..=world.common.len()).filter(|&i| world.common[i - 1].signature().is_some()))
            .collect();
        let n = usize::from(len) % (cuts.len() + 1);
        let mut held: Vec<Entry> = world.common[..cuts[n.min(cuts.len() - 1)]].to_vec();
        if n == cuts.len() {
            held.extend_from_slice(branch);
        }
        let log = Log::in_memory(log_id);
        log.apply(verified(&held), 0).expect("apply");
        log
    };
    let local_log = holding(local_len, &world.local_branch);
    let remote_log = holding(remote_len, &world.remote_branch);
    let mut local = Side {
        session: Session::new(local_log.clone(), false, 1),
        inbox: VecDeque::new(),
        failed: false,
    };
    let mut remote = Side {
        session: Session::new(remote_log.clone(), false, 2),
        inbox: VecDeque::new(),
        failed: false,
    };
    // The replica's nonce, from its hello, and the nonce it got from its peer.
    let mut local_nonce = None;
    let mut peer_nonce = None;
    let mut tampered = false;
    let mut steps = 0;
    while !u.is_empty()
        && let Ok(step) = Step::arbitrary(&mut u)
    {
        steps += 1;
        if steps > 64 || local.failed {
            break;
        }
        local.drain(&mut remote.inbox);
        remote.drain(&mut local.inbox);
        if local_nonce.is_none()
            && let Some(Ok(Message::Hello { nonce, .. })) =
                remote.inbox.front().map(|f| Message::from_body(f))
        {
            local_nonce = Some(nonce);
        }
        let injected = match step {
            Step::Deliver => {
                if let Some(frame) = local.inbox.pop_front() {
                    if let Ok(Message::Hello { nonce, .. }) = Message::from_body(&frame) {
                        peer_nonce.get_or_insert(nonce);
                    }
                    local.receive(&frame);
                }
                continue;
            }
            Step::Answer => {
                if let Some(frame) = remote.inbox.pop_front() {
                    remote.receive(&frame);
                }
                continue;
            }
            Step::Drop => {
                tampered |= local.inbox.pop_front().is_some();
                continue;
            }
            Step::Corrupt { at, xor } => {
                if let Some(mut frame) = local.inbox.pop_front() {
                    tampered = true;
                    if !frame.is_empty() {
                        let at = usize::from(at) % frame.len();
                        frame[at] ^= xor;
                    }
                    local.receive(&frame);
                }
                continue;
            }
            Step::Hello { version, nonce } => {
                peer_nonce.get_or_insert(nonce);
                frame_of(&Message::Hello { version, nonce })
            }
            Step::Auth { good, heads, len } => {
                let proof = match (good, local_nonce, peer_nonce) {
                    (true, Some(ours), Some(theirs)) => proof(&log_id, &ours, &theirs),
                    _ => [0; 32],
                };
                let heads = heads.iter().take(40).map(|&h| pick(h)).collect();
                frame_of(&Message::Auth { proof, heads, len })
            }
            Step::Entries(sent) => {
                let entries: Vec<Entry> = sent.iter().take(32).map(make_entry).collect();
                frame_of(&Message::Entries(WireBatch::encode(&entries)))
            }
            Step::Want(ids) => frame_of(&Message::Want(ids.iter().map(|&i| pick(i)).collect())),
            Step::Missing(ids) => {
                frame_of(&Message::Missing(ids.iter().map(|&i| pick(i)).collect()))
            }
            Step::Ranges(ranges) => frame_of(&Message::Ranges(
                ranges
                    .into_iter()
                    .take(300)
                    .map(|(upper, mode, ids)| WireRange {
                        upper,
                        mode: match mode % 3 {
                            0 => RangeMode::Skip,
                            1 => RangeMode::Fingerprint([mode; 16]),
                            _ => RangeMode::IdList(ids.iter().map(|&i| pick(i)).collect()),
                        },
                    })
                    .collect(),
            )),
            Step::Done => frame_of(&Message::Done),
            Step::Error(reason) => frame_of(&Message::Error(reason)),
            Step::Raw(bytes) => bytes,
        };
        tampered = true;
        local.receive(&injected);
    }
    // Let the honest exchange run to its end.
    for _ in 0..256 {
        local.drain(&mut remote.inbox);
        remote.drain(&mut local.inbox);
        if local.inbox.is_empty() && remote.inbox.is_empty() {
            break;
        }
        while let Some(frame) = local.inbox.pop_front() {
            local.receive(&frame);
        }
        while let Some(frame) = remote.inbox.pop_front() {
            remote.receive(&frame);
        }
    }
    check_store(&local_log);
    if !tampered && !local.failed && !remote.failed {
        assert!(local.session.is_finished() && remote.session.is_finished());
        assert_eq!(
            local_log.heads(),
            remote_log.heads(),
            "replicas differ after a sync"
        );
        assert_eq!(local_log.len(), remote_log.len());
    }
}
