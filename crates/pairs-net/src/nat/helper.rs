//! The helper's side of `pairs/nat/1`: any node serves it. Registered nodes can be introduced to each
//! other for a hole punch, and given relay circuits within the relay budget.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use pairs_base::NodeId;
use tracing::{debug, info};

use super::Inner;
use super::circuit::{self, SpliceEnd};
use super::wire::{self, Frame, PunchOffer, WireError};
use crate::connection::Connection;
use crate::router::ProtocolHandler;
use crate::stream::BiStream;

/// Time allowed for a stream's first frame, and for a target's answer. A target answers at once;
/// one that does not is probably gone (its connection not yet timed out), and a dialer's
/// introduction should not wait on it long.
const ANSWER_TIME: Duration = Duration::from_secs(5);
/// How long a request waits for its target to register.
const REGISTRATION_GRACE: Duration = Duration::from_secs(3);
/// Streams one connection may have open with the helper at once.
const STREAMS_PER_CONNECTION: u32 = 8;

/// Serves [`wire::ALPN`]: register with [`crate::RouterBuilder::accept`].
#[derive(Debug, Clone)]
pub struct Handler {
    pub(super) nat: Weak<Inner>,
}

impl ProtocolHandler for Handler {
    fn accept(&self, connection: Connection) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let nat = self.nat.clone();
        Box::pin(async move {
            connection
                .quinn()
                .set_max_concurrent_bi_streams(STREAMS_PER_CONNECTION.into());
            serve_connection(nat, connection).await;
        })
    }
}

async fn serve_connection(nat: Weak<Inner>, connection: Connection) {
    loop {
        let stream = tokio::select! {
            stream = connection.accept_bi() => stream,
            _ = connection.closed() => break,
        };
        let Ok(stream) = stream else { break };
        let nat = nat.clone();
        let connection = connection.clone();
        tokio::spawn(async move {
            if let Err(err) = serve_stream(nat, &connection, stream).await {
                debug!(peer = %connection.remote_node_id().short(), %err, "nat request failed");
            }
        });
    }
    // Forget the node if this was the connection it registered with.
    if let Some(nat) = nat.upgrade() {
        let mut state = nat.lock();
        let node = connection.remote_node_id();
        if state
            .registered
            .get(&node)
            .is_some_and(|c| c.quinn().stable_id() == connection.quinn().stable_id())
        {
            state.registered.remove(&node);
        }
    }
}

async fn serve_stream(
    nat: Weak<Inner>,
    connection: &Connection,
    mut stream: BiStream,
) -> Result<(), WireError> {
    let first = tokio::time::timeout(ANSWER_TIME, wire::read_frame(&mut stream))
        .await
        .map_err(|_| WireError::Unexpected("no request in time"))??;
    let Some(nat) = nat.upgrade() else {
        return Ok(());
    };
    let from = connection.remote_node_id();
    match first {
        Frame::Register => {
            nat.lock().registered.insert(from, connection.clone());
            nat.registrations.send_modify(|n| *n += 1);
            let observed = connection.remote_addr();
            wire::write_frame(&mut stream, &Frame::Registered { observed }).await?;
            let _ = stream.finish();
            Ok(())
        }
        Frame::Connect { target, offer } => {
            introduce(&nat, connection, stream, target, offer).await
        }
        Frame::Relay { target } => relay(nat, connection, stream, target).await,
        _ => {
            refuse(&mut stream, "not a request").await;
            Err(WireError::Unexpected("not a request"))
        }
    }
}

async fn refuse(stream: &mut BiStream, reason: &str) {
    let _ = wire::write_frame(
        stream,
        &Frame::Refused {
            reason: reason.into(),
        },
    )
    .await;
    let _ = stream.finish();
}

/// The connection `target` registered with, if it did.
fn registered(nat: &Inner, from: NodeId, target: NodeId) -> Result<Connection, String> {
    if target == nat.endpoint.node_id() {
        return Err("that is this node itself: dial it directly".into());
    }
    if target == from {
        return Err("that is you".into());
    }
    nat.lock()
        .registered
        .get(&target)
        .cloned()
        .ok_or_else(|| format!("{} is not registered here", target.short()))
}

