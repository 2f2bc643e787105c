//! Hashing files as fast as the machine allows: every core, every byte read once and hashed once.
//!
//! A large file is cut into runs of whole groups, one per thread; each thread reads its run with
//! positioned reads into its own buffer and computes the groups' chaining values, and the root is
//! merged from them ([`Layer::from_cvs`]). Many small files are spread over the threads one file at a
//! time. Files are read with `pread`, not mapped: a file in a user's folder may be truncated while it
//! is read, which must be an error, never a `SIGBUS`.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::hash::Hash;
use crate::layer::{GROUP_SIZE, Layer, group_count, group_cv, group_len};

/// Groups read per call: enough to amortise the system call, few enough that the buffer stays in
/// the core's own cache between the copy and the hashing (128 KiB hashed at 1.7x the rate of 1 MiB here).
const READ_GROUPS: u64 = 8;

/// Files up to this size are hashed by one thread each; larger ones by every thread.
pub const SPLIT_ABOVE: u64 = 4 << 20;

/// How many threads hashing may use.
pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A file that was hashed: its name, the layer, and what it looked like while it was read.
#[derive(Debug)]
pub struct Hashed {
    /// The blob's name.
    pub hash: Hash,
    /// Its piece layer (its size is the file's).
    pub layer: Layer,
    /// The file's metadata when reading began (unchanged when it ended).
    pub meta: Metadata,
}

/// Why a file could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Opening or reading failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The file changed while it was read: what was read is no one version of it.
    #[error("it changed while it was read")]
    Changed,
}

/// Hashes the file at `path` with up to `threads` threads.
pub fn hash_path(path: &Path, threads: usize) -> Result<Hashed, HashError> {
    let (file, meta) = open(path)?;
    hash_open(&file, meta, threads, &mut Vec::new())
}

/// A file opened for hashing, with its metadata from before any byte is read.
fn open(path: &Path) -> Result<(File, Metadata), HashError> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    Ok((file, meta))
}

/// Hashes an open file whose metadata `meta` was taken before reading; `buf` is reused between
/// calls of one thread.
fn hash_open(
    file: &File,
    meta: Metadata,
    threads: usize,
    buf: &mut Vec<u8>,
) -> Result<Hashed, HashError> {
    let size = meta.len();
    let (hash, layer) = if size <= GROUP_SIZE {
        let buf = page_aligned(buf, size as usize);
        file.read_exact_at(buf, 0)?;
        Layer::of(buf)
    } else {
        let cvs = if size <= SPLIT_ABOVE || threads <= 1 {
            group_cvs(file, size, 0..group_count(size), buf)?
        } else {
            split_group_cvs(file, size, threads)?
        };
        Layer::from_cvs(size, cvs)
    };
    // Any write while it was read moved its modification time (and a reader of it later checks
    // every group against the layer anyway).
    let after = file.metadata()?;
    if after.len() != size || after.modified().ok() != meta.modified().ok() {
        return Err(HashError::Changed);
    }
    Ok(Hashed { hash, layer, meta })
}

/// Chaining values of the groups in `groups`, read in runs of [`READ_GROUPS`].
fn group_cvs(
    file: &File,
    size: u64,
    groups: std::ops::Range<u64>,
    buf: &mut Vec<u8>,
) -> io::Result<Vec<blake3::hazmat::ChainingValue>> {
    let mut cvs = Vec::with_capacity((groups.end - groups.start) as usize);
    let mut group = groups.start;
    while group < groups.end {
        let run = READ_GROUPS.min(groups.end - group);
        let start = group * GROUP_SIZE;
        let len = ((group + run) * GROUP_SIZE).min(size) - start;
        let buf = page_aligned(buf, len as usize);
        file.read_exact_at(buf, start)?;
        for (i, bytes) in buf.chunks(GROUP_SIZE as usize).enumerate() {
            let g = group + i as u64;
            debug_assert_eq!(bytes.len(), group_len(size, g));
            cvs.push(group_cv(g, bytes));
        }
        group += run;
    }
    Ok(cvs)
}

/// `len` bytes of `buf` starting on a page boundary: the kernel copies into an unaligned buffer at
/// less than half the speed (measured: 16 bytes off, 2.3x slower reads from the page cache).
pub fn page_aligned(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    const PAGE: usize = 4096;
    if buf.len() < len + PAGE {
        buf.resize(len + PAGE, 0);
    }
    let start = buf.as_ptr().align_offset(PAGE);
    &mut buf[start..start + len]
}

