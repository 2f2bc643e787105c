//! The local control API: how `pairs` commands talk to a running node.
//!
//! A node that owns a data directory listens on a Unix socket in it ([`SOCKET_FILE`], mode 0600,
//! and only connections from the same user are served). Commands connect to it when it is there,
//! and otherwise run an offline node in their own process and speak the same protocol to it over an
//! in-memory pipe, so their output is the same either way.
//!
//! The protocol: frames of a 4-byte big-endian length, a version byte ([`VERSION`]) and a postcard
//! body. The client sends a [`Request`]; the node answers with one [`Response`], or a stream of
//! them for [`Request::Entries`] with `follow`. After [`Response::Replicating`] the connection
//! carries the log protocol: the client's bytes raw (their end is the client's half-close), the
//! node's in [`Response::ReplicateData`] frames, then the outcome ([`Response::Synced`] or
//! [`Response::Error`]), so the command reports what the node's replication came to. Every frame is bounded ([`MAX_REQUEST`], [`MAX_RESPONSE`]);
//! a malformed or oversized request gets a [`Response::Error`] and the connection closes.

pub mod client;
pub mod server;

use crate::node::GetProgress;
use pairs_base::NodeId;
use pairs_blobs::Hash;
use pairs_log::entry::EntrySignature;
use pairs_log::{Entry, EntryBody, EntryId, LogId, Payload};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

pub use client::{Client, Followed};
pub use server::ControlServer;

/// The control socket's file name in the data directory.
pub const SOCKET_FILE: &str = "node.sock";
/// The lock a node serving the control socket holds, so two never serve one data directory.
pub const LOCK_FILE: &str = "node.lock";
/// The protocol version, first byte of every frame body.
pub const VERSION: u8 = 1;
/// Largest request frame (an append batch): 16 MiB.
pub const MAX_REQUEST: usize = 16 << 20;
/// Largest response frame: 64 MiB.
pub const MAX_RESPONSE: usize = 64 << 20;
/// Entries sent in one [`Response::Entries`] frame at most.
pub const ENTRIES_PER_FRAME: usize = 1024;