/// As [`registered`], waiting a little for a target that has not registered yet: two nodes that
/// hear of each other from us connected to us at about the same time, and the dialer's request
/// can overtake the target's registration.
async fn registered_soon(nat: &Inner, from: NodeId, target: NodeId) -> Result<Connection, String> {
    let mut changes = nat.registrations.subscribe();
    let grace = tokio::time::sleep(REGISTRATION_GRACE);
    tokio::pin!(grace);
    loop {
        let found = registered(nat, from, target);
        if found.is_ok() || target == nat.endpoint.node_id() || target == from {
            return found;
        }
        tokio::select! {
            () = &mut grace => return found,
            changed = changes.changed() => if changed.is_err() {
                return found;
            },
        }
    }
}

/// Puts `observed` first in a candidate list, keeping it within the limit.
fn with_observed(mut candidates: Vec<SocketAddr>, observed: SocketAddr) -> Vec<SocketAddr> {
    candidates.truncate(wire::MAX_CANDIDATES);
    candidates.retain(|a| *a != observed);
    candidates.insert(0, observed);
    candidates.truncate(wire::MAX_CANDIDATES);
    candidates
}

/// When each side should start probing, so that both start together: the one further away from the
/// helper starts as soon as it hears, the nearer one waits the difference of the one-way delays.
pub fn start_delays(dialer_rtt: Duration, target_rtt: Duration) -> (Duration, Duration) {
    let half = |rtt: Duration| rtt / 2;
    let longest = half(dialer_rtt).max(half(target_rtt));
    (longest - half(dialer_rtt), longest - half(target_rtt))
}

async fn introduce(
    nat: &Inner,
    dialer: &Connection,
    mut stream: BiStream,
    target: NodeId,
    offer: PunchOffer,
) -> Result<(), WireError> {
    let from = dialer.remote_node_id();
    let (mut to_target, to_dialer, go) = match arrange_punch(nat, dialer, target, offer).await {
        Ok(arranged) => arranged,
        Err(reason) => {
            refuse(&mut stream, &reason).await;
            return Ok(());
        }
    };
    // Both frames leave now; each side waits its delay after hearing, so the probes cross.
    let (a, b) = tokio::join!(
        wire::write_frame(&mut stream, &to_dialer),
        wire::write_frame(&mut to_target, &go)
    );
    a?;
    b?;
    let _ = stream.finish();
    let _ = to_target.finish();
    debug!(from = %from.short(), to = %target.short(), "introduced for a punch");
    Ok(())
}

/// Asks the target to take part in a punch: on success, the stream to the target, the `Punch`
/// frame for the dialer and the `Go` frame for the target. On failure, the reason the dialer hears.
async fn arrange_punch(
    nat: &Inner,
    dialer: &Connection,
    target: NodeId,
    offer: PunchOffer,
) -> Result<(BiStream, Frame, Frame), String> {
    let from = dialer.remote_node_id();
    if !nat.lock().connect_requests.try_take(1.0, Instant::now()) {
        return Err("too many introductions asked of this helper; try later".into());
    }
    let target_connection = registered_soon(nat, from, target).await?;
    let offer = PunchOffer {
        candidates: with_observed(offer.candidates, dialer.remote_addr()),
        ..offer
    };
    let introduce = Frame::Introduce { from, offer };
    let (to_target, answer) = wire::ask(&target_connection, &introduce, ANSWER_TIME)
        .await
        .map_err(|err| format!("{} did not answer: {err}", target.short()))?;
    let candidates = match answer {
        Frame::Answer { candidates } => with_observed(candidates, target_connection.remote_addr()),
        Frame::Refused { reason } => return Err(format!("{} refused: {reason}", target.short())),
        _ => return Err("the target answered nonsense".into()),
    };
    let (dialer_delay, target_delay) = start_delays(dialer.rtt(), target_connection.rtt());
    let millis = |d: Duration| d.as_millis().min(u128::from(u32::MAX)) as u32;
    let to_dialer = Frame::Punch {
        candidates,
        delay_ms: millis(dialer_delay),
    };
    let go = Frame::Go {
        delay_ms: millis(target_delay),
    };
    Ok((to_target, to_dialer, go))
}

