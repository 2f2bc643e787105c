//! Shared folders: a log of path changes plus the blobs they name, kept in step with folders on
//! every replica (Dat's shared folder, with syncthing's expectations).
//!
//! - [`model`]: the changes a share's log carries and the tree they fold into (no IO).
//! - [`Shares`] (from [`crate::Node::shares`]): publish a folder, mirror one, fetch paths once.
//!
//! A share joins two topics on the node's swarm: its log's (entries replicate live with every peer
//! found) and its blobs' (every file any replica fetches is asked of the peers found there).

pub mod model;
pub mod quota;

mod folder;
mod index;
mod ticket;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use pairs_base::Topic;
use pairs_blobs::Hash;
use pairs_log::LogId;
use tokio::sync::{mpsc, watch};

pub use self::folder::FolderStatus;
use self::model::Tree;
pub use self::quota::Quota;
pub use self::ticket::ShareTicket;
use crate::Node;
use crate::node::{GetProgress, LogHandle};

/// The swarm topic where a share's replicas exchange its files.
pub fn share_blob_topic(log: LogId) -> Topic {
    Topic::from_bytes(blake3::derive_key("pairs share blobs v1", log.as_bytes()))
}

/// The key a share's blob topic is registered under with the blob service.
fn topic_key(log: LogId) -> Hash {
    Hash(*share_blob_topic(log).as_bytes())
}

/// The folders a node keeps in step, by share.
#[derive(Default)]
pub(crate) struct Folders {
    running: Mutex<HashMap<LogId, Running>>,
}

impl Folders {
    /// Stops every folder and waits for each to let go of its log and files (they are resumed
    /// when the node next starts).
    pub(crate) async fn stop_all(&self) {
        let stopped: Vec<_> = self
            .running
            .lock()
            .expect("folders lock")
            .drain()
            .map(|(_, running)| {
                let _ = running.stop.send(true);
                running.task
            })
            .collect();
        for task in stopped {
            let _ = task.await;
        }
    }
}

struct Running {
    dir: PathBuf,
    stop: watch::Sender<bool>,
    status: watch::Receiver<FolderStatus>,
    quota: watch::Sender<Quota>,
    task: tokio::task::JoinHandle<()>,
}

/// A folder kept in step with a share; see [`Shares::create`] and [`Shares::sync`].
#[derive(Clone)]
pub struct ShareHandle {
    log: LogHandle,
    status: watch::Receiver<FolderStatus>,
    providers: Vec<pairs_base::NodeAddr>,
}

impl std::fmt::Debug for ShareHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareHandle")
            .field("log", &self.log.id())
            .finish_non_exhaustive()
    }
}

impl ShareHandle {
    /// The share's log id.
    pub fn id(&self) -> LogId {
        self.log.id()
    }

    /// A ticket naming the share and this node.
    pub fn ticket(&self) -> ShareTicket {
        ShareTicket {
            log: self.log.id(),
            providers: self.providers.clone(),
        }
    }

    /// The share's log (writers, entries, versions).
    pub fn log(&self) -> &LogHandle {
        &self.log
    }

    /// What the folder is doing now.
    pub fn status(&self) -> FolderStatus {
        self.status.borrow().clone()
    }

    /// Waits until `done` holds for the status, or `timeout` passes (then the last status is the
    /// error's context).
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&FolderStatus) -> bool,
    ) -> Result<FolderStatus> {
        let mut rx = self.status.clone();
        let outcome = tokio::time::timeout(timeout, async {
            loop {
                {
                    let status = rx.borrow_and_update();
                    if done(&status) {
                        return Ok(status.clone());
                    }
                }
                if rx.changed().await.is_err() {
                    bail!("the folder stopped");
                }
            }
        })
        .await;
        match outcome {
            Ok(result) => result,
            Err(_) => bail!("timed out; the folder's status: {:?}", self.status()),
        }
    }
}

/// The node's shared folders; see [`crate::Node::shares`].
#[derive(Clone)]
pub struct Shares {
    pub(crate) node: Node,
}