/// What a command asks of the node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// The node's id, ticket, connections and logs.
    Status,
    /// Create a log owned by a fresh key; answered with [`Response::Log`].
    LogNew,
    /// Append entries in one commit; answered with [`Response::Appended`] once committed.
    Append {
        /// The log.
        log: LogId,
        /// The entries.
        payloads: Vec<Payload>,
    },
    /// Every entry, then [`Response::End`]; with `follow`, new entries as they commit, until the
    /// client hangs up ([`Response::CaughtUp`] between what was held and what is new).
    Entries {
        /// The log.
        log: LogId,
        /// Keep sending new entries.
        follow: bool,
    },
    /// The log's heads.
    Heads {
        /// The log.
        log: LogId,
    },
    /// Size, heads, writers and forks.
    Info {
        /// The log.
        log: LogId,
    },
    /// One key of the log's map view.
    MapGet {
        /// The log.
        log: LogId,
        /// The key.
        key: Vec<u8>,
    },
    /// Every key and value of the log's map view.
    MapList {
        /// The log.
        log: LogId,
    },
    /// Admit (`add`) or remove a writer.
    Writer {
        /// The log.
        log: LogId,
        /// The writer.
        writer: NodeId,
        /// Admit, or remove.
        add: bool,
    },
    /// Share the log on the swarm (and remember it across restarts); also connect to these peers.
    Share {
        /// The log.
        log: LogId,
        /// Node tickets or `host:port`.
        peers: Vec<String>,
    },
    /// Stop sharing the log.
    Unshare {
        /// The log.
        log: LogId,
    },
    /// Dial a node (its ticket) and sync the log with it once.
    SyncOnce {
        /// The log.
        log: LogId,
        /// The peer's node ticket.
        peer: String,
    },
    /// Replicate the log over this connection: after [`Response::Replicating`], the client sends
    /// the log protocol raw and the node answers with [`Response::ReplicateData`] frames, then
    /// [`Response::Synced`] or [`Response::Error`].
    Replicate {
        /// The log.
        log: LogId,
        /// Keep going after the initial sync, until the stream ends.
        live: bool,
    },
    /// Add files or directories (absolute paths) and share them; answered with
    /// [`Response::BlobAdded`].
    BlobAdd {
        /// What to add.
        paths: Vec<std::path::PathBuf>,
        /// Copy into the store instead of serving the files where they are.
        copy: bool,
        /// Also share it on the swarm (and keep sharing it across restarts).
        share: bool,
        /// Always a collection keeping the names (what `pairs send` sends), even for one file.
        named: bool,
    },
    /// Every blob in the store; answered with [`Response::Blobs`].
    BlobList,
    /// Stop sharing a blob and forget it (a referenced file is left alone).
    BlobRemove {
        /// The blob.
        hash: Hash,
    },
    /// Copy a complete blob to a file (absolute path).
    BlobExport {
        /// The blob.
        hash: Hash,
        /// Where to.
        out: std::path::PathBuf,
    },
    /// Fetch what a blob ticket (or a bare hash) names to `out` (absolute path): answered with
    /// [`Response::BlobProgress`] frames, then [`Response::BlobDone`].
    BlobGet {
        /// A blob ticket, a hash, or a share ticket.
        ticket: String,
        /// Where to.
        out: std::path::PathBuf,
        /// For a share: the paths to fetch (all if empty).
        paths: Vec<String>,
        /// For a share: the version (its log's first N entries; the latest if None).
        version: Option<usize>,
    },
    /// Publish a folder as a new share (`ticket` None), or keep it in step with the share a ticket
    /// names; the node keeps it live, across restarts. Answered with [`Response::ShareStarted`].
    ShareStart {
        /// The folder (absolute path).
        dir: std::path::PathBuf,
        /// The share to follow, if not a new one.
        ticket: Option<String>,
        /// The most the folder takes from a followed share.
        quota: crate::share::Quota,
    },
    /// The folders kept in step; answered with [`Response::Shares`].
    ShareList,
    /// Stop keeping a share's folder in step.
    ShareStop {
        /// The share.
        log: LogId,
    },
    /// A share's files at a version; answered with [`Response::ShareFiles`].
    ShareFiles {
        /// The share ticket.
        ticket: String,
        /// The version (the latest if None).
        version: Option<usize>,
    },
    /// A share's versions; answered with [`Response::ShareHistory`].
    ShareHistory {
        /// The share ticket.
        ticket: String,
    },
    /// What changed between two versions; answered with [`Response::ShareDiff`].
    ShareDiff {
        /// The share ticket.
        ticket: String,
        /// From this version.
        from: usize,
        /// To this one (the latest if None).
        to: Option<usize>,
    },
    /// One entry, answered with [`Response::Entries`] holding it.
    Entry {
        /// The log.
        log: LogId,
        /// The entry.
        id: EntryId,
    },
}

