//! Standard input and output as channels of byte chunks, each served by its own thread.
//!
//! Blocking threads keep the async runtime free and avoid copies: each chunk read from stdin is handed
//! to QUIC as is, and each chunk QUIC delivers is written to stdout as is. Chunks are written at once,
//! so interactive use sees every line as it arrives.

use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::AsFd as _;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

/// Most bytes read from stdin at once.
const CHUNK: usize = 256 * 1024;
/// Chunks buffered between a thread and the network, per direction.
const QUEUE: usize = 16;

/// Starts reading stdin; the channel ends at end of input.
pub fn stdin_chunks() -> io::Result<mpsc::Receiver<io::Result<Bytes>>> {
    let mut input = File::from(io::stdin().as_fd().try_clone_to_owned()?);
    let (tx, rx) = mpsc::channel(QUEUE);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut buf = BytesMut::with_capacity(CHUNK * 4);
            loop {
                buf.resize(CHUNK, 0);
                match input.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.blocking_send(Ok(buf.split().freeze())).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        })?;
    Ok(rx)
}

/// A running stdout writer: send chunks, then [`StdoutSink::finish`] to flush and learn of errors.
pub struct StdoutSink {
    tx: mpsc::Sender<Bytes>,
    thread: std::thread::JoinHandle<io::Result<()>>,
}

impl StdoutSink {
    /// Starts the writer thread.
    pub fn start() -> io::Result<Self> {
        let mut output = File::from(io::stdout().as_fd().try_clone_to_owned()?);
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || {
                while let Some(chunk) = rx.blocking_recv() {
                    output.write_all(&chunk)?;
                }
                output.flush()
            })?;
        Ok(Self { tx, thread })
    }

    /// Where to send chunks. The channel closes if writing fails (e.g. the reader went away).
    pub fn sender(&self) -> &mpsc::Sender<Bytes> {
        &self.tx
    }

    /// Waits until everything sent was written.
    pub fn finish(self) -> io::Result<()> {
        drop(self.tx);
        self.thread.join().expect("stdout thread never panics")
    }
}
