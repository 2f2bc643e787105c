//! The node's HTTP gateway: [`pairs_gateway`] serving this node's blobs and shares to the browser on
//! this machine (feature `gateway`, on by default).
//!
//! A node serves it when asked ([`crate::NodeBuilder::gateway`], or `[gateway] port` in
//! `config.toml`; `pairs node` serves it on [`crate::node::DEFAULT_GATEWAY_PORT`] unless told
//! otherwise), on 127.0.0.1 only; [`crate::Node::gateway_addr`] says where. What it answers:
//!
//! - `/blob/HASH/` (or a blob ticket): a collection is a directory of its files; a raw blob is the
//!   file itself, also under any one name (`/blob/HASH/photo.png`) so the media type follows the name.
//! - `/share/TICKET/PATH` (a share or log ticket, or the share's key): a file of the share's latest
//!   version; directories are the prefixes of its paths.
//! - `http://KEY.localhost:PORT/PATH` ([`origin_url`]): the same share as its own origin, where its
//!   pages run as a site. The key is the share's log id (52 characters of base32, a DNS label).
//!
//! A share not yet on this node is caught up with first (the ticket's providers, else whoever the
//! swarm finds), within the gateway's resolve timeout; an origin URL names no providers, so it uses
//! those of any ticket this gateway saw for the share. Content is fetched on demand: a file complete
//! here is served from the store; one that is not is fetched from the share's peers (the fetch
//! started, or joined) and streamed as its verified 16 KiB groups arrive, from the offset asked for,
//! whose groups the swarm fetches first. Every group is checked against the blob's verified layer
//! right before it is sent: no unverified byte ever leaves. The ETag is the content hash. Symbolic links inside a share
//! are followed to their target within the share, in the last component or any before it (8 hops
//! at most); one that leads nowhere, or out of the share, is a 404. Nothing is writable: the gateway only reads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pairs_base::NodeAddr;
use pairs_blobs::collection::{Collection, MAX_ENCODED};
use pairs_blobs::layer::{GROUP_SIZE, group_len};
use pairs_blobs::store::BlobReader;
use pairs_blobs::{BlobStatus, Hash, Layer};
use pairs_gateway::{BoxFuture, DirEntry, File, Gateway, GatewayError, Resolved, Site, Source};
use pairs_log::LogId;

pub use pairs_gateway::{blob_url, origin_url, share_url};

use crate::Node;
use crate::control::server::{BlobRef, parse_blob_ref};
use crate::node::WeakNode;
use crate::node::blobs::{BlobProgress, BlobService};
use crate::share::model::{FileState, Tree};
use crate::share::{ShareTicket, share_blob_topic};

/// Symbolic links followed for one path at most.
const MAX_LINKS: usize = 8;

/// How far ahead of a reader the swarm is asked to fetch first.
const READ_AHEAD: u64 = 16 << 20;
/// Groups checked in one go for a reader (a chunk of the gateway's body).
const GROUPS_PER_CHECK: u64 = pairs_gateway::CHUNK as u64 / GROUP_SIZE;

