//! The network layer: swarm control frames and peer exchange, `pairs/nat/1`, STUN, hole punching,
//! TURN, DHT address records and mDNS.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use pairs_base::{NodeAddr, NodeId, SecretKey, Topic};
use pairs_net::discovery::dht::record::{self, AddressRecord, SignedItem};
use pairs_net::nat::punch::{self, Outcome, Punch};
use pairs_net::nat::{stun as nat_stun, wire as nat_wire_mod};
use pairs_net::swarm::membership::{self, Frame, RemoteMembership};
use pairs_net::swarm::pex::{self, Pex};

/// An IPv4-mapped IPv6 address as IPv4, as the socket normalises every address.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

fn node(seed: u8) -> NodeId {
    SecretKey::from_bytes(&[seed; 32]).node_id()
}

#[derive(Debug, Arbitrary)]
enum ControlStep {
    /// Bytes read from the control stream.
    Bytes(Vec<u8>),
    /// A well-formed frame, encoded by us.
    Frame(ControlFrame),
    /// Time passes.
    Wait(u16),
}

#[derive(Debug, Arbitrary)]
enum ControlFrame {
    Hello {
        version: u16,
        tags: Vec<u8>,
    },
    Join(u8),
    Leave(u8),
    Peers {
        tag: u8,
        peers: Vec<(u8, Vec<SocketAddr>)>,
    },
}

/// Tags the fuzzer may name: a few real ones (topics we are in) and made-up ones.
fn tag_of(binding: &[u8; 32], remote: &NodeId, n: u8) -> membership::Tag {
    if n < 4 {
        membership::tag(&Topic::from_name(&format!("topic {n}")), binding, remote)
    } else {
        [n; membership::TAG_LEN]
    }
}

/// A peer's control stream as the swarm reads it (2-byte length, postcard frame, refused from the
/// prefix over the limit), fed to the membership state and, for peer lists, to peer exchange, with
/// time passing. Checks: tags held stay within the limit; peer exchange never hands out us, the
/// sender, an undialable address, more than the per-list or lifetime budgets.
pub fn swarm_control(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let me = node(1);
    let remote = node(2);
    let binding = [5u8; 32];
    let mut membership = RemoteMembership::new(binding, remote);
    let mut pex = Pex::default();
    let mut now = Instant::now();
    let mut stream: Vec<u8> = Vec::new();
    let mut learned = 0usize;
    let mut closed = false;
    while !u.is_empty()
        && let Ok(step) = ControlStep::arbitrary(&mut u)
    {
        match step {
            ControlStep::Bytes(bytes) => stream.extend_from_slice(&bytes),
            ControlStep::Frame(frame) => {
                let frame = match frame {
                    ControlFrame::Hello { version, tags } => Frame::Hello {
                        version: version % 3,
                        tags: tags.iter().map(|&t| tag_of(&binding, &remote, t)).collect(),
                    },
                    ControlFrame::Join(t) => Frame::Join(tag_of(&binding, &remote, t)),
                    ControlFrame::Leave(t) => Frame::Leave(tag_of(&binding, &remote, t)),
                    ControlFrame::Peers { tag, peers } => Frame::Peers {
                        tag: tag_of(&binding, &remote, tag),
                        peers: peers
                            .into_iter()
                            .map(|(id, addrs)| {
                                // The wire carries address and port only (no IPv6 flow or scope).
                                let addrs =
                                    addrs.into_iter().map(|a| SocketAddr::new(a.ip(), a.port()));
                                NodeAddr::new(node(id % 8), addrs)
                            })
                            .collect(),
                    },
                };
                let encoded = frame.encode();
                // Our own frames within the limit decode to themselves.
                if encoded.len() - 2 <= membership::MAX_FRAME {
                    assert_eq!(Frame::decode(&encoded[2..]).as_ref(), Ok(&frame));
                }
                stream.extend_from_slice(&encoded);
            }
            ControlStep::Wait(ms) => now += Duration::from_millis(u64::from(ms) * 16),
        }
        // Take whole frames, as the swarm's reader does.
        while !closed && stream.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([stream[0], stream[1]]));
            if len > membership::MAX_FRAME {
                closed = true;
                break;
            }
            if stream.len() < 2 + len {
                break;
            }
            let body: Vec<u8> = stream.drain(..2 + len).skip(2).collect();
            let Ok(frame) = Frame::decode(&body) else {
                closed = true;
                break;
            };
            if let Frame::Peers { tag, peers } = &frame
                && membership.holds(tag)
            {
                match pex.received(*tag, &me, &remote, peers.clone(), now) {
                    Err(_) => closed = true,
                    Ok(useful) => {
                        assert!(useful.len() <= pex::MAX_ENTRIES);
                        learned += useful.len();
                        assert!(learned <= pex::MAX_LEARNED, "learned {learned}");
                        let mut ids = HashSet::new();
                        for peer in &useful {
                            assert!(peer.node_id != me && peer.node_id != remote);
                            assert!(ids.insert(peer.node_id), "a peer listed twice");
                            assert!(!peer.addrs.is_empty() && peer.addrs.len() <= pex::MAX_ADDRS);
                            for addr in &peer.addrs {
                                assert!(addr.port() != 0 && !addr.ip().is_unspecified());
                                assert!(!addr.ip().is_multicast());
                            }
                        }
                    }
                }
            }
            if membership.on_frame(frame).is_err() {
                closed = true;
            }
            for n in 0..4 {
                let _ = membership.proves(&Topic::from_name(&format!("topic {n}")));
            }
        }
        if closed {
            break;
        }
    }
    // What we send back stays within the budgets too.
    let candidates: Vec<NodeAddr> = (0..40u8)
        .map(|i| NodeAddr::new(node(i % 10), [SocketAddr::from(([10, 0, 0, i], 7000))]))
        .collect();
    if let Some(list) = pex.to_send([1; 16], &remote, candidates, now) {
        assert!(list.len() <= pex::MAX_ENTRIES);
        assert!(list.iter().all(|p| p.node_id != remote));
    }
}

