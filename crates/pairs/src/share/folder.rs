//! A folder kept in step with a share: local changes published (on a writer), the share's changes
//! written into the folder, for as long as the node runs.
//!
//! Each round reads the folder (only files whose size or time changed are hashed), publishes what
//! changed here as one batch of changes, then brings the folder to the share's tree: content held
//! anywhere on this node is copied (a rename or a duplicate moves no data), other content is fetched
//! from the share's peers, taking the unchanged groups of the file's older version from disk.
//! Every write goes to a `.pairs-part` file renamed into place, so the folder only ever holds whole
//! files. A change made here that the share cannot take (this node is not a writer) is kept and
//! reported, never overwritten.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use pairs_blobs::Hash;
use pairs_blobs::collection::safe_join;
use pairs_blobs::store::BlobStatus;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::index::{Content, Index, Local};
use super::model::{FileState, Rejected, Shown, Tree, encode_changes};
use super::quota::Quota;
use crate::node::LogHandle;
use crate::node::blobs::{BlobService, part_path, wait_complete};

/// Downloads under way at once.
const PARALLEL_FETCHES: usize = 16;
/// A full read of the folder at least this often, in case a change was not reported.
const RESCAN: Duration = Duration::from_secs(60);
/// Changes reported close together are taken in one round.
const SETTLE: Duration = Duration::from_millis(50);
/// While fetches run (and their writes are reported), rounds are at least this far apart.
const BUSY_ROUND_GAP: Duration = Duration::from_millis(500);

/// What a synced folder is doing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FolderStatus {
    /// The folder.
    pub dir: PathBuf,
    /// Whether this node writes to the share (owner or admitted writer).
    pub writable: bool,
    /// Files the share shows.
    pub files: usize,
    /// Bytes the share shows.
    pub bytes: u64,
    /// Files still to fetch.
    pub pending: usize,
    /// Entries of the share's log held here.
    pub entries: usize,
    /// Rounds completed (a round reads the folder and brings it to the share).
    pub rounds: u64,
    /// Whether the last round left nothing to do.
    pub in_step: bool,
    /// Changes published from here.
    pub published: u64,
    /// Bytes fetched from peers.
    pub fetched: u64,
    /// Bytes of changed files taken from their older versions on disk instead of the network.
    pub reused: u64,
    /// Paths the share holds that are not written here (unsafe names, a file under a file), and why.
    pub rejected: Vec<Rejected>,
    /// Paths changed here and kept although the share holds something else (this node cannot write).
    pub kept_local: Vec<String>,
    /// The limits on what this folder takes from the share.
    pub quota: Quota,
    /// Paths the share holds that the quota keeps out of this folder.
    pub held_back: usize,
    /// The last error, if a round failed (it is tried again).
    pub error: Option<String>,
}

/// The engine of one folder.
pub(crate) struct Folder {
    pub(crate) log: LogHandle,
    pub(crate) blobs: BlobService,
    pub(crate) root: PathBuf,
    pub(crate) index: Index,
    pub(crate) index_path: Option<PathBuf>,
    /// The user's limits, changed when the folder is synced again with others.
    pub(crate) quota: watch::Receiver<Quota>,
    pub(crate) status: watch::Sender<FolderStatus>,
    /// Fetches waiting for a slot.
    pub(crate) queue: VecDeque<Fetch>,
    /// Fetches under way: path -> content hash.
    pub(crate) running: HashMap<String, Hash>,
    /// Where fetches report.
    pub(crate) done: mpsc::UnboundedSender<Fetched>,
    /// Paths this engine writes (fetches under way, copies) since the last round: reports of
    /// changes to them are its own, not the user's.
    pub(crate) writing: Arc<Mutex<HashSet<PathBuf>>>,
}

/// A file to fetch into the folder.
pub(crate) struct Fetch {
    path: String,
    dest: PathBuf,
    shown: Shown,
    content: Content,
    hash: Hash,
    hint: Option<Hash>,
}

/// A fetch that ended.
pub(crate) struct Fetched {
    fetch: Fetch,
    result: Result<()>,
    received: u64,
    reused: u64,
}