/// The gateway of a running node.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets requests under way finish (briefly), and returns when it is done.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Serves `node` on `gateway` until [`Running::stop`] (or until the node is dropped).
pub(crate) fn start(node: &Node, gateway: Gateway) -> Running {
    let addr = gateway.local_addr();
    let source: Arc<dyn Source> = Arc::new(NodeSource {
        node: node.downgrade(),
        providers: Default::default(),
        joined: Default::default(),
        catching_up: Default::default(),
        trees: Default::default(),
        collections: Default::default(),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(gateway.run(source, async move {
        let _ = stopped.await;
    }));
    tracing::info!(%addr, "gateway up");
    Running { addr, stop, task }
}

/// The URL of the share `log` as its own origin on the gateway at `addr`.
pub fn share_origin_url(log: LogId, addr: SocketAddr) -> String {
    origin_url(&log.to_string(), addr.port()).expect("a log id is a DNS label")
}

/// What a path of a share or collection holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    File { hash: Hash, size: u64 },
    Link(String),
}

/// Paths of a share's latest version (or a collection) and what each holds.
type Items = BTreeMap<String, Item>;

/// What a path turned out to be.
#[derive(Debug, PartialEq, Eq)]
enum At {
    File(Hash, u64),
    Dir(Vec<DirEntry>),
    NotFound,
}

/// The node as the gateway's [`Source`].
struct NodeSource {
    node: WeakNode,
    /// Providers named by the tickets seen, by share: an origin URL names only the share.
    providers: Mutex<HashMap<LogId, Vec<NodeAddr>>>,
    /// Shares and blobs whose swarm topics this gateway joined.
    joined: Mutex<HashSet<[u8; 32]>>,
    /// One catch-up at a time per share not yet held (a page's requests come together).
    catching_up: Mutex<HashMap<LogId, Arc<tokio::sync::Mutex<()>>>>,
    /// Each share's paths as of its log's length.
    trees: Mutex<HashMap<LogId, (usize, Arc<Items>)>>,
    /// Blobs read as collections (`None`: a raw blob).
    collections: Mutex<HashMap<Hash, Option<Arc<Items>>>>,
}

fn unavailable(err: impl std::fmt::Display) -> GatewayError {
    GatewayError::Unavailable(format!("{err:#}"))
}

impl Source for NodeSource {
    fn resolve<'a>(
        &'a self,
        site: &'a Site,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Resolved, GatewayError>> {
        Box::pin(async move {
            let node = self
                .node
                .upgrade()
                .ok_or_else(|| GatewayError::Unavailable("the node stopped".into()))?;
            match site {
                Site::Blob(text) => self.blob(&node, text, path).await,
                Site::Share(text) => {
                    let ticket = parse_share(text)?;
                    if !ticket.providers.is_empty() {
                        self.providers
                            .lock()
                            .expect("providers lock")
                            .insert(ticket.log, ticket.providers.clone());
                    }
                    self.share(&node, ticket, path).await
                }
                Site::Origin(label) => {
                    let log: LogId = label.parse().map_err(|_| {
                        GatewayError::BadRequest(format!("{label} is not a share's key"))
                    })?;
                    let providers = self
                        .providers
                        .lock()
                        .expect("providers lock")
                        .get(&log)
                        .cloned()
                        .unwrap_or_default();
                    self.share(&node, ShareTicket { log, providers }, path)
                        .await
                }
            }
        })
    }
}

/// A share ticket, a log ticket or a share's key.
fn parse_share(text: &str) -> Result<ShareTicket, GatewayError> {
    if let Ok(log) = text.parse::<LogId>() {
        return Ok(ShareTicket {
            log,
            providers: Vec::new(),
        });
    }
    ShareTicket::parse(text).map_err(|err| GatewayError::BadRequest(err.to_string()))
}

impl NodeSource {
    async fn share(
        &self,
        node: &Node,
        ticket: ShareTicket,
        path: &str,
    ) -> Result<Resolved, GatewayError> {
        let items = self.items(node, &ticket).await?;
        self.answer(node, &items, path).await
    }

    async fn answer(
        &self,
        node: &Node,
        items: &Items,
        path: &str,
    ) -> Result<Resolved, GatewayError> {
        Ok(match lookup(items, path) {
            At::File(hash, size) => Resolved::File(content(node, hash, Some(size)).await?),
            At::Dir(entries) => Resolved::Directory(entries),
            At::NotFound => Resolved::NotFound,
        })
    }

    /// The share's paths: from the log held here, after catching up with the share if it is not.
    async fn items(&self, node: &Node, ticket: &ShareTicket) -> Result<Arc<Items>, GatewayError> {
        let id = ticket.log;
        let log = match self.held(node, id).await? {
            Some(log) => {
                self.join(node, ticket, &log).await;
                log
            }
            None => {
                let lock = self
                    .catching_up
                    .lock()
                    .expect("catch-up lock")
                    .entry(id)
                    .or_default()
                    .clone();
                let _one = lock.lock().await;
                match self.held(node, id).await? {
                    Some(log) => log,
                    None => {
                        // Meets the providers, joins the share's topics, waits for its entries.
                        node.shares()
                            .tree(ticket, None)
                            .await
                            .map_err(unavailable)?;
                        self.joined
                            .lock()
                            .expect("joined lock")
                            .insert(*id.as_bytes());
                        node.log_by_id(id).await.map_err(unavailable)?
                    }
                }
            }
        };
        let len = log.len();
        if let Some((at, items)) = self.trees.lock().expect("trees lock").get(&id)
            && *at == len
        {
            return Ok(items.clone());
        }
        let store = log.store().clone();
        let tree = tokio::task::spawn_blocking(move || Tree::of(&store, None))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        let items: Items = tree
            .shown()
            .into_iter()
            .filter_map(|(path, shown)| match shown.version.state {
                FileState::File { hash, size, .. } => Some((
                    path,
                    Item::File {
                        hash: Hash(hash),
                        size,
                    },
                )),
                FileState::Symlink { target } => Some((path, Item::Link(target))),
                FileState::Deleted => None,
            })
            .collect();
        let items = Arc::new(items);
        self.trees
            .lock()
            .expect("trees lock")
            .insert(id, (len, items.clone()));
        Ok(items)
    }

