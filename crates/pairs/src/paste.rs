//! The paste protocol: one peer offers a byte stream, any number of peers fetch it, each copy
//! verified end to end.
//!
//! Over any duplex stream: the fetcher sends [`REQUEST`]; an offering peer answers [`OFFER`] and
//! then frames `len: u32 BE, bytes` (at most [`MAX_CHUNK`]), then a zero length, the BLAKE3 hash of
//! everything and its length (u64 BE). The fetcher checks both and acknowledges with one byte, so
//! the offering side knows the copy arrived whole before it exits. A peer that is not offering
//! closes the stream without answering.
//!
//! The offered bytes go through a [`Spool`] (an unnamed temporary file), so a peer that comes late
//! still gets everything, and input of any size costs no memory.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// What a fetching peer sends first.
pub const REQUEST: &[u8; 8] = b"PASTE/1?";
/// What an offering peer answers before the data.
pub const OFFER: u8 = b'D';
/// The fetcher's acknowledgement of a verified copy.
pub const ACK: u8 = b'K';
/// Largest data frame.
pub const MAX_CHUNK: usize = 1 << 20;
/// How long a fetcher waits for the offering peer to take its acknowledgement.
const ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum PasteError {
    /// The peer is not offering anything.
    #[error("peer is not offering a paste")]
    NotOffering,
    /// The peer broke the framing.
    #[error("malformed paste stream: {0}")]
    Malformed(&'static str),
    /// The bytes do not match the hash the peer sent: corrupted or tampered with.
    #[error("paste failed verification: {0}")]
    Corrupt(&'static str),
    /// The peer did not acknowledge the copy.
    #[error("peer did not confirm the paste")]
    NotConfirmed,
    /// Reading the input to offer failed.
    #[error("reading the input failed: {0}")]
    Input(String),
    /// The stream failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

#[derive(Debug, Clone, Default)]
struct SpoolState {
    len: u64,
    /// Set at the end of input: the hash, or why reading failed.
    done: Option<Result<[u8; 32], String>>,
}

/// The bytes on offer, written once by the input task and read by any number of peers at their
/// own pace. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Spool {
    file: Arc<File>,
    state: watch::Receiver<SpoolState>,
}

impl Spool {
    /// Starts copying `input` into an unnamed temporary file.
    pub fn start(mut input: mpsc::Receiver<io::Result<Bytes>>) -> io::Result<Self> {
        let file = Arc::new(tempfile::tempfile()?);
        let (tx, state) = watch::channel(SpoolState::default());
        let writer = file.clone();
        tokio::spawn(async move {
            let mut hasher = blake3::Hasher::new();
            let mut len = 0u64;
            let outcome = loop {
                match input.recv().await {
                    None => break Ok(*hasher.finalize().as_bytes()),
                    Some(Err(err)) => break Err(err.to_string()),
                    Some(Ok(chunk)) => {
                        hasher.update(&chunk);
                        let n = chunk.len() as u64;
                        let file = writer.clone();
                        let at = len;
                        let wrote =
                            tokio::task::spawn_blocking(move || file.write_all_at(&chunk, at))
                                .await
                                .expect("spool write never panics");
                        if let Err(err) = wrote {
                            break Err(format!("spool file: {err}"));
                        }
                        len += n;
                        tx.send_modify(|s| s.len = len);
                    }
                }
            };
            tx.send_modify(|s| s.done = Some(outcome));
        });
        Ok(Self { file, state })
    }

    /// Bytes spooled so far.
    pub fn len(&self) -> u64 {
        self.state.borrow().len
    }

    /// Whether nothing was spooled yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits for the end of input: the total length and hash, or why reading failed.
    pub async fn finished(&self) -> Result<(u64, [u8; 32]), PasteError> {
        let mut state = self.state.clone();
        let s = state
            .wait_for(|s| s.done.is_some())
            .await
            .map_err(|_| PasteError::Input("input task ended".into()))?;
        match s.done.clone().expect("checked") {
            Ok(hash) => Ok((s.len, hash)),
            Err(err) => Err(PasteError::Input(err)),
        }
    }
}

/// Serves one fetching peer from `spool`: waits for its request, streams everything (following the
/// input as it grows), and waits for its acknowledgement. Returns the bytes sent.
pub async fn serve<S>(stream: &mut S, spool: &Spool) -> Result<u64, PasteError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = [0u8; REQUEST.len()];
    stream.read_exact(&mut request).await?;
    if &request != REQUEST {
        return Err(PasteError::Malformed("unknown request"));
    }
    stream.write_all(&[OFFER]).await?;
    let mut state = spool.state.clone();
    let mut pos = 0u64;
    loop {
        let (len, done) = {
            let s = state
                .wait_for(|s| s.len > pos || s.done.is_some())
                .await
                .map_err(|_| PasteError::Input("input task ended".into()))?;
            (s.len, s.done.clone())
        };
        if len > pos {
            let n = (len - pos).min(MAX_CHUNK as u64) as usize;
            let file = spool.file.clone();
            let at = pos;
            let chunk = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; n];
                file.read_exact_at(&mut buf, at).map(|()| buf)
            })
            .await
            .expect("spool read never panics")?;
            stream.write_all(&(n as u32).to_be_bytes()).await?;
            stream.write_all(&chunk).await?;
            pos += n as u64;
            continue;
        }
        match done {
            Some(Ok(hash)) => {
                let mut trailer = Vec::with_capacity(4 + 32 + 8);
                trailer.extend_from_slice(&0u32.to_be_bytes());
                trailer.extend_from_slice(&hash);
                trailer.extend_from_slice(&len.to_be_bytes());
                stream.write_all(&trailer).await?;
                stream.flush().await?;
                break;
            }
            Some(Err(err)) => return Err(PasteError::Input(err)),
            None => unreachable!("woken without progress or end"),
        }
    }
    let mut ack = [0u8; 1];
    match stream.read_exact(&mut ack).await {
        Ok(_) if ack[0] == ACK => {
            // Our end of the stream tells the fetcher its acknowledgement arrived.
            let _ = stream.shutdown().await;
            Ok(pos)
        }
        _ => Err(PasteError::NotConfirmed),
    }
}

