//! The blob store: content files and piece layers on disk, what is held of each blob in redb.
//!
//! A blob's bytes live either in the store's `data/` directory (added with [`ImportMode::Copy`] or fetched
//! without a destination) or in a file the user named (added with [`ImportMode::Reference`], or fetched to an
//! output path): then the store records the path, its size and modification time, and every group read from
//! it is checked against the layer before it is served, so an edited file is never passed on as the blob.
//!
//! Partial blobs keep a bitfield of verified groups. Groups are verified before they are written; the
//! bitfield is persisted lazily ([`PartialBlob::checkpoint`]: data synced first, then the bitfield), so a crash
//! loses at most what was written since the last checkpoint — and not even that: on reopening, the regions
//! written since (found with `SEEK_DATA` in the sparse file) are hashed again and every group that checks is
//! kept. Nothing unverified is ever marked present.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::bitfield::Bitfield;
use crate::hash::Hash;
use crate::hashing::{self, HashError};
use crate::layer::{GROUP_SIZE, Layer, LayerBuilder, group_count, group_len};

const BLOBS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("blobs");
/// Piece layers of blobs of more than one group (32 bytes per group), written with their record.
const LAYERS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("layers");
/// Bytes exchanged with each peer over all sessions: node id → (received from it, sent to it).
const LEDGER: TableDefinition<&[u8; 32], (u64, u64)> = TableDefinition::new("ledger");

/// How a file enters the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMode {
    /// Copy the bytes into the store: later edits of the file do not matter.
    Copy,
    /// Serve the file where it is (no copy); if it changes, it stops being served.
    Reference,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Location {
    Internal,
    External {
        path: PathBuf,
        mtime: Option<(u64, u32)>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    size: u64,
    /// `None` when complete.
    partial: Option<Vec<u8>>,
    location: Location,
}

/// What the store holds of a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobStatus {
    /// Nothing.
    Absent,
    /// Some groups.
    Partial {
        /// Size in bytes.
        size: u64,
        /// Groups held (as last checkpointed).
        have: Bitfield,
    },
    /// All of it.
    Complete {
        /// Size in bytes.
        size: u64,
    },
}

/// A store failure, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk is full.
    #[error(
        "disk full while writing {0}: free some space and run the command again (verified data is kept)"
    )]
    DiskFull(String),
    /// Any other I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: io::Error,
    },
    /// The database failed.
    #[error("blob store database: {0}")]
    Db(String),
    /// A referenced file changed after it was added.
    #[error("{0} changed since it was added: add it again to share its new content")]
    Changed(String),
    /// The blob is not (fully) here.
    #[error("blob {0} is not in the store")]
    NotFound(Hash),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let context = context.into();
    move |source| {
        if source.raw_os_error() == Some(28) {
            StoreError::DiskFull(context)
        } else {
            StoreError::Io { context, source }
        }
    }
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

struct Inner {
    dir: PathBuf,
    db: Database,
    /// Whether a commit since the last durable one was not durable ([`Store::flush`]).
    unflushed: std::sync::atomic::AtomicBool,
}

/// The blob store. Cheap to clone; every clone is the same store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