    /// The share's log if this node holds entries of it.
    async fn held(&self, node: &Node, id: LogId) -> Result<Option<crate::LogHandle>, GatewayError> {
        Ok(node
            .existing_log(id)
            .await
            .map_err(unavailable)?
            .filter(|log| !log.is_empty()))
    }

    /// Joins a held share's topics once, so it stays current and its files can be fetched.
    async fn join(&self, node: &Node, ticket: &ShareTicket, log: &crate::LogHandle) {
        if !self
            .joined
            .lock()
            .expect("joined lock")
            .insert(*ticket.log.as_bytes())
        {
            return;
        }
        let Ok(swarm) = node.swarm() else { return };
        for provider in &ticket.providers {
            if provider.node_id != node.id() {
                let _ = swarm.add_peer(provider.clone());
            }
        }
        if let Err(err) = log.share().await {
            tracing::debug!("gateway: sharing {}: {err:#}", ticket.log.short());
        }
        let topic = share_blob_topic(ticket.log);
        if let Err(err) = node
            .blobs()
            .service
            .serve_on(swarm, Hash(*topic.as_bytes()), topic)
            .await
        {
            tracing::debug!("gateway: joining {}'s files: {err:#}", ticket.log.short());
        }
    }

    async fn blob(&self, node: &Node, text: &str, path: &str) -> Result<Resolved, GatewayError> {
        let (hash, providers) = match parse_blob_ref(text)
            .map_err(|err| GatewayError::BadRequest(format!("{err:#}")))?
        {
            BlobRef::Ticket(ticket) => (ticket.hash, ticket.providers),
            BlobRef::Hash(hash) => (hash, Vec::new()),
        };
        if !is_complete(node, hash).await?
            && self.joined.lock().expect("joined lock").insert(hash.0)
            && let Ok(swarm) = node.swarm()
        {
            for provider in providers {
                if provider.node_id != node.id() {
                    let _ = swarm.add_peer(provider);
                }
            }
            node.blobs()
                .service
                .share(swarm, hash)
                .await
                .map_err(unavailable)?;
        }
        let file = content(node, hash, None).await?;
        let cached = self
            .collections
            .lock()
            .expect("collections lock")
            .get(&hash)
            .cloned();
        let collection = match cached {
            Some(collection) => collection,
            None => {
                let collection = read_collection(&file).await?.map(Arc::new);
                self.collections
                    .lock()
                    .expect("collections lock")
                    .insert(hash, collection.clone());
                collection
            }
        };
        match collection {
            Some(items) => self.answer(node, &items, path).await,
            // A raw blob is the file at the root, and under any one name (which sets the type).
            None if !path.contains('/') => Ok(Resolved::File(file)),
            None => Ok(Resolved::NotFound),
        }
    }
}

/// The paths of a collection, if the blob is one (its first group tells; a collection is then
/// read whole, waiting for it if it is still arriving).
async fn read_collection(file: &File) -> Result<Option<Items>, GatewayError> {
    const MAGIC: &[u8] = b"pairs-collection/";
    if file.size < MAGIC.len() as u64 || file.size > MAX_ENCODED {
        return Ok(None);
    }
    if read_range(file, 0, MAGIC.len()).await? != MAGIC {
        return Ok(None);
    }
    let bytes = read_range(file, 0, file.size as usize).await?;
    let Ok(collection) = Collection::decode(&bytes) else {
        return Ok(None);
    };
    Ok(Some(
        collection
            .entries
            .into_iter()
            .map(|entry| {
                (
                    entry.path,
                    Item::File {
                        hash: entry.hash,
                        size: entry.size,
                    },
                )
            })
            .collect(),
    ))
}

