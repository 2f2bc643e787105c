//! NAT traversal: every node answers STUN, learns its public addresses, and can be the helper that
//! introduces two of its peers for a hole punch or relays between them when no direct path exists.
//!
//! The pieces with decisions in them are sans-IO: [`punch`] (one hole punch's probes and answers),
//! [`stun`] (message encoding and checks), [`limits`] (rate and relay budgets), [`wire`] (the
//! `pairs/nat/1` frames). This module and its drivers ([`helper`] for the helper's side, `client` for
//! the node's) move bytes between them, the socket and QUIC streams.
//!
//! How a node reaches another it knows only by id, through a helper both are connected to:
//! 1. both sides [register](Nat::register) with the helper, which tells each the address it sees;
//! 2. the dialer asks the helper to introduce it; the helper passes each side's candidate addresses to
//!    the other (adding the address it observes), and tells both when to start so that their probes
//!    leave at the same moment (half the larger RTT to the helper);
//! 3. both probe each other's candidates from their one UDP socket; the dialer dials QUIC over the
//!    first path that answers;
//! 4. if no path answers, the dialer asks the helper for a relay circuit and dials QUIC over it. The
//!    relay carries QUIC packets it cannot read: the connection stays end-to-end encrypted.

pub mod behaviour;
mod circuit;
mod client;
pub mod helper;
pub mod limits;
pub mod punch;
pub mod stun;
pub mod turn;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pairs_base::NodeId;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, trace};

pub use client::{ConnectError, Path, Registration};
pub use limits::RelayLimits;

use crate::connection::Connection;
use crate::endpoint::Endpoint;
use crate::socket::{DatagramKind, RawDatagram};
use limits::TokenBucket;

/// How long a STUN server has to answer one binding request (sent three times in that time).
pub const STUN_TIMEOUT: Duration = Duration::from_secs(3);

/// What a node does for itself and for others.
#[derive(Debug, Clone)]
pub struct NatConfig {
    /// What this node gives others as a relay (`max_circuits: 0` turns relaying off).
    pub relay: RelayLimits,
    /// Whether this node takes part in hole punches others ask for. Off, peers reach it only through
    /// relays, and never learn its addresses from a punch.
    pub punch: bool,
    /// Introductions (punch requests from others) this node answers: burst.
    pub introductions_burst: u32,
    /// Introductions answered per second, on average, after the burst.
    pub introductions_per_second: f64,
    /// STUN binding requests answered per second (burst: twice as many).
    pub stun_answers_per_second: f64,
}

impl Default for NatConfig {
    fn default() -> Self {
        Self {
            relay: RelayLimits::default(),
            punch: true,
            introductions_burst: 8,
            introductions_per_second: 0.5,
            stun_answers_per_second: 200.0,
        }
    }
}

/// Someone waiting for the answer to a STUN request of ours.
#[derive(Debug)]
struct StunWaiter {
    /// Where the request went; `None`: the answer may come from anywhere (CHANGE-REQUEST).
    server: Option<SocketAddr>,
    answer: oneshot::Sender<stun::Parsed>,
}

/// A STUN message for a punch in progress: source, parsed form, raw bytes.
type PunchInput = (SocketAddr, stun::Parsed, bytes::Bytes);

#[derive(Debug)]
struct State {
    /// As a helper: the nodes registered with us, by id.
    registered: HashMap<NodeId, Connection>,
    /// As a relay: circuits open, in total and per node that asked.
    circuits: usize,
    circuits_by_node: HashMap<NodeId, usize>,
    /// Punches in progress, by id: where their STUN messages go.
    punches: HashMap<u64, mpsc::Sender<PunchInput>>,
    /// STUN binding requests of ours waiting for an answer.
    stun_waiters: HashMap<[u8; 12], StunWaiter>,
    /// Our address as others see it: from helpers and STUN servers, newest first.
    observed: Vec<SocketAddr>,
    /// Addresses forwarded to us (port mappings on the router), offered before all others.
    mapped: Vec<SocketAddr>,
    /// Introductions we answer as a punch target.
    introductions: TokenBucket,
    /// Punch requests we pass on as a helper.
    connect_requests: TokenBucket,
    stun_answers: TokenBucket,
}

