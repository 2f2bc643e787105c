//! The node's side of `pairs/nat/1`: registering with helpers, answering their introductions and relay
//! requests, and reaching a node through a helper (punch first, relay if no direct path answers).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pairs_base::{NodeAddr, NodeId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use super::punch::{Outcome, Punch};
use super::wire::{self, Frame, PunchOffer, WireError};
use super::{Inner, Nat, PunchInput, stun};
use crate::connection::Connection;
use crate::stream::BiStream;

/// Time allowed for the helper's answers.
const HELPER_TIME: Duration = Duration::from_secs(10);
/// Punches tried through a helper before falling back to a relay.
const PUNCH_ATTEMPTS: usize = 2;
/// STUN messages queued for one punch.
const PUNCH_QUEUE: usize = 256;

/// How a connection made through a helper reaches the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Straight to one of the addresses we knew.
    Direct(SocketAddr),
    /// Straight, over a hole punched to this address (`attempt` counts from 1).
    Punched {
        /// The peer's address on the punched path.
        addr: SocketAddr,
        /// Which punch found it.
        attempt: usize,
    },
    /// Through a relay circuit at the helper.
    Relayed(NodeId),
}

/// Errors reaching a node through a helper.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The helper could not be reached.
    #[error("cannot reach helper {}: {cause}", .helper.short())]
    Helper {
        /// The helper.
        helper: NodeId,
        /// Why.
        cause: crate::ConnectError,
    },
    /// The helper or the target said no.
    #[error("helper {}: {reason}", .helper.short())]
    Refused {
        /// The helper.
        helper: NodeId,
        /// Its reason.
        reason: String,
    },
    /// The exchange with the helper broke.
    #[error("helper {}: {cause}", .helper.short())]
    Wire {
        /// The helper.
        helper: NodeId,
        /// What broke.
        cause: WireError,
    },
    /// No punch worked and the relayed dial failed too.
    #[error("no direct path to {} and the relay failed: {cause}", .target.short())]
    Relay {
        /// Who we tried to reach.
        target: NodeId,
        /// The dial's error.
        cause: crate::ConnectError,
    },
}

/// A registration with a helper: while it lives, the helper can introduce us to others and open relay
/// circuits to us. Dropping it ends the registration.
#[derive(Debug)]
pub struct Registration {
    connection: Connection,
    observed: SocketAddr,
    task: JoinHandle<()>,
}

impl Registration {
    /// Our address as the helper sees it.
    pub fn observed(&self) -> SocketAddr {
        self.observed
    }