/// `len` bytes of `file` from `start`, as they become readable.
async fn read_range(file: &File, start: u64, len: usize) -> Result<Vec<u8>, GatewayError> {
    let end = start + len as u64;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let offset = start + out.len() as u64;
        let ready = file.reader.ready(offset, end).await?;
        let want = ready.min(end - offset) as usize;
        let reader = file.reader.clone();
        let chunk = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; want];
            let mut filled = 0;
            while filled < want {
                match reader.read_at(&mut buf[filled..], offset + filled as u64)? {
                    0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                    n => filled += n,
                }
            }
            Ok(buf)
        })
        .await
        .map_err(unavailable)??;
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

async fn is_complete(node: &Node, hash: Hash) -> Result<bool, GatewayError> {
    let store = node.blobs().store().map_err(unavailable)?;
    let status = tokio::task::spawn_blocking(move || store.status(&hash))
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
    Ok(matches!(status, BlobStatus::Complete { .. }))
}

/// A blob's bytes: from the store when it is complete here, else streamed as its groups arrive (the
/// fetch started, or joined, now). `size` is what the share's or collection's entry says; a raw blob
/// (`None`) waits for its layer, which proves its size.
async fn content(node: &Node, hash: Hash, size: Option<u64>) -> Result<File, GatewayError> {
    if hash == Hash::of(b"") {
        // Nothing to fetch, and the store need not hold it.
        return Ok(File::from_bytes(Vec::new(), hash.to_hex()));
    }
    let blobs = node.blobs();
    if is_complete(node, hash).await? {
        let file = StoreFile::open(blobs.store().map_err(unavailable)?, hash).await?;
        return Ok(File::new(file.reader.size(), hash.to_hex(), Arc::new(file)));
    }
    let progress = blobs.service.fetch(hash, None).map_err(unavailable)?;
    let arriving = Arriving {
        service: blobs.service.clone(),
        store: blobs.store().map_err(unavailable)?,
        hash,
        expected: size,
        progress,
        state: Mutex::new(ArrivingState::default()),
    };
    let size = match size {
        Some(size) => size,
        None => arriving.layer().await?.0.size(),
    };
    Ok(File::new(size, hash.to_hex(), Arc::new(arriving)))
}

/// A complete blob read a group at a time, each group checked against the blob's hash when its file
/// lives outside the store (someone may have edited it).
struct StoreFile {
    reader: BlobReader,
    /// The last group read, for reads that start inside it.
    group: Mutex<Option<(u64, Vec<u8>)>>,
}

impl pairs_gateway::RangeReader for StoreFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.reader.size() || buf.is_empty() {
            return Ok(0);
        }
        let index = offset / GROUP_SIZE;
        let mut group = self.group.lock().expect("group lock");
        if group.as_ref().map(|(i, _)| *i) != Some(index) {
            let mut bytes = vec![0u8; GROUP_SIZE as usize];
            let len = self
                .reader
                .read_group_into(index, &mut bytes)
                .map_err(io::Error::other)?;
            bytes.truncate(len);
            *group = Some((index, bytes));
        }
        let (_, bytes) = group.as_ref().expect("just read");
        let start = (offset - index * GROUP_SIZE) as usize;
        let n = buf.len().min(bytes.len().saturating_sub(start));
        buf[..n].copy_from_slice(&bytes[start..start + n]);
        Ok(n)
    }
}

impl StoreFile {
    /// The complete blob `hash` of `store`.
    async fn open(store: pairs_blobs::Store, hash: Hash) -> Result<StoreFile, GatewayError> {
        let reader = tokio::task::spawn_blocking(move || store.reader(&hash))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        Ok(StoreFile {
            reader,
            group: Mutex::new(None),
        })
    }
}

