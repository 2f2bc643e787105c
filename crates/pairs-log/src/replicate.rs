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
/// How long to keep reading for the peer's reason once writing to it failed.
const REASON_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

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
        // Tell the peer why, best effort.
        match &result {
            Err(SyncError::Protocol(reason)) => {
                let _ = writer.write_all(&Session::error_frame(reason)).await;
            }
            Err(SyncError::OtherLog) => {
                let _ = writer
                    .write_all(&Session::error_frame(crate::session::OTHER_LOG))
                    .await;
            }
            _ => {}
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
    // A peer that failed first closes its end, so our next write fails while its reason may still
    // be waiting to be read: once writing fails, read on, and report its reason if it sent one.
    let mut write_failed: Option<std::io::Error> = None;
    let reason_deadline = tokio::time::sleep(std::time::Duration::MAX);
    tokio::pin!(reason_deadline);
    loop {
        if let Some(err) = write_failed.take() {
            while session.poll_transmit()?.is_some() {}
            if !reading {
                // Both directions closed without a reason: the other side just went away.
                return Err(match err.kind() {
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                        ended_early()
                    }
                    _ => SyncError::Io(err),
                });
            }
            write_failed = Some(err);
        }
        while write_failed.is_none() && out.len() - sent < OUT_HIGH_WATER {
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
        if sent == out.len() && write_failed.is_none() {
            if let Err(err) = writer.flush().await {
                write_failed = Some(err);
                reason_deadline
                    .as_mut()
                    .reset(tokio::time::Instant::now() + REASON_WAIT);
                continue;
            }
            if session.is_finished() {
                return Ok(());
            }
            if !reading {
                return if session.is_synced() {
                    Ok(())
                } else {
                    Err(ended_early())
                };
            }
        }
        tokio::select! {
            written = writer.write(&out[sent..]), if sent < out.len() && write_failed.is_none() => {
                match written {
                    Ok(0) => return Err(SyncError::Io(std::io::ErrorKind::WriteZero.into())),
                    Ok(n) => sent += n,
                    Err(err) => {
                        out.clear();
                        sent = 0;
                        write_failed = Some(err);
                        reason_deadline
                            .as_mut()
                            .reset(tokio::time::Instant::now() + REASON_WAIT);
                    }
                }
            }
            () = &mut reason_deadline, if write_failed.is_some() => {
                return Err(SyncError::Io(write_failed.take().expect("checked")));
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

fn ended_early() -> SyncError {
    SyncError::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the other side ended before the logs were in sync",
    ))
}
