//! Writes seed inputs for the byte-level fuzz targets from real encodings, so fuzzing starts deep:
//! `cargo run -p pairs-fuzz --example seeds -- fuzz/corpus`.

use std::net::SocketAddr;
use std::path::Path;

use pairs_base::{NodeAddr, SecretKey, Ticket};
use pairs_blobs::wire::{Holding, Message as BlobMessage};
use pairs_blobs::{BlobTicket, Collection, CollectionEntry, Hash};
use pairs_log::wire::{Message as LogMessage, RangeMode, WireBatch, WireRange};
use pairs_log::{Log, LogTicket, Payload};
use pairs_net::nat::stun;
use pairs_net::nat::wire::{Frame as NatFrame, PunchOffer};

fn write(root: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed file");
}

fn main() {
    let root = std::env::args().nth(1).expect("usage: seeds CORPUS_DIR");
    let root = Path::new(&root);
    let key = SecretKey::from_bytes(&[1; 32]);
    let id = key.node_id();
    let addrs: Vec<SocketAddr> = vec![
        "192.0.2.1:7000".parse().unwrap(),
        "[2001:db8::1]:7000".parse().unwrap(),
    ];
    let node = NodeAddr::new(id, addrs.clone());
    let hash = Hash::of(b"hello");

    // Tickets of every kind.
    write(root, "ticket", "node", node.to_ticket().as_bytes());
    let blob = BlobTicket {
        hash,
        format: pairs_blobs::ticket::BlobFormat::Raw,
        providers: vec![node.clone()],
    };
    write(root, "ticket", "blob", blob.to_ticket().as_bytes());
    write(
        root,
        "ticket",
        "log",
        LogTicket { log: id }.to_ticket().as_bytes(),
    );
    let share = pairs::share::ShareTicket {
        log: id,
        providers: vec![node.clone()],
    };
    write(root, "ticket", "share", share.to_ticket().as_bytes());

    // Log frames: one stream of every message (the first byte is the read size).
    let log = Log::in_memory(id);
    log.append_batch(
        &key,
        vec![Payload::Data(b"a".to_vec()), Payload::Data(b"b".to_vec())],
    )
    .unwrap();
    let entries = log.entries().unwrap();
    let mut stream = vec![200u8];
    for message in [
        LogMessage::Hello {
            version: 1,
            nonce: [3; 16],
        },
        LogMessage::Auth {
            proof: [4; 32],
            heads: log.heads(),
            len: 2,
        },
        LogMessage::Ranges(vec![
            WireRange {
                upper: Some((1, [0; 8])),
                mode: RangeMode::Fingerprint([5; 16]),
            },
            WireRange {
                upper: None,
                mode: RangeMode::IdList(log.heads()),
            },
        ]),
        LogMessage::Entries(WireBatch::encode(&entries)),
        LogMessage::Want(log.heads()),
        LogMessage::Missing(log.heads()),
        LogMessage::Done,
        LogMessage::Error("bye".into()),
    ] {
        stream.extend(message.to_frame());
    }
    write(root, "log_frames", "all", &stream);

    // Swarm control frames are built by the target itself (arbitrary); nat frames here.
    let offer = PunchOffer {
        id: 7,
        key: [8; 16],
        candidates: addrs.clone(),
    };
    let nat_frames = [
        NatFrame::Register,
        NatFrame::Registered { observed: addrs[0] },
        NatFrame::Connect {
            target: id,
            offer: offer.clone(),
        },
        NatFrame::Introduce { from: id, offer },
        NatFrame::Answer {
            candidates: addrs.clone(),
        },
        NatFrame::Punch {
            candidates: addrs.clone(),
            delay_ms: 10,
        },
        NatFrame::Go { delay_ms: 5 },
        NatFrame::Relay { target: id },
        NatFrame::RelayFrom { from: id },
        NatFrame::Accept,
        NatFrame::Refused {
            reason: "no".into(),
        },
    ];
    let mut stream = Vec::new();
    for (i, frame) in nat_frames.iter().enumerate() {
        let encoded = frame.encode();
        write(root, "nat_wire", &format!("frame-{i}"), &encoded[2..]);
        stream.extend(encoded);
    }
    write(root, "nat_wire", "stream", &stream);

    // STUN: requests and answers, signed and not.
    let transaction = [9; 12];
    let punch_name = pairs_net::nat::punch::username(7);
    write(
        root,
        "stun",
        "request",
        &stun::binding_request(&transaction, None),
    );
    write(
        root,
        "stun",
        "signed-request",
        &stun::binding_request(&transaction, Some((&punch_name, &[7; 16]))),
    );
    write(
        root,
        "stun",
        "answer",
        &stun::binding_success(&transaction, addrs[0], Some(&[7; 16])),
    );
    write(
        root,
        "stun",
        "changed",
        &stun::binding_request_changed(
            &transaction,
            stun::Change {
                ip: true,
                port: true,
            },
        ),
    );

    // Blob frames: a stream of every message.
    let mut stream = vec![255u8];
    for message in [
        BlobMessage::Hello { version: 1, hash },
        BlobMessage::Status(Holding::Some { size: 100_000 }),
        BlobMessage::Bits {
            first: 0,
            bits: vec![0b1010_0000],
        },
        BlobMessage::Have { start: 0, end: 2 },
        BlobMessage::Interested,
        BlobMessage::Unchoke,
        BlobMessage::Request { start: 0, count: 2 },
        BlobMessage::Cancel { start: 0, count: 1 },
        BlobMessage::Reject { start: 1, count: 1 },
        BlobMessage::Data {
            group: 0,
            bytes: vec![1; 100],
        },
        BlobMessage::LayerRequest { start: 0, count: 4 },
        BlobMessage::LayerPart {
            start: 0,
            cvs: vec![2; 64],
        },
        BlobMessage::Choke,
        BlobMessage::NotInterested,
        BlobMessage::close("done"),
    ] {
        stream.extend(message.to_frame());
    }
    write(root, "blob_wire", "all", &stream);

    // A collection.
    let collection = Collection {
        entries: vec![
            CollectionEntry {
                path: "a.txt".into(),
                hash,
                size: 5,
                executable: false,
            },
            CollectionEntry {
                path: "dir/b.bin".into(),
                hash,
                size: u64::MAX / 2,
                executable: true,
            },
        ],
    };
    write(root, "blob_collection", "two", &collection.encode());

    // Control frames: requests and responses.
    let mut stream = Vec::new();
    pairs_fuzz_block_on(pairs::control::write_frame(
        &mut stream,
        &pairs::control::Request::Status,
    ));
    pairs_fuzz_block_on(pairs::control::write_frame(
        &mut stream,
        &pairs::control::Request::Append {
            log: id,
            payloads: vec![Payload::Data(b"x".to_vec())],
        },
    ));
    pairs_fuzz_block_on(pairs::control::write_frame(
        &mut stream,
        &pairs::control::Request::BlobGet {
            ticket: blob.to_ticket(),
            out: "out".into(),
            paths: vec!["a".into()],
            version: Some(1),
        },
    ));
    write(root, "control_frames", "requests", &stream);

    // A full configuration.
    write(
        root,
        "config",
        "full",
        format!(
            "port = 7000\nlan = false\npeers = [\"10.0.0.1:7000\", \"{}\", \"host.example:1\"]\ndns_seeds = [\"seed.example:7000\", \"seed.example\"]\n\n[dht]\nenabled = true\nbootstrap = [\"10.0.0.2:6881\"]\nport = 6881\n\n[gateway]\nenabled = true\nport = 8080\n",
            node.to_ticket()
        )
        .as_bytes(),
    );
}

fn pairs_fuzz_block_on<F: std::future::Future<Output = std::io::Result<()>>>(future: F) {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            out.expect("write to memory");
            return;
        }
    }
}
