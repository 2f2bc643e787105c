//! The `pairs/nat/1` protocol's frames: what a node and a helper (any node it is connected to) say to
//! coordinate a hole punch or open a relay circuit.
//!
//! Every frame is a 2-byte big-endian length and a postcard-encoded [`Frame`], at most [`MAX_FRAME`]
//! bytes; the length is checked before the body is read. After a relay circuit opens, its stream carries
//! [relayed datagrams](write_datagram) instead.

use std::net::SocketAddr;

use pairs_base::NodeId;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol's ALPN.
pub const ALPN: &[u8] = b"pairs/nat/1";
/// The largest control frame, length prefix excluded.
pub const MAX_FRAME: usize = 1024;
/// The most candidate addresses one side may offer for a punch.
pub const MAX_CANDIDATES: usize = 8;
/// The largest datagram a relay circuit carries (a QUIC packet fits with room to spare).
pub const MAX_DATAGRAM: usize = 1500;

/// What one side of a punch tells the other, through the helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PunchOffer {
    /// Names the punch in the probes' USERNAME.
    pub id: u64,
    /// The key both sides sign their probes with (chosen by the dialer, random per punch).
    pub key: [u8; 16],
    /// Where the sender may be reached, best first.
    pub candidates: Vec<SocketAddr>,
}

/// A control frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// Node → helper: keep me reachable through you. Answered with [`Frame::Registered`].
    Register,
    /// Helper → node: registered; this is the address the helper sees the node at.
    Registered {
        /// The node's address as the helper observes it (its NAT's mapping, behind a NAT).
        observed: SocketAddr,
    },
    /// Dialer → helper: introduce me to `target` for a hole punch.
    Connect {
        /// Who to reach.
        target: NodeId,
        /// The dialer's half.
        offer: PunchOffer,
    },
    /// Helper → target: `from` wants to punch to you. Answered with [`Frame::Answer`] or
    /// [`Frame::Refused`].
    Introduce {
        /// The dialer.
        from: NodeId,
        /// The dialer's half, with the address the helper sees it at added.
        offer: PunchOffer,
    },
    /// Target → helper: my candidates.
    Answer {
        /// Where the target may be reached, best first.
        candidates: Vec<SocketAddr>,
    },
    /// Helper → dialer: the target's candidates (its observed address added); start probing after
    /// `delay_ms`.
    Punch {
        /// The target's candidates.
        candidates: Vec<SocketAddr>,
        /// When to start, so that both sides probe at the same moment.
        delay_ms: u32,
    },
    /// Helper → target: start probing after `delay_ms`.
    Go {
        /// When to start.
        delay_ms: u32,
    },
    /// Dialer → helper: open a relay circuit to `target`.
    Relay {
        /// Who to reach.
        target: NodeId,
    },
    /// Helper → target: `from` asks for a relay circuit. Answered with [`Frame::Accept`] or
    /// [`Frame::Refused`].
    RelayFrom {
        /// The dialer.
        from: NodeId,
    },
    /// Target → helper, then helper → dialer: the circuit is open; relayed datagrams follow.
    Accept,
    /// Any side: no, and why.
    Refused {
        /// A reason for logs and error messages.
        reason: String,
    },
}

/// Errors reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The stream failed or ended early.
    // Transparent: an error that both printed its cause and returned it as its source would show
    // the cause twice in a chain ("unexpected end of file: unexpected end of file").
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The length prefix is over the limit.
    #[error("frame of {0} bytes is over the limit of {MAX_FRAME}")]
    TooLong(usize),
    /// The body is not a frame.
    #[error("malformed frame")]
    Malformed(#[from] postcard::Error),
    /// A well-formed frame that does not belong here.
    #[error("unexpected frame: {0}")]
    Unexpected(&'static str),
}

impl Frame {
    /// The frame's bytes, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        let body = postcard::to_stdvec(self).expect("frames always serialize");
        debug_assert!(body.len() <= MAX_FRAME);
        let mut out = Vec::with_capacity(2 + body.len());
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parses a body (without its length prefix).
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        if body.len() > MAX_FRAME {
            return Err(WireError::TooLong(body.len()));
        }
        Ok(postcard::from_bytes(body)?)
    }
}

/// Reads one control frame.
pub async fn read_frame(stream: &mut (impl AsyncRead + Unpin)) -> Result<Frame, WireError> {
    let len = stream.read_u16().await? as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLong(len));
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await?;
    Frame::decode(&body)
}

/// Writes one control frame.
pub async fn write_frame(
    stream: &mut (impl AsyncWrite + Unpin),
    frame: &Frame,
) -> Result<(), WireError> {
    stream.write_all(&frame.encode()).await?;
    Ok(())
}

/// Opens a stream on `connection`, sends `frame` and reads the answer, all within `limit`.
pub(crate) async fn ask(
    connection: &crate::connection::Connection,
    frame: &Frame,
    limit: std::time::Duration,
) -> Result<(crate::stream::BiStream, Frame), WireError> {
    let exchange = async {
        let mut stream = connection
            .open_bi()
            .await
            .map_err(|e| WireError::Io(e.into()))?;
        write_frame(&mut stream, frame).await?;
        let answer = read_frame(&mut stream).await?;
        Ok((stream, answer))
    };
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| WireError::Unexpected("no answer in time"))?
}

/// Reads one relayed datagram (2-byte length, bytes); `None` at the end of the stream.
pub async fn read_datagram(
    stream: &mut (impl AsyncRead + Unpin),
) -> Result<Option<Vec<u8>>, WireError> {
    let len = match stream.read_u16().await {
        Ok(len) => len as usize,
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    if len > MAX_DATAGRAM {
        return Err(WireError::TooLong(len));
    }
    let mut datagram = vec![0; len];
    stream.read_exact(&mut datagram).await?;
    Ok(Some(datagram))
}

/// Writes one relayed datagram; datagrams over [`MAX_DATAGRAM`] are dropped (QUIC never sends them).
pub async fn write_datagram(
    stream: &mut (impl AsyncWrite + Unpin),
    datagram: &[u8],
) -> Result<(), WireError> {
    if datagram.len() > MAX_DATAGRAM {
        return Ok(());
    }
    let mut framed = Vec::with_capacity(2 + datagram.len());
    framed.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
    framed.extend_from_slice(datagram);
    stream.write_all(&framed).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pairs_base::SecretKey;

    #[test]
    fn frames_round_trip_within_the_limit() {
        let offer = PunchOffer {
            id: u64::MAX,
            key: [7; 16],
            candidates: vec!["[2001:db8::1]:65535".parse().unwrap(); MAX_CANDIDATES],
        };
        let biggest = Frame::Introduce {
            from: SecretKey::generate().node_id(),
            offer,
        };
        let bytes = biggest.encode();
        assert!(bytes.len() - 2 <= MAX_FRAME, "{} bytes", bytes.len());
        assert_eq!(Frame::decode(&bytes[2..]).unwrap(), biggest);
        assert!(matches!(
            Frame::decode(&[200, 1, 2]),
            Err(WireError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn an_overlong_prefix_is_refused_before_reading_the_body() {
        let mut bytes: &[u8] = &[0xff, 0xff, 1, 2, 3];
        assert!(matches!(
            read_frame(&mut bytes).await,
            Err(WireError::TooLong(0xffff))
        ));
        let mut bytes: &[u8] = &[0x10, 0x00];
        assert!(matches!(
            read_datagram(&mut bytes).await,
            Err(WireError::TooLong(4096))
        ));
        let mut empty: &[u8] = &[];
        assert!(read_datagram(&mut empty).await.unwrap().is_none());
    }
}
