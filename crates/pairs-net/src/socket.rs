//! The node's one UDP socket, shared between QUIC and everything else that must leave from the same port.
//!
//! NAT traversal needs STUN binding requests, hole-punch probes and relay traffic to use the very port
//! QUIC uses, because that port is what the NAT mapped. [`SharedSocket`] wraps quinn's socket and
//! demultiplexes incoming datagrams by their first byte (RFC 9443): QUIC goes to quinn, STUN goes to
//! whoever [subscribed](SharedSocket::subscribe), anything else is dropped and counted. The QUIC "grease
//! the fixed bit" extension is disabled on the endpoint so that every QUIC packet has that bit set.
//!
//! A [`VirtualPath`] lets QUIC reach a peer through something other than this socket, such as a relay:
//! quinn sends to the path's made-up address, the datagrams come out of [`VirtualPath::next_outgoing`],
//! and what the relay brings back goes in with [`VirtualPath::deliver`], as if the socket had received it
//! from that address. The made-up addresses come from ranges nothing routes (`100::/64`, RFC 6666, on an
//! IPv6 socket; `0.0.0.0/8` on an IPv4 one), so a bug can never send them anywhere real.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::mpsc;

/// What a datagram arriving on the shared socket is, judged by its first bytes (RFC 9443 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    /// A QUIC packet (long or short header with the fixed bit set).
    Quic,
    /// A STUN message (first byte 0–3 and the RFC 5389 magic cookie).
    Stun,
    /// Anything else; dropped.
    Unknown,
}

const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// Classifies one datagram.
pub fn classify(datagram: &[u8]) -> DatagramKind {
    match datagram.first() {
        Some(first) if first & 0x40 != 0 => DatagramKind::Quic,
        Some(0..=3) if datagram.len() >= 20 && datagram[4..8] == STUN_MAGIC_COOKIE => {
            DatagramKind::Stun
        }
        _ => DatagramKind::Unknown,
    }
}

/// A non-QUIC datagram received on the shared socket.
#[derive(Debug, Clone)]
pub struct RawDatagram {
    /// Who sent it.
    pub from: SocketAddr,
    /// Its kind (never [`DatagramKind::Quic`]).
    pub kind: DatagramKind,
    /// Its bytes.
    pub data: Bytes,
}

/// Counters for traffic that did not go to QUIC.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RawStats {
    /// Datagrams handed to the subscriber.
    pub delivered: u64,
    /// Datagrams dropped: unknown kind, no subscriber, or subscriber queue full.
    pub dropped: u64,
}

/// Datagrams that may wait between a virtual path and its carrier, each way; beyond that they are
/// dropped, as a congested link would, and QUIC slows down.
const VIRTUAL_PATH_QUEUE: usize = 256;

/// The node's UDP socket, shared by QUIC and raw (STUN, probe, relay) traffic.
pub struct SharedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    subscriber: Mutex<Option<mpsc::Sender<RawDatagram>>>,
    delivered: AtomicU64,
    dropped: AtomicU64,
    /// Outgoing queues of the open virtual paths, by made-up address.
    virtual_paths: Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>,
    next_virtual: AtomicU32,
    /// Datagrams arriving over virtual paths, handed to QUIC before the socket's own.
    injected_tx: mpsc::Sender<(SocketAddr, Bytes)>,
    injected_rx: Mutex<mpsc::Receiver<(SocketAddr, Bytes)>>,
    /// Real addresses QUIC reaches through a carrier (a TURN allocation): datagrams to them go to the
    /// carrier's queue, tagged with the destination.
    routes: Mutex<HashMap<SocketAddr, mpsc::Sender<(SocketAddr, Bytes)>>>,
    has_routes: AtomicBool,
    /// Sources whose every datagram goes to a carrier instead of QUIC (TURN servers: their
    /// ChannelData looks like QUIC).
    diverted: Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>,
    has_diverted: AtomicBool,
}