fn mtime_of(meta: &fs::Metadata) -> Option<(u64, u32)> {
    let t = meta
        .modified()
        .ok()?
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?;
    Some((t.as_secs(), t.subsec_nanos()))
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(dir.join("data"))
            .map_err(io_err(format!("creating {}", dir.display())))?;
        // The database holds records and piece layers, read once per download or serve: a small
        // cache keeps a node's memory flat (a 1 GiB download stays well under 64 MiB).
        let db = redb::Builder::new()
            .set_cache_size(8 << 20)
            .create(dir.join("blobs.redb"))
            .map_err(db_err)?;
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(BLOBS).map_err(db_err)?;
        tx.open_table(LAYERS).map_err(db_err)?;
        tx.open_table(LEDGER).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(Store {
            inner: Arc::new(Inner {
                dir,
                db,
                unflushed: false.into(),
            }),
        })
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn data_path(&self, hash: &Hash) -> PathBuf {
        self.inner.dir.join("data").join(hash.to_hex())
    }

    /// Where layers were kept before they moved into the database (still read, for older stores).
    fn layer_path(&self, hash: &Hash) -> PathBuf {
        self.inner
            .dir
            .join("data")
            .join(format!("{}.layer", hash.to_hex()))
    }

    fn record(&self, hash: &Hash) -> Result<Option<Record>, StoreError> {
        let tx = self.inner.db.begin_read().map_err(db_err)?;
        get_record(&tx.open_table(BLOBS).map_err(db_err)?, hash)
    }

    /// Runs `f` in one write transaction. A commit that is not `durable` costs no disk sync: it is
    /// lost in a crash unless a durable commit follows ([`Store::flush`]), so it may only record what
    /// the store can find again on its own (a partial blob's bitfield is rebuilt from its file).
    fn write(
        &self,
        durable: bool,
        f: impl FnOnce(&WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut tx = self.inner.db.begin_write().map_err(db_err)?;
        if !durable {
            tx.set_durability(Durability::None).map_err(db_err)?;
        }
        f(&tx)?;
        // Set while the transaction is held: write transactions take turns, so no other commit
        // can land between this one and its mark.
        let unflushed = &self.inner.unflushed;
        unflushed.store(!durable, std::sync::atomic::Ordering::Release);
        tx.commit().map_err(|e| {
            unflushed.store(true, std::sync::atomic::Ordering::Release);
            db_err(e)
        })
    }

    /// Makes every commit so far durable (one disk sync, and only if one is owed).
    pub fn flush(&self) -> Result<(), StoreError> {
        if self
            .inner
            .unflushed
            .load(std::sync::atomic::Ordering::Acquire)
        {
            self.write(true, |_| Ok(()))?;
        }
        Ok(())
    }

    fn content_path(&self, hash: &Hash, record: &Record) -> PathBuf {
        match &record.location {
            Location::Internal => self.data_path(hash),
            Location::External { path, .. } => path.clone(),
        }
    }

    /// Adds a file; returns its hash and size.
    pub fn import_file(&self, path: &Path, mode: ImportMode) -> Result<(Hash, u64), StoreError> {
        let mut file = File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
        let meta = file
            .metadata()
            .map_err(io_err(format!("reading {}", path.display())))?;
        let mut copy = match mode {
            ImportMode::Copy => {
                let tmp = tempfile_in(&self.inner.dir.join("data"))?;
                Some(tmp)
            }
            ImportMode::Reference => None,
        };
        let mut builder = LayerBuilder::default();
        // Small enough to stay in the core's cache between the read and the hashing; page-aligned.
        let mut raw = Vec::new();
        let buf = hashing::page_aligned(&mut raw, 128 << 10);
        loop {
            let n = file
                .read(buf)
                .map_err(io_err(format!("reading {}", path.display())))?;
            if n == 0 {
                break;
            }
            builder.update(&buf[..n]);
            if let Some((f, p)) = &mut copy {
                f.write_all(&buf[..n])
                    .map_err(io_err(format!("copying into {}", p.display())))?;
            }
        }
        let (hash, layer) = builder.finish();
        let size = layer.size();
        if self.holds_whole(&hash)? {
            if let Some((_, tmp)) = copy {
                let _ = fs::remove_file(tmp);
            }
            return Ok((hash, size));
        }
        let location = match copy {
            Some((f, tmp)) => {
                f.sync_data().map_err(io_err("syncing a copied blob"))?;
                fs::rename(&tmp, self.data_path(&hash))
                    .map_err(io_err("moving a copied blob into place"))?;
                Location::Internal
            }
            None => Location::External {
                path: fs::canonicalize(path)
                    .map_err(io_err(format!("resolving {}", path.display())))?,
                mtime: mtime_of(&meta),
            },
        };
        let record = Record {
            size,
            partial: None,
            location,
        };
        self.write(true, |tx| insert(tx, &hash, &record, Some(&layer)))?;
        Ok((hash, size))
    }

    /// Adds many files where they are ([`ImportMode::Reference`]): hashed on every core, recorded in one
    /// commit. Each path gets its own result, in order; a file that changed while it was read is an
    /// error in its place (add it again once it is still).
    pub fn import_files_in_place<P: AsRef<Path> + Sync>(
        &self,
        paths: &[P],
    ) -> Vec<Result<(Hash, u64), StoreError>> {
        let hashed = hashing::hash_paths(paths, hashing::threads());
        let mut parents: std::collections::HashMap<PathBuf, PathBuf> = Default::default();
        let mut results = Vec::with_capacity(paths.len());
        let mut records = Vec::new();
        for (path, hashed) in paths.iter().zip(hashed) {
            let path = path.as_ref();
            let result = hashed
                .map_err(|e| match e {
                    HashError::Changed => StoreError::Changed(path.display().to_string()),
                    HashError::Io(e) => io_err(format!("reading {}", path.display()))(e),
                })
                .and_then(|h| {
                    let located = resolve(&mut parents, path)
                        .map_err(io_err(format!("resolving {}", path.display())))?;
                    Ok((h, located))
                });
            match result {
                Ok((h, located)) => {
                    results.push(Ok((h.hash, h.layer.size())));
                    records.push((h, located));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if records.is_empty() {
            return results;
        }
        let written = self.write(true, |tx| {
            // Tables opened once for the batch: opening them per file cost as much as the inserts.
            let mut blobs = tx.open_table(BLOBS).map_err(db_err)?;
            let mut layers = tx.open_table(LAYERS).map_err(db_err)?;
            for (h, path) in &records {
                if get_record(&blobs, &h.hash)?
                    .is_some_and(|old| old.partial.is_none() && location_holds(&old))
                {
                    continue;
                }
                let record = Record {
                    size: h.layer.size(),
                    partial: None,
                    location: Location::External {
                        path: path.clone(),
                        mtime: mtime_of(&h.meta),
                    },
                };
                put(&mut blobs, &mut layers, &h.hash, &record, Some(&h.layer))?;
            }
            Ok(())
        });
        if let Err(e) = written {
            let why = e.to_string();
            for result in results.iter_mut().filter(|r| r.is_ok()) {
                *result = Err(StoreError::Db(why.clone()));
            }
        }
        results
    }

    /// Adds bytes held in memory (copied into the store).
    pub fn import_bytes(&self, bytes: &[u8]) -> Result<Hash, StoreError> {
        let (hash, layer) = Layer::of(bytes);
        if self.holds_whole(&hash)? {
            return Ok(hash);
        }
        let (mut f, tmp) = tempfile_in(&self.inner.dir.join("data"))?;
        f.write_all(bytes).map_err(io_err("writing a blob"))?;
        f.sync_data().map_err(io_err("syncing a blob"))?;
        fs::rename(&tmp, self.data_path(&hash)).map_err(io_err("moving a blob into place"))?;
        let record = Record {
            size: layer.size(),
            partial: None,
            location: Location::Internal,
        };
        self.write(true, |tx| insert(tx, &hash, &record, Some(&layer)))?;
        Ok(hash)
    }

    /// The layer of a blob held (fully or partly).
    pub fn layer(&self, hash: &Hash) -> Result<Layer, StoreError> {
        let record = self.record(hash)?.ok_or(StoreError::NotFound(*hash))?;
        if record.size <= GROUP_SIZE {
            return Ok(Layer::from_trusted_bytes(record.size, &[]).expect("empty layer"));
        }
        let stored = {
            let tx = self.inner.db.begin_read().map_err(db_err)?;
            let table = tx.open_table(LAYERS).map_err(db_err)?;
            table
                .get(hash.as_bytes())
                .map_err(db_err)?
                .map(|v| v.value().to_vec())
        };
        let bytes = match stored {
            Some(bytes) => bytes,
            None => fs::read(self.layer_path(hash)).map_err(io_err("reading a piece layer"))?,
        };
        Layer::from_trusted_bytes(record.size, &bytes).ok_or_else(|| {
            StoreError::Db(format!(
                "piece layer of {} has the wrong length",
                hash.short()
            ))
        })
    }

    /// What the store holds of `hash`.
    pub fn status(&self, hash: &Hash) -> Result<BlobStatus, StoreError> {
        Ok(match self.record(hash)? {
            None => BlobStatus::Absent,
            Some(Record {
                size,
                partial: None,
                ..
            }) => BlobStatus::Complete { size },
            Some(Record {
                size,
                partial: Some(bits),
                ..
            }) => BlobStatus::Partial {
                size,
                have: Bitfield::from_bytes(group_count(size), bits)
                    .ok_or_else(|| StoreError::Db("bitfield of the wrong length".into()))?,
            },
        })
    }

    /// Whether the store holds all of `hash` where its record says (see [`location_holds`]).
    fn holds_whole(&self, hash: &Hash) -> Result<bool, StoreError> {
        Ok(self
            .record(hash)?
            .is_some_and(|r| r.partial.is_none() && location_holds(&r)))
    }

    /// Every blob in the store, with its status.
    pub fn list(&self) -> Result<Vec<(Hash, BlobStatus)>, StoreError> {
        let tx = self.inner.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(BLOBS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (key, _) = row.map_err(db_err)?;
            out.push(Hash(*key.value()));
        }
        drop(table);
        drop(tx);
        out.into_iter().map(|h| Ok((h, self.status(&h)?))).collect()
    }

    /// Forgets a blob; deletes its bytes if the store holds them (a referenced file is left alone).
    pub fn remove(&self, hash: &Hash) -> Result<bool, StoreError> {
        let Some(record) = self.record(hash)? else {
            return Ok(false);
        };
        self.write(true, |tx| {
            tx.open_table(BLOBS)
                .map_err(db_err)?
                .remove(hash.as_bytes())
                .map_err(db_err)?;
            tx.open_table(LAYERS)
                .map_err(db_err)?
                .remove(hash.as_bytes())
                .map_err(db_err)?;
            Ok(())
        })?;
        if matches!(record.location, Location::Internal) {
            let _ = fs::remove_file(self.data_path(hash));
        }
        let _ = fs::remove_file(self.layer_path(hash));
        Ok(true)
    }

    /// Opens a blob to serve its groups (complete or partial).
    pub fn reader(&self, hash: &Hash) -> Result<BlobReader, StoreError> {
        let record = self.record(hash)?.ok_or(StoreError::NotFound(*hash))?;
        if let Location::External { path, .. } = &record.location
            && !location_holds(&record)
        {
            return Err(StoreError::Changed(path.display().to_string()));
        }
        let path = self.content_path(hash, &record);
        let file = File::open(&path).map_err(io_err(format!("opening {}", path.display())))?;
        let external =
            matches!(record.location, Location::External { .. }) && record.partial.is_none();
        let layer = if external {
            Some(self.layer(hash)?)
        } else {
            None
        };
        Ok(BlobReader {
            hash: *hash,
            size: record.size,
            file,
            check: layer,
            path,
        })
    }

    /// Copies a complete blob to `out` (written to a temporary file beside it, then renamed).
    pub fn export(&self, hash: &Hash, out: &Path) -> Result<u64, StoreError> {
        let reader = self.reader(hash)?;
        let dir = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let (mut f, tmp) = tempfile_in(dir)?;
        let mut buf = vec![0u8; GROUP_SIZE as usize];
        for group in 0..group_count(reader.size) {
            let n = reader.read_group_into(group, &mut buf)?;
            f.write_all(&buf[..n])
                .map_err(io_err(format!("writing {}", tmp.display())))?;
        }
        f.sync_data()
            .map_err(io_err(format!("syncing {}", tmp.display())))?;
        fs::rename(&tmp, out).map_err(io_err(format!("moving into {}", out.display())))?;
        Ok(reader.size)
    }

    /// Starts or resumes a partial blob whose layer is verified. Its bytes go to `dest` (a file the caller
    /// renames when complete) or into the store. Returns the handle and the groups already held, including
    /// those written after the last checkpoint that still verify.
    pub fn partial(
        &self,
        hash: &Hash,
        layer: &Layer,
        dest: Option<&Path>,
    ) -> Result<(PartialBlob, Bitfield), StoreError> {
        let size = layer.size();
        let existing = self.record(hash)?;
        if let Some(record) = &existing
            && record.partial.is_none()
        {
            return Err(StoreError::Db(format!(
                "blob {} is already complete",
                hash.short()
            )));
        }
        let record = match existing {
            Some(r) if r.size == size => r,
            _ => {
                let location = match dest {
                    Some(path) => Location::External {
                        path: path.to_path_buf(),
                        mtime: None,
                    },
                    None => Location::Internal,
                };
                let record = Record {
                    size,
                    partial: Some(Bitfield::new(group_count(size)).as_bytes().to_vec()),
                    location,
                };
                // Durable: a download resumed after a crash picks up from this record.
                self.write(true, |tx| insert(tx, hash, &record, Some(layer)))?;
                record
            }
        };
        let path = self.content_path(hash, &record);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(format!("opening {}", path.display())))?;
        file.set_len(size)
            .map_err(io_err(format!("sizing {}", path.display())))?;
        let mut have = Bitfield::from_bytes(
            group_count(size),
            record.partial.clone().unwrap_or_default(),
        )
        .ok_or_else(|| StoreError::Db("bitfield of the wrong length".into()))?;
        let recovered = recover(&file, hash, layer, &mut have)?;
        let blob = PartialBlob {
            store: self.clone(),
            hash: *hash,
            size,
            file,
            path,
            recovered,
        };
        if recovered > 0 {
            blob.checkpoint(&have)?;
        }
        Ok((blob, have))
    }

    /// Bytes received from and sent to a peer (by node id) over every earlier session.
    pub fn ledger(&self, peer: &[u8; 32]) -> Result<(u64, u64), StoreError> {
        let tx = self.inner.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(LEDGER).map_err(db_err)?;
        Ok(table
            .get(peer)
            .map_err(db_err)?
            .map(|v| v.value())
            .unwrap_or((0, 0)))
    }

    /// Adds a session's exchange with a peer to the ledger.
    pub fn add_to_ledger(
        &self,
        peer: &[u8; 32],
        received: u64,
        sent: u64,
    ) -> Result<(), StoreError> {
        if received == 0 && sent == 0 {
            return Ok(());
        }
        let tx = self.inner.db.begin_write().map_err(db_err)?;
        {
            let mut table = tx.open_table(LEDGER).map_err(db_err)?;
            let (r, s) = table
                .get(peer)
                .map_err(db_err)?
                .map(|v| v.value())
                .unwrap_or((0, 0));
            table
                .insert(peer, (r.saturating_add(received), s.saturating_add(sent)))
                .map_err(db_err)?;
        }
        tx.commit().map_err(db_err)
    }

    /// Records that a blob written to an outside file now lives at `path` (after a rename).
    ///
    /// Not durable until [`Store::flush`]: a caller that records elsewhere that the file is in place
    /// flushes first. Lost in a crash, the blob is only not served from there until added again.
    pub fn relocate(&self, hash: &Hash, path: &Path) -> Result<(), StoreError> {
        let mut record = self.record(hash)?.ok_or(StoreError::NotFound(*hash))?;
        let meta = fs::metadata(path).map_err(io_err(format!("reading {}", path.display())))?;
        record.location = Location::External {
            path: path.to_path_buf(),
            mtime: mtime_of(&meta),
        };
        self.write(false, |tx| insert(tx, hash, &record, None))
    }
}

/// Writes a blob's record (and its layer, when given) in `tx`.
fn insert(
    tx: &WriteTransaction,
    hash: &Hash,
    record: &Record,
    layer: Option<&Layer>,
) -> Result<(), StoreError> {
    let mut blobs = tx.open_table(BLOBS).map_err(db_err)?;
    let mut layers = tx.open_table(LAYERS).map_err(db_err)?;
    put(&mut blobs, &mut layers, hash, record, layer)
}

type Table<'tx> = redb::Table<'tx, &'static [u8; 32], &'static [u8]>;

/// Writes a blob's record (and its layer, when given) into open tables.
fn put(
    blobs: &mut Table<'_>,
    layers: &mut Table<'_>,
    hash: &Hash,
    record: &Record,
    layer: Option<&Layer>,
) -> Result<(), StoreError> {
    let bytes = postcard::to_stdvec(record).map_err(db_err)?;
    blobs
        .insert(hash.as_bytes(), bytes.as_slice())
        .map_err(db_err)?;
    if let Some(layer) = layer.filter(|l| l.size() > GROUP_SIZE) {
        layers
            .insert(hash.as_bytes(), layer.to_bytes().as_slice())
            .map_err(db_err)?;
    }
    Ok(())
}

/// A blob's record from the records table of any transaction.
fn get_record(
    table: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    hash: &Hash,
) -> Result<Option<Record>, StoreError> {
    let Some(value) = table.get(hash.as_bytes()).map_err(db_err)? else {
        return Ok(None);
    };
    postcard::from_bytes(value.value())
        .map(Some)
        .map_err(db_err)
}

/// Whether a record's bytes are still where it says: always for the store's own files; for a
/// complete blob in a user's file, when its size and modification time are unchanged.
fn location_holds(record: &Record) -> bool {
    match &record.location {
        Location::Internal => true,
        Location::External { path, mtime } => match fs::metadata(path) {
            Err(_) => false,
            Ok(meta) => {
                record.partial.is_some() || (meta.len() == record.size && mtime_of(&meta) == *mtime)
            }
        },
    }
}

/// The absolute path of a file, its directory resolved once per batch (links in the file's own
/// name are kept: the file is read through them).
fn resolve(
    parents: &mut std::collections::HashMap<PathBuf, PathBuf>,
    path: &Path,
) -> io::Result<PathBuf> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return fs::canonicalize(path);
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    if let Some(resolved) = parents.get(parent) {
        return Ok(resolved.join(name));
    }
    let resolved = fs::canonicalize(parent)?;
    parents.insert(parent.to_path_buf(), resolved.clone());
    Ok(resolved.join(name))
}

/// Finds groups written after the last checkpoint (data regions of the sparse file) and keeps those that
/// verify. Returns how many were recovered.
fn recover(
    file: &File,
    hash: &Hash,
    layer: &Layer,
    have: &mut Bitfield,
) -> Result<u64, StoreError> {
    let size = layer.size();
    let mut recovered = 0;
    let mut offset = 0u64;
    let mut buf = vec![0u8; GROUP_SIZE as usize];
    while offset < size {
        // Holes were never written: skip them without reading.
        let data_start = match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(offset)) {
            Ok(at) => at,
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => offset, // SEEK_DATA unsupported here: check every group.
        };
        let data_end = match rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(data_start)) {
            Ok(at) => at.min(size),
            Err(_) => size,
        };
        let first = data_start / GROUP_SIZE;
        let last = data_end.div_ceil(GROUP_SIZE);
        for group in first..last {
            if have.get(group) {
                continue;
            }
            let len = group_len(size, group);
            if file
                .read_exact_at(&mut buf[..len], group * GROUP_SIZE)
                .is_ok()
                && layer.check_group(hash, group, &buf[..len])
            {
                have.set(group);
                recovered += 1;
            }
        }
        offset = (last * GROUP_SIZE).max(data_end).max(offset + 1);
    }
    Ok(recovered)
}