pub(crate) struct Inner {
    endpoint: Endpoint,
    config: NatConfig,
    state: Mutex<State>,
    demux: tokio::task::JoinHandle<()>,
    /// Set at shutdown: relay circuit ends flush and stop.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Relay circuit ends running.
    pumps: tokio::sync::watch::Sender<usize>,
    /// Bumped at every registration with us, for requests that wait for their target's.
    registrations: tokio::sync::watch::Sender<u64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.demux.abort();
    }
}

/// A node's NAT traversal service: STUN answers and requests, hole punching, relaying. Cheap to clone.
#[derive(Clone)]
pub struct Nat {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Nat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nat")
            .field("node", &self.inner.endpoint.node_id().short())
            .finish_non_exhaustive()
    }
}

/// Observed addresses kept.
const MAX_OBSERVED: usize = 4;

impl Nat {
    /// Starts the service on `endpoint`'s socket: from now on the node answers STUN binding requests.
    /// Serve [`wire::ALPN`] with [`Nat::handler`] to be a helper for others.
    pub fn new(endpoint: &Endpoint, config: NatConfig) -> Self {
        let now = Instant::now();
        let state = State {
            registered: HashMap::new(),
            circuits: 0,
            circuits_by_node: HashMap::new(),
            punches: HashMap::new(),
            stun_waiters: HashMap::new(),
            observed: Vec::new(),
            mapped: Vec::new(),
            introductions: TokenBucket::new(
                config.introductions_burst,
                config.introductions_per_second,
                now,
            ),
            connect_requests: TokenBucket::new(64, 16.0, now),
            stun_answers: TokenBucket::new(
                (config.stun_answers_per_second * 2.0) as u32,
                config.stun_answers_per_second,
                now,
            ),
        };
        let raw = endpoint.socket().subscribe(1024);
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| Inner {
            endpoint: endpoint.clone(),
            config,
            state: Mutex::new(state),
            demux: tokio::spawn(demux(weak.clone(), raw)),
            stopping: tokio::sync::watch::channel(false).0,
            pumps: tokio::sync::watch::channel(0).0,
            registrations: tokio::sync::watch::channel(0).0,
        });
        Self { inner }
    }

    /// The handler that serves [`wire::ALPN`]: being a helper (introductions, relay circuits) for
    /// the nodes that connect.
    pub fn handler(&self) -> helper::Handler {
        helper::Handler {
            nat: Arc::downgrade(&self.inner),
        }
    }

    /// Stops this node's relay circuit ends, after they have handed the helper what QUIC already
    /// queued (a connection's last acknowledgements and its close). Call it after closing the
    /// connections that matter and before closing the endpoint; waits a few seconds at most.
    pub async fn shutdown(&self) {
        self.inner.stopping.send_replace(true);
        let mut pumps = self.inner.pumps.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(3), pumps.wait_for(|n| *n == 0)).await;
    }

    /// This node's endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// Our addresses as others observed them (helpers, STUN servers), newest first.
    pub fn observed(&self) -> Vec<SocketAddr> {
        self.inner.lock().observed.clone()
    }

    /// Offers `addr` (a port forwarded to us by the router) first in every punch from now on.
    pub fn add_mapped(&self, addr: SocketAddr) {
        let mut state = self.inner.lock();
        if !state.mapped.contains(&addr) {
            state.mapped.insert(0, addr);
            state.mapped.truncate(MAX_OBSERVED);
        }
    }

    /// Asks the STUN server at `server` (any STUN server, or any pairs node) which address our socket
    /// has from there. Remembered as an observed address.
    pub async fn stun(&self, server: SocketAddr) -> Result<SocketAddr, StunError> {
        let answer = self
            .stun_exchange(server, stun::Change::default(), STUN_SENDS)
            .await?;
        let mapped = answer.mapped.ok_or(StunError::NoAddress(server))?;
        self.inner.note_observed(mapped);
        Ok(mapped)
    }

    /// One binding request to `server` (asking it to answer from elsewhere if `change` says so),
    /// sent at each of `sends` (milliseconds to wait after each send).
    async fn stun_exchange(
        &self,
        server: SocketAddr,
        change: stun::Change,
        sends: &[u64],
    ) -> Result<stun::Parsed, StunError> {
        let server = crate::socket::canonical(server);
        let mut transaction = [0u8; 12];
        getrandom::fill(&mut transaction).expect("the operating system random source works");
        let (tx, mut rx) = oneshot::channel();
        let waiter = StunWaiter {
            server: (change == stun::Change::default()).then_some(server),
            answer: tx,
        };
        self.inner.lock().stun_waiters.insert(transaction, waiter);
        let request = stun::binding_request_changed(&transaction, change);
        let socket = self.inner.endpoint.socket().clone();
        let attempt = async {
            for &wait in sends {
                socket
                    .send_raw(server, &request)
                    .await
                    .map_err(StunError::Send)?;
                match tokio::time::timeout(Duration::from_millis(wait), &mut rx).await {
                    Ok(Ok(answer)) => return Ok(answer),
                    Ok(Err(_)) => break,
                    Err(_) => continue,
                }
            }
            Err(StunError::Timeout(server))
        };
        let result = attempt.await;
        self.inner.lock().stun_waiters.remove(&transaction);
        result
    }

    /// Finds out how the NAT in front of this node behaves (RFC 5780), with a STUN server that has
    /// two addresses (such as coturn given two listening IPs). With a server that has one, only the
    /// mapped address is known.
    pub async fn nat_behaviour(
        &self,
        server: SocketAddr,
    ) -> Result<(behaviour::Observations, behaviour::Behaviour), StunError> {
        let local_port = self.inner.endpoint.local_addr().port();
        let mut seen = behaviour::Observations {
            local_port,
            local_ips: self
                .inner
                .endpoint
                .node_addr()
                .addrs
                .iter()
                .map(|a| a.ip())
                .collect(),
            ..Default::default()
        };
        let first = self
            .stun_exchange(server, stun::Change::default(), STUN_SENDS)
            .await?;
        seen.mapped = first.mapped;
        seen.other_address = first.other_address;
        if let Some(mapped) = first.mapped {
            self.inner.note_observed(mapped);
        }
        if let (Some(other), Some(_)) = (first.other_address, first.mapped) {
            // Filtering first: nothing has gone to the other address yet.
            let answered = |r: Result<stun::Parsed, StunError>| match r {
                Ok(_) => Ok(true),
                Err(StunError::Timeout(_)) => Ok(false),
                Err(err) => Err(err),
            };
            let both = stun::Change {
                ip: true,
                port: true,
            };
            seen.answered_from_other_ip_and_port = Some(answered(
                self.stun_exchange(server, both, FILTER_SENDS).await,
            )?);
            let port = stun::Change {
                ip: false,
                port: true,
            };
            seen.answered_from_other_port = Some(answered(
                self.stun_exchange(server, port, FILTER_SENDS).await,
            )?);
            let other_ip = SocketAddr::new(other.ip(), server.port());
            seen.mapped_at_other_ip = self
                .stun_exchange(other_ip, stun::Change::default(), STUN_SENDS)
                .await
                .ok()
                .and_then(|a| a.mapped);
            if seen.mapped_at_other_ip.is_some() && seen.mapped_at_other_ip != seen.mapped {
                seen.mapped_at_other_ip_and_port = self
                    .stun_exchange(other, stun::Change::default(), STUN_SENDS)
                    .await
                    .ok()
                    .and_then(|a| a.mapped);
            }
        }
        let verdict = behaviour::classify(&seen);
        Ok((seen, verdict))
    }
}

