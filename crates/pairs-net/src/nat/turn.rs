//! TURN (RFC 8656) as a relay: an allocation on a standard TURN server (coturn, or any other), made
//! and kept from the node's own socket through `turn-client-proto`'s sans-IO client.
//!
//! QUIC reaches a peer through the allocation by its address: the socket routes datagrams for that
//! address to this driver, which wraps them for the server (ChannelData once a channel is bound), and
//! delivers what the server relays from the peer as if the peer had sent it. Datagrams from the server
//! never reach QUIC (ChannelData's first byte looks like QUIC's). The connection over TURN is ordinary
//! QUIC: end-to-end encrypted, the server sees only ciphertext.
//!
//! Permissions: the node permits its own relayed IP, so every allocation on the same server can reach
//! it (two nodes that share a TURN server meet through it with nothing but tickets), and whatever peer
//! it routes to. Peers on other TURN servers need their IP permitted (`TurnAllocation::permit`).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use turn_client_proto::api::{TurnConfig, TurnEvent, TurnPollRet, TurnRecvRet};
use turn_client_proto::prelude::*;
use turn_client_proto::types::{Instant as TurnInstant, TransportType, TurnCredentials};
use turn_client_proto::udp::TurnClientUdp;

use super::Nat;
use crate::socket::{SharedSocket, canonical};

/// How long an allocation may take.
pub const ALLOCATE_TIMEOUT: Duration = Duration::from_secs(10);
/// Datagrams queued towards the TURN server.
const QUEUE: usize = 512;

/// A TURN server and the long-term credentials for it.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnServer {
    /// The server's address.
    pub addr: SocketAddr,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        write!(f, "TurnServer({}@{})", self.username, self.addr)
    }
}

impl FromStr for TurnServer {
    type Err = String;

    /// `USER:PASSWORD@IP:PORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || format!("'{s}' is not a TURN server: write USER:PASSWORD@IP:PORT");
        let (credentials, addr) = s.rsplit_once('@').ok_or_else(usage)?;
        let (username, password) = credentials.split_once(':').ok_or_else(usage)?;
        let addr = addr.parse().map_err(|_| usage())?;
        if username.is_empty() {
            return Err(usage());
        }
        Ok(Self {
            addr,
            username: username.into(),
            password: password.into(),
        })
    }
}

/// Errors making an allocation.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// The server refused or never answered.
    #[error("TURN server {server}: {reason}")]
    Allocation {
        /// The server.
        server: SocketAddr,
        /// Why.
        reason: String,
    },
}

enum Command {
    Route(SocketAddr),
    Permit(IpAddr),
    Shutdown(oneshot::Sender<()>),
}

/// An allocation on a TURN server, kept (refreshed) while this lives; [`TurnAllocation::shutdown`]
/// deletes it on the server.
#[derive(Debug)]
pub struct TurnAllocation {
    relayed: SocketAddr,
    server: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

impl TurnAllocation {
    /// The relayed address: peers reach us here.
    pub fn relayed(&self) -> SocketAddr {
        self.relayed
    }

    /// The TURN server.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Sends QUIC's datagrams for `peer` (a relayed address on a TURN server, or any address) through
    /// this allocation from now on.
    pub fn route(&self, peer: SocketAddr) {
        let _ = self.commands.send(Command::Route(canonical(peer)));
    }

    /// Lets `ip` send to us through the allocation.
    pub fn permit(&self, ip: IpAddr) {
        let _ = self.commands.send(Command::Permit(ip));
    }

