//! A bidirectional byte stream: one QUIC stream seen as `AsyncRead + AsyncWrite`.
//!
//! Each direction closes on its own: `shutdown()` (or [`BiStream::finish`]) ends what we send, and the
//! peer may keep sending until it finishes too. Reading returns EOF only when the peer finished.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use quinn::{ReadError, ReadExactError, RecvStream, SendStream, StoppedError, WriteError};

/// Both halves of a QUIC bidirectional stream.
#[derive(Debug)]
pub struct BiStream {
    /// The half we write to.
    pub send: SendStream,
    /// The half we read from.
    pub recv: RecvStream,
}

impl BiStream {
    /// Joins two halves.
    pub fn new(send: SendStream, recv: RecvStream) -> Self {
        Self { send, recv }
    }

    /// Splits into the sending and receiving halves, to drive them from separate tasks.
    pub fn split(self) -> (SendStream, RecvStream) {
        (self.send, self.recv)
    }

    /// Ends our direction; the peer reads EOF after the data already written.
    pub fn finish(&mut self) -> io::Result<()> {
        self.send
            .finish()
            .map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e))
    }
}

impl AsyncRead for BiStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for BiStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.send).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.send).poll_shutdown(cx)
    }
}