/// What reading the folder found at one path.
#[derive(Debug, Clone)]
struct Seen {
    size: u64,
    mtime_ns: u64,
    executable: bool,
    link: Option<String>,
}

impl Folder {
    /// Runs until `stop` fires: a round now, then one after every change in the folder or the share.
    pub(crate) async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
        mut fetched: mpsc::UnboundedReceiver<Fetched>,
    ) {
        let (changed_tx, mut changed) = mpsc::channel::<()>(1);
        let watcher = {
            use notify::Watcher as _;
            let tx = changed_tx.clone();
            let writing = self.writing.clone();
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Reading the folder opens its files and directories, and writing it creates,
                // renames and changes files: those reports are ours.
                let Ok(event) = event else { return };
                if matches!(event.kind, notify::EventKind::Access(_)) {
                    return;
                }
                let ours = {
                    let writing = writing.lock().expect("writing lock");
                    event.paths.iter().all(|p| {
                        p.extension().is_some_and(|e| e == "pairs-part") || writing.contains(p)
                    })
                };
                if !ours || event.paths.is_empty() {
                    let _ = tx.try_send(());
                }
            })
            .and_then(|mut w| {
                w.watch(&self.root, notify::RecursiveMode::Recursive)
                    .map(|_| w)
            })
        };
        let _watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    "cannot watch {} ({e}); reading it every {} s instead",
                    self.root.display(),
                    RESCAN.as_secs()
                );
                None
            }
        };
        let mut entries = self.log.subscribe();
        let mut quota_changed = self.quota.clone();
        loop {
            let last_round = Instant::now();
            let outcome = self.round().await;
            // A round that ends reports everything at once (see `round`); one that fails, here.
            if let Err(e) = &outcome {
                self.status.send_modify(|s| {
                    s.rounds += 1;
                    s.in_step = false;
                    s.error = Some(format!("{e:#}"));
                });
            }
            if let Err(e) = &outcome {
                tracing::warn!(dir = %self.root.display(), "sync round failed: {e:#}");
            }
            let again = match &outcome {
                Ok(true) => RESCAN,
                // Fetches under way report when done; what else is left is tried again soon.
                Ok(false) if !self.running.is_empty() => RESCAN,
                _ => Duration::from_millis(500),
            };
            let wake = tokio::time::sleep(again);
            tokio::pin!(wake);
            loop {
                tokio::select! {
                    _ = changed.recv() => {
                        // Our own writes are reported too: while fetches run, read the folder at
                        // most a few times a second.
                        if !self.running.is_empty() {
                            tokio::time::sleep_until((last_round + BUSY_ROUND_GAP).into()).await;
                        }
                    }
                    _ = entries.next() => {}
                    Ok(()) = quota_changed.changed() => {}
                    Some(done) = fetched.recv() => {
                        self.finish(done);
                        while let Ok(done) = fetched.try_recv() {
                            self.finish(done);
                        }
                        self.start_fetches();
                        self.publish_pending();
                        // The last fetch ends a round's work: check the folder is in step.
                        if !self.running.is_empty() {
                            continue;
                        }
                    }
                    _ = &mut wake => {}
                    _ = stop.changed() => return,
                }
                break;
            }
            // Take a burst of changes in one round.
            tokio::time::sleep(SETTLE).await;
            while changed.try_recv().is_ok() {}
            if *stop.borrow() {
                return;
            }
        }
    }

    fn publish_pending(&self) {
        let pending = self.queue.len() + self.running.len();
        self.status.send_modify(|s| s.pending = pending);
    }

    /// Records a fetch that ended.
    fn finish(&mut self, done: Fetched) {
        let Fetched {
            fetch,
            result,
            received,
            reused,
        } = done;
        self.running.remove(&fetch.path);
        self.status.send_modify(|s| {
            s.fetched += received;
            s.reused += reused;
        });
        let written = result.and_then(|()| {
            set_attributes(&fetch.dest, &fetch.shown.version.state)?;
            // The store serves the file where it was written: tell it the time we just set.
            self.blobs.store()?.relocate(&fetch.hash, &fetch.dest)?;
            self.record(&fetch.path, &fetch.dest, &fetch.shown, &fetch.content)
        });
        if let Err(e) = written {
            tracing::warn!("fetching {}: {e:#}", fetch.path);
        }
    }

    /// Starts queued fetches while slots are free.
    fn start_fetches(&mut self) {
        while self.running.len() < PARALLEL_FETCHES {
            let Some(fetch) = self.queue.pop_front() else {
                break;
            };
            if self.running.contains_key(&fetch.path) {
                continue;
            }
            let progress =
                match self
                    .blobs
                    .fetch_with_hint(fetch.hash, Some(fetch.dest.clone()), fetch.hint)
                {
                    Ok(progress) => progress,
                    Err(e) => {
                        tracing::warn!("cannot fetch {}: {e:#}", fetch.path);
                        continue;
                    }
                };
            self.running.insert(fetch.path.clone(), fetch.hash);
            self.writing
                .lock()
                .expect("writing lock")
                .insert(fetch.dest.clone());
            let done = self.done.clone();
            tokio::spawn(async move {
                let result = wait_complete(progress.clone()).await.map(|_| ());
                let p = progress.borrow().clone();
                let _ = done.send(Fetched {
                    fetch,
                    result,
                    received: p.received,
                    reused: p.local,
                });
            });
        }
    }

    /// Whether this node's key may write the share now.
    fn writable(&self) -> bool {
        let me = self.log.writer();
        me == self.log.id()
            || self
                .log
                .writers()
                .iter()
                .any(|(w, removed)| *w == me && !removed)
    }

    /// One round; true when the folder and the share agree.
    pub(crate) async fn round(&mut self) -> Result<bool> {
        {
            let running: HashSet<PathBuf> =
                self.running.keys().map(|p| self.root.join(p)).collect();
            self.writing
                .lock()
                .expect("writing lock")
                .retain(|p| running.contains(p));
        }
        let writable = self.writable();
        let root = self.root.clone();
        let started = Instant::now();
        let (seen, unreadable) = tokio::task::spawn_blocking(move || walk(&root)).await??;
        let walked = started.elapsed();
        self.refresh(&seen).await?;
        let refreshed = started.elapsed();
        let tree = if writable {
            self.publish(&seen).await?
        } else {
            // A mirror puts back what was deleted here.
            self.index.paths.retain(|path, _| seen.contains_key(path));
            self.tree().await?
        };
        let published = started.elapsed();
        let left = self.apply(&tree, writable).await?;
        let applied = started.elapsed();
        // What the index says is in place must be what the store says, after a crash too.
        self.blobs.store()?.flush()?;
        if let Some(path) = &self.index_path {
            self.index.save(path)?;
        }
        tracing::debug!(
            dir = %self.root.display(),
            files = seen.len(),
            left,
            "round: walk {walked:?}, hash {:?}, publish {:?}, apply {:?}, save {:?}",
            refreshed - walked,
            published - refreshed,
            applied - published,
            started.elapsed() - applied,
        );
        let (files, bytes) = tree.totals();
        let mut rejected = tree.rejected.clone();
        rejected.extend(tree.shadowed().into_iter().map(|path| Rejected {
            path,
            why: "a path under another that is a file".into(),
        }));
        rejected.extend(unreadable);
        // One update, so that no reader sees this round's totals with the last round's verdict.
        self.status.send_modify(|s| {
            s.rounds += 1;
            s.in_step = left == 0;
            s.error = None;
            s.writable = writable;
            s.files = files;
            s.bytes = bytes;
            s.entries = tree.entries;
            s.pending = left;
            s.rejected = rejected;
        });
        Ok(left == 0)
    }

    async fn tree(&self) -> Result<Tree> {
        let log = self.log.store().clone();
        Ok(tokio::task::spawn_blocking(move || Tree::of(&log, None)).await??)
    }

    /// Brings the index up to what is on disk: paths gone are dropped, files whose size or time
    /// changed are hashed again (and referenced by the blob store, so peers can fetch them).
    async fn refresh(&mut self, seen: &BTreeMap<String, Seen>) -> Result<()> {
        let mut found = Vec::new();
        let mut files = Vec::new();
        for (path, s) in seen {
            if let Some(local) = self.index.paths.get(path)
                && local.size == s.size
                && local.mtime_ns == s.mtime_ns
                && matches!(&local.content, Content::File { executable, .. } if *executable == s.executable && s.link.is_none())
            {
                continue;
            }
            match &s.link {
                Some(target) => found.push((
                    path,
                    Content::Link {
                        target: target.clone(),
                    },
                )),
                None => files.push(path),
            }
        }
        // Every new or changed file in one batch: hashed on every core, one store commit.
        let added = if files.is_empty() {
            Vec::new()
        } else {
            self.blobs
                .add_in_place(files.iter().map(|path| self.root.join(path)).collect())
                .await?
        };
        for (path, added) in files.into_iter().zip(added) {
            match added {
                Ok((hash, size)) => found.push((
                    path,
                    Content::File {
                        hash: hash.0,
                        size,
                        executable: seen[path].executable,
                    },
                )),
                // Changing under our feet, or unreadable: the next round tries again.
                Err(e) => tracing::debug!("cannot read {path}: {e:#}"),
            }
        }
        for (path, content) in found {
            let s = &seen[path];
            let synced = self.index.paths.get(path).and_then(|l| l.synced.clone());
            self.index.paths.insert(
                path.clone(),
                Local {
                    size: s.size,
                    mtime_ns: s.mtime_ns,
                    content,
                    synced,
                },
            );
        }
        Ok(())
    }

    /// Publishes what changed here since the last round as one batch; returns the share's tree
    /// after it (folded again only if something was published).
    async fn publish(&mut self, seen: &BTreeMap<String, Seen>) -> Result<Tree> {
        let tree = self.tree().await?;
        let shown = tree.shown();
        let mut changes = Vec::new();
        let mut gone = Vec::new();
        for (path, local) in &self.index.paths {
            if !seen.contains_key(path) {
                // Deleted here: delete it in the share, unless the share changed it meanwhile (then
                // the newer content comes back: nothing is lost).
                if let Some((value, _)) = &local.synced
                    && shown.get(path).is_some_and(|s| s.version.id == *value)
                {
                    changes.extend(tree.change_for(path, FileState::Deleted));
                }
                gone.push(path.clone());
                continue;
            }
            if !local.modified() {
                continue;
            }
            if let Some(s) = shown.get(path)
                && Content::of(&s.version.state).as_ref() == Some(&local.content)
            {
                continue; // The share already holds this: recorded below.
            }
            let base = local.synced.as_ref().map(|(value, _)| *value);
            changes.extend(tree.change_from(
                path,
                local.content.to_state(local.mtime_ns / 1_000_000),
                base,
            ));
        }
        for path in gone {
            self.index.paths.remove(&path);
        }
        let tree = if changes.is_empty() {
            tree
        } else {
            let count = changes.len() as u64;
            self.log.append_payloads(encode_changes(&changes)).await?;
            self.status.send_modify(|s| s.published += count);
            self.tree().await?
        };
        // Record what the share now holds for what is here. A value just published may lose the
        // path to a concurrent one (it is then a conflict copy): it is still what this copy is in
        // step with, so the next edit here replaces it rather than adding a third version.
        let shown = tree.shown();
        let me = self.log.writer();
        for (path, local) in self.index.paths.iter_mut() {
            if let Some(s) = shown.get(path)
                && Content::of(&s.version.state).as_ref() == Some(&local.content)
            {
                local.synced = Some((s.version.id, local.content.clone()));
            } else if local.modified()
                && let Some(v) = tree.versions(path).iter().find(|v| {
                    v.author == me && Content::of(&v.state).as_ref() == Some(&local.content)
                })
            {
                local.synced = Some((v.id, local.content.clone()));
            }
        }
        Ok(tree)
    }

    /// Writes the share's tree into the folder; returns how many paths are still to do.
    async fn apply(&mut self, tree: &Tree, writable: bool) -> Result<usize> {
        let shown = tree.shown();
        let mut kept_local = Vec::new();
        // Paths to write, copies first (they may save what a later write replaces), and paths to
        // delete.
        let mut writes: Vec<(String, Shown)> = Vec::new();
        let mut deferred = 0;
        let quota = *self.quota.borrow();
        let held_back: HashSet<&str> = quota
            .held_back(shown.iter().filter_map(|(path, s)| {
                Content::of(&s.version.state).map(|content| {
                    let size = match content {
                        Content::File { size, .. } => size,
                        Content::Link { .. } => 0,
                    };
                    (path.as_str(), size)
                })
            }))
            .into_iter()
            .collect();
        for (path, s) in &shown {
            let Some(content) = Content::of(&s.version.state) else {
                continue;
            };
            match self.index.paths.get(path) {
                Some(local) if local.content == content => {
                    if let Some(local) = self.index.paths.get_mut(path) {
                        local.synced = Some((s.version.id, content));
                    }
                }
                Some(local) if local.modified() && !self.saved_elsewhere(&shown, local) => {
                    if writable {
                        // Published as a conflict copy: overwritten once that copy is written.
                        deferred += 1;
                    } else {
                        kept_local.push(path.clone());
                    }
                }
                Some(local)
                    if local
                        .synced
                        .as_ref()
                        .is_some_and(|(v, _)| *v == s.version.id) => {}
                _ if self.running.contains_key(path) => {}
                _ if held_back.contains(path.as_str()) => {}
                _ => writes.push((path.clone(), s.clone())),
            }
        }
        let deletes: Vec<String> = self
            .index
            .paths
            .iter()
            .filter(|(path, _)| !shown.contains_key(*path))
            .filter_map(|(path, local)| {
                if local.modified() {
                    if !writable {
                        kept_local.push(path.clone());
                    }
                    None
                } else {
                    Some(path.clone())
                }
            })
            .collect();
        // A path about to be deleted whose content is wanted elsewhere is moved, not copied.
        let mut movable: HashMap<Content, Vec<String>> = HashMap::new();
        for path in &deletes {
            if let Some(local) = self.index.paths.get(path) {
                movable
                    .entry(local.content.clone())
                    .or_default()
                    .push(path.clone());
            }
        }
        let store = self.blobs.store()?;
        self.queue.clear();
        writes.sort_by_key(|(path, _)| self.index.paths.contains_key(path));
        for (path, s) in writes {
            let content = Content::of(&s.version.state).expect("writes hold content");
            let dest = match self.prepare(&path) {
                Ok(dest) => dest,
                Err(e) => {
                    tracing::warn!("not writing {path}: {e:#}");
                    continue;
                }
            };
            self.writing
                .lock()
                .expect("writing lock")
                .insert(dest.clone());
            if let Some(from) = movable.get_mut(&content).and_then(|paths| paths.pop()) {
                let source = self.root.join(&from);
                if std::fs::rename(&source, &dest).is_ok() {
                    remove_empty_parents(&self.root, &source);
                    if let Content::File { hash, .. } = &content {
                        let _ = store.relocate(&Hash(*hash), &dest);
                    }
                    self.index.paths.remove(&from);
                    self.record(&path, &dest, &s, &content)?;
                    continue;
                }
            }
            match &content {
                Content::Link { target } => {
                    let part = part_path(&dest);
                    let _ = std::fs::remove_file(&part);
                    std::os::unix::fs::symlink(target, &part)
                        .and_then(|_| std::fs::rename(&part, &dest))
                        .with_context(|| format!("writing the link {path}"))?;
                    self.record(&path, &dest, &s, &content)?;
                }
                &Content::File { hash, size, .. } => {
                    let hash = Hash(hash);
                    let held = matches!(store.status(&hash)?, BlobStatus::Complete { .. });
                    if size == 0 || held {
                        let from = store.clone();
                        let to = dest.clone();
                        let copied =
                            tokio::task::spawn_blocking(move || copy_blob(&from, &hash, size, &to))
                                .await?;
                        match copied {
                            Ok(()) => {
                                set_attributes(&dest, &s.version.state)?;
                                // Serve it from the new copy: the file it came from may be
                                // overwritten next (a conflict copy saves what is replaced).
                                if size > 0 {
                                    store.relocate(&hash, &dest)?;
                                }
                                self.record(&path, &dest, &s, &content)?;
                                continue;
                            }
                            // The file the store read it from changed since: the store no
                            // longer holds this content, so it is fetched instead.
                            Err(e) => {
                                tracing::debug!("copying {path} from the store: {e:#}");
                                if held {
                                    let _ = store.remove(&hash);
                                }
                            }
                        }
                    }
                    let hint = self.index.paths.get(&path).and_then(|l| match &l.content {
                        Content::File { hash, .. } => Some(Hash(*hash)),
                        _ => None,
                    });
                    self.queue.push_back(Fetch {
                        path,
                        dest,
                        shown: s,
                        content: content.clone(),
                        hash,
                        hint,
                    });
                }
            }
        }
        for path in deletes {
            if movable.values().all(|paths| !paths.contains(&path)) {
                continue; // Moved above.
            }
            let file = self.root.join(&path);
            match std::fs::remove_file(&file) {
                Ok(()) => remove_empty_parents(&self.root, &file),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("cannot delete {path}: {e}"),
            }
            self.index.paths.remove(&path);
        }
        self.start_fetches();
        kept_local.sort();
        kept_local.dedup();
        let held = held_back.len();
        self.status.send_modify(|s| {
            s.kept_local = kept_local;
            s.held_back = held;
            s.quota = quota;
        });
        Ok(deferred + self.queue.len() + self.running.len())
    }

    /// Whether a path changed here has its content saved in the share under some path that is
    /// already written here (a conflict copy of it, typically): then it may be overwritten.
    fn saved_elsewhere(&self, shown: &BTreeMap<String, Shown>, local: &Local) -> bool {
        shown.iter().any(|(other, s)| {
            Content::of(&s.version.state).as_ref() == Some(&local.content)
                && self
                    .index
                    .paths
                    .get(other)
                    .is_some_and(|l| l.synced.as_ref().is_some_and(|(v, _)| *v == s.version.id))
        })
    }

    /// The place to write `path`: inside the folder, parents created, never through a link or a file.
    fn prepare(&self, path: &str) -> Result<PathBuf> {
        let dest = safe_join(&self.root, path)?;
        let mut dir = self.root.clone();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            dir.push(part);
            match std::fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => bail!("{} is not a directory here", dir.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
            }
        }
        if let Ok(meta) = std::fs::symlink_metadata(&dest)
            && meta.is_dir()
        {
            bail!("{} is a directory here", dest.display());
        }
        Ok(dest)
    }

    /// Records that `path` now holds the share's value `shown`.
    fn record(&mut self, path: &str, dest: &Path, shown: &Shown, content: &Content) -> Result<()> {
        let meta = std::fs::symlink_metadata(dest)
            .with_context(|| format!("reading {}", dest.display()))?;
        self.index.paths.insert(
            path.to_string(),
            Local {
                size: meta.len(),
                mtime_ns: mtime_ns(&meta),
                content: content.clone(),
                synced: Some((shown.version.id, content.clone())),
            },
        );
        Ok(())
    }
}

