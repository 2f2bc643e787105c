//! The pipe protocol: one bidirectional byte stream between two nodes, like netcat but authenticated.
//!
//! The dialer opens one stream and writes [`HELLO`] so the listener sees the stream at once, even before
//! there is data. Then each side copies its input to the stream and the stream to its output; the two
//! directions end independently. The connection is closed with [`DONE`] by whichever side first has both
//! read the peer's end of stream and had all its own data acknowledged; the other side treats that close
//! as success, because it is only sent once everything it wrote was received.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use pairs_net::{
    BiStream, Connection, ConnectionError, ReadError, ReadExactError, RecvStream, SendStream,
    StoppedError, WriteError,
};
use tokio::sync::mpsc;

/// ALPN of the pipe protocol.
pub const ALPN: &[u8] = b"pairs/pipe/1";
/// First byte on the stream: the protocol version.
pub const HELLO: u8 = 1;
/// Application close code meaning "both directions completed".
pub const DONE: u32 = 0;
/// Application close code meaning "stopped before the end" (Ctrl-C, SIGTERM): the peer learns at
/// once instead of waiting for the connection to time out.
pub const INTERRUPTED: u32 = 2;
/// Most bytes handed to the output at once.
const MAX_CHUNK: usize = 1 << 20;

/// What the pipe moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transferred {
    /// Bytes sent to the peer.
    pub sent: u64,
    /// Bytes received from the peer.
    pub received: u64,
    /// BLAKE3 of everything sent (what `b3sum` prints for the same bytes), so both sides can
    /// compare what went through.
    pub sent_blake3: blake3::Hash,
    /// BLAKE3 of everything received.
    pub received_blake3: blake3::Hash,
}

/// Bytes moved so far, readable while [`run_metered`] runs (for a progress line).
#[derive(Debug, Default, Clone)]
pub struct Meter {
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
}

impl Meter {
    /// Bytes sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// Why a pipe ended early.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    /// The peer does not speak this version of the protocol.
    #[error("the peer sent an unknown pipe header {0:#04x} (a different pairs version?)")]
    BadHello(u8),
    /// Reading our input failed.
    #[error("reading input failed: {0}")]
    Input(io::Error),
    /// Our output went away (e.g. the reader of stdout exited).
    #[error("output closed")]
    OutputClosed,
    /// The peer stopped reading what we send.
    #[error("the peer stopped reading (code {0})")]
    PeerStopped(u64),
    /// The peer abandoned its direction.
    #[error("the peer reset its stream (code {0})")]
    PeerReset(u64),
    /// The peer was stopped (Ctrl-C, a signal) before both directions completed.
    #[error("the peer was stopped before the transfer ended")]
    PeerInterrupted,
    /// The peer's node answered with a stateless reset: it no longer knows the connection (it was
    /// stopped and its close was lost, e.g. dropped by a receive buffer full of data, or it restarted).
    #[error("the peer stopped: its node no longer knows this connection")]
    PeerGone,
    /// Nothing came from the peer for the idle timeout: it vanished, or the path broke.
    #[error("the peer stopped answering (it was killed, lost its network, or the path broke)")]
    PeerVanished,
    /// The connection ended before both directions completed.
    #[error("connection lost: {0}")]
    ConnectionLost(ConnectionError),
}

impl From<ConnectionError> for PipeError {
    fn from(err: ConnectionError) -> Self {
        match err {
            ConnectionError::ApplicationClosed(close) if close.error_code == INTERRUPTED.into() => {
                Self::PeerInterrupted
            }
            ConnectionError::TimedOut => Self::PeerVanished,
            ConnectionError::Reset => Self::PeerGone,
            other => Self::ConnectionLost(other),
        }
    }
}

/// Dialer side: opens the pipe stream on `connection`.
pub async fn open(connection: &Connection) -> Result<BiStream, PipeError> {
    let mut stream = connection.open_bi().await.map_err(PipeError::from)?;
    stream.send.write_all(&[HELLO]).await.map_err(write_error)?;
    Ok(stream)
}

