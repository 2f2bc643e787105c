//! The blob protocol: frames, collections and the swarm core fed by hostile peers.

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use pairs_blobs::layer::{group_count, group_len};
use pairs_blobs::wire::{FrameDecoder, Holding, Message};
use pairs_blobs::{Action, Bitfield, BlobSwarm, Collection, GROUP_SIZE, Hash, Layer, SwarmConfig};

/// A byte stream cut into blob frames (in chunks the first byte chooses): every message that passes
/// the decoder's checks encodes back to the same message within the frame limit.
pub fn wire(data: &[u8]) {
    let (cut, data) = match data.split_first() {
        Some((&cut, rest)) => (usize::from(cut).max(1), rest),
        None => return,
    };
    let mut decoder = FrameDecoder::default();
    for chunk in data.chunks(cut) {
        decoder.push(chunk);
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    let frame = message.to_frame();
                    assert!(frame.len() - 4 <= pairs_blobs::wire::MAX_FRAME);
                    let mut again = FrameDecoder::default();
                    again.push(&frame);
                    assert_eq!(again.next_message().ok().flatten().as_ref(), Some(&message));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        let _ = decoder.pending();
    }
}

/// A collection blob from anyone: a decoded one has only safe paths (joined strictly inside the
/// output directory), encodes back to itself and totals its sizes without overflow.
pub fn collection(data: &[u8]) {
    let Ok(collection) = Collection::decode(data) else {
        return;
    };
    let _ = collection.total_size();
    let dir = std::path::Path::new("/nonexistent/out");
    for entry in &collection.entries {
        let joined = pairs_blobs::collection::safe_join(dir, &entry.path).expect("checked path");
        assert!(joined.starts_with(dir) && joined != dir);
    }
    let mut sorted = collection.clone();
    sorted.entries.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(Collection::decode(&sorted.encode()).as_ref(), Ok(&sorted));
}

struct Blob {
    content: Vec<u8>,
    hash: Hash,
    layer: Layer,
}

/// Six groups, the last one short.
fn blob() -> &'static Blob {
    static BLOB: OnceLock<Blob> = OnceLock::new();
    BLOB.get_or_init(|| {
        let size = 5 * GROUP_SIZE as usize + 1234;
        let content: Vec<u8> = (0..size).map(|i| (i * 7 + i / 977) as u8).collect();
        let (hash, layer) = Layer::of(&content);
        Blob {
            content,
            hash,
            layer,
        }
    })
}

fn group_bytes(group: u64) -> &'static [u8] {
    let blob = blob();
    let size = blob.content.len() as u64;
    let start = (group * GROUP_SIZE) as usize;
    &blob.content[start..start + group_len(size, group)]
}

#[derive(Debug, Arbitrary)]
enum Start {
    Nothing,
    Some(Vec<u8>),
    All,
}

#[derive(Debug, Arbitrary)]
enum Step {
    Add(u8),
    Remove(u8),
    Message(u8, Sent),
    Sent(u8),
    Tick(u16),
    Window(u64, u64),
    Local(Vec<u8>),
}

/// A frame from a peer: built to reach deep (real groups and layer parts, possibly corrupted), or
/// any bytes that pass the decoder's checks.
#[derive(Debug, Arbitrary)]
enum Sent {
    Hello {
        right: bool,
        version: u8,
    },
    Status {
        kind: u8,
        size: Option<u64>,
    },
    Bits {
        first: u64,
        bits: Vec<u8>,
    },
    Have {
        start: u64,
        end: u64,
    },
    Interested,
    NotInterested,
    Choke,
    Unchoke,
    Request {
        start: u64,
        count: u32,
    },
    Cancel {
        start: u64,
        count: u32,
    },
    Reject {
        start: u64,
        count: u32,
    },
    Data {
        group: u8,
        corrupt: Option<(u16, u8)>,
        cut: Option<u16>,
    },
    LayerRequest {
        start: u64,
        count: u32,
    },
    LayerPart {
        start: u8,
        count: u8,
        corrupt: Option<(u16, u8)>,
    },
    Close(String),
    Raw(Vec<u8>),
}

fn message(sent: Sent) -> Option<Message> {
    let blob = blob();
    let size = blob.content.len() as u64;
    let groups = group_count(size);
    Some(match sent {
        Sent::Hello { right, version } => Message::Hello {
            version: if right {
                pairs_blobs::wire::VERSION
            } else {
                version
            },
            hash: if right {
                blob.hash
            } else {
                Hash::of(&[version])
            },
        },
        Sent::Status {
            kind,
            size: claimed,
        } => {
            let size = claimed.unwrap_or(size);
            Message::Status(match kind % 3 {
                0 => Holding::Nothing,
                1 => Holding::All { size },
                _ => Holding::Some { size },
            })
        }
        Sent::Bits { first, bits } => Message::Bits { first, bits },
        Sent::Have { start, end } => Message::Have {
            start: start % (groups + 2),
            end: end % (groups + 3),
        },
        Sent::Interested => Message::Interested,
        Sent::NotInterested => Message::NotInterested,
        Sent::Choke => Message::Choke,
        Sent::Unchoke => Message::Unchoke,
        Sent::Request { start, count } => Message::Request {
            start: start % (groups + 2),
            count,
        },
        Sent::Cancel { start, count } => Message::Cancel { start, count },
        Sent::Reject { start, count } => Message::Reject {
            start: start % (groups + 2),
            count,
        },
        Sent::Data {
            group,
            corrupt,
            cut,
        } => {
            let group = u64::from(group) % (groups + 1);
            let mut bytes = if group < groups {
                group_bytes(group).to_vec()
            } else {
                vec![0; 100]
            };
            if let Some((at, xor)) = corrupt {
                let at = usize::from(at) % bytes.len();
                bytes[at] ^= xor.max(1);
            }
            if let Some(cut) = cut {
                bytes.truncate(usize::from(cut).max(1));
            }
            Message::Data { group, bytes }
        }
        Sent::LayerRequest { start, count } => Message::LayerRequest { start, count },
        Sent::LayerPart {
            start,
            count,
            corrupt,
        } => {
            let cvs = blob.layer.to_bytes();
            let values = cvs.len() / 32;
            let start = usize::from(start) % (values + 1);
            let end = (start + usize::from(count).max(1)).min(values);
            let mut part: Vec<u8> = if start < end {
                cvs[start * 32..end * 32].to_vec()
            } else {
                vec![1; 32]
            };
            if let Some((at, xor)) = corrupt {
                let at = usize::from(at) % part.len();
                part[at] ^= xor.max(1);
            }
            Message::LayerPart {
                start: start as u64,
                cvs: part,
            }
        }
        Sent::Close(reason) => Message::Close { reason },
        Sent::Raw(bytes) => postcard::from_bytes(&bytes).ok()?,
    })
}