/// Reads groups of a blob to serve them.
#[derive(Debug)]
pub struct BlobReader {
    hash: Hash,
    size: u64,
    file: File,
    /// Layer to check groups against (files outside the store, which someone may edit).
    check: Option<Layer>,
    path: PathBuf,
}

impl BlobReader {
    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads group `group` into `buf` (at least [`GROUP_SIZE`] long); returns its length.
    pub fn read_group_into(&self, group: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        let len = group_len(self.size, group);
        self.file
            .read_exact_at(&mut buf[..len], group * GROUP_SIZE)
            .map_err(io_err(format!("reading {}", self.path.display())))?;
        if let Some(layer) = &self.check
            && !layer.check_group(&self.hash, group, &buf[..len])
        {
            return Err(StoreError::Changed(self.path.display().to_string()));
        }
        Ok(len)
    }

    /// Group `group` as a new buffer.
    pub fn read_group(&self, group: u64) -> Result<Vec<u8>, StoreError> {
        let mut buf = vec![0u8; group_len(self.size, group)];
        let len = buf.len();
        if len == 0 {
            return Ok(buf);
        }
        let mut full = vec![0u8; GROUP_SIZE as usize];
        self.read_group_into(group, &mut full)?;
        buf.copy_from_slice(&full[..len]);
        Ok(buf)
    }