/// What the node answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// The request failed; the text says why and what to do.
    Error(String),
    /// Done.
    Ok,
    /// The node's state.
    Status(NodeStatus),
    /// A log (the one created).
    Log(LogId),
    /// The new entries' ids, committed.
    Appended(Vec<EntryId>),
    /// Entries, in causal order (then in commit order, when following).
    Entries(Vec<WireEntry>),
    /// No more entries (without `follow`).
    End,
    /// Heads.
    Heads(Vec<EntryId>),
    /// Size, heads, writers, forks.
    Info(LogInfo),
    /// A map value, if the key is set.
    Value(Option<Vec<u8>>),
    /// Map keys and values.
    Map(Vec<(Vec<u8>, Vec<u8>)>),
    /// A sync ended.
    Synced {
        /// Entries received from the peer.
        received: u64,
        /// Entries sent to it.
        sent: u64,
        /// Entries in the log now.
        entries: u64,
    },
    /// From now on the connection carries the log protocol (see [`Request::Replicate`]).
    Replicating,
    /// What [`Request::BlobAdd`] added.
    BlobAdded(BlobAdded),
    /// The blob store's contents.
    Blobs(Vec<BlobRow>),
    /// A fetch under way.
    BlobProgress(GetProgress),
    /// A fetch finished.
    BlobDone(GetProgress),
    /// A folder is kept in step with a share.
    ShareStarted {
        /// The share.
        log: LogId,
        /// Its ticket, naming this node.
        ticket: String,
    },
    /// The folders kept in step.
    Shares(Vec<ShareRow>),
    /// A share's files.
    ShareFiles(ShareFiles),
    /// A share's versions, oldest first.
    ShareHistory(Vec<crate::share::model::VersionSummary>),
    /// What changed between two versions.
    ShareDiff(crate::share::model::Diff),
    /// Log protocol bytes from the node, during a [`Request::Replicate`].
    ReplicateData(Vec<u8>),
    /// With `follow`: every entry held when the stream started has been sent; what follows is
    /// new. (Added last: earlier variants keep their encoding.)
    CaughtUp,
}

/// One folder of [`Response::Shares`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareRow {
    /// The share.
    pub log: LogId,
    /// Its ticket, naming this node.
    pub ticket: String,
    /// What the folder is doing.
    pub status: crate::share::FolderStatus,
}

/// A share's files at a version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareFiles {
    /// The version shown (entries of the log folded).
    pub version: usize,
    /// Files, in path order.
    pub files: Vec<ShareFile>,
}

/// One file of a share.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareFile {
    /// Path in the share.
    pub path: String,
    /// Bytes (0 for a link).
    pub size: u64,
    /// Content hash (none for a link).
    pub hash: Option<Hash>,
    /// The link's target, for a link.
    pub link: Option<String>,
    /// The executable bit.
    pub executable: bool,
    /// A conflict copy (a concurrent version of another path).
    pub conflict: bool,
}

impl ShareFiles {
    /// The files of a tree.
    pub fn of(tree: &crate::share::model::Tree) -> ShareFiles {
        use crate::share::model::FileState;
        let files = tree
            .shown()
            .into_iter()
            .map(|(path, s)| {
                let (size, hash, link, executable) = match s.version.state {
                    FileState::File {
                        hash,
                        size,
                        executable,
                        ..
                    } => (size, Some(Hash(hash)), None, executable),
                    FileState::Symlink { target } => (0, None, Some(target), false),
                    FileState::Deleted => (0, None, None, false),
                };
                ShareFile {
                    path,
                    size,
                    hash,
                    link,
                    executable,
                    conflict: s.conflict,
                }
            })
            .collect();
        ShareFiles {
            version: tree.entries,
            files,
        }
    }
}

/// What [`Request::BlobAdd`] answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobAdded {
    /// The blob (the collection's hash, for a directory or several paths).
    pub hash: Hash,
    /// Whether it is a collection.
    pub collection: bool,
    /// Bytes of content.
    pub size: u64,
    /// Files.
    pub files: usize,
    /// The blob ticket naming this node.
    pub ticket: String,
}

/// One blob of [`Response::Blobs`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobRow {
    /// The blob.
    pub hash: Hash,
    /// Size in bytes.
    pub size: u64,
    /// Bytes held.
    pub held: u64,
    /// Shared on the swarm.
    pub shared: bool,
}

/// An entry as the control API carries it: its body and signature (the id is recomputed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireEntry {
    /// The body.
    pub body: EntryBody,
    /// The signature, unless a later entry seals it.
    pub signature: Option<EntrySignature>,
}

impl From<&Entry> for WireEntry {
    fn from(entry: &Entry) -> Self {
        Self {
            body: entry.body().clone(),
            signature: entry.signature(),
        }
    }
}

impl WireEntry {
    /// The entry (its id recomputed from the body).
    pub fn into_entry(self) -> Entry {
        Entry::from_parts(self.body, self.signature)
    }
}