    /// Deletes the allocation on the server (waiting a few seconds at most).
    pub async fn shutdown(self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Shutdown(done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
        }
    }
}

impl Drop for TurnAllocation {
    fn drop(&mut self) {
        if !self.task.is_finished() {
            // Without shutdown, the server lets the allocation expire on its own.
            let (done, _) = oneshot::channel();
            let _ = self.commands.send(Command::Shutdown(done));
        }
    }
}

impl Nat {
    /// Makes an allocation on `server` from this node's socket.
    pub async fn turn_allocate(&self, server: &TurnServer) -> Result<TurnAllocation, TurnError> {
        let socket = self.inner.endpoint.socket().clone();
        let server_addr = canonical(server.addr);
        let local = socket.local_addr_for_turn();
        let mut config = TurnConfig::new(TurnCredentials::new(&server.username, &server.password));
        // RFC 8489's schedule, bounded: a wrong password or a silent server fails within seconds.
        config.set_request_retransmits(
            Duration::from_millis(500),
            Duration::from_secs(2),
            5,
            Duration::from_secs(2),
        );
        let client = TurnClientUdp::allocate(local, server_addr, config);
        let from_server = socket.divert(server_addr, QUEUE);
        let (to_peers_tx, to_peers) = mpsc::channel(QUEUE);
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (allocated_tx, allocated) = oneshot::channel();
        let task = tokio::spawn(drive(Driver {
            client,
            socket,
            server: server_addr,
            local,
            from_server,
            to_peers,
            to_peers_tx,
            commands: command_rx,
            allocated: Some(allocated_tx),
            channels: HashSet::new(),
            routed: HashSet::new(),
        }));
        let relayed = match tokio::time::timeout(ALLOCATE_TIMEOUT, allocated).await {
            Ok(Ok(Ok(relayed))) => relayed,
            Ok(Ok(Err(reason))) => {
                task.abort();
                return Err(TurnError::Allocation {
                    server: server_addr,
                    reason,
                });
            }
            Ok(Err(_)) | Err(_) => {
                task.abort();
                return Err(TurnError::Allocation {
                    server: server_addr,
                    reason: "no allocation in time (wrong password, or the server does not answer)"
                        .into(),
                });
            }
        };
        info!(server = %server_addr, %relayed, "TURN allocation");
        Ok(TurnAllocation {
            relayed,
            server: server_addr,
            commands,
            task,
        })
    }
}

struct Driver {
    client: TurnClientUdp,
    socket: std::sync::Arc<SharedSocket>,
    server: SocketAddr,
    local: SocketAddr,
    from_server: mpsc::Receiver<Bytes>,
    to_peers: mpsc::Receiver<(SocketAddr, Bytes)>,
    to_peers_tx: mpsc::Sender<(SocketAddr, Bytes)>,
    commands: mpsc::UnboundedReceiver<Command>,
    allocated: Option<oneshot::Sender<Result<SocketAddr, String>>>,
    /// Peers with a channel bound (or being bound).
    channels: HashSet<SocketAddr>,
    /// Peers whose datagrams the socket routes here.
    routed: HashSet<SocketAddr>,
}

impl Driver {
    fn route(&mut self, peer: SocketAddr, now: TurnInstant) {
        if self.routed.insert(peer) {
            self.socket.route_to(peer, self.to_peers_tx.clone());
        }
        if self.channels.insert(peer)
            && let Err(err) = self.client.bind_channel(TransportType::Udp, peer, now)
        {
            debug!(%peer, %err, "no TURN channel");
            self.channels.remove(&peer);
        }
    }

    async fn flush(&mut self, now: TurnInstant) {
        while let Some(transmit) = self.client.poll_transmit(now) {
            if let Err(err) = self.socket.send_raw(transmit.to, &transmit.data).await {
                debug!(%err, "TURN message not sent");
            }
        }
    }

    fn events(&mut self, now: TurnInstant) {
        while let Some(event) = self.client.poll_event() {
            match event {
                TurnEvent::AllocationCreated(_, relayed) => {
                    // Every allocation on this server may reach us (see the module docs).
                    let _ = self
                        .client
                        .create_permission(TransportType::Udp, relayed.ip(), now);
                    if let Some(tx) = self.allocated.take() {
                        let _ = tx.send(Ok(canonical(relayed)));
                    }
                }
                TurnEvent::AllocationCreateFailed(family) => {
                    if let Some(tx) = self.allocated.take() {
                        let _ = tx.send(Err(format!("the server refused an {family} allocation")));
                    }
                }
                TurnEvent::ChannelCreateFailed(_, peer) => {
                    self.channels.remove(&peer);
                    debug!(%peer, "TURN channel failed or expired");
                }
                TurnEvent::PermissionCreateFailed(_, ip) => debug!(%ip, "TURN permission failed"),
                other => debug!(?other, "TURN"),
            }
        }
    }

