//! Collections: a directory as one blob listing relative paths, hashes, sizes and modes.
//!
//! Paths come from the network, so they are checked before anything is written: relative, `/`-separated,
//! no empty, `.` or `..` component, no backslash, NUL or drive prefix, no duplicates. [`safe_join`] is the
//! only way a path becomes a file name under an output directory.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hash::Hash;

/// First bytes of an encoded collection.
const MAGIC: &[u8] = b"pairs-collection/1\n";
/// Most entries in one collection.
pub const MAX_ENTRIES: usize = 1 << 20;
/// Longest path, in bytes.
pub const MAX_PATH: usize = 4096;
/// Largest encoded collection accepted (64 MiB).
pub const MAX_ENCODED: u64 = 64 << 20;

/// One file of a collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionEntry {
    /// Relative path, `/`-separated.
    pub path: String,
    /// The file's blob.
    pub hash: Hash,
    /// Its size in bytes.
    pub size: u64,
    /// Whether it is executable.
    pub executable: bool,
}

/// A directory: files by relative path.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Collection {
    /// The files, sorted by path.
    pub entries: Vec<CollectionEntry>,
}

/// A collection that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectionError {
    /// Not a collection at all.
    #[error("not a pairs collection")]
    NotACollection,
    /// Decodes but breaks a bound.
    #[error("collection too large ({0})")]
    TooLarge(&'static str),
    /// A path that could escape the output directory or is otherwise unusable.
    #[error("unsafe path in collection: {path:?} ({why})")]
    UnsafePath {
        /// The path, as received.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl Collection {
    /// Total bytes of all files (saturating: sizes come from whoever made the collection).
    pub fn total_size(&self) -> u64 {
        self.entries
            .iter()
            .fold(0u64, |total, e| total.saturating_add(e.size))
    }

    /// The collection as a blob's bytes (entries sorted by path, so equal trees give equal hashes).
    pub fn encode(&self) -> Vec<u8> {
        let mut sorted = self.clone();
        sorted.entries.sort_by(|a, b| a.path.cmp(&b.path));
        let mut out = MAGIC.to_vec();
        postcard::to_io(&sorted, &mut out).expect("writing to a Vec cannot fail");
        out
    }

    /// Decodes and checks a collection received from anyone.
    pub fn decode(bytes: &[u8]) -> Result<Collection, CollectionError> {
        let body = bytes
            .strip_prefix(MAGIC)
            .ok_or(CollectionError::NotACollection)?;
        if bytes.len() as u64 > MAX_ENCODED {
            return Err(CollectionError::TooLarge("encoded size"));
        }
        let collection: Collection =
            postcard::from_bytes(body).map_err(|_| CollectionError::NotACollection)?;
        if collection.entries.len() > MAX_ENTRIES {
            return Err(CollectionError::TooLarge("entries"));
        }
        let mut seen = std::collections::HashSet::new();
        for entry in &collection.entries {
            check_path(&entry.path)?;
            if !seen.insert(entry.path.as_str()) {
                return Err(CollectionError::UnsafePath {
                    path: entry.path.clone(),
                    why: "listed twice",
                });
            }
        }
        // A file and a directory of the same name cannot both exist.
        for entry in &collection.entries {
            let mut prefix = entry.path.as_str();
            while let Some(i) = prefix.rfind('/') {
                prefix = &prefix[..i];
                if seen.contains(prefix) {
                    return Err(CollectionError::UnsafePath {
                        path: entry.path.clone(),
                        why: "inside a path that is a file",
                    });
                }
            }
        }
        Ok(collection)
    }
}

/// Checks one relative path from the network.
pub fn check_path(path: &str) -> Result<(), CollectionError> {
    let unsafe_path = |why| {
        Err(CollectionError::UnsafePath {
            path: path.chars().take(200).collect(),
            why,
        })
    };
    if path.is_empty() || path.len() > MAX_PATH {
        return unsafe_path("empty or too long");
    }
    if path.starts_with('/') {
        return unsafe_path("absolute");
    }
    if path.contains('\\') || path.contains('\0') {
        return unsafe_path("backslash or NUL");
    }
    if path.as_bytes().get(1) == Some(&b':') {
        return unsafe_path("drive prefix");
    }
    for part in path.split('/') {
        match part {
            "" => return unsafe_path("empty component"),
            "." | ".." => return unsafe_path("dot component"),
            _ => {}
        }
    }
    Ok(())
}

/// `dir` joined with a checked collection path: always strictly inside `dir`.
pub fn safe_join(dir: &Path, path: &str) -> Result<PathBuf, CollectionError> {
    check_path(path)?;
    let relative = Path::new(path);
    // Belt and braces: after the string checks only normal components can remain.
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(CollectionError::UnsafePath {
            path: path.to_string(),
            why: "not a plain relative path",
        });
    }
    Ok(dir.join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> CollectionEntry {
        CollectionEntry {
            path: path.into(),
            hash: Hash::of(path.as_bytes()),
            size: 1,
            executable: false,
        }
    }

    #[test]
    fn sizes_from_a_hostile_collection_total_without_overflow() {
        // Found by the blob_collection fuzz target: the sum overflowed (a panic in debug builds,
        // a wrong total in release ones).
        let mut a = entry("a");
        a.size = u64::MAX;
        let mut b = entry("b");
        b.size = 2;
        let bytes = Collection {
            entries: vec![a, b],
        }
        .encode();
        let decoded = Collection::decode(&bytes).unwrap();
        assert_eq!(decoded.total_size(), u64::MAX);
    }

    #[test]
    fn round_trip_is_sorted_and_stable() {
        let a = Collection {
            entries: vec![entry("b/c.txt"), entry("a.txt")],
        };
        let bytes = a.encode();
        let back = Collection::decode(&bytes).unwrap();
        assert_eq!(back.entries[0].path, "a.txt");
        assert_eq!(back.encode(), bytes);
    }

    #[test]
    fn hostile_paths_are_refused() {
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "a/../../b",
            "a//b",
            "./a",
            "a/.",
            "",
            "C:evil",
            "a\\..\\b",
            "a\0b",
        ] {
            let c = Collection {
                entries: vec![entry(bad)],
            };
            assert!(Collection::decode(&c.encode()).is_err(), "{bad:?} accepted");
            assert!(safe_join(Path::new("/out"), bad).is_err(), "{bad:?} joined");
        }
        let twice = Collection {
            entries: vec![entry("a"), entry("a")],
        };
        assert!(Collection::decode(&twice.encode()).is_err());
        let file_and_dir = Collection {
            entries: vec![entry("a"), entry("a/b")],
        };
        assert!(Collection::decode(&file_and_dir.encode()).is_err());
        assert_eq!(
            safe_join(Path::new("/out"), "x/y").unwrap(),
            Path::new("/out/x/y")
        );
        assert_eq!(
            Collection::decode(b"garbage"),
            Err(CollectionError::NotACollection)
        );
    }
}