/// A blob being fetched, served as its groups arrive. [`RangeReader::ready`] waits for the group at
/// the reader's offset, asks the swarm to fetch the groups from there first, and checks each group
/// against the verified layer (read back from the file being written) before allowing it: what the
/// gateway sends has been verified by this reader itself. Once the fetch is complete, reads go to
/// the store as for any complete blob.
///
/// [`RangeReader::ready`]: pairs_gateway::RangeReader::ready
struct Arriving {
    service: BlobService,
    store: pairs_blobs::Store,
    hash: Hash,
    /// The size the entry naming the blob gives: the layer must agree.
    expected: Option<u64>,
    progress: tokio::sync::watch::Receiver<BlobProgress>,
    state: Mutex<ArrivingState>,
}

#[derive(Default)]
struct ArrivingState {
    /// The verified layer and the file the groups are written to, once the layer is known.
    open: Option<Arc<(Layer, BlobReader)>>,
    /// The complete blob, once it is.
    complete: Option<Arc<StoreFile>>,
    /// Verified bytes from an offset on: what `ready` last allowed.
    verified: Option<(u64, Arc<Vec<u8>>)>,
    /// The window last asked of the swarm, and when.
    window: Option<(u64, u64, Instant)>,
}

impl Arriving {
    /// The progress as it is now, failing if the fetch failed.
    fn now(
        &self,
        progress: &mut tokio::sync::watch::Receiver<BlobProgress>,
    ) -> io::Result<BlobProgress> {
        let now = progress.borrow_and_update().clone();
        match &now.error {
            Some(err) => Err(io::Error::other(format!("the fetch failed: {err}"))),
            None => Ok(now),
        }
    }

    /// Waits for the next change of the fetch's progress.
    async fn changed(
        &self,
        progress: &mut tokio::sync::watch::Receiver<BlobProgress>,
    ) -> io::Result<()> {
        progress
            .changed()
            .await
            .map_err(|_| io::Error::other("the fetch stopped"))
    }

    /// The verified layer and the file being written, waiting for the layer (a peer must prove it).
    async fn layer(&self) -> Result<Arc<(Layer, BlobReader)>, GatewayError> {
        let mut progress = self.progress.clone();
        loop {
            if let Some(open) = self.state.lock().expect("state lock").open.clone() {
                return Ok(open);
            }
            if self.now(&mut progress)?.size.is_some() {
                break;
            }
            self.changed(&mut progress).await?;
        }
        let (store, hash) = (self.store.clone(), self.hash);
        let open = tokio::task::spawn_blocking(move || {
            Ok::<_, pairs_blobs::store::StoreError>((store.layer(&hash)?, store.reader(&hash)?))
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
        if let Some(expected) = self.expected
            && expected != open.0.size()
        {
            return Err(GatewayError::Unavailable(format!(
                "the blob has {} bytes, not the {expected} its entry says",
                open.0.size()
            )));
        }
        let open = Arc::new(open);
        self.state.lock().expect("state lock").open = Some(open.clone());
        Ok(open)
    }

    /// Asks the swarm to fetch from `offset` on first, unless it was asked lately for about that.
    async fn ask_window(&self, offset: u64, end: u64) {
        let window = (offset, end.min(offset.saturating_add(READ_AHEAD)));
        {
            let mut state = self.state.lock().expect("state lock");
            // Asked again when the reader moved on, or after a while (another reader of the blob
            // may have asked for elsewhere since).
            if let Some((start, stop, at)) = state.window
                && (start..stop).contains(&offset)
                && offset < start + READ_AHEAD / 2
                && at.elapsed() < Duration::from_millis(250)
            {
                return;
            }
            state.window = Some((window.0, window.1, Instant::now()));
        }
        self.service
            .read_window(self.hash, window.0, window.1)
            .await;
    }

    async fn wait_ready(&self, offset: u64, end: u64) -> io::Result<u64> {
        let mut progress = self.progress.clone();
        // Bytes held at the last check that found nothing: progress also moves for uploads.
        let mut checked_at = None;
        loop {
            let now = self.now(&mut progress)?;
            if now.complete {
                let complete = self.state.lock().expect("state lock").complete.clone();
                if complete.is_none() {
                    let file = StoreFile::open(self.store.clone(), self.hash)
                        .await
                        .map_err(|err| io::Error::other(err.to_string()))?;
                    self.state.lock().expect("state lock").complete = Some(Arc::new(file));
                }
                return Ok(end - offset);
            }
            if now.size.is_some() && checked_at != Some(now.held) {
                checked_at = Some(now.held);
                let open = self
                    .layer()
                    .await
                    .map_err(|err| io::Error::other(err.to_string()))?;
                let hash = self.hash;
                let verified =
                    tokio::task::spawn_blocking(move || verify(&open, &hash, offset, end))
                        .await
                        .map_err(io::Error::other)?;
                if let Some((at, bytes)) = verified {
                    let allowed = at + bytes.len() as u64 - offset;
                    self.state.lock().expect("state lock").verified = Some((at, Arc::new(bytes)));
                    return Ok(allowed);
                }
            }
            self.ask_window(offset, end).await;
            self.changed(&mut progress).await?;
        }
    }
}

/// The groups from the one holding `offset` on, up to a chunk and not past `end`, that are written
/// and check against the layer (stopping at the first that is not): their first byte's offset and
/// their bytes.
fn verify(
    open: &(Layer, BlobReader),
    hash: &Hash,
    offset: u64,
    end: u64,
) -> Option<(u64, Vec<u8>)> {
    let (layer, reader) = open;
    let first = offset / GROUP_SIZE;
    let last = end
        .min(layer.size())
        .div_ceil(GROUP_SIZE)
        .min(first + GROUPS_PER_CHECK);
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; GROUP_SIZE as usize];
    for group in first..last {
        let len = group_len(layer.size(), group);
        // A group not written yet reads as zeros (or fails): it does not check.
        match reader.read_group_into(group, &mut buf) {
            Ok(read) if read == len && layer.check_group(hash, group, &buf[..len]) => {
                bytes.extend_from_slice(&buf[..len]);
            }
            _ => break,
        }
    }
    (!bytes.is_empty()).then_some((first * GROUP_SIZE, bytes))
}

impl pairs_gateway::RangeReader for Arriving {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let (complete, verified) = {
            let state = self.state.lock().expect("state lock");
            (state.complete.clone(), state.verified.clone())
        };
        if let Some((at, bytes)) = verified
            && offset >= at
            && offset < at + bytes.len() as u64
        {
            let start = (offset - at) as usize;
            let n = buf.len().min(bytes.len() - start);
            buf[..n].copy_from_slice(&bytes[start..start + n]);
            return Ok(n);
        }
        match complete {
            Some(file) => file.read_at(buf, offset),
            // Only bytes `ready` verified are ever read.
            None => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("byte {offset} has not arrived yet"),
            )),
        }
    }

    fn ready(&self, offset: u64, end: u64) -> BoxFuture<'_, io::Result<u64>> {
        Box::pin(self.wait_ready(offset, end))
    }
}