/// A way to a peer that is not this socket's own UDP (a relay circuit), seen by QUIC as one more remote
/// address. Dropping it closes the path: datagrams sent to its address are then lost.
#[derive(Debug)]
pub struct VirtualPath {
    addr: SocketAddr,
    socket: Arc<SharedSocket>,
    outgoing: mpsc::Receiver<Bytes>,
}

impl VirtualPath {
    /// The made-up address QUIC uses for this path (dial it, or see it as the peer's address).
    pub fn addr(&self) -> SocketAddr {
        canonical(self.addr)
    }

    /// The next datagram QUIC sent to this path, for the carrier to forward; `None` once the socket is
    /// gone.
    pub async fn next_outgoing(&mut self) -> Option<Bytes> {
        self.outgoing.recv().await
    }

    /// A datagram QUIC already queued for this path, if any (without waiting).
    pub fn try_next_outgoing(&mut self) -> Option<Bytes> {
        self.outgoing.try_recv().ok()
    }

    /// Hands a datagram that came over this path to QUIC. Dropped if QUIC is that far behind.
    pub fn deliver(&self, datagram: Bytes) {
        self.injector().deliver(datagram);
    }

    /// A handle that delivers to QUIC as this path, usable while the path itself is busy elsewhere.
    pub fn injector(&self) -> PathInjector {
        PathInjector {
            addr: self.addr,
            socket: self.socket.clone(),
        }
    }
}

/// Delivers datagrams to QUIC as if they had arrived from a [`VirtualPath`]'s address.
#[derive(Debug, Clone)]
pub struct PathInjector {
    addr: SocketAddr,
    socket: Arc<SharedSocket>,
}