/// `pairs/nat/1`: frame bodies and length-prefixed frame and datagram streams as the helper and the
/// client read them. A decoded frame encodes back to itself within the frame limit.
pub fn nat_wire(data: &[u8]) {
    if let Ok(frame) = nat_wire_mod::Frame::decode(data) {
        let encoded = frame.encode();
        assert!(
            encoded.len() - 2 <= nat_wire_mod::MAX_FRAME,
            "{} bytes",
            encoded.len()
        );
        assert_eq!(
            nat_wire_mod::Frame::decode(&encoded[2..]).ok().as_ref(),
            Some(&frame)
        );
    }
    let mut reader = data;
    for _ in 0..64 {
        match crate::block_on(nat_wire_mod::read_frame(&mut reader)) {
            Ok(nat_wire_mod::Frame::Introduce { offer, .. }) => {
                // What a target does with an offer: a punch over at most the allowed candidates.
                let mut candidates = offer.candidates;
                candidates.truncate(nat_wire_mod::MAX_CANDIDATES);
                let mut punch = Punch::new(offer.id, offer.key, &candidates, Instant::now());
                punch.handle_timeout(Instant::now() + Duration::from_millis(1));
                while punch.poll_transmit().is_some() {}
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let mut reader = data;
    for _ in 0..64 {
        match crate::block_on(nat_wire_mod::read_datagram(&mut reader)) {
            Ok(Some(datagram)) => assert!(datagram.len() <= nat_wire_mod::MAX_DATAGRAM),
            Ok(None) | Err(_) => break,
        }
    }
}

/// STUN as the node's socket reads it: any datagram parsed as a binding message, its integrity
/// checked under a punch key, its USERNAME read as a punch id.
pub fn stun(data: &[u8]) {
    if let Some(parsed) = nat_stun::parse(data) {
        let _ = nat_stun::verify_integrity(data, &[7; 16]);
        if let Some(username) = &parsed.username
            && let Some(id) = punch::id_from_username(username)
        {
            assert_eq!(&punch::username(id), username);
        }
        let _ = Punch::owns_transaction(7, &parsed.transaction);
    }
}

#[derive(Debug, Arbitrary)]
enum PunchStep {
    /// Time passes and the punch's timer runs.
    Wait(u16),
    /// The punch's next datagram leaves.
    Transmit,
    /// A probe from the other side (signed with the punch's key or not).
    Probe {
        from: Source,
        transaction: [u8; 12],
        signed: bool,
        other_id: bool,
    },
    /// An answer to one of our probes, from where it went or elsewhere, signed or not.
    Answer {
        probe: u8,
        elsewhere: Option<SocketAddr>,
        signed: bool,
    },
    /// Any datagram.
    Raw { from: Source, bytes: Vec<u8> },
}

#[derive(Debug, Arbitrary)]
enum Source {
    Candidate(u8),
    Other(SocketAddr),
}

/// One hole punch fed probes, answers, stray datagrams and time. Checks: at most `MAX_PROBED`
/// addresses are ever probed; probes and answers go only to candidates or to where a signed probe
/// came from; a direct path is an address a probe of ours went to.
pub fn punch(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok((id, key, candidates)) = <(u64, [u8; 16], Vec<SocketAddr>)>::arbitrary(&mut u) else {
        return;
    };
    let start = Instant::now();
    let mut now = start;
    let mut punch = Punch::new(id, key, &candidates, start);
    let mut probed: Vec<([u8; 12], SocketAddr)> = Vec::new();
    let mut destinations: HashSet<SocketAddr> = HashSet::new();
    let mut allowed: HashSet<SocketAddr> = candidates.iter().map(|&a| canonical(a)).collect();
    let pick = |source: &Source| match source {
        Source::Candidate(i) if !candidates.is_empty() => {
            canonical(candidates[usize::from(*i) % candidates.len()])
        }
        Source::Candidate(i) => SocketAddr::from(([192, 0, 2, *i], 4000)),
        Source::Other(addr) => *addr,
    };
    let mut steps = 0;
    while !u.is_empty()
        && let Ok(step) = PunchStep::arbitrary(&mut u)
    {
        steps += 1;
        if steps > 200 {
            break;
        }
        match step {
            PunchStep::Wait(ms) => {
                now += Duration::from_millis(u64::from(ms % 4000));
                punch.handle_timeout(now);
                let _ = (punch.poll_timeout(), punch.is_finished(now));
            }
            PunchStep::Transmit => {
                if let Some((to, bytes)) = punch.poll_transmit() {
                    assert!(allowed.contains(&to), "datagram to {to}");
                    let parsed = nat_stun::parse(&bytes).expect("the punch sends STUN");
                    assert!(nat_stun::verify_integrity(&bytes, &key));
                    if parsed.class == nat_stun::Class::Request {
                        destinations.insert(to);
                        assert!(destinations.len() <= punch::MAX_PROBED);
                        probed.push((parsed.transaction, to));
                    }
                }
            }
            PunchStep::Probe {
                from,
                transaction,
                signed,
                other_id,
            } => {
                let from = pick(&from);
                let username = punch::username(if other_id { id ^ 1 } else { id });
                let signing_key = if signed { key } else { [0xee; 16] };
                let bytes =
                    nat_stun::binding_request(&transaction, Some((&username, &signing_key)));
                let parsed = nat_stun::parse(&bytes).expect("a binding request");
                if signing_key == key && !other_id {
                    allowed.insert(canonical(from));
                    allowed.insert(from);
                }
                punch.handle_request(from, &parsed, &bytes);
            }
            PunchStep::Answer {
                probe,
                elsewhere,
                signed,
            } => {
                let Some(&(transaction, to)) = probed.get(usize::from(probe)) else {
                    continue;
                };
                let from = elsewhere.unwrap_or(to);
                let signing_key = if signed { key } else { [0xee; 16] };
                let bytes = nat_stun::binding_success(&transaction, from, Some(&signing_key));
                let parsed = nat_stun::parse(&bytes).expect("a binding answer");
                punch.handle_response(from, &parsed, &bytes);
            }
            PunchStep::Raw { from, bytes } => {
                let from = pick(&from);
                if let Some(parsed) = nat_stun::parse(&bytes) {
                    match parsed.class {
                        nat_stun::Class::Request => {
                            if nat_stun::verify_integrity(&bytes, &key) {
                                allowed.insert(from);
                                allowed.insert(canonical(from));
                            }
                            punch.handle_request(from, &parsed, &bytes)
                        }
                        _ => punch.handle_response(from, &parsed, &bytes),
                    }
                }
            }
        }
        if let Some(Outcome::Direct(path)) = punch.outcome() {
            assert!(
                probed.iter().any(|(_, to)| *to == path),
                "direct path {path} never probed"
            );
        }
    }
}

#[derive(Debug, Arbitrary)]
enum TurnStep {
    Wait(u16),
    /// The server answers the client's next request the way the fuzzer picks.
    Reply(Reply),
    /// Any datagram from the server.
    Raw(Vec<u8>),
    /// A channel-data message from the server.
    Channel {
        channel: u16,
        data: Vec<u8>,
    },
    Permit(IpAddr),
    Bind(SocketAddr),
    Send {
        to: SocketAddr,
        data: Vec<u8>,
    },
    Delete,
}

#[derive(Debug, Arbitrary)]
enum Reply {
    /// 401 with a realm and a nonce (what a server says first).
    Unauthorized { realm: bool, nonce: bool },
    /// 438, stale nonce.
    StaleNonce,
    /// Success, signed or not, with a relayed address and lifetime.
    Success {
        signed: bool,
        relayed: Option<SocketAddr>,
        lifetime: Option<u32>,
        mapped: Option<SocketAddr>,
    },
    /// Any error code, signed or not.
    Error { code: u16, signed: bool },
    /// A success with another transaction id.
    Unrelated,
}

/// TURN as the node runs it (`turn-client-proto`'s client with pairs' settings): a server that
/// answers requests well or badly, injects arbitrary datagrams and channel data, and time.
pub fn turn(data: &[u8]) {
    use turn_client_proto::api::{Transmit, TurnClientApi, TurnConfig};
    use turn_client_proto::types::attribute::{Lifetime, XorRelayedAddress};
    use turn_client_proto::types::stun::attribute::{ErrorCode, Nonce, Realm, XorMappedAddress};
    use turn_client_proto::types::stun::message::{
        IntegrityAlgorithm, LongTermCredentials, Message, MessageWrite, MessageWriteExt,
        MessageWriteVec,
    };
    use turn_client_proto::types::{Instant as TurnInstant, TransportType, TurnCredentials};
    use turn_client_proto::udp::TurnClientUdp;

    let mut u = Unstructured::new(data);
    let local: SocketAddr = (Ipv4Addr::new(192, 0, 2, 1), 5000).into();
    let server: SocketAddr = (Ipv4Addr::new(192, 0, 2, 2), 3478).into();
    let mut config = TurnConfig::new(TurnCredentials::new("user", "pass"));
    config.set_request_retransmits(
        Duration::from_millis(500),
        Duration::from_secs(2),
        5,
        Duration::from_secs(2),
    );
    let mut client = TurnClientUdp::allocate(local, server, config);
    let key = LongTermCredentials::new("user".into(), "pass".into()).to_key("realm".into());
    let mut now = TurnInstant::ZERO;
    let mut steps = 0;
    while !u.is_empty()
        && let Ok(step) = TurnStep::arbitrary(&mut u)
    {
        steps += 1;
        if steps > 100 {
            break;
        }
        let _ = client.poll(now);
        while client.poll_event().is_some() {}
        let datagram: Option<Vec<u8>> = match step {
            TurnStep::Wait(ms) => {
                now += Duration::from_millis(u64::from(ms) * 8);
                let _ = client.poll(now);
                None
            }
            TurnStep::Reply(reply) => {
                let Some(transmit) = client.poll_transmit(now) else {
                    continue;
                };
                assert_eq!(transmit.to, server);
                let Ok(request) = Message::from_bytes(&transmit.data) else {
                    continue;
                };
                Some(match reply {
                    Reply::Unauthorized { realm, nonce } => {
                        let mut m = Message::builder_error(&request, MessageWriteVec::new());
                        if realm {
                            m.add_attribute(&Realm::new("realm").unwrap()).unwrap();
                        }
                        if nonce {
                            m.add_attribute(&Nonce::new("nonce").unwrap()).unwrap();
                        }
                        m.add_attribute(
                            &ErrorCode::builder(ErrorCode::UNAUTHORIZED).build().unwrap(),
                        )
                        .unwrap();
                        m.finish()
                    }
                    Reply::StaleNonce => {
                        let mut m = Message::builder_error(&request, MessageWriteVec::new());
                        m.add_attribute(&Realm::new("realm").unwrap()).unwrap();
                        m.add_attribute(&Nonce::new("nonce2").unwrap()).unwrap();
                        m.add_attribute(
                            &ErrorCode::builder(ErrorCode::STALE_NONCE).build().unwrap(),
                        )
                        .unwrap();
                        m.add_message_integrity(&key.clone().into(), IntegrityAlgorithm::Sha1)
                            .unwrap();
                        m.finish()
                    }
                    Reply::Success {
                        signed,
                        relayed,
                        lifetime,
                        mapped,
                    } => {
                        let mut m = Message::builder_success(&request, MessageWriteVec::new());
                        let transaction = m.transaction_id();
                        if let Some(relayed) = relayed {
                            m.add_attribute(&XorRelayedAddress::new(relayed, transaction))
                                .unwrap();
                        }
                        if let Some(mapped) = mapped {
                            m.add_attribute(&XorMappedAddress::new(mapped, transaction))
                                .unwrap();
                        }
                        if let Some(lifetime) = lifetime {
                            m.add_attribute(&Lifetime::new(lifetime)).unwrap();
                        }
                        if signed {
                            m.add_message_integrity(&key.clone().into(), IntegrityAlgorithm::Sha1)
                                .unwrap();
                        }
                        m.finish()
                    }
                    Reply::Error { code, signed } => {
                        let mut m = Message::builder_error(&request, MessageWriteVec::new());
                        if let Ok(code) = ErrorCode::builder(300 + code % 300).build() {
                            m.add_attribute(&code).unwrap();
                        }
                        if signed {
                            m.add_message_integrity(&key.clone().into(), IntegrityAlgorithm::Sha1)
                                .unwrap();
                        }
                        m.finish()
                    }
                    Reply::Unrelated => {
                        let mut bytes = transmit.data.to_vec();
                        if bytes.len() > 8 {
                            bytes[8] ^= 0xff;
                        }
                        bytes
                    }
                })
            }
            TurnStep::Raw(bytes) => Some(bytes),
            TurnStep::Channel { channel, data } => {
                let mut bytes = channel.to_be_bytes().to_vec();
                bytes.extend_from_slice(&(data.len() as u16).to_be_bytes());
                bytes.extend_from_slice(&data);
                Some(bytes)
            }
            TurnStep::Permit(ip) => {
                let _ = client.create_permission(TransportType::Udp, ip, now);
                None
            }
            TurnStep::Bind(peer) => {
                let _ = client.bind_channel(TransportType::Udp, peer, now);
                None
            }
            TurnStep::Send { to, data } => {
                if let Ok(Some(transmit)) = client.send_to(TransportType::Udp, to, &data, now) {
                    assert_eq!(transmit.to, server, "a relayed datagram leaves unwrapped");
                }
                None
            }
            TurnStep::Delete => {
                let _ = client.delete(now);
                None
            }
        };
        if let Some(datagram) = datagram {
            let _ = client.recv(
                Transmit::new(&datagram[..], TransportType::Udp, server, local),
                now,
            );
        }
        while let Some(transmit) = client.poll_transmit(now) {
            assert_eq!(transmit.to, server, "the client sends only to its server");
        }
    }
}

#[derive(Debug, Arbitrary)]
struct RecordInput {
    /// Sign the value with the node's key (so the checks past the signature are reached).
    sign: bool,
    right_key: bool,
    right_salt: bool,
    seq: Option<i64>,
    now_ms: u64,
    value: RecordValue,
}

#[derive(Debug, Arbitrary)]
enum RecordValue {
    Raw(Vec<u8>),
    Record {
        issued_ms: u64,
        addrs: Vec<SocketAddr>,
    },
}

/// A DHT answer checked as a node's address record: wrong key, salt, signature, size, version,
/// sequence number, age; a record that passes has 1 to 8 addresses and is fresh.
pub fn dht_record(data: &[u8]) {
    let Ok(input) = RecordInput::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let secret = SecretKey::from_bytes(&[9; 32]);
    let node = secret.node_id();
    let (value, default_seq) = match input.value {
        RecordValue::Raw(bytes) => (bytes, 0),
        RecordValue::Record { issued_ms, addrs } => {
            let record = AddressRecord::new(addrs, issued_ms);
            (record.encode(), record.seq())
        }
    };
    let seq = input.seq.unwrap_or(default_seq);
    let salt: &[u8] = if input.right_salt {
        record::SALT
    } else {
        b"other"
    };
    let signature = if input.sign {
        secret.sign(&record::signable(seq, &value, salt))
    } else {
        [3; 64]
    };
    let key = if input.right_key {
        *node.as_bytes()
    } else {
        *node_key_other()
    };
    let item = SignedItem {
        key: &key,
        salt,
        seq,
        value: &value,
        signature: &signature,
    };
    if let Ok(record) = record::verify(&node, item, input.now_ms) {
        assert!(input.sign && input.right_key && input.right_salt);
        assert!(!record.addrs.is_empty() && record.addrs.len() <= record::MAX_ADDRS);
        assert_eq!(record.seq(), seq);
        let addr = record.node_addr(node);
        assert_eq!(addr.node_id, node);
        let newer = record::newest(Some(record.clone()), record.clone());
        assert_eq!(newer.issued_ms, record.issued_ms);
    }
}

fn node_key_other() -> &'static [u8; 32] {
    static OTHER: std::sync::OnceLock<NodeId> = std::sync::OnceLock::new();
    OTHER.get_or_init(|| node(10)).as_bytes()
}

#[derive(Debug, Arbitrary)]
struct MdnsInput {
    port: u16,
    addrs: Vec<IpAddr>,
    txt: Vec<u8>,
}

/// A resolved mDNS service as the browser reads it: the TXT record's raw bytes (decoded as
/// `mdns-sd` does), the SRV port and the addresses. An accepted one is a well-formed node address.
pub fn mdns_txt(data: &[u8]) {
    let Ok(input) = MdnsInput::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    static TEMPLATE: std::sync::OnceLock<mdns_sd::ResolvedService> = std::sync::OnceLock::new();
    let mut service = TEMPLATE
        .get_or_init(|| {
            mdns_sd::ServiceInfo::new("_pairs._udp.local.", "x", "x.local.", "", 1, None)
                .expect("a service")
                .as_resolved_service()
        })
        .clone();
    service.port = input.port;
    service.addresses = input
        .addrs
        .into_iter()
        .map(mdns_sd::ScopedIp::from)
        .collect();
    service.txt_properties = mdns_sd::TxtProperties::from(&input.txt[..]);
    if let Ok(addr) = pairs_net::discovery::mdns::parse_service(&service) {
        assert!(!addr.addrs.is_empty() && addr.addrs.len() <= 8);
        assert!(
            addr.addrs
                .iter()
                .all(|a| a.port() == input.port && a.port() != 0)
        );
    }
}

/// A raw mDNS packet through `mdns-sd`'s parser (the library every LAN packet goes through before
/// the TXT record reaches pairs).
pub fn mdns_packet(data: &[u8]) {
    mdns_sd::fuzz_api::parse_packet(data);
}