/// When a STUN request is sent again (milliseconds to wait after each send): three sends over 3 s.
const STUN_SENDS: &[u64] = &[300, 700, 2000];
/// The same for answers that may never come (a filtering NAT drops them): two sends over 1.2 s.
const FILTER_SENDS: &[u64] = &[400, 800];

/// Errors asking a STUN server.
#[derive(Debug, thiserror::Error)]
pub enum StunError {
    /// Sending failed.
    #[error("cannot send to the STUN server: {0}")]
    Send(std::io::Error),
    /// No valid answer.
    #[error("no answer from STUN server {0} within {secs}s", secs = STUN_TIMEOUT.as_secs())]
    Timeout(SocketAddr),
    /// An answer without XOR-MAPPED-ADDRESS.
    #[error("STUN server {0} answered without an address")]
    NoAddress(SocketAddr),
}

impl Inner {
    /// Runs one relay circuit end until it ends or the node shuts down (or `closed` completes).
    pub(crate) async fn run_pump(
        &self,
        path: crate::socket::VirtualPath,
        stream: crate::stream::BiStream,
        closed: impl std::future::Future<Output = ()>,
    ) {
        self.pumps.send_modify(|n| *n += 1);
        let mut stopping = self.stopping.subscribe();
        let stop = async move {
            tokio::select! {
                _ = stopping.wait_for(|s| *s) => {}
                () = closed => {}
            }
        };
        circuit::pump(path, stream, stop).await;
        self.pumps.send_modify(|n| *n -= 1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("mutex poisoned")
    }

    fn note_observed(&self, addr: SocketAddr) {
        let addr = crate::socket::canonical(addr);
        if crate::socket::is_virtual(addr) {
            return;
        }
        let mut state = self.lock();
        state.observed.retain(|a| *a != addr);
        state.observed.insert(0, addr);
        state.observed.truncate(MAX_OBSERVED);
    }

    /// The addresses we offer for a punch: observed ones first, then our interfaces' (no loopback: a
    /// peer probing its own loopback would find itself), at most [`wire::MAX_CANDIDATES`].
    fn candidates(&self) -> Vec<SocketAddr> {
        let mut out = {
            let state = self.lock();
            let mut out = state.mapped.clone();
            out.extend(state.observed.iter().filter(|a| !state.mapped.contains(a)));
            out
        };
        for addr in self.endpoint.node_addr().addrs {
            if !addr.ip().is_loopback() && !out.contains(&addr) {
                out.push(addr);
            }
        }
        out.truncate(wire::MAX_CANDIDATES);
        out
    }
}

/// Routes the socket's STUN traffic: binding requests are answered (or go to the punch they name),
/// answers go to whoever waits for them.
async fn demux(nat: std::sync::Weak<Inner>, mut raw: mpsc::Receiver<RawDatagram>) {
    while let Some(datagram) = raw.recv().await {
        let Some(nat) = nat.upgrade() else { return };
        if datagram.kind != DatagramKind::Stun {
            continue;
        }
        let Some(message) = stun::parse(&datagram.data) else {
            trace!(from = %datagram.from, "malformed STUN message ignored");
            continue;
        };
        match message.class {
            stun::Class::Request => on_request(&nat, datagram, message).await,
            stun::Class::Success => on_success(&nat, datagram, message),
            _ => {}
        }
    }
}

async fn on_request(nat: &Inner, datagram: RawDatagram, message: stun::Parsed) {
    if let Some(username) = &message.username {
        let Some(id) = punch::id_from_username(username) else {
            return;
        };
        let target = nat.lock().punches.get(&id).cloned();
        if let Some(tx) = target {
            let _ = tx.try_send((datagram.from, message, datagram.data));
        }
        return;
    }
    // A plain binding request: we are a STUN server for anyone, within a budget.
    if !nat.lock().stun_answers.try_take(1.0, Instant::now()) {
        return;
    }
    let answer = stun::binding_success(&message.transaction, datagram.from, None);
    if let Err(err) = nat.endpoint.socket().send_raw(datagram.from, &answer).await {
        debug!(to = %datagram.from, %err, "STUN answer not sent");
    }
}

fn on_success(nat: &Inner, datagram: RawDatagram, message: stun::Parsed) {
    let punch_id = u64::from_be_bytes(message.transaction[..8].try_into().expect("8 bytes"));
    let mut state = nat.lock();
    if let Some(tx) = state.punches.get(&punch_id) {
        let _ = tx.try_send((datagram.from, message, datagram.data));
        return;
    }
    // Only the server asked may answer (unless we asked it to answer from elsewhere).
    let expected = state
        .stun_waiters
        .get(&message.transaction)
        .is_some_and(|w| w.server.is_none_or(|server| server == datagram.from));
    if expected && let Some(waiter) = state.stun_waiters.remove(&message.transaction) {
        let _ = waiter.answer.send(message);
    }
}
