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

/// The directory of one log's replica: its store and, on the owner's machine, the owner key.
pub fn log_dir(explicit: Option<&Path>, log: &pairs_log::LogId) -> Result<PathBuf> {
    Ok(data_dir(explicit)?.join("logs").join(log.to_string()))
}

/// Opens (creating if needed) the local replica of `log`, waiting a little if another pairs process
/// has it open.
pub fn open_log(explicit: Option<&Path>, log: &pairs_log::LogId) -> Result<pairs_log::Log> {
    let path = log_dir(explicit, log)?.join("log.redb");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match pairs_log::Log::open(&path, *log) {
            Err(pairs_log::StoreError::Busy(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return Ok(other?),
        }
    }
}

/// The key to write to `log` with: its owner key if this machine created the log, else the node key.
pub fn writer_key(explicit: Option<&Path>, log: &pairs_log::LogId) -> Result<SecretKey> {
    let owner = log_dir(explicit, log)?.join("owner.key");
    if owner.exists() {
        return Ok(keyfile::load(&owner)?);
    }
    node_key(explicit)
}
