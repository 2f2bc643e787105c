//! A peer met in a topic, and the streams opened with it under that topic.

use std::io;
use std::net::SocketAddr;

use pairs_base::NodeId;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::membership::Tag;
use crate::connection::Connection;
use crate::stream::BiStream;

/// First byte of a bidirectional stream that belongs to a topic; the opener's tag follows.
pub(crate) const TOPIC_STREAM: u8 = 1;

/// What a topic reports to whoever joined it.
#[derive(Debug)]
pub enum TopicEvent {
    /// A peer proved it is in the topic; streams with it under this topic go through the handle.
    Joined(TopicPeer),
    /// The peer left the topic or its connection ended.
    Left(NodeId),
}

/// A peer in a topic: open streams to it, accept the streams it opens under this topic.
///
/// Several topics shared with one peer share one connection; each stream names its topic (by a tag
/// only the two of them can read), so streams reach the right [`TopicPeer`].
#[derive(Debug)]
pub struct TopicPeer {
    pub(crate) connection: Connection,
    pub(crate) our_tag: Tag,
    pub(crate) initiator: bool,
    pub(crate) incoming: mpsc::Receiver<BiStream>,
}

impl TopicPeer {
    /// The peer's node id, proven by the handshake.
    pub fn node_id(&self) -> NodeId {
        self.connection.remote_node_id()
    }

    /// The peer's current address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.connection.remote_addr()
    }

    /// The connection, shared with the other topics this peer and we are both in.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Whether we dialed the connection. Exactly one side of a pair is the initiator, which is how
    /// [`TopicPeer::stream`] decides who opens.
    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// Opens a stream to the peer under this topic.
    pub async fn open_bi(&self) -> io::Result<BiStream> {
        let mut stream = self
            .connection
            .open_bi()
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::ConnectionAborted, e))?;
        let mut header = [0u8; 1 + super::membership::TAG_LEN];
        header[0] = TOPIC_STREAM;
        header[1..].copy_from_slice(&self.our_tag);
        stream.write_all(&header).await?;
        Ok(stream)
    }

    /// Waits for the peer to open a stream under this topic. `None` once the peer left.
    pub async fn accept_bi(&mut self) -> Option<BiStream> {
        self.incoming.recv().await
    }

    /// One duplex stream with this peer for this topic, like a socket: the initiator opens it, the
    /// other side accepts it. Both sides calling this get the two ends of the same stream.
    pub async fn stream(&mut self) -> io::Result<BiStream> {
        if self.initiator {
            self.open_bi().await
        } else {
            self.accept_bi().await.ok_or_else(|| {
                io::Error::new(io::ErrorKind::ConnectionAborted, "peer left the topic")
            })
        }
    }
}