/// Fetches a paste: sends the request, hands each verified-so-far chunk to `sink` as it arrives,
/// checks length and hash at the end, and acknowledges. Returns the length.
///
/// Chunks reach `sink` before the final check (so output streams); a failed check is an error the
/// caller must report, since the bytes already passed on are not the paste.
pub async fn fetch<S>(
    stream: &mut S,
    sink: impl FnMut(Bytes) -> Result<(), io::Error>,
) -> Result<u64, PasteError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    request(stream).await?;
    receive(stream, sink).await
}

/// The first half of [`fetch`]: asks for the paste and waits until the peer says it offers one.
/// Lets a caller talking to several peers pick one before any data flows.
pub async fn request<S>(stream: &mut S) -> Result<(), PasteError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(REQUEST).await?;
    stream.flush().await?;
    let mut answer = [0u8; 1];
    match stream.read_exact(&mut answer).await {
        Ok(_) if answer[0] == OFFER => Ok(()),
        Ok(_) => Err(PasteError::Malformed("unknown answer")),
        Err(_) => Err(PasteError::NotOffering),
    }
}

/// The second half of [`fetch`], after [`request`] succeeded.
pub async fn receive<S>(
    stream: &mut S,
    mut sink: impl FnMut(Bytes) -> Result<(), io::Error>,
) -> Result<u64, PasteError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    loop {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 {
            break;
        }
        if len > MAX_CHUNK {
            return Err(PasteError::Malformed("chunk over the limit"));
        }
        let mut chunk = vec![0u8; len];
        stream.read_exact(&mut chunk).await?;
        hasher.update(&chunk);
        total += len as u64;
        sink(Bytes::from(chunk))?;
    }
    let mut trailer = [0u8; 40];
    stream.read_exact(&mut trailer).await?;
    if trailer[32..] != total.to_be_bytes() {
        return Err(PasteError::Corrupt("length differs"));
    }
    if trailer[..32] != *hasher.finalize().as_bytes() {
        return Err(PasteError::Corrupt("hash differs"));
    }
    stream.write_all(&[ACK]).await?;
    stream.shutdown().await?;
    // Wait (briefly) for the offering peer to end its side, which it does once it has read the
    // acknowledgement: leaving at once could close the connection with it still unsent.
    let mut rest = [0u8; 1];
    let _ = tokio::time::timeout(ACK_WAIT, stream.read(&mut rest)).await;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(chunks: Vec<&'static [u8]>) -> mpsc::Receiver<io::Result<Bytes>> {
        let (tx, rx) = mpsc::channel(chunks.len() + 1);
        for c in chunks {
            tx.try_send(Ok(Bytes::from_static(c))).unwrap();
        }
        rx
    }

    #[tokio::test]
    async fn a_paste_round_trips_over_any_duplex_stream() {
        let spool = Spool::start(input(vec![b"hello ", b"world"])).unwrap();
        let (mut a, mut b) = tokio::io::duplex(64);
        let server = tokio::spawn(async move { serve(&mut a, &spool).await });
        let mut got = Vec::new();
        let n = fetch(&mut b, |c| {
            got.extend_from_slice(&c);
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(n, 11);
        assert_eq!(got, b"hello world");
        assert_eq!(server.await.unwrap().unwrap(), 11);
    }

    #[tokio::test]
    async fn a_tampered_paste_is_detected() {
        // A fake offer whose data does not match its hash.
        let (mut a, mut b) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            let mut req = [0u8; 8];
            a.read_exact(&mut req).await.unwrap();
            let mut out = vec![OFFER];
            out.extend_from_slice(&3u32.to_be_bytes());
            out.extend_from_slice(b"abc");
            out.extend_from_slice(&0u32.to_be_bytes());
            out.extend_from_slice(blake3::hash(b"abd").as_bytes());
            out.extend_from_slice(&3u64.to_be_bytes());
            a.write_all(&out).await.unwrap();
            let _ = a.read_u8().await;
        });
        let err = fetch(&mut b, |_| Ok(())).await.unwrap_err();
        assert!(matches!(err, PasteError::Corrupt(_)), "{err}");
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_before_allocation() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            let mut req = [0u8; 8];
            a.read_exact(&mut req).await.unwrap();
            let mut out = vec![OFFER];
            out.extend_from_slice(&u32::MAX.to_be_bytes());
            a.write_all(&out).await.unwrap();
            let _ = a.read_u8().await;
        });
        let err = fetch(&mut b, |_| Ok(())).await.unwrap_err();
        assert!(matches!(err, PasteError::Malformed(_)), "{err}");
    }

    #[tokio::test]
    async fn a_peer_that_is_not_offering_is_told_apart() {
        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        let err = fetch(&mut b, |_| Ok(())).await.unwrap_err();
        assert!(
            matches!(err, PasteError::NotOffering | PasteError::Io(_)),
            "{err}"
        );
    }
}
