//! Relay circuits: the two ends' pump between a virtual path and the circuit's stream, and the helper's
//! splice between the two streams, within budget.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::limits::{CircuitBudget, RelayLimits};
use super::wire;
use crate::socket::VirtualPath;
use crate::stream::BiStream;

/// A circuit end with no traffic either way for this long is closed.
pub(crate) const IDLE: Duration = Duration::from_secs(60);

/// How long a circuit end may take to hand its last datagrams to the helper when it stops.
const FLUSH: Duration = Duration::from_secs(2);

/// Carries datagrams between `path` (QUIC's side) and `stream` (the circuit) until either ends,
/// nothing moves for [`IDLE`], or `stop` completes. On `stop`, what QUIC already queued (its last
/// acknowledgements and its CONNECTION_CLOSE) still goes out, and the circuit stream is finished and
/// acknowledged before the pump returns: closing the helper connection at once would lose them.
pub(crate) async fn pump(
    mut path: VirtualPath,
    stream: BiStream,
    stop: impl std::future::Future<Output = ()>,
) {
    let (mut send, mut recv) = stream.split();
    // `path` is borrowed by the outgoing half; deliveries go through its injector.
    let injector = path.injector();
    let outgoing = async {
        while let Some(datagram) = path_next(&mut path).await {
            if wire::write_datagram(&mut send, &datagram).await.is_err() {
                break;
            }
        }
        let _ = send.finish();
    };
    let incoming = async {
        loop {
            match tokio::time::timeout(IDLE, wire::read_datagram(&mut recv)).await {
                Ok(Ok(Some(datagram))) => injector.deliver(Bytes::from(datagram)),
                Ok(Ok(None)) => break,
                Ok(Err(err)) => {
                    debug!(%err, "relay circuit broke");
                    break;
                }
                Err(_) => {
                    debug!("relay circuit idle; closing");
                    break;
                }
            }
        }
    };
    let stopped = tokio::select! {
        () = outgoing => false,
        () = incoming => false,
        () = stop => true,
    };
    if stopped {
        let flush = async {
            while let Some(datagram) = path.try_next_outgoing() {
                if wire::write_datagram(&mut send, &datagram).await.is_err() {
                    return;
                }
            }
            let _ = send.finish();
            let _ = send.stopped().await;
        };
        let _ = tokio::time::timeout(FLUSH, flush).await;
    }
}

async fn path_next(path: &mut VirtualPath) -> Option<Bytes> {
    tokio::time::timeout(IDLE, path.next_outgoing())
        .await
        .unwrap_or_default()
}

/// Why a helper closed a circuit it relayed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SpliceEnd {
    /// One side finished or the stream broke.
    Closed,
    /// The byte budget ran out.
    Budget(u64),
    /// Nothing moved for [`IDLE`].
    Idle,
}

/// Copies relayed datagrams between the two ends' streams, charging both directions to one budget and
/// pacing to its rate; stops at the budget's end, when one side ends, or when idle.
pub(crate) async fn splice(a: BiStream, b: BiStream, limits: RelayLimits) -> (SpliceEnd, u64) {
    let (mut a_send, mut a_recv) = a.split();
    let (mut b_send, mut b_recv) = b.split();
    let budget = std::sync::Mutex::new(CircuitBudget::new(&limits, Instant::now()));
    let carried = std::sync::atomic::AtomicU64::new(0);
    let end = tokio::select! {
        end = copy_datagrams(&mut a_recv, &mut b_send, &budget, &carried) => end,
        end = copy_datagrams(&mut b_recv, &mut a_send, &budget, &carried) => end,
    };
    let reason: &[u8] = match end {
        SpliceEnd::Budget(_) => b"relay budget used up",
        SpliceEnd::Idle => b"relay circuit idle",
        SpliceEnd::Closed => b"",
    };
    for send in [&mut a_send, &mut b_send] {
        if reason.is_empty() {
            let _ = send.finish();
        } else {
            let _ = send.reset(1u32.into());
        }
    }
    for recv in [&mut a_recv, &mut b_recv] {
        let _ = recv.stop(0u32.into());
    }
    (end, carried.into_inner())
}

async fn copy_datagrams(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    budget: &std::sync::Mutex<CircuitBudget>,
    carried: &std::sync::atomic::AtomicU64,
) -> SpliceEnd {
    loop {
        let datagram = match tokio::time::timeout(IDLE, wire::read_datagram(from)).await {
            Err(_) => return SpliceEnd::Idle,
            Ok(Ok(Some(datagram))) => datagram,
            Ok(_) => return SpliceEnd::Closed,
        };
        let charge = budget
            .lock()
            .expect("mutex poisoned")
            .charge(datagram.len() + 2, Instant::now());
        match charge {
            Err(exhausted) => return SpliceEnd::Budget(exhausted.0),
            Ok(wait) if !wait.is_zero() => tokio::time::sleep(wait).await,
            Ok(_) => {}
        }
        if wire::write_datagram(to, &datagram).await.is_err() {
            return SpliceEnd::Closed;
        }
        carried.fetch_add(datagram.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}
