//! The node's data directory and the key in it.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use pairs_base::SecretKey;
use pairs_base::keyfile;

/// File name of the node's secret key inside the data directory.
const KEY_FILE: &str = "node.key";

/// The data directory: `--data-dir`/`PAIRS_HOME`, else the platform default.
pub fn data_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_owned());
    }
    directories::ProjectDirs::from("", "", "pairs")
        .map(|dirs| dirs.data_dir().to_owned())
        .context("cannot find a home directory: set --data-dir or PAIRS_HOME")
}

/// Loads the node key, creating it on first use (and saying so on stderr).
pub fn node_key(explicit: Option<&Path>) -> Result<SecretKey> {
    let path = data_dir(explicit)?.join(KEY_FILE);
    let (key, created) = keyfile::load_or_create(&path)?;
    if created {
        tracing::info!(path = %path.display(), "created a new node identity");
    }
    Ok(key)
}