impl PathInjector {
    /// Hands a datagram to QUIC. Dropped if QUIC is that far behind.
    pub fn deliver(&self, datagram: Bytes) {
        if self
            .socket
            .injected_tx
            .try_send((self.addr, datagram))
            .is_err()
        {
            self.socket.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for VirtualPath {
    fn drop(&mut self) {
        self.socket
            .virtual_paths
            .lock()
            .expect("mutex poisoned")
            .remove(&self.addr);
    }
}

/// Whether `addr` is in the range virtual paths take their addresses from.
pub fn is_virtual(addr: SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => v6.segments()[..4] == [0x100, 0, 0, 0],
        ip => {
            matches!(ip.to_canonical(), IpAddr::V4(v4) if v4.octets()[0] == 0 && !v4.is_unspecified())
        }
    }
}

impl fmt::Debug for SharedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSocket")
            .field("local_addr", &self.inner.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl SharedSocket {
    /// Wraps a bound std socket for use with the tokio runtime.
    pub(crate) fn new(socket: std::net::UdpSocket) -> io::Result<Arc<Self>> {
        let inner = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, socket)?;
        let (injected_tx, injected_rx) = mpsc::channel(VIRTUAL_PATH_QUEUE);
        Ok(Arc::new(Self {
            inner,
            subscriber: Mutex::new(None),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            virtual_paths: Mutex::new(HashMap::new()),
            next_virtual: AtomicU32::new(1),
            injected_tx,
            injected_rx: Mutex::new(injected_rx),
            routes: Mutex::new(HashMap::new()),
            has_routes: AtomicBool::new(false),
            diverted: Mutex::new(HashMap::new()),
            has_diverted: AtomicBool::new(false),
        }))
    }

    /// Sends QUIC's datagrams for `peer` to `carrier` (tagged with `peer`) instead of the wire.
    pub fn route_to(&self, peer: SocketAddr, carrier: mpsc::Sender<(SocketAddr, Bytes)>) {
        let mut routes = self.routes.lock().expect("mutex poisoned");
        routes.insert(canonical(peer), carrier);
        self.has_routes.store(true, Ordering::Release);
    }

    /// Sends QUIC's datagrams for `peer` on the wire again.
    pub fn unroute(&self, peer: SocketAddr) {
        let mut routes = self.routes.lock().expect("mutex poisoned");
        routes.remove(&canonical(peer));
        self.has_routes.store(!routes.is_empty(), Ordering::Release);
    }

    /// Hands every datagram from `source` to the returned queue (not to QUIC, nor to the STUN
    /// subscriber) until [`SharedSocket::undivert`].
    pub fn divert(&self, source: SocketAddr, capacity: usize) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let mut diverted = self.diverted.lock().expect("mutex poisoned");
        diverted.insert(canonical(source), tx);
        self.has_diverted.store(true, Ordering::Release);
        rx
    }

    /// Ends a [`SharedSocket::divert`].
    pub fn undivert(&self, source: SocketAddr) {
        let mut diverted = self.diverted.lock().expect("mutex poisoned");
        diverted.remove(&canonical(source));
        self.has_diverted
            .store(!diverted.is_empty(), Ordering::Release);
    }

    /// Hands `datagram` to QUIC as if it had arrived from `from` (what a carrier brings back).
    /// Dropped if QUIC is that far behind.
    pub fn inject(&self, from: SocketAddr, datagram: Bytes) {
        let from = self.map_destination(from);
        if self.injected_tx.try_send((from, datagram)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The socket's bound address as the OS reports it (`[::]:port` on a dual-stack socket).
    pub fn local_addr_for_turn(&self) -> SocketAddr {
        self.inner
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    }

    /// Queues QUIC's datagrams for a routed destination; `false` if it has no route.
    fn send_routed(&self, transmit: &Transmit) -> bool {
        let destination = canonical(transmit.destination);
        let routes = self.routes.lock().expect("mutex poisoned");
        let Some(tx) = routes.get(&destination) else {
            return false;
        };
        let segment = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        for datagram in transmit.contents.chunks(segment) {
            if tx
                .try_send((destination, Bytes::copy_from_slice(datagram)))
                .is_err()
            {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        true
    }

    /// Opens a virtual path with a fresh made-up address.
    pub fn open_virtual_path(self: &Arc<Self>) -> VirtualPath {
        let n = self.next_virtual.fetch_add(1, Ordering::Relaxed);
        let addr = match self.inner.local_addr() {
            Ok(SocketAddr::V4(_)) => {
                // 0.0.0.0/8 minus 0.0.0.0 itself: 24 bits of path number.
                let [_, a, b, c] = (n & 0x00ff_ffff).max(1).to_be_bytes();
                SocketAddr::from((Ipv4Addr::new(0, a, b, c), 1))
            }
            _ => SocketAddr::from((
                Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, (n >> 16) as u16, n as u16),
                1,
            )),
        };
        let (tx, outgoing) = mpsc::channel(VIRTUAL_PATH_QUEUE);
        self.virtual_paths
            .lock()
            .expect("mutex poisoned")
            .insert(addr, tx);
        VirtualPath {
            addr,
            socket: self.clone(),
            outgoing,
        }
    }

    /// Queues QUIC's datagrams for a virtual path (splitting a GSO batch); lost if the path is closed or
    /// its queue is full.
    fn send_virtual(&self, transmit: &Transmit) {
        let paths = self.virtual_paths.lock().expect("mutex poisoned");
        let Some(tx) = paths.get(&transmit.destination) else {
            return;
        };
        let segment = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        for datagram in transmit.contents.chunks(segment) {
            if tx.try_send(Bytes::copy_from_slice(datagram)).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Moves datagrams that arrived over virtual paths into QUIC's receive buffers.
    fn poll_injected(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> usize {
        let mut injected = self.injected_rx.lock().expect("mutex poisoned");
        let mut filled = 0;
        while filled < bufs.len().min(meta.len()) {
            let Poll::Ready(Some((from, datagram))) = injected.poll_recv(cx) else {
                break;
            };
            let buf = &mut bufs[filled];
            if datagram.len() > buf.len() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            buf[..datagram.len()].copy_from_slice(&datagram);
            meta[filled] = RecvMeta {
                addr: from,
                len: datagram.len(),
                stride: datagram.len(),
                ecn: None,
                dst_ip: None,
            };
            filled += 1;
        }
        filled
    }

    /// Receives every non-QUIC datagram from now on, through a queue of `capacity`; when the queue is
    /// full, datagrams are dropped rather than slowing QUIC down. Replaces any earlier subscriber.
    pub fn subscribe(&self, capacity: usize) -> mpsc::Receiver<RawDatagram> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        *self.subscriber.lock().expect("mutex poisoned") = Some(tx);
        rx
    }

    /// Counters of raw traffic.
    pub fn raw_stats(&self) -> RawStats {
        RawStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// Sends one datagram from the shared port, waiting while the socket is not writable.
    pub async fn send_raw(
        self: &Arc<Self>,
        destination: SocketAddr,
        data: &[u8],
    ) -> io::Result<()> {
        let destination = self.map_destination(destination);
        let transmit = Transmit {
            destination,
            ecn: None,
            contents: data,
            segment_size: None,
            src_ip: None,
        };
        let mut poller = self.inner.clone().create_io_poller();
        std::future::poll_fn(|cx| {
            loop {
                ready!(poller.as_mut().poll_writable(cx))?;
                match self.inner.try_send(&transmit) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return Poll::Ready(other),
                }
            }
        })
        .await
    }

    /// An IPv6 dual-stack socket can only send to IPv4-mapped addresses.
    fn map_destination(&self, destination: SocketAddr) -> SocketAddr {
        match (self.inner.local_addr(), destination) {
            (Ok(SocketAddr::V6(_)), SocketAddr::V4(v4)) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => destination,
        }
    }

    fn deliver(&self, from: SocketAddr, kind: DatagramKind, data: &[u8]) {
        let subscriber = self.subscriber.lock().expect("mutex poisoned");
        let sent = match (&*subscriber, kind) {
            (Some(tx), DatagramKind::Stun) => tx
                .try_send(RawDatagram {
                    from: canonical(from),
                    kind,
                    data: Bytes::copy_from_slice(data),
                })
                .is_ok(),
            _ => false,
        };
        let counter = if sent { &self.delivered } else { &self.dropped };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes non-QUIC datagrams from one received buffer (which may hold several GRO segments of
    /// `meta.stride` bytes), handing each to the subscriber.
    fn strip_foreign(&self, buf: &mut [u8], meta: &mut RecvMeta) {
        let stride = if meta.stride == 0 {
            meta.len
        } else {
            meta.stride
        };
        if self.has_diverted.load(Ordering::Acquire) {
            let diverted = self.diverted.lock().expect("mutex poisoned");
            if let Some(tx) = diverted.get(&canonical(meta.addr)) {
                for datagram in buf[..meta.len].chunks(stride.max(1)) {
                    let sent = tx.try_send(Bytes::copy_from_slice(datagram)).is_ok();
                    let counter = if sent { &self.delivered } else { &self.dropped };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                meta.len = 0;
                return;
            }
        }
        let mut start = 0;
        while start < meta.len {
            let end = (start + stride).min(meta.len);
            let kind = classify(&buf[start..end]);
            if kind == DatagramKind::Quic {
                start = end;
                continue;
            }
            self.deliver(meta.addr, kind, &buf[start..end]);
            // Every segment but the last is exactly `stride` long, so closing the gap keeps the layout.
            buf.copy_within(end..meta.len, start);
            meta.len -= end - start;
        }
    }
}

/// Turns an IPv4-mapped IPv6 address back into IPv4. Any other address is kept whole: a
/// link-local IPv6 address means nothing without its scope (the interface).
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

impl AsyncUdpSocket for SharedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if is_virtual(transmit.destination) {
            self.send_virtual(transmit);
            return Ok(());
        }
        if self.has_routes.load(Ordering::Acquire) && self.send_routed(transmit) {
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let injected = self.poll_injected(cx, bufs, meta);
        if injected > 0 {
            return Poll::Ready(Ok(injected));
        }
        loop {
            let received = ready!(self.inner.poll_recv(cx, bufs, meta))?;
            let mut kept = 0;
            for i in 0..received {
                self.strip_foreign(&mut bufs[i], &mut meta[i]);
                if meta[i].len == 0 {
                    continue;
                }
                if kept != i {
                    let (front, back) = bufs.split_at_mut(i);
                    let len = meta[i].len;
                    front[kept][..len].copy_from_slice(&back[0][..len]);
                    meta[kept] = meta[i];
                }
                kept += 1;
            }
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun_request() -> Vec<u8> {
        let mut msg = vec![0x00, 0x01, 0x00, 0x00];
        msg.extend_from_slice(&STUN_MAGIC_COOKIE);
        msg.extend_from_slice(&[7; 12]);
        msg
    }

    #[test]
    fn classifies_by_first_byte() {
        assert_eq!(classify(&stun_request()), DatagramKind::Stun);
        assert_eq!(classify(&[0xc3, 0, 0, 0, 1]), DatagramKind::Quic);
        assert_eq!(classify(&[0x41, 1, 2]), DatagramKind::Quic);
        assert_eq!(classify(&[0x00, 0x01]), DatagramKind::Unknown);
        assert_eq!(classify(&[0x80, 1]), DatagramKind::Unknown);
        assert_eq!(classify(&[]), DatagramKind::Unknown);
    }

    #[test]
    fn canonical_unmaps_ipv4_and_keeps_a_link_local_scope() {
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:7".parse().unwrap();
        assert_eq!(
            canonical(mapped),
            "192.0.2.1:7".parse::<SocketAddr>().unwrap()
        );
        let scoped = SocketAddr::V6(std::net::SocketAddrV6::new(
            "fe80::1".parse().unwrap(),
            7,
            0,
            3,
        ));
        assert_eq!(canonical(scoped), scoped);
    }

    #[tokio::test]
    async fn strips_stun_from_a_gro_batch_and_keeps_quic_in_order() {
        let std_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let socket = SharedSocket::new(std_socket).unwrap();
        let mut rx = socket.subscribe(8);
        let stun = stun_request();
        let stride = stun.len();
        let quic_a = vec![0x41u8; stride];
        let quic_b = vec![0x42u8; 5];
        let mut buf = [quic_a.clone(), stun.clone(), quic_b.clone()].concat();
        let mut meta = RecvMeta {
            addr: "127.0.0.1:9".parse().unwrap(),
            len: buf.len(),
            stride,
            ecn: None,
            dst_ip: None,
        };
        socket.strip_foreign(&mut buf, &mut meta);
        assert_eq!(meta.len, stride + 5);
        assert_eq!(&buf[..meta.len], [quic_a, quic_b].concat().as_slice());
        let raw = rx.try_recv().unwrap();
        assert_eq!(raw.kind, DatagramKind::Stun);
        assert_eq!(&raw.data[..], &stun[..]);
        assert_eq!(
            socket.raw_stats(),
            RawStats {
                delivered: 1,
                dropped: 0
            }
        );
    }

    #[tokio::test]
    async fn raw_send_and_receive_over_loopback() {
        let a = SharedSocket::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        let b = SharedSocket::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        a.send_raw(b.local_addr().unwrap(), &stun_request())
            .await
            .unwrap();
        a.send_raw(b.local_addr().unwrap(), &[0x80, 1, 2, 3])
            .await
            .unwrap();
        let mut rx = b.subscribe(8);
        // Unknown datagrams never surface; the STUN one does, and nothing is left for QUIC.
        let mut bufs = vec![0u8; 2048];
        let mut metas = [RecvMeta::default()];
        let b2 = b.clone();
        let receiving = tokio::spawn(async move {
            std::future::poll_fn(|cx| {
                let mut iov = [IoSliceMut::new(&mut bufs)];
                b2.poll_recv(cx, &mut iov, &mut metas)
            })
            .await
        });
        let raw = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("STUN datagram delivered")
            .unwrap();
        assert_eq!(raw.from, a.local_addr().unwrap());
        assert!(
            !receiving.is_finished(),
            "no datagram was passed on to QUIC"
        );
        receiving.abort();
    }
}