/// Releases a circuit slot when the circuit ends, however it ends.
struct CircuitSlot {
    nat: Arc<Inner>,
    node: NodeId,
}

impl Drop for CircuitSlot {
    fn drop(&mut self) {
        let mut state = self.nat.lock();
        state.circuits -= 1;
        if let Some(n) = state.circuits_by_node.get_mut(&self.node) {
            *n -= 1;
            if *n == 0 {
                state.circuits_by_node.remove(&self.node);
            }
        }
    }
}

fn take_circuit_slot(nat: &Arc<Inner>, node: NodeId) -> Result<CircuitSlot, String> {
    let limits = nat.config.relay;
    let mut state = nat.lock();
    if state.circuits >= limits.max_circuits {
        return Err(if limits.max_circuits == 0 {
            "this node does not relay".into()
        } else {
            "this relay is full; try later".into()
        });
    }
    let mine = state.circuits_by_node.get(&node).copied().unwrap_or(0);
    if mine >= limits.max_circuits_per_node {
        return Err(format!(
            "at most {} relay circuits per node",
            limits.max_circuits_per_node
        ));
    }
    state.circuits += 1;
    *state.circuits_by_node.entry(node).or_default() += 1;
    Ok(CircuitSlot {
        nat: nat.clone(),
        node,
    })
}

async fn relay(
    nat: Arc<Inner>,
    dialer: &Connection,
    mut stream: BiStream,
    target: NodeId,
) -> Result<(), WireError> {
    let from = dialer.remote_node_id();
    let (_slot, to_target) = match open_circuit(&nat, from, target).await {
        Ok(opened) => opened,
        Err(reason) => {
            refuse(&mut stream, &reason).await;
            return Ok(());
        }
    };
    wire::write_frame(&mut stream, &Frame::Accept).await?;
    info!(from = %from.short(), to = %target.short(), "relay circuit open");
    let (end, carried) = circuit::splice(stream, to_target, nat.config.relay).await;
    info!(from = %from.short(), to = %target.short(), carried, ?end, "relay circuit closed");
    if let SpliceEnd::Budget(_) = end {
        return Err(WireError::Unexpected("relay budget used up"));
    }
    Ok(())
}

/// Takes a circuit slot and asks the target to accept the circuit: on success, the slot (held for
/// the circuit's life) and the stream to the target. On failure, the reason the dialer hears.
async fn open_circuit(
    nat: &Arc<Inner>,
    from: NodeId,
    target: NodeId,
) -> Result<(CircuitSlot, BiStream), String> {
    let target_connection = registered_soon(nat, from, target).await?;
    let slot = take_circuit_slot(nat, from)?;
    match wire::ask(&target_connection, &Frame::RelayFrom { from }, ANSWER_TIME).await {
        Ok((to_target, Frame::Accept)) => Ok((slot, to_target)),
        Ok((_, Frame::Refused { reason })) => Err(format!("{} refused: {reason}", target.short())),
        _ => Err(format!("{} did not accept the circuit", target.short())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_start_together() {
        let ms = Duration::from_millis;
        // Dialer 100 ms away (RTT 200), target 20 ms away (RTT 40): the target waits 80 ms.
        assert_eq!(start_delays(ms(200), ms(40)), (ms(0), ms(80)));
        assert_eq!(start_delays(ms(40), ms(200)), (ms(80), ms(0)));
        assert_eq!(start_delays(ms(50), ms(50)), (ms(0), ms(0)));
    }

    #[test]
    fn the_observed_address_goes_first_and_the_list_stays_bounded() {
        let observed: SocketAddr = "203.0.113.5:7000".parse().unwrap();
        let many: Vec<SocketAddr> = (0..20)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 7000)))
            .chain([observed])
            .collect();
        let out = with_observed(many, observed);
        assert_eq!(out.len(), wire::MAX_CANDIDATES);
        assert_eq!(out[0], observed);
        assert_eq!(out.iter().filter(|a| **a == observed).count(), 1);
    }
}
