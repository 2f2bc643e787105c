//! The async driver: moves bytes between a [`Session`] and any duplex byte stream.
//!
//! Reads and writes proceed concurrently, so two peers sending large batches at each other never
//! deadlock on full buffers.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast;

use crate::session::{Session, SyncError, SyncStats};
use crate::store::Log;
use crate::wire::FrameDecoder;

/// Tags stored entries with the session they came from (0 is local appends).
static NEXT_ORIGIN: AtomicU64 = AtomicU64::new(1);
/// Outgoing bytes buffered before we stop asking the session for more.
const OUT_HIGH_WATER: usize = 1 << 20;

impl Log {
    /// Replicates with the peer at the other end of `stream` until both hold the union of their
    /// entries; with `live`, keeps pushing and receiving new entries until the stream ends.
    pub async fn replicate<S>(&self, stream: S, live: bool) -> Result<SyncStats, SyncError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let origin = NEXT_ORIGIN.fetch_add(1, Ordering::Relaxed);
        let mut session = Session::new(self.clone(), live, origin);
        let (mut reader, mut writer) = tokio::io::split(stream);
        let result = drive(&mut session, self, &mut reader, &mut writer).await;
        if let Err(SyncError::Protocol(reason)) = &result {
            // Tell the peer why, best effort.
            let _ = writer.write_all(&Session::error_frame(reason)).await;
        }
        let _ = writer.shutdown().await;
        result.map(|()| session.stats())
    }
}

async fn drive<R, W>(
    session: &mut Session,
    log: &Log,
    reader: &mut R,
    writer: &mut W,
) -> Result<(), SyncError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut live = log.subscribe();
    let mut decoder = FrameDecoder::default();
    let mut out: Vec<u8> = Vec::new();
    let mut sent = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let mut reading = true;
    loop {
        while out.len() - sent < OUT_HIGH_WATER {
            match session.poll_transmit()? {
                Some(frame) => {
                    if sent == out.len() {
                        out.clear();
                        sent = 0;
                    }
                    out.extend_from_slice(&frame);
                }
                None => break,
            }
        }
        if sent == out.len() {
            writer.flush().await?;
            if session.is_finished() {
                return Ok(());
            }
            if !reading {
                return if session.is_synced() {
                    Ok(())
                } else {
                    Err(SyncError::Io(std::io::ErrorKind::UnexpectedEof.into()))
                };
            }
        }
        tokio::select! {
            written = writer.write(&out[sent..]), if sent < out.len() => {
                match written? {
                    0 => return Err(SyncError::Io(std::io::ErrorKind::WriteZero.into())),
                    n => sent += n,
                }
            }
            read = reader.read(&mut buf), if reading => {
                let n = read?;
                if n == 0 {
                    reading = false;
                    if decoder.buffered() > 0 {
                        return Err(SyncError::Protocol("truncated frame".into()));
                    }
                } else {
                    decoder.push(&buf[..n]);
                    while let Some(frame) = decoder
                        .next_frame()
                        .map_err(|e| SyncError::Protocol(e.into()))?
                    {
                        session.handle_frame(&frame)?;
                    }
                }
            }
            applied = live.recv() => match applied {
                Ok(applied) => session.on_applied(&applied)?,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // Announcements were lost: end rather than silently diverge; a new session
                    // reconciles everything.
                    return Err(SyncError::Io(std::io::Error::other(format!(
                        "live replication fell behind by {missed} batches; reconnect to catch up"
                    ))));
                }
                Err(broadcast::error::RecvError::Closed) => {}
            },
        }
    }
}