    /// The connection to the helper.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Waits until the helper connection ends.
    pub async fn closed(&self) {
        self.connection.closed().await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Nat {
    /// Registers with `helper`: it learns to reach us (and tells us the address it sees us at).
    pub async fn register(&self, helper: &NodeAddr) -> Result<Registration, ConnectError> {
        let connection = self
            .inner
            .endpoint
            .connect(helper, wire::ALPN)
            .await
            .map_err(|cause| ConnectError::Helper {
                helper: helper.node_id,
                cause,
            })?;
        self.register_on(connection).await
    }

    /// Registers over an existing `pairs/nat/1` connection.
    pub async fn register_on(&self, connection: Connection) -> Result<Registration, ConnectError> {
        let helper = connection.remote_node_id();
        let wire_err = |cause| ConnectError::Wire { helper, cause };
        let observed = match wire::ask(&connection, &Frame::Register, HELPER_TIME).await {
            Err(err) => return Err(wire_err(err)),
            Ok((_, Frame::Registered { observed })) => observed,
            Ok((_, Frame::Refused { reason })) => {
                return Err(ConnectError::Refused { helper, reason });
            }
            Ok(_) => return Err(wire_err(WireError::Unexpected("not an answer to register"))),
        };
        self.inner.note_observed(observed);
        let task = tokio::spawn(serve_pushes(
            Arc::downgrade(&self.inner),
            connection.clone(),
        ));
        debug!(helper = %helper.short(), %observed, "registered");
        Ok(Registration {
            connection,
            observed,
            task,
        })
    }

    /// Connects to `target` speaking `alpn`, through `helper`: registers there (which also tells us our
    /// public address), punches a hole with the target's help, and falls back to a relay circuit at the
    /// helper when no direct path answers.
    pub async fn connect_via(
        &self,
        target: NodeId,
        alpn: &[u8],
        helper: &NodeAddr,
    ) -> Result<(Connection, Path), ConnectError> {
        let registration = self.register(helper).await?;
        self.connect_through(target, alpn, &registration).await
    }

    /// As [`Nat::connect_via`], over an existing registration.
    pub async fn connect_through(
        &self,
        target: NodeId,
        alpn: &[u8],
        registration: &Registration,
    ) -> Result<(Connection, Path), ConnectError> {
        let helper = registration.connection.remote_node_id();
        for attempt in 1..=PUNCH_ATTEMPTS {
            let (probing, candidates, start) = match self.introduce(target, registration).await {
                Ok(introduced) => introduced,
                Err(ConnectError::Refused { reason, .. }) => {
                    debug!(peer = %target.short(), %reason, "no punch; trying the relay");
                    break;
                }
                Err(err) => return Err(err),
            };
            // QUIC goes to the address the helper sees the target at as soon as the probes start:
            // behind a cone NAT that is the path, and the handshake needs no probe round first.
            // The probes find the path when it is another (a symmetric NAT's fresh mapping).
            let endpoint = self.inner.endpoint.clone();
            let early_addr = candidates.first().copied();
            let early = async {
                let addr = early_addr?;
                tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
                endpoint
                    .connect(&NodeAddr::new(target, vec![addr]), alpn)
                    .await
                    .ok()
                    .map(|c| (c, addr))
            };
            tokio::pin!(early, probing);
            let mut early_done = false;
            let outcome = loop {
                tokio::select! {
                    dialed = &mut early, if !early_done => match dialed {
                        Some((connection, addr)) => {
                            info!(peer = %target.short(), %addr, attempt, "punched a direct path");
                            return Ok((connection, Path::Punched { addr, attempt }));
                        }
                        None => early_done = true,
                    },
                    outcome = &mut probing => break outcome,
                }
            };
            match outcome {
                Outcome::Direct(addr) => {
                    let dialed = if Some(addr) == early_addr && !early_done {
                        // The early dial is on this very path: let it finish. (A second dial would
                        // race it, and the peer could keep the connection we drop.)
                        early.await.map(|(c, _)| c).ok_or(())
                    } else {
                        self.inner
                            .endpoint
                            .connect(&NodeAddr::new(target, vec![addr]), alpn)
                            .await
                            .map_err(|err| debug!(%addr, %err, "dial over the punched path failed"))
                    };
                    if let Ok(connection) = dialed {
                        info!(peer = %target.short(), %addr, attempt, "punched a direct path");
                        return Ok((connection, Path::Punched { addr, attempt }));
                    }
                }
                Outcome::Failed { heard_from_peer } => {
                    debug!(peer = %target.short(), attempt, heard_from_peer, "punch failed");
                    if !heard_from_peer {
                        // Not one probe got through: the NATs will not let another attempt through.
                        break;
                    }
                }
            }
        }
        let connection = self.relayed(target, alpn, registration).await?;
        info!(peer = %target.short(), helper = %helper.short(), "connected through a relay");
        Ok((connection, Path::Relayed(helper)))
    }

    /// Asks the helper for an introduction. Returns the probing (to be polled), the target's
    /// candidates and when the probes start.
    async fn introduce(
        &self,
        target: NodeId,
        registration: &Registration,
    ) -> Result<
        (
            impl std::future::Future<Output = Outcome> + use<>,
            Vec<SocketAddr>,
            Instant,
        ),
        ConnectError,
    > {
        let helper = registration.connection.remote_node_id();
        let wire_err = |cause| ConnectError::Wire { helper, cause };
        let mut key = [0u8; 16];
        getrandom::fill(&mut key).expect("the operating system random source works");
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).expect("the operating system random source works");
        let offer = PunchOffer {
            id: u64::from_be_bytes(id),
            key,
            candidates: self.inner.candidates(),
        };
        // Listen for the target's probes before it can send any.
        let (inputs, guard) = self.inner.listen_for_punch(offer.id);
        let connect = Frame::Connect {
            target,
            offer: offer.clone(),
        };
        let answer = wire::ask(&registration.connection, &connect, HELPER_TIME).await;
        let (candidates, delay_ms) = match answer {
            Err(err) => return Err(wire_err(err)),
            Ok((
                _,
                Frame::Punch {
                    candidates,
                    delay_ms,
                },
            )) => (candidates, delay_ms),
            Ok((_, Frame::Refused { reason })) => {
                return Err(ConnectError::Refused { helper, reason });
            }
            Ok(_) => return Err(wire_err(WireError::Unexpected("not an answer to connect"))),
        };
        let start = Instant::now() + Duration::from_millis(u64::from(delay_ms.min(2000)));
        let punch = Punch::new(offer.id, key, &candidates, start);
        let nat = self.inner.clone();
        let probing = async move { run_punch(&nat, punch, inputs, guard).await };
        Ok((probing, candidates, start))
    }

    /// Opens a relay circuit to `target` at the helper and dials QUIC over it.
    async fn relayed(
        &self,
        target: NodeId,
        alpn: &[u8],
        registration: &Registration,
    ) -> Result<Connection, ConnectError> {
        let helper = registration.connection.remote_node_id();
        let wire_err = |cause| ConnectError::Wire { helper, cause };
        let relay = Frame::Relay { target };
        let stream = match wire::ask(&registration.connection, &relay, HELPER_TIME).await {
            Err(err) => return Err(wire_err(err)),
            Ok((stream, Frame::Accept)) => stream,
            Ok((_, Frame::Refused { reason })) => {
                return Err(ConnectError::Refused { helper, reason });
            }
            Ok(_) => return Err(wire_err(WireError::Unexpected("not an answer to relay"))),
        };
        let path = self.inner.endpoint.socket().open_virtual_path();
        let addr = path.addr();
        // The circuit lives as long as the connection over it (once dialed), or the node.
        let (dialed_tx, dialed_rx) = tokio::sync::oneshot::channel::<Connection>();
        let closed = async move {
            if let Ok(connection) = dialed_rx.await {
                connection.closed().await;
            }
        };
        let nat = self.inner.clone();
        tokio::spawn(async move { nat.run_pump(path, stream, closed).await });
        match self
            .inner
            .endpoint
            .connect(&NodeAddr::new(target, vec![addr]), alpn)
            .await
        {
            Ok(connection) => {
                let _ = dialed_tx.send(connection.clone());
                Ok(connection)
            }
            // Dropping `dialed_tx` stops the pump.
            Err(cause) => Err(ConnectError::Relay { target, cause }),
        }
    }
}

/// Removes a punch from the demultiplexer's table when it ends.
pub(super) struct PunchGuard {
    nat: std::sync::Weak<Inner>,
    id: u64,
}

impl Drop for PunchGuard {
    fn drop(&mut self) {
        if let Some(nat) = self.nat.upgrade() {
            nat.lock().punches.remove(&self.id);
        }
    }
}

impl Inner {
    pub(super) fn listen_for_punch(
        self: &Arc<Self>,
        id: u64,
    ) -> (mpsc::Receiver<PunchInput>, PunchGuard) {
        let (tx, rx) = mpsc::channel(PUNCH_QUEUE);
        self.lock().punches.insert(id, tx);
        (
            rx,
            PunchGuard {
                nat: Arc::downgrade(self),
                id,
            },
        )
    }
}

/// Drives one punch until it has an outcome (reported at once) and its time is over (the other side's
/// probes are answered until then).
async fn run_punch(
    nat: &Arc<Inner>,
    mut punch: Punch,
    mut inputs: mpsc::Receiver<PunchInput>,
    guard: PunchGuard,
) -> Outcome {
    let socket = nat.endpoint.socket().clone();
    let (outcome_tx, outcome_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _guard = guard;
        let mut outcome_tx = Some(outcome_tx);
        loop {
            while let Some((to, bytes)) = punch.poll_transmit() {
                if let Err(err) = socket.send_raw(to, &bytes).await {
                    debug!(%to, %err, "probe not sent");
                }
            }
            if let Some(outcome) = punch.outcome()
                && let Some(tx) = outcome_tx.take()
            {
                let _ = tx.send(outcome);
            }
            let now = Instant::now();
            if punch.is_finished(now) {
                punch.handle_timeout(now);
                if let Some(tx) = outcome_tx.take() {
                    let failed = Outcome::Failed {
                        heard_from_peer: false,
                    };
                    let _ = tx.send(punch.outcome().unwrap_or(failed));
                }
                break;
            }
            let wake = tokio::time::Instant::from_std(punch.poll_timeout());
            tokio::select! {
                () = tokio::time::sleep_until(wake) => punch.handle_timeout(Instant::now()),
                input = inputs.recv() => match input {
                    Some((from, message, raw)) => match message.class {
                        stun::Class::Request => punch.handle_request(from, &message, &raw),
                        stun::Class::Success => punch.handle_response(from, &message, &raw),
                        _ => {}
                    },
                    None => break,
                },
            }
        }
    });
    outcome_rx.await.unwrap_or(Outcome::Failed {
        heard_from_peer: false,
    })
}