impl Shares {
    /// Publishes `dir` as a new share owned by this node (a fresh log) and keeps it live: changes
    /// in the folder are published as they happen, and changes by admitted writers arrive in it.
    pub async fn create(&self, dir: &Path) -> Result<ShareHandle> {
        let dir = checked_dir(dir, false)?;
        if let Some(id) = self.folder_of(&dir) {
            bail!(
                "{} is already shared (share {}): run `pairs share ls`",
                dir.display(),
                id.short()
            );
        }
        let log = self.node.create_log().await?;
        self.start(log, dir).await
    }

    /// Keeps `dir` in step with the share a ticket names: fetches its files, then follows its
    /// changes live; publishes changes made here if this node is a writer of the share.
    pub async fn sync(&self, ticket: &ShareTicket, dir: &Path) -> Result<ShareHandle> {
        self.sync_with(ticket, dir, Quota::default()).await
    }

    /// [`Shares::sync`] taking no more than `quota` from the share (files in path order until the
    /// next would pass a limit); the quota is kept with the folder, across restarts.
    pub async fn sync_with(
        &self,
        ticket: &ShareTicket,
        dir: &Path,
        quota: Quota,
    ) -> Result<ShareHandle> {
        let dir = checked_dir(dir, true)?;
        if let Some(id) = self.folder_of(&dir)
            && id != ticket.log
        {
            bail!(
                "{} is already kept in step with another share ({})",
                dir.display(),
                id.short()
            );
        }
        let log = self.node.log_by_id(ticket.log).await?;
        self.meet(ticket, &log).await;
        self.save_quota(log.id(), quota);
        self.start(log, dir).await
    }

    /// The tree of a share (at `version`: its log's first N entries), after catching up with the
    /// ticket's providers.
    pub async fn tree(&self, ticket: &ShareTicket, version: Option<usize>) -> Result<Tree> {
        let log = self.node.log_by_id(ticket.log).await?;
        self.meet(ticket, &log).await;
        if log.is_empty() {
            self.wait_for_entries(&log).await?;
        }
        let store = log.store().clone();
        Ok(tokio::task::spawn_blocking(move || Tree::of(&store, version)).await??)
    }

    /// The versions of a share, oldest first.
    pub async fn history(&self, ticket: &ShareTicket) -> Result<Vec<model::VersionSummary>> {
        self.tree(ticket, Some(0)).await?;
        let log = self.node.log_by_id(ticket.log).await?;
        let entries = log.entries()?;
        Ok(model::history(&entries))
    }

    /// What changed in a share from version `a` to version `b` (None: the latest).
    pub async fn diff(
        &self,
        ticket: &ShareTicket,
        a: usize,
        b: Option<usize>,
    ) -> Result<model::Diff> {
        let new = self.tree(ticket, b).await?;
        let log = self.node.log_by_id(ticket.log).await?;
        let store = log.store().clone();
        let old = tokio::task::spawn_blocking(move || Tree::of(&store, Some(a))).await??;
        Ok(model::Diff::between(&old, &new))
    }

    /// Fetches paths of a share once into `out` (every file if `paths` is empty; a directory's
    /// files if a path names one), without downloading the rest of the share.
    pub async fn get(
        &self,
        ticket: &ShareTicket,
        paths: &[String],
        out: &Path,
        version: Option<usize>,
        progress: impl Fn(&GetProgress),
    ) -> Result<GetProgress> {
        let tree = self.tree(ticket, version).await?;
        let shown = tree.shown();
        let mut wanted: Vec<(String, model::Shown)> = Vec::new();
        for asked in paths {
            let asked = asked.trim_matches('/');
            let before = wanted.len();
            for (path, s) in &shown {
                if asked.is_empty()
                    || path == asked
                    || path.strip_prefix(asked).is_some_and(|r| r.starts_with('/'))
                {
                    wanted.push((path.clone(), s.clone()));
                }
            }
            if wanted.len() == before {
                bail!(
                    "the share has no {asked} (it holds {} files: `pairs share ls TICKET` lists them)",
                    shown.len()
                );
            }
        }
        if paths.is_empty() {
            wanted = shown.into_iter().collect();
        }
        let mut files = Vec::new();
        for (path, s) in wanted {
            match s.version.state {
                model::FileState::File {
                    hash,
                    size,
                    executable,
                    ..
                } => files.push(pairs_blobs::collection::CollectionEntry {
                    path,
                    hash: Hash(hash),
                    size,
                    executable,
                }),
                model::FileState::Symlink { target } => {
                    let dest = pairs_blobs::collection::safe_join(out, &path)?;
                    if let Some(parent) = dest.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    let _ = std::fs::remove_file(&dest);
                    std::os::unix::fs::symlink(&target, &dest)
                        .with_context(|| format!("writing the link {}", dest.display()))?;
                }
                model::FileState::Deleted => {}
            }
        }
        self.node.blobs().fetch_entries(files, out, progress).await
    }

