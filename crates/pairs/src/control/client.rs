//! The command's side of the control API.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use pairs_base::NodeId;
use pairs_log::{Entry, EntryId, LogId, Payload};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::UnixStream;

use super::{
    FrameError, LogInfo, MAX_RESPONSE, NodeStatus, Request, Response, SOCKET_FILE, read_frame,
    write_frame,
};
use crate::node::Node;

/// A duplex byte stream the client speaks over.
pub trait ControlStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ControlStream for T {}

/// A connection to a node's control API.
pub struct Client {
    stream: Box<dyn ControlStream>,
    /// Whether a node process is on the other end (rather than one in this process).
    remote: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("remote", &self.remote)
            .finish()
    }
}

/// What a command says when the node hangs up on it.
const CLOSED: &str = "the node closed the control connection (it stopped, or refused this user)";

impl Client {
    /// Connects to the node running on `data_dir`; `None` when no node serves it.
    pub async fn connect(data_dir: &Path) -> Result<Option<Self>> {
        let path = data_dir.join(SOCKET_FILE);
        match UnixStream::connect(&path).await {
            Ok(stream) => Ok(Some(Self {
                stream: Box::new(stream),
                remote: true,
            })),
            // No socket, or one left by a node that is gone.
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(None)
            }
            Err(err) => Err(err).with_context(|| format!("cannot connect to {}", path.display())),
        }
    }

    /// Serves the control API of `node` in this process and connects to it.
    pub fn in_process(node: Node) -> Self {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            if let Err(err) = super::server::serve_connection(node, theirs).await {
                tracing::debug!("in-process control ended: {err:#}");
            }
        });
        Self {
            stream: Box::new(ours),
            remote: false,
        }
    }

    /// The running node on `data_dir` if there is one, else an offline node in this process.
    pub async fn connect_or_embed(data_dir: &Path) -> Result<Self> {
        if let Some(client) = Self::connect(data_dir).await? {
            return Ok(client);
        }
        let node = Node::builder().data_dir(data_dir).offline().spawn().await?;
        Ok(Self::in_process(node))
    }

    /// Whether a separate node process answers.
    pub fn is_remote(&self) -> bool {
        self.remote
    }

    /// Sends a request without waiting for its answer.
    pub async fn send(&mut self, request: &Request) -> Result<()> {
        write_frame(&mut self.stream, request).await.context(CLOSED)
    }

    /// The next response; an error response becomes an error.
    pub async fn receive(&mut self) -> Result<Response> {
        match read_frame(&mut self.stream, MAX_RESPONSE).await {
            Ok(Some(Response::Error(message))) => Err(anyhow!(message)),
            Ok(Some(response)) => Ok(response),
            Ok(None) => bail!(CLOSED),
            // A node that hangs up with our request unread resets the connection: the same story.
            Err(FrameError::Io(err)) if err.kind() == std::io::ErrorKind::ConnectionReset => {
                bail!(CLOSED)
            }
            Err(err) => Err(anyhow!(err)).context("reading the node's answer"),
        }
    }

    /// Sends a request and waits for its one response.
    pub async fn call(&mut self, request: &Request) -> Result<Response> {
        self.send(request).await?;
        self.receive().await
    }

    /// The node's status.
    pub async fn status(&mut self) -> Result<NodeStatus> {
        match self.call(&Request::Status).await? {
            Response::Status(status) => Ok(status),
            other => unexpected(other),
        }
    }

    /// Creates a log.
    pub async fn log_new(&mut self) -> Result<LogId> {
        match self.call(&Request::LogNew).await? {
            Response::Log(id) => Ok(id),
            other => unexpected(other),
        }
    }

    /// Appends entries in one commit.
    pub async fn append(&mut self, log: LogId, payloads: Vec<Payload>) -> Result<Vec<EntryId>> {
        match self.call(&Request::Append { log, payloads }).await? {
            Response::Appended(ids) => Ok(ids),
            other => unexpected(other),
        }
    }

    /// Starts streaming entries; read them with [`Client::next_entries`].
    pub async fn start_entries(&mut self, log: LogId, follow: bool) -> Result<()> {
        self.send(&Request::Entries { log, follow }).await
    }

    /// The next entries of a stream started with [`Client::start_entries`]; `None` at its end.
    pub async fn next_entries(&mut self) -> Result<Option<Vec<Entry>>> {
        loop {
            match self.next_followed().await? {
                Followed::Entries(entries) => return Ok(Some(entries)),
                Followed::CaughtUp => continue,
                Followed::End => return Ok(None),
            }
        }
    }

    /// The next event of a stream started with [`Client::start_entries`], where a followed
    /// stream's end of what was held shows.
    pub async fn next_followed(&mut self) -> Result<Followed> {
        match self.receive().await? {
            Response::Entries(entries) => Ok(Followed::Entries(
                entries.into_iter().map(|e| e.into_entry()).collect(),
            )),
            Response::CaughtUp => Ok(Followed::CaughtUp),
            Response::End => Ok(Followed::End),
            other => unexpected(other),
        }
    }

    /// One entry by its id.
    pub async fn entry(&mut self, log: LogId, id: EntryId) -> Result<Entry> {
        match self.call(&Request::Entry { log, id }).await? {
            Response::Entries(mut entries) if entries.len() == 1 => {
                Ok(entries.pop().expect("one entry").into_entry())
            }
            other => unexpected(other),
        }
    }

    /// The heads.
    pub async fn heads(&mut self, log: LogId) -> Result<Vec<EntryId>> {
        match self.call(&Request::Heads { log }).await? {
            Response::Heads(heads) => Ok(heads),
            other => unexpected(other),
        }
    }

    /// Size, heads, writers, forks.
    pub async fn info(&mut self, log: LogId) -> Result<LogInfo> {
        match self.call(&Request::Info { log }).await? {
            Response::Info(info) => Ok(info),
            other => unexpected(other),
        }
    }

    /// One key of the map view.
    pub async fn map_get(&mut self, log: LogId, key: Vec<u8>) -> Result<Option<Vec<u8>>> {
        match self.call(&Request::MapGet { log, key }).await? {
            Response::Value(value) => Ok(value),
            other => unexpected(other),
        }
    }

    /// The whole map view.
    pub async fn map_list(&mut self, log: LogId) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        match self.call(&Request::MapList { log }).await? {
            Response::Map(map) => Ok(map),
            other => unexpected(other),
        }
    }

    /// Admits or removes a writer; the membership entry's id.
    pub async fn writer(&mut self, log: LogId, writer: NodeId, add: bool) -> Result<EntryId> {
        match self.call(&Request::Writer { log, writer, add }).await? {
            Response::Appended(ids) if ids.len() == 1 => Ok(ids[0]),
            other => unexpected(other),
        }
    }

    /// Shares a log on the node's swarm.
    pub async fn share(&mut self, log: LogId, peers: Vec<String>) -> Result<()> {
        match self.call(&Request::Share { log, peers }).await? {
            Response::Ok => Ok(()),
            other => unexpected(other),
        }
    }

    /// Syncs a log once with a node: (received, sent, entries now).
    pub async fn sync_once(&mut self, log: LogId, peer: String) -> Result<(u64, u64, u64)> {
        match self.call(&Request::SyncOnce { log, peer }).await? {
            Response::Synced {
                received,
                sent,
                entries,
            } => Ok((received, sent, entries)),
            other => unexpected(other),
        }
    }

    /// Replicates a log through the node with whatever speaks the log protocol on `input` and
    /// `output` (stdin and stdout of `pairs log replicate`), and returns how it ended: (entries
    /// received, entries sent), or the node's error.
    pub async fn replicate<R, W>(
        mut self,
        log: LogId,
        live: bool,
        mut input: R,
        mut output: W,
    ) -> Result<(u64, u64)>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        match self.call(&Request::Replicate { log, live }).await? {
            Response::Replicating => {}
            other => return unexpected(other),
        }
        let (mut from_node, mut to_node) = tokio::io::split(self.stream);
        let sending = async {
            let copied = tokio::io::copy(&mut input, &mut to_node).await;
            // The end of our input is the end of the node's: it then finishes on its own.
            let _ = to_node.shutdown().await;
            copied
        };
        let receiving = async {
            loop {
                match read_frame(&mut from_node, MAX_RESPONSE).await? {
                    Some(Response::ReplicateData(bytes)) => {
                        output.write_all(&bytes).await?;
                        output.flush().await?;
                    }
                    Some(Response::Synced { received, sent, .. }) => return Ok((received, sent)),
                    Some(Response::Error(message)) => bail!("{message}"),
                    Some(other) => return unexpected(other),
                    None => bail!("the node ended the replication without saying how it went"),
                }
            }
        };
        tokio::pin!(sending, receiving);
        let mut input_open = true;
        loop {
            tokio::select! {
                outcome = &mut receiving => return outcome,
                sent = &mut sending, if input_open => {
                    input_open = false;
                    // The node notices the end of its input; its outcome comes next.
                    if let Err(err) = sent {
                        tracing::debug!(%err, "reading the replication's input failed");
                    }
                }
            }
        }
    }
}

