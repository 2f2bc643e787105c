//! What a replica knows about its folder: each path's content on disk, and the share value it was
//! last in step with. Kept beside the node's other stores and written atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::model::{FileState, ValueId};

/// The content of a path, whatever its name or time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Content {
    /// A file: its hash and executable bit.
    File {
        /// Content hash.
        hash: [u8; 32],
        /// Bytes.
        size: u64,
        /// The executable bit.
        executable: bool,
    },
    /// A symbolic link and its target.
    Link {
        /// Target as written.
        target: String,
    },
}

impl Content {
    /// The content a share value holds (none for a deletion).
    pub fn of(state: &FileState) -> Option<Content> {
        match state {
            FileState::File {
                hash,
                size,
                executable,
                ..
            } => Some(Content::File {
                hash: *hash,
                size: *size,
                executable: *executable,
            }),
            FileState::Symlink { target } => Some(Content::Link {
                target: target.clone(),
            }),
            FileState::Deleted => None,
        }
    }

    /// The share value for this content.
    pub fn to_state(&self, mtime: u64) -> FileState {
        match self {
            Content::File {
                hash,
                size,
                executable,
            } => FileState::File {
                hash: *hash,
                size: *size,
                executable: *executable,
                mtime,
            },
            Content::Link { target } => FileState::Symlink {
                target: target.clone(),
            },
        }
    }
}

/// One path of the folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Local {
    /// Size and modification time when `content` was read: a file whose size and time are unchanged
    /// is not read again.
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
    /// What the path holds.
    pub content: Content,
    /// The share value this path was last in step with, and its content then.
    pub synced: Option<(ValueId, Content)>,
}

impl Local {
    /// Whether the path changed here since it was last in step with the share.
    pub fn modified(&self) -> bool {
        self.synced.as_ref().is_none_or(|(_, c)| *c != self.content)
    }
}

/// The folder's paths.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Index {
    /// Path -> what is known of it.
    pub paths: BTreeMap<String, Local>,
}

impl Index {
    /// Reads the index at `path` (an empty one if there is none or it cannot be read: the folder
    /// is then read again, nothing is lost).
    pub fn load(path: &Path) -> Index {
        std::fs::read(path)
            .ok()
            .and_then(|bytes| postcard::from_bytes(&bytes).ok())
            .unwrap_or_default()
    }

    /// Writes the index to `path` atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = postcard::to_stdvec(self).context("encoding the folder index")?;
        let tmp: PathBuf = path.with_extension("tmp");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}