impl Drop for Arriving {
    fn drop(&mut self) {
        // The reader is gone: the swarm need not favour its groups any more.
        let asked = self
            .state
            .lock()
            .map(|s| s.window.is_some())
            .unwrap_or(false);
        if asked && let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (service, hash) = (self.service.clone(), self.hash);
            runtime.spawn(async move { service.read_window(hash, 0, 0).await });
        }
    }
}

/// What `path` is in `items`, following links within them.
fn lookup(items: &Items, path: &str) -> At {
    let mut path = path.to_owned();
    for _ in 0..=MAX_LINKS {
        match items.get(&path) {
            Some(Item::File { hash, size }) => return At::File(*hash, *size),
            Some(Item::Link(target)) => match follow(&path, target) {
                Some(next) => path = next,
                None => return At::NotFound,
            },
            None if path.is_empty() || is_dir(items, &path) => {
                return At::Dir(children(items, &path));
            }
            None => match through_link(items, &path) {
                Some(next) => path = next,
                None => return At::NotFound,
            },
        }
    }
    At::NotFound
}

/// `path` with its first component that is a link replaced by where the link leads.
fn through_link(items: &Items, path: &str) -> Option<String> {
    path.match_indices('/')
        .find_map(|(i, _)| match items.get(&path[..i]) {
            Some(Item::Link(target)) => {
                let dir = follow(&path[..i], target)?;
                Some(if dir.is_empty() {
                    path[i + 1..].to_owned()
                } else {
                    format!("{dir}{}", &path[i..])
                })
            }
            _ => None,
        })
}

/// Whether some path lies under `dir`.
fn is_dir(items: &Items, dir: &str) -> bool {
    let prefix = format!("{dir}/");
    items
        .range(prefix.clone()..)
        .next()
        .is_some_and(|(path, _)| path.starts_with(&prefix))
}