impl Client {
    /// Adds files or directories (made absolute here) and, with `share`, shares them.
    pub async fn blob_add(
        &mut self,
        paths: &[std::path::PathBuf],
        copy: bool,
        share: bool,
        named: bool,
    ) -> Result<super::BlobAdded> {
        let paths = paths
            .iter()
            .map(|p| {
                std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        match self
            .call(&Request::BlobAdd {
                paths,
                copy,
                share,
                named,
            })
            .await?
        {
            Response::BlobAdded(added) => Ok(added),
            other => unexpected(other),
        }
    }

    /// The blob store's contents.
    pub async fn blob_list(&mut self) -> Result<Vec<super::BlobRow>> {
        match self.call(&Request::BlobList).await? {
            Response::Blobs(rows) => Ok(rows),
            other => unexpected(other),
        }
    }

    /// Forgets a blob.
    pub async fn blob_remove(&mut self, hash: pairs_blobs::Hash) -> Result<()> {
        match self.call(&Request::BlobRemove { hash }).await? {
            Response::Ok => Ok(()),
            other => unexpected(other),
        }
    }

    /// Copies a complete blob to `out`.
    pub async fn blob_export(&mut self, hash: pairs_blobs::Hash, out: &Path) -> Result<()> {
        let out = std::path::absolute(out)
            .with_context(|| format!("cannot resolve {}", out.display()))?;
        match self.call(&Request::BlobExport { hash, out }).await? {
            Response::Ok => Ok(()),
            other => unexpected(other),
        }
    }

    /// Fetches a ticket or hash to `out`, calling `progress` as it goes.
    pub async fn blob_get(
        &mut self,
        ticket: &str,
        out: &Path,
        mut progress: impl FnMut(&crate::node::GetProgress),
    ) -> Result<crate::node::GetProgress> {
        self.share_get(ticket, &[], None, out, &mut progress).await
    }

    /// Fetches what a blob ticket, a hash or a share ticket names (for a share: `paths` of it, at
    /// `version`), reporting progress as it goes.
    pub async fn share_get(
        &mut self,
        ticket: &str,
        paths: &[String],
        version: Option<usize>,
        out: &Path,
        mut progress: impl FnMut(&crate::node::GetProgress),
    ) -> Result<crate::node::GetProgress> {
        let out = std::path::absolute(out)
            .with_context(|| format!("cannot resolve {}", out.display()))?;
        self.send(&Request::BlobGet {
            ticket: ticket.to_string(),
            out,
            paths: paths.to_vec(),
            version,
        })
        .await?;
        loop {
            match self.receive().await? {
                Response::BlobProgress(p) => progress(&p),
                Response::BlobDone(p) => return Ok(p),
                other => return unexpected(other),
            }
        }
    }
}

impl Client {
    /// Publishes a folder as a new share (`ticket` None) or keeps it in step with a share; the
    /// node keeps it live. Returns the share and its ticket.
    pub async fn share_start(
        &mut self,
        dir: &Path,
        ticket: Option<&str>,
        quota: crate::share::Quota,
    ) -> Result<(pairs_log::LogId, String)> {
        let dir = std::path::absolute(dir)
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        match self
            .call(&Request::ShareStart {
                dir,
                ticket: ticket.map(str::to_string),
                quota,
            })
            .await?
        {
            Response::ShareStarted { log, ticket } => Ok((log, ticket)),
            other => unexpected(other),
        }
    }

    /// The folders the node keeps in step.
    pub async fn share_list(&mut self) -> Result<Vec<super::ShareRow>> {
        match self.call(&Request::ShareList).await? {
            Response::Shares(rows) => Ok(rows),
            other => unexpected(other),
        }
    }

    /// Stops keeping a share's folder in step.
    pub async fn share_stop(&mut self, log: pairs_log::LogId) -> Result<()> {
        match self.call(&Request::ShareStop { log }).await? {
            Response::Ok => Ok(()),
            other => unexpected(other),
        }
    }

    /// A share's files at a version.
    pub async fn share_files(
        &mut self,
        ticket: &str,
        version: Option<usize>,
    ) -> Result<super::ShareFiles> {
        match self
            .call(&Request::ShareFiles {
                ticket: ticket.to_string(),
                version,
            })
            .await?
        {
            Response::ShareFiles(files) => Ok(files),
            other => unexpected(other),
        }
    }

    /// A share's versions.
    pub async fn share_history(
        &mut self,
        ticket: &str,
    ) -> Result<Vec<crate::share::model::VersionSummary>> {
        match self
            .call(&Request::ShareHistory {
                ticket: ticket.to_string(),
            })
            .await?
        {
            Response::ShareHistory(rows) => Ok(rows),
            other => unexpected(other),
        }
    }

    /// What changed in a share between two versions.
    pub async fn share_diff(
        &mut self,
        ticket: &str,
        from: usize,
        to: Option<usize>,
    ) -> Result<crate::share::model::Diff> {
        match self
            .call(&Request::ShareDiff {
                ticket: ticket.to_string(),
                from,
                to,
            })
            .await?
        {
            Response::ShareDiff(diff) => Ok(diff),
            other => unexpected(other),
        }
    }
}

fn unexpected<T>(response: Response) -> Result<T> {
    bail!("unexpected answer from the node: {response:?}")
}

/// What [`Client::next_followed`] reads.
#[derive(Debug)]
pub enum Followed {
    /// Entries, parents first.
    Entries(Vec<Entry>),
    /// Everything held when a followed stream started has come; what follows is new.
    CaughtUp,
    /// The stream ended (without `follow`: everything was sent).
    End,
}