    /// Reads `buf.len()` bytes at `offset` (no check: for local readers of complete store blobs).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), StoreError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(io_err(format!("reading {}", self.path.display())))
    }
}

/// A blob being downloaded: verified groups are written here, then checkpointed.
#[derive(Debug)]
pub struct PartialBlob {
    store: Store,
    hash: Hash,
    size: u64,
    file: File,
    path: PathBuf,
    recovered: u64,
}

impl PartialBlob {
    /// Where the bytes are being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Groups found written and valid when the download was resumed.
    pub fn recovered(&self) -> u64 {
        self.recovered
    }

    /// Writes a group the caller verified.
    pub fn write_group(&self, group: u64, bytes: &[u8]) -> Result<(), StoreError> {
        debug_assert_eq!(bytes.len(), group_len(self.size, group));
        self.file
            .write_all_at(bytes, group * GROUP_SIZE)
            .map_err(io_err(format!("writing {}", self.path.display())))
    }

    /// Makes the groups in `have` durable: data synced first, then the bitfield recorded.
    pub fn checkpoint(&self, have: &Bitfield) -> Result<(), StoreError> {
        self.file
            .sync_data()
            .map_err(io_err(format!("syncing {}", self.path.display())))?;
        let mut record = self
            .store
            .record(&self.hash)?
            .ok_or(StoreError::NotFound(self.hash))?;
        record.partial = if have.is_full() {
            None
        } else {
            Some(have.as_bytes().to_vec())
        };
        if have.is_full()
            && let Location::External { path, mtime } = &mut record.location
        {
            *mtime = fs::metadata(&*path).ok().as_ref().and_then(mtime_of);
        }
        // Progress need not be durable (groups written since are found again on resuming);
        // completion is.
        let complete = have.is_full();
        self.store
            .write(complete, |tx| insert(tx, &self.hash, &record, None))
    }
}