/// Sets the executable bit and the writer's modification time.
fn set_attributes(dest: &Path, state: &FileState) -> Result<()> {
    if let FileState::File {
        executable, mtime, ..
    } = state
    {
        use std::os::unix::fs::PermissionsExt as _;
        let file = std::fs::File::options()
            .write(true)
            .open(dest)
            .with_context(|| format!("opening {}", dest.display()))?;
        let mut perms = file.metadata()?.permissions();
        let mode = perms.mode();
        perms.set_mode(if *executable {
            mode | ((mode & 0o444) >> 2)
        } else {
            mode & !0o111
        });
        file.set_permissions(perms)?;
        let _ = file.set_modified(UNIX_EPOCH + Duration::from_millis(*mtime));
    }
    Ok(())
}

/// Copies a blob held in the store to `dest` (through a `.pairs-part` file), checking every group.
fn copy_blob(store: &pairs_blobs::Store, hash: &Hash, size: u64, dest: &Path) -> Result<()> {
    use std::io::Write as _;
    let part = part_path(dest);
    let copy = || -> Result<()> {
        let mut out =
            std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?;
        if size > 0 {
            let reader = store.reader(hash)?;
            for group in 0..pairs_blobs::layer::group_count(size) {
                let bytes = reader.read_group(group)?;
                out.write_all(&bytes)?;
            }
        }
        out.sync_data()?;
        drop(out);
        std::fs::rename(&part, dest).with_context(|| format!("moving into {}", dest.display()))
    };
    copy().inspect_err(|_| {
        let _ = std::fs::remove_file(&part);
    })
}