    /// Shares being kept in step with folders here.
    pub fn list(&self) -> Vec<(LogId, FolderStatus)> {
        let running = self.node.folders().running.lock().expect("folders lock");
        let mut out: Vec<_> = running
            .iter()
            .map(|(id, r)| (*id, r.status.borrow().clone()))
            .collect();
        out.sort_by_key(|(id, _)| *id);
        out
    }

    /// Stops keeping a share's folder in step (the folder and the share's log stay).
    pub fn stop(&self, log: LogId) -> bool {
        let removed = self
            .node
            .folders()
            .running
            .lock()
            .expect("folders lock")
            .remove(&log);
        if let Some(running) = &removed {
            let _ = running.stop.send(true);
            self.forget(log);
        }
        removed.is_some()
    }

    /// Starts again every folder that was kept in step when the node last ran.
    pub async fn resume(&self) -> Result<usize> {
        let list = self.remembered();
        let mut started = 0;
        for (id, dir) in list {
            if !dir.is_dir() {
                tracing::warn!("share {}: its folder {} is gone", id.short(), dir.display());
                continue;
            }
            let log = self.node.log_by_id(id).await?;
            self.start(log, dir).await?;
            started += 1;
        }
        Ok(started)
    }

    async fn meet(&self, ticket: &ShareTicket, log: &LogHandle) {
        for provider in &ticket.providers {
            if provider.node_id == self.node.id() {
                continue;
            }
            if let Ok(swarm) = self.node.swarm() {
                let _ = swarm.add_peer(provider.clone());
            }
            match log.sync_with(provider).await {
                Ok(_) => break,
                Err(e) => tracing::info!(
                    "share {}: {} did not answer: {e:#}",
                    ticket.log.short(),
                    provider.node_id.short()
                ),
            }
        }
        let _ = self.join(log).await;
    }

    /// Joins the share's topics: its log replicates live, its files are exchanged.
    async fn join(&self, log: &LogHandle) -> Result<()> {
        log.share().await?;
        let swarm = self.node.swarm()?;
        self.node
            .blobs()
            .service
            .serve_on(swarm, topic_key(log.id()), share_blob_topic(log.id()))
            .await
    }