/// A new temporary file in `dir` (removed by the caller or renamed into place).
fn tempfile_in(dir: &Path) -> Result<(File, PathBuf), StoreError> {
    fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    for _ in 0..16 {
        let path = dir.join(format!(".pairs-tmp-{:016x}", fastrand::u64(..)));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(format!("creating a file in {}", dir.display()))(e)),
        }
    }
    Err(StoreError::Io {
        context: format!("creating a file in {}", dir.display()),
        source: io::ErrorKind::AlreadyExists.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn import_read_export_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let data = bytes(100_000, 1);
        let file = dir.path().join("f");
        fs::write(&file, &data).unwrap();
        for mode in [ImportMode::Copy, ImportMode::Reference] {
            let (hash, size) = store.import_file(&file, mode).unwrap();
            assert_eq!((hash, size), (Hash::of(&data), data.len() as u64));
            assert_eq!(store.status(&hash).unwrap(), BlobStatus::Complete { size });
            let reader = store.reader(&hash).unwrap();
            assert_eq!(reader.read_group(1).unwrap(), &data[16384..32768]);
            let out = dir.path().join("out");
            store.export(&hash, &out).unwrap();
            assert_eq!(fs::read(&out).unwrap(), data);
            assert!(store.remove(&hash).unwrap());
            assert_eq!(store.status(&hash).unwrap(), BlobStatus::Absent);
        }
        assert!(
            file.exists(),
            "removing a referenced blob leaves the file alone"
        );
    }

    #[test]
    fn an_edited_referenced_file_is_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let file = dir.path().join("f");
        fs::write(&file, bytes(50_000, 2)).unwrap();
        let (hash, _) = store.import_file(&file, ImportMode::Reference).unwrap();
        let reader = store.reader(&hash).unwrap();
        // Same size, same mtime granularity is not guaranteed: the group check catches it.
        let f = OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all_at(b"X", 20_000).unwrap();
        assert!(matches!(reader.read_group(1), Err(StoreError::Changed(_))));
        assert!(reader.read_group(0).is_ok());
    }

    #[test]
    fn partial_blob_resumes_with_groups_written_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let data = bytes(10 * GROUP_SIZE as usize + 5, 3);
        let (hash, layer) = Layer::of(&data);
        let group = |g: u64| {
            &data[(g * GROUP_SIZE) as usize
                ..((g * GROUP_SIZE) as usize + group_len(data.len() as u64, g))]
        };
        {
            let store = Store::open(dir.path().join("store")).unwrap();
            let (blob, mut have) = store.partial(&hash, &layer, None).unwrap();
            assert_eq!(have.count(), 0);
            for g in [0, 1, 2] {
                blob.write_group(g, group(g)).unwrap();
                have.set(g);
            }
            blob.checkpoint(&have).unwrap();
            // Written but never checkpointed (a crash right now), and one torn write.
            blob.write_group(7, group(7)).unwrap();
            blob.write_group(10, group(10)).unwrap();
            blob.file
                .write_all_at(&group(8)[..100], 8 * GROUP_SIZE)
                .unwrap();
        }
        let store = Store::open(dir.path().join("store")).unwrap();
        let (blob, have) = store.partial(&hash, &layer, None).unwrap();
        assert_eq!(have.ones().collect::<Vec<_>>(), vec![0, 1, 2, 7, 10]);
        assert_eq!(blob.recovered(), 2);
        for g in 0..group_count(data.len() as u64) {
            if !have.get(g) {
                blob.write_group(g, group(g)).unwrap();
            }
        }
        blob.checkpoint(&Bitfield::full(have.len())).unwrap();
        assert_eq!(
            store.status(&hash).unwrap(),
            BlobStatus::Complete {
                size: data.len() as u64
            }
        );
        let out = dir.path().join("out");
        store.export(&hash, &out).unwrap();
        assert_eq!(fs::read(out).unwrap(), data);
    }
}