/// Removes the directories left empty above `file`, up to (not including) `root`.
fn remove_empty_parents(root: &Path, file: &Path) {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) || std::fs::remove_dir(d).is_err() {
            return;
        }
        dir = d.parent();
    }
}

fn mtime_ns(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Reads the folder: every file and link (links are never followed), honouring `.pairsignore`
/// files (gitignore syntax). Names that are not UTF-8 are reported, not shared.
fn walk(root: &Path) -> Result<(BTreeMap<String, Seen>, Vec<Rejected>)> {
    // On every core: a folder round reads every entry's metadata, and many small files make the
    // walk a good part of a round.
    let found = Mutex::new((Vec::new(), Vec::new()));
    ignore::WalkBuilder::new(root)
        .standard_filters(false)
        .add_custom_ignore_filename(".pairsignore")
        .follow_links(false)
        .build_parallel()
        .run(|| {
            let found = &found;
            Box::new(move |entry| {
                match entry {
                    Ok(entry) => match look_at(root, &entry) {
                        Some(Ok(seen)) => found.lock().expect("walk results").0.push(seen),
                        Some(Err(rejected)) => found.lock().expect("walk results").1.push(rejected),
                        None => {}
                    },
                    Err(e) => tracing::debug!("reading {}: {e}", root.display()),
                }
                ignore::WalkState::Continue
            })
        });
    let (seen, mut rejected) = found.into_inner().expect("walk results");
    rejected.sort_by(|a: &Rejected, b: &Rejected| a.path.cmp(&b.path));
    Ok((seen.into_iter().collect(), rejected))
}

/// What one entry of the walk is: a file or link to keep in step, one to report, or nothing
/// (directories, our own partial files, sockets and the like, entries gone meanwhile).
fn look_at(root: &Path, entry: &ignore::DirEntry) -> Option<Result<(String, Seen), Rejected>> {
    use std::os::unix::fs::PermissionsExt as _;
    let file_type = entry.file_type()?;
    if file_type.is_dir() {
        return None;
    }
    let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
    let Some(path) = relative.to_str().map(|p| p.to_string()) else {
        return Some(Err(Rejected {
            path: relative.to_string_lossy().into_owned(),
            why: "a name that is not UTF-8".into(),
        }));
    };
    if path.ends_with(".pairs-part") {
        return None;
    }
    let meta = entry.path().symlink_metadata().ok()?;
    let link = if file_type.is_symlink() {
        let target = std::fs::read_link(entry.path()).ok()?;
        let target = target.to_str()?.to_string();
        if let Err(why) = super::model::check_link(&path, &target) {
            return Some(Err(Rejected { path, why }));
        }
        Some(target)
    } else if file_type.is_file() {
        None
    } else {
        return None; // Sockets, fifos, devices.
    };
    Some(Ok((
        path,
        Seen {
            size: meta.len(),
            mtime_ns: mtime_ns(&meta),
            executable: meta.permissions().mode() & 0o111 != 0,
            link,
        },
    )))
}