    fn relay_out(
        &mut self,
        peer: SocketAddr,
        datagram: &[u8],
        now: TurnInstant,
    ) -> Option<Vec<u8>> {
        match self.client.send_to(TransportType::Udp, peer, datagram, now) {
            Ok(Some(transmit)) => Some(transmit.build().data),
            Ok(None) => None,
            Err(err) => {
                // No permission yet: ask for one (with a channel) unless that is under way; QUIC
                // sends again.
                if !self.channels.contains(&peer) {
                    debug!(%peer, %err, "TURN send refused; binding a channel");
                    self.route(peer, now);
                }
                None
            }
        }
    }
}

async fn drive(mut d: Driver) {
    let base = std::time::Instant::now();
    let now = || TurnInstant::from_std(base);
    let mut shutdown: Option<(oneshot::Sender<()>, tokio::time::Instant)> = None;
    loop {
        d.flush(now()).await;
        d.events(now());
        d.flush(now()).await;
        let wake = match d.client.poll(now()) {
            TurnPollRet::WaitUntil(at) => at.to_std(base),
            TurnPollRet::Closed => {
                if let Some(tx) = d.allocated.take() {
                    let _ = tx.send(Err("the allocation failed".into()));
                }
                break;
            }
            _ => std::time::Instant::now() + Duration::from_secs(1),
        };
        let wake = match &shutdown {
            Some((_, deadline)) => tokio::time::Instant::from_std(wake).min(*deadline),
            None => tokio::time::Instant::from_std(wake),
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {
                if shutdown.as_ref().is_some_and(|(_, deadline)| tokio::time::Instant::now() >= *deadline) {
                    break;
                }
            }
            Some(datagram) = d.from_server.recv() => {
                let transmit = turn_client_proto::api::Transmit::new(
                    &datagram[..],
                    TransportType::Udp,
                    d.server,
                    d.local,
                );
                match d.client.recv(transmit, now()) {
                    TurnRecvRet::PeerData(data) => {
                        let peer = canonical(data.peer);
                        let payload = Bytes::copy_from_slice(data.data());
                        // A peer that reaches us gets its answers the same way.
                        let t = now();
                        d.route(peer, t);
                        d.socket.inject(peer, payload);
                    }
                    TurnRecvRet::Handled | TurnRecvRet::PeerIcmp { .. } => {}
                    TurnRecvRet::Ignored(_) => debug!("datagram from the TURN server ignored"),
                }
            }
            Some((peer, datagram)) = d.to_peers.recv(), if shutdown.is_none() => {
                if let Some(wrapped) = d.relay_out(peer, &datagram, now())
                    && let Err(err) = d.socket.send_raw(d.server, &wrapped).await {
                        debug!(%err, "relayed datagram not sent");
                    }
            }
            command = d.commands.recv(), if shutdown.is_none() => match command {
                Some(Command::Route(peer)) => d.route(peer, now()),
                Some(Command::Permit(ip)) => {
                    let _ = d.client.create_permission(TransportType::Udp, ip, now());
                }
                Some(Command::Shutdown(done)) => {
                    if d.client.delete(now()).is_err() {
                        let _ = done.send(());
                        break;
                    }
                    shutdown = Some((done, tokio::time::Instant::now() + Duration::from_secs(3)));
                }
                None => {
                    let _ = d.client.delete(now());
                    shutdown = Some((oneshot::channel().0, tokio::time::Instant::now() + Duration::from_secs(3)));
                }
            },
        }
    }
    for peer in d.routed {
        d.socket.unroute(peer);
    }
    d.socket.undivert(d.server);
    if let Some((done, _)) = shutdown {
        info!(server = %d.server, "TURN allocation deleted");
        let _ = done.send(());
    } else {
        warn!(server = %d.server, "TURN allocation ended");
    }
}