/// Listener side: accepts the pipe stream on `connection` and checks its header.
pub async fn accept(connection: &Connection) -> Result<BiStream, PipeError> {
    let mut stream = connection.accept_bi().await.map_err(PipeError::from)?;
    let mut hello = [0u8; 1];
    stream
        .recv
        .read_exact(&mut hello)
        .await
        .map_err(|e| match e {
            ReadExactError::FinishedEarly(_) => PipeError::BadHello(0),
            ReadExactError::ReadError(e) => read_error(e),
        })?;
    if hello[0] != HELLO {
        stream.recv.stop(1u32.into()).ok();
        connection.close(1, b"unknown pipe header");
        return Err(PipeError::BadHello(hello[0]));
    }
    Ok(stream)
}

/// Runs both directions until each completes, then closes the connection.
///
/// `input` yields what to send (ending the channel ends our direction); everything received is passed
/// to `output`, in order.
pub async fn run(
    connection: &Connection,
    stream: BiStream,
    input: &mut mpsc::Receiver<io::Result<Bytes>>,
    output: &mpsc::Sender<Bytes>,
) -> Result<Transferred, PipeError> {
    run_metered(connection, stream, input, output, &Meter::default()).await
}

/// [`run`], counting the bytes moved in `meter` as they go.
pub async fn run_metered(
    connection: &Connection,
    stream: BiStream,
    input: &mut mpsc::Receiver<io::Result<Bytes>>,
    output: &mpsc::Sender<Bytes>,
    meter: &Meter,
) -> Result<Transferred, PipeError> {
    let (send, recv) = stream.split();
    let ((sent, sent_blake3), (received, received_blake3)) = tokio::try_join!(
        send_all(send, input, &meter.sent),
        receive_all(recv, output, &meter.received)
    )?;
    connection.close(DONE, b"done");
    Ok(Transferred {
        sent,
        received,
        sent_blake3,
        received_blake3,
    })
}

async fn send_all(
    mut send: SendStream,
    input: &mut mpsc::Receiver<io::Result<Bytes>>,
    meter: &AtomicU64,
) -> Result<(u64, blake3::Hash), PipeError> {
    let mut sent = 0u64;
    let mut hasher = blake3::Hasher::new();
    while let Some(chunk) = input.recv().await {
        let chunk = chunk.map_err(PipeError::Input)?;
        sent += chunk.len() as u64;
        hasher.update(&chunk);
        send.write_chunk(chunk).await.map_err(write_error)?;
        meter.store(sent, Ordering::Relaxed);
    }
    let sent = (sent, hasher.finalize());
    send.finish().map_err(|_| PipeError::PeerStopped(0))?;
    match send.stopped().await {
        Ok(None) => Ok(sent),
        Ok(Some(code)) => Err(PipeError::PeerStopped(code.into_inner())),
        Err(StoppedError::ConnectionLost(e)) if is_done(&e) => Ok(sent),
        Err(StoppedError::ConnectionLost(e)) => Err(e.into()),
        Err(e) => Err(PipeError::Input(io::Error::other(e))),
    }
}

async fn receive_all(
    mut recv: RecvStream,
    output: &mpsc::Sender<Bytes>,
    meter: &AtomicU64,
) -> Result<(u64, blake3::Hash), PipeError> {
    let mut received = 0u64;
    let mut hasher = blake3::Hasher::new();
    while let Some(chunk) = recv.read_chunk(MAX_CHUNK, true).await.map_err(read_error)? {
        received += chunk.bytes.len() as u64;
        meter.store(received, Ordering::Relaxed);
        hasher.update(&chunk.bytes);
        if output.send(chunk.bytes).await.is_err() {
            recv.stop(2u32.into()).ok();
            return Err(PipeError::OutputClosed);
        }
    }
    Ok((received, hasher.finalize()))
}

fn is_done(err: &ConnectionError) -> bool {
    matches!(err, ConnectionError::ApplicationClosed(close) if close.error_code == DONE.into())
}

fn write_error(err: WriteError) -> PipeError {
    match err {
        WriteError::Stopped(code) => PipeError::PeerStopped(code.into_inner()),
        WriteError::ConnectionLost(e) => e.into(),
        other => PipeError::Input(io::Error::other(other)),
    }
}

fn read_error(err: ReadError) -> PipeError {
    match err {
        ReadError::Reset(code) => PipeError::PeerReset(code.into_inner()),
        ReadError::ConnectionLost(e) => e.into(),
        other => PipeError::Input(io::Error::other(other)),
    }
}