/// What [`Request::Info`] answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogInfo {
    /// The log.
    pub log: LogId,
    /// Entries held.
    pub entries: u64,
    /// Heads.
    pub heads: Vec<EntryId>,
    /// Writers besides the owner, and whether each was removed.
    pub writers: Vec<(NodeId, bool)>,
    /// Forks: (author, sequence number, first entry, second entry).
    pub forks: Vec<(NodeId, u64, EntryId, EntryId)>,
    /// Shared on the swarm.
    pub shared: bool,
    /// Peers replicating it now.
    pub peers: Vec<NodeId>,
}

/// What [`Request::Status`] answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's id.
    pub id: NodeId,
    /// Its ticket (`None` offline).
    pub ticket: Option<String>,
    /// The process id.
    pub pid: u32,
    /// Connected peers.
    pub peers: Vec<NodeId>,
    /// Live connections.
    pub connections: u64,
    /// Every log held: id, entries, shared, peers replicating it.
    pub logs: Vec<LogStatus>,
    /// Where the HTTP gateway listens, if the node serves it.
    pub gateway: Option<std::net::SocketAddr>,
}

/// One log in [`NodeStatus`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogStatus {
    /// The log.
    pub log: LogId,
    /// Entries held (`None` when not open in the node).
    pub entries: Option<u64>,
    /// Shared on the swarm.
    pub shared: bool,
    /// Peers replicating it now.
    pub peers: Vec<NodeId>,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The length prefix is over the limit.
    #[error("a frame of {0} bytes is over the limit of {1} bytes")]
    TooLarge(usize, usize),
    /// The version byte is not ours.
    #[error(
        "control protocol version {0} is not supported (this is version {VERSION}): is the running node another pairs version?"
    )]
    Version(u8),
    /// The body does not decode.
    #[error("malformed frame: {0}")]
    Malformed(postcard::Error),
}

/// Writes one frame.
pub async fn write_frame<W, T>(writer: &mut W, message: &T) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = postcard::to_allocvec(message).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len() + 1).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.push(VERSION);
    frame.extend_from_slice(&body);
    writer.write_all(&frame).await?;
    writer.flush().await
}

/// Reads one frame of at most `max` bytes; `None` at a clean end of stream.
pub async fn read_frame<R, T>(reader: &mut R, max: usize) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: serde::de::DeserializeOwned,
{
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(FrameError::TooLarge(len, max));
    }
    if len == 0 {
        return Err(FrameError::Version(0));
    }
    // Memory grows with the bytes that arrive, not with the length claimed: a peer that announces
    // a large frame and sends nothing holds no more than the first chunk.
    let mut body = Vec::with_capacity(len.min(64 * 1024));
    (&mut *reader)
        .take(len as u64)
        .read_to_end(&mut body)
        .await?;
    if body.len() < len {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    if body[0] != VERSION {
        return Err(FrameError::Version(body[0]));
    }
    postcard::from_bytes(&body[1..])
        .map(Some)
        .map_err(FrameError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_frame_is_read_whole_and_a_truncated_one_fails_without_its_claimed_size() {
        let mut bytes = Vec::new();
        write_frame(&mut bytes, &Request::Status).await.unwrap();
        let mut reader = &bytes[..];
        let request: Option<Request> = read_frame(&mut reader, MAX_REQUEST).await.unwrap();
        assert!(matches!(request, Some(Request::Status)));
        assert!(
            read_frame::<_, Request>(&mut reader, MAX_REQUEST)
                .await
                .unwrap()
                .is_none()
        );
        // Claims the largest request and sends three bytes: an error, not a 16 MiB allocation.
        let mut truncated = (MAX_REQUEST as u32).to_be_bytes().to_vec();
        truncated.extend_from_slice(&[VERSION, 0, 0]);
        let err = read_frame::<_, Request>(&mut &truncated[..], MAX_REQUEST)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, FrameError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof),
            "{err}"
        );
    }
}