/// Chaining values of every group of a large file, each thread taking one contiguous run.
fn split_group_cvs(
    file: &File,
    size: u64,
    threads: usize,
) -> io::Result<Vec<blake3::hazmat::ChainingValue>> {
    let groups = group_count(size);
    let per = groups.div_ceil(threads as u64);
    let runs: Vec<_> = (0..threads as u64)
        .map(|t| (t * per).min(groups)..((t + 1) * per).min(groups))
        .filter(|r| !r.is_empty())
        .collect();
    let parts = std::thread::scope(|scope| {
        let handles: Vec<_> = runs
            .into_iter()
            .map(|run| scope.spawn(move || group_cvs(file, size, run, &mut Vec::new())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("hashing thread panicked"))
            .collect::<Vec<_>>()
    });
    let mut cvs = Vec::with_capacity(groups as usize);
    for part in parts {
        cvs.extend(part?);
    }
    Ok(cvs)
}

/// Hashes many files: small ones spread over `threads` threads, large ones each over all of them.
/// Results come back in the order of `paths`.
pub fn hash_paths<P: AsRef<Path> + Sync>(
    paths: &[P],
    threads: usize,
) -> Vec<Result<Hashed, HashError>> {
    let results: Vec<Mutex<Option<Result<Hashed, HashError>>>> =
        paths.iter().map(|_| Mutex::new(None)).collect();
    let large = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    let threads = threads.max(1);
    std::thread::scope(|scope| {
        for _ in 0..threads.min(paths.len()) {
            scope.spawn(|| {
                let mut buf = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = paths.get(i) else { break };
                    let hashed = match open(path.as_ref()) {
                        // Large files wait for every thread to be free.
                        Ok((file, meta)) if meta.len() > SPLIT_ABOVE && threads > 1 => {
                            large.lock().expect("large list").push((i, file, meta));
                            continue;
                        }
                        Ok((file, meta)) => hash_open(&file, meta, 1, &mut buf),
                        Err(e) => Err(e),
                    };
                    *results[i].lock().expect("result slot") = Some(hashed);
                }
            });
        }
    });
    let mut buf = Vec::new();
    for (i, file, meta) in large.into_inner().expect("large list") {
        *results[i].lock().expect("result slot") = Some(hash_open(&file, meta, threads, &mut buf));
    }
    results
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .expect("result slot")
                .expect("every path hashed")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed) ^ (i >> 12) as u8)
            .collect()
    }

    #[test]
    fn every_size_and_thread_count_gives_blake3() {
        let dir = tempfile::tempdir().unwrap();
        let g = GROUP_SIZE as usize;
        let sizes = [
            0,
            1,
            g,
            g + 1,
            64 * g,
            64 * g + 7,
            SPLIT_ABOVE as usize + 3 * g + 11,
        ];
        let paths: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let path = dir.path().join(format!("f{i}"));
                std::fs::write(&path, bytes(len, i as u8)).unwrap();
                path
            })
            .collect();
        for threads in [1, 2, 3, 8] {
            for (path, &len) in paths.iter().zip(&sizes) {
                let data = bytes(len, paths.iter().position(|p| p == path).unwrap() as u8);
                let hashed = hash_path(path, threads).unwrap();
                assert_eq!(hashed.hash, Hash::of(&data), "len {len}, {threads} threads");
                assert_eq!(hashed.layer, Layer::of(&data).1, "len {len}");
            }
            let all = hash_paths(&paths, threads);
            for (result, (path, &len)) in all.iter().zip(paths.iter().zip(&sizes)) {
                let i = paths.iter().position(|p| p == path).unwrap();
                assert_eq!(
                    result.as_ref().unwrap().hash,
                    Hash::of(&bytes(len, i as u8))
                );
            }
        }
    }

    #[test]
    fn a_missing_file_is_an_error_in_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let there = dir.path().join("there");
        std::fs::write(&there, b"hello").unwrap();
        let results = hash_paths(&[dir.path().join("missing"), there], 2);
        assert!(matches!(results[0], Err(HashError::Io(_))));
        assert_eq!(results[1].as_ref().unwrap().hash, Hash::of(b"hello"));
    }
}