/// The swarm core of one blob (downloading from nothing, partly held, or seeding) with up to eight
/// peers sending anything, time passing and sends completing. Checks: every group written is the
/// blob's own bytes; a layer reported ready is the blob's layer; only held groups are served; every
/// frame sent passes the protocol's checks; nothing goes to a dropped peer; completion means every
/// group is held.
pub fn swarm(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let blob = blob();
    let size = blob.content.len() as u64;
    let groups = group_count(size);
    let Ok(start) = Start::arbitrary(&mut u) else {
        return;
    };
    let config = SwarmConfig {
        seed: 7,
        ..SwarmConfig::default()
    };
    let mut swarm = match start {
        Start::Nothing => BlobSwarm::new(blob.hash, config),
        Start::Some(held) => {
            let mut have = Bitfield::new(groups);
            for g in held {
                have.set(u64::from(g) % groups);
            }
            BlobSwarm::with_layer(blob.hash, blob.layer.clone(), have, config)
        }
        Start::All => BlobSwarm::with_layer(
            blob.hash,
            blob.layer.clone(),
            Bitfield::full(groups),
            config,
        ),
    };
    let mut peers: HashSet<u64> = HashSet::new();
    let mut layer_known = swarm.layer().is_some();
    let mut now = Duration::from_secs(1000);
    let mut steps = 0;
    while !u.is_empty()
        && let Ok(step) = Step::arbitrary(&mut u)
    {
        steps += 1;
        if steps > 300 {
            break;
        }
        match step {
            Step::Add(p) => {
                let peer = u64::from(p % 8);
                if !peers.contains(&peer) && !swarm.is_banned(peer) {
                    swarm.add_peer(peer, now);
                    peers.insert(peer);
                }
            }
            Step::Remove(p) => {
                let peer = u64::from(p % 8);
                if peers.remove(&peer) {
                    swarm.remove_peer(peer);
                }
            }
            Step::Message(p, sent) => {
                let peer = u64::from(p % 8);
                // The driver hands over only what its frame decoder accepted, from live peers.
                if let Some(message) = message(sent)
                    && message.check().is_ok()
                    && peers.contains(&peer)
                {
                    swarm.on_message(peer, message, now);
                }
            }
            Step::Sent(p) => {
                let peer = u64::from(p % 8);
                if peers.contains(&peer) {
                    swarm.on_sent(peer);
                }
            }
            Step::Tick(ms) => {
                now += Duration::from_millis(u64::from(ms) * 4);
                swarm.tick(now);
            }
            Step::Window(start, end) => swarm.set_reader_window(start, end),
            Step::Local(local) => {
                if layer_known {
                    let local: Vec<u64> = local.iter().map(|&g| u64::from(g) % groups).collect();
                    swarm.add_local_groups(&local);
                }
            }
        }
        let mut actions = 0;
        while let Some(action) = swarm.poll_action() {
            actions += 1;
            assert!(
                actions < 100_000,
                "the swarm keeps producing actions: {action:?}"
            );
            match action {
                Action::Send(peer, message) => {
                    assert!(peers.contains(&peer), "frame for a peer that is gone");
                    assert!(message.check().is_ok(), "we send a bad frame: {message:?}");
                }
                Action::Serve(peer, group) => {
                    assert!(peers.contains(&peer), "serving a peer that is gone");
                    assert!(group < groups);
                    assert!(
                        swarm.have().is_some_and(|h| h.get(group)),
                        "serving group {group}, not held"
                    );
                }
                Action::Write(group, bytes) => {
                    assert!(group < groups);
                    assert_eq!(
                        bytes,
                        group_bytes(group),
                        "unverified group {group} written"
                    );
                }
                Action::LayerReady(layer) => {
                    assert!(layer == blob.layer, "a layer that is not the blob's");
                    layer_known = true;
                }
                Action::Complete => {
                    assert!(swarm.have().is_some_and(Bitfield::is_full));
                }
                Action::Drop { peer, .. } => {
                    if peers.remove(&peer) {
                        swarm.remove_peer(peer);
                    }
                }
            }
        }
        assert!(swarm.peer_stats().len() <= 8);
        if let Some(known) = swarm.size() {
            assert_eq!(known, size, "a size that is not the blob's");
        }
    }
}
