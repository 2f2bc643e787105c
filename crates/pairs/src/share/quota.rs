//! Limits a user sets on what a share may write into their folder.
//!
//! A share's writers decide what it holds; the person who syncs it decides how much of it lands on
//! their disk. Files are taken in path order until the next one would pass a limit; the rest are
//! held back (reported, never written) until the limit is raised or the share shrinks. Nothing
//! already in the folder is deleted to make room.

use serde::{Deserialize, Serialize};

/// The most a synced folder takes from its share (no limit where `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Bytes of file content in all.
    pub max_bytes: Option<u64>,
    /// Files (and links) in all.
    pub max_files: Option<u64>,
}

impl Quota {
    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.max_bytes.is_some() || self.max_files.is_some()
    }

    /// The paths the quota holds back, given every path the share shows with its size, in path
    /// order: everything from the first path that would pass a limit on.
    pub fn held_back<'a>(&self, shown: impl IntoIterator<Item = (&'a str, u64)>) -> Vec<&'a str> {
        if !self.is_limited() {
            return Vec::new();
        }
        let (mut files, mut bytes) = (0u64, 0u64);
        let mut over = false;
        let mut held = Vec::new();
        for (path, size) in shown {
            files += 1;
            bytes = bytes.saturating_add(size);
            over = over
                || self.max_files.is_some_and(|max| files > max)
                || self.max_bytes.is_some_and(|max| bytes > max);
            if over {
                held.push(path);
            }
        }
        held
    }

    /// The limits in words, e.g. "10.0 GiB, 100000 files".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(bytes) = self.max_bytes {
            parts.push(indicatif::BinaryBytes(bytes).to_string());
        }
        if let Some(files) = self.max_files {
            parts.push(format!("{files} files"));
        }
        if parts.is_empty() {
            "no limit".into()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_taken_in_path_order_until_a_limit() {
        let shown = [("a", 10), ("b", 10), ("c", 10), ("d", 1)];
        assert!(Quota::default().held_back(shown).is_empty());
        let files = Quota {
            max_files: Some(2),
            ..Quota::default()
        };
        assert_eq!(files.held_back(shown), ["c", "d"]);
        let bytes = Quota {
            max_bytes: Some(25),
            ..Quota::default()
        };
        // "d" would fit, but taking files out of order would make what lands depend on sizes.
        assert_eq!(bytes.held_back(shown), ["c", "d"]);
        let both = Quota {
            max_bytes: Some(31),
            max_files: Some(10),
        };
        assert!(both.held_back(shown).is_empty());
    }
}