    async fn wait_for_entries(&self, log: &LogHandle) -> Result<()> {
        let mut entries = log.subscribe();
        tokio::time::timeout(Duration::from_secs(30), async {
            while log.is_empty() {
                if entries.next().await.is_none() {
                    break;
                }
            }
        })
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no replica of the share answered within 30 s: is a node sharing it running and reachable?"
            )
        })
    }

    async fn start(&self, log: LogHandle, dir: PathBuf) -> Result<ShareHandle> {
        let id = log.id();
        let providers: Vec<_> = self.node.node_addr().into_iter().collect();
        if let Some(running) = self
            .node
            .folders()
            .running
            .lock()
            .expect("folders lock")
            .get(&id)
        {
            if running.dir != dir {
                bail!(
                    "share {} is already kept in step with {} on this node",
                    id.short(),
                    running.dir.display()
                );
            }
            // Syncing again sets the quota of the folder already kept in step.
            running.quota.send_if_modified(|quota| {
                let saved = self.quota(id);
                std::mem::replace(quota, saved) != saved
            });
            return Ok(ShareHandle {
                log,
                status: running.status.clone(),
                providers,
            });
        }
        self.join(&log).await?;
        let (quota_tx, quota_rx) = watch::channel(self.quota(id));
        let (status_tx, status_rx) = watch::channel(FolderStatus {
            dir: dir.clone(),
            quota: *quota_rx.borrow(),
            ..FolderStatus::default()
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let index_path = self.index_path(id);
        let index = index_path
            .as_deref()
            .map(index::Index::load)
            .unwrap_or_default();
        let folder = folder::Folder {
            log: log.clone(),
            blobs: self.node.blobs().service,
            root: dir.clone(),
            index,
            index_path,
            quota: quota_rx,
            status: status_tx,
            queue: Default::default(),
            running: Default::default(),
            done: done_tx,
            writing: Default::default(),
        };
        let task = tokio::spawn(folder.run(stop_rx, done_rx));
        self.node
            .folders()
            .running
            .lock()
            .expect("folders lock")
            .insert(
                id,
                Running {
                    dir: dir.clone(),
                    stop: stop_tx,
                    status: status_rx.clone(),
                    quota: quota_tx,
                    task,
                },
            );
        self.remember(id, &dir);
        Ok(ShareHandle {
            log,
            status: status_rx,
            providers,
        })
    }

    fn folder_of(&self, dir: &Path) -> Option<LogId> {
        let running = self.node.folders().running.lock().expect("folders lock");
        running
            .iter()
            .find(|(_, r)| r.dir == dir)
            .map(|(id, _)| *id)
            .or_else(|| {
                self.remembered()
                    .into_iter()
                    .find(|(_, d)| d == dir)
                    .map(|(id, _)| id)
            })
    }

    fn shares_dir(&self) -> Option<PathBuf> {
        self.node.data_dir().map(|d| d.join("shares"))
    }

    fn index_path(&self, id: LogId) -> Option<PathBuf> {
        self.shares_dir().map(|d| d.join(format!("{id}.index")))
    }

    fn quota_path(&self, id: LogId) -> Option<PathBuf> {
        self.shares_dir().map(|d| d.join(format!("{id}.quota")))
    }

    /// The quota a folder was synced with (none if it was not given one).
    fn quota(&self, id: LogId) -> Quota {
        self.quota_path(id)
            .and_then(|path| std::fs::read(path).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn save_quota(&self, id: LogId, quota: Quota) {
        let Some(path) = self.quota_path(id) else {
            return;
        };
        let written = if quota.is_limited() {
            let tmp = path.with_extension("quota-tmp");
            std::fs::create_dir_all(path.parent().expect("a parent"))
                .and_then(|_| std::fs::write(&tmp, serde_json::to_vec(&quota).expect("json")))
                .and_then(|_| std::fs::rename(&tmp, &path))
        } else {
            std::fs::remove_file(&path).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        };
        if let Err(e) = written {
            tracing::warn!("cannot record the quota in {}: {e}", path.display());
        }
    }

    fn list_path(&self) -> Option<PathBuf> {
        self.shares_dir().map(|d| d.join("folders"))
    }

    /// Folders kept in step when the node last ran: `LOG-ID<TAB>DIR` lines.
    fn remembered(&self) -> Vec<(LogId, PathBuf)> {
        let Some(path) = self.list_path() else {
            return Vec::new();
        };
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (id, dir) = line.split_once('\t')?;
                Some((id.parse().ok()?, PathBuf::from(dir)))
            })
            .collect()
    }

    fn remember(&self, id: LogId, dir: &Path) {
        let mut list = self.remembered();
        list.retain(|(i, _)| *i != id);
        list.push((id, dir.to_path_buf()));
        self.write_list(&list);
    }

    fn forget(&self, id: LogId) {
        let mut list = self.remembered();
        list.retain(|(i, _)| *i != id);
        self.write_list(&list);
    }

    fn write_list(&self, list: &[(LogId, PathBuf)]) {
        let Some(path) = self.list_path() else {
            return;
        };
        let text: String = list
            .iter()
            .map(|(id, dir)| format!("{id}\t{}\n", dir.display()))
            .collect();
        let tmp = path.with_extension("tmp");
        let written = std::fs::create_dir_all(path.parent().expect("a parent"))
            .and_then(|_| std::fs::write(&tmp, text))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(
                "cannot record the shared folders in {}: {e}",
                path.display()
            );
        }
    }
}

/// The folder as an absolute path, created if `create` and missing.
fn checked_dir(dir: &Path, create: bool) -> Result<PathBuf> {
    if create {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if !meta.is_dir() {
        bail!(
            "{} is not a directory: name a folder to share",
            dir.display()
        );
    }
    Ok(dir.canonicalize()?)
}