/// Answers what a helper pushes to us over our registration: introductions and relay requests.
async fn serve_pushes(nat: std::sync::Weak<Inner>, connection: Connection) {
    loop {
        let Ok(stream) = connection.accept_bi().await else {
            break;
        };
        let nat = nat.clone();
        let helper = connection.remote_node_id();
        tokio::spawn(async move {
            if let Err(err) = serve_push(nat, stream).await {
                debug!(helper = %helper.short(), %err, "helper request failed");
            }
        });
    }
}

async fn serve_push(nat: std::sync::Weak<Inner>, mut stream: BiStream) -> Result<(), WireError> {
    let first = tokio::time::timeout(HELPER_TIME, wire::read_frame(&mut stream))
        .await
        .map_err(|_| WireError::Unexpected("no request in time"))??;
    let Some(nat) = nat.upgrade() else {
        return Ok(());
    };
    match first {
        Frame::Introduce { from, offer } => {
            let refusal = if !nat.config.punch {
                Some("this node does not take part in hole punches")
            } else if !nat.lock().introductions.try_take(1.0, Instant::now()) {
                Some("too many introductions; try later")
            } else {
                None
            };
            if let Some(reason) = refusal {
                let reason = reason.to_string();
                wire::write_frame(&mut stream, &Frame::Refused { reason }).await?;
                let _ = stream.finish();
                return Ok(());
            }
            let (inputs, guard) = nat.listen_for_punch(offer.id);
            let candidates = nat.candidates();
            wire::write_frame(&mut stream, &Frame::Answer { candidates }).await?;
            let go = tokio::time::timeout(HELPER_TIME, wire::read_frame(&mut stream))
                .await
                .map_err(|_| WireError::Unexpected("no go in time"))??;
            let Frame::Go { delay_ms } = go else {
                return Err(WireError::Unexpected("expected go"));
            };
            let start = Instant::now() + Duration::from_millis(u64::from(delay_ms.min(2000)));
            let mut offered = offer.candidates;
            offered.truncate(wire::MAX_CANDIDATES);
            let punch = Punch::new(offer.id, offer.key, &offered, start);
            let outcome = run_punch(&nat, punch, inputs, guard).await;
            debug!(peer = %from.short(), ?outcome, "punch as target");
            Ok(())
        }
        Frame::RelayFrom { from } => {
            let path = nat.endpoint.socket().open_virtual_path();
            wire::write_frame(&mut stream, &Frame::Accept).await?;
            debug!(peer = %from.short(), path = %path.addr(), "relay circuit accepted");
            nat.run_pump(path, stream, std::future::pending()).await;
            Ok(())
        }
        _ => Err(WireError::Unexpected("not a helper request")),
    }
}