/// The entries directly under `dir` ("" for the root). A link is listed as what it leads to, and
/// left out if it leads nowhere.
fn children(items: &Items, dir: &str) -> Vec<DirEntry> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut entries = Vec::new();
    let mut dirs = HashSet::new();
    for (path, item) in items.range(prefix.clone()..) {
        let Some(rest) = path.strip_prefix(&prefix) else {
            break;
        };
        if let Some((name, _)) = rest.split_once('/') {
            if dirs.insert(name.to_owned()) {
                entries.push(DirEntry::dir(name));
            }
            continue;
        }
        match item {
            Item::File { size, .. } => entries.push(DirEntry::file(rest, *size)),
            Item::Link(_) => match kind(items, path) {
                Some(Some(size)) => entries.push(DirEntry::file(rest, size)),
                Some(None) => entries.push(DirEntry::dir(rest)),
                None => {}
            },
        }
    }
    entries
}

/// What a path leads to without listing it: a file's size, `Some(None)` for a directory, `None`
/// for nothing.
fn kind(items: &Items, path: &str) -> Option<Option<u64>> {
    let mut path = path.to_owned();
    for _ in 0..=MAX_LINKS {
        match items.get(&path) {
            Some(Item::File { size, .. }) => return Some(Some(*size)),
            Some(Item::Link(target)) => path = follow(&path, target)?,
            None if path.is_empty() || is_dir(items, &path) => return Some(None),
            None => path = through_link(items, &path)?,
        }
    }
    None
}

/// The path a link at `link` with `target` (relative to the link's directory) leads to; `None` if it
/// leaves the share.
fn follow(link: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(list: &[(&str, Option<&str>)]) -> Items {
        list.iter()
            .map(|(path, link)| {
                let item = match link {
                    Some(target) => Item::Link(target.to_string()),
                    None => Item::File {
                        hash: Hash(*blake3::hash(path.as_bytes()).as_bytes()),
                        size: path.len() as u64,
                    },
                };
                (path.to_string(), item)
            })
            .collect()
    }

    #[test]
    fn paths_files_directories_and_links() {
        let items = items(&[
            ("index.html", None),
            ("css/site.css", None),
            ("css/deep/a.css", None),
            ("css-notes.txt", None),
            ("home.html", Some("index.html")),
            ("css/up.html", Some("../index.html")),
            ("styles", Some("css")),
            ("loop", Some("loop")),
            ("out", Some("../../etc/passwd")),
            ("gone", Some("nothing-here")),
        ]);
        assert!(matches!(lookup(&items, "index.html"), At::File(_, 10)));
        assert!(matches!(lookup(&items, "home.html"), At::File(_, 10)));
        assert!(matches!(lookup(&items, "css/up.html"), At::File(_, 10)));
        assert!(matches!(lookup(&items, "styles/site.css"), At::File(_, 12)));
        assert!(matches!(lookup(&items, "styles/deep"), At::Dir(_)));
        assert_eq!(lookup(&items, "loop/x"), At::NotFound);
        assert_eq!(
            lookup(&items, "css"),
            At::Dir(vec![
                DirEntry::dir("deep"),
                DirEntry::file("site.css", 12),
                DirEntry::file("up.html", 10),
            ])
        );
        assert!(matches!(lookup(&items, "styles"), At::Dir(ref e) if e.len() == 3));
        assert_eq!(lookup(&items, "cs"), At::NotFound);
        assert_eq!(lookup(&items, "loop"), At::NotFound);
        assert_eq!(lookup(&items, "out"), At::NotFound);
        assert_eq!(lookup(&items, "gone"), At::NotFound);
        let At::Dir(root) = lookup(&items, "") else {
            panic!("the root is a directory")
        };
        let mut names: Vec<_> = root.iter().map(|e| (e.name.as_str(), e.is_dir)).collect();
        names.sort();
        assert_eq!(
            names,
            [
                ("css", true),
                ("css-notes.txt", false),
                ("home.html", false),
                ("index.html", false),
                ("styles", true),
            ]
        );
        assert_eq!(follow("a/b/link", "../c"), Some("a/c".into()));
        assert_eq!(follow("link", "../c"), None);
    }
}
