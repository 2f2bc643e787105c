//! A node's secret key on disk.
//!
//! The file is one line of text, `pairs-secret-key-1 <base32(secret ‖ checksum)>`, written once with mode
//! 0600. Loading never repairs or replaces a file it cannot read: a damaged key file is the user's identity,
//! and silently minting a new one would change who they are. Creation is atomic and race-free (write a
//! private temporary file, fsync, then hard-link it into place, which fails if another process got there
//! first), so a crash leaves either no key file or a whole one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use crate::base32;
use crate::identity::SecretKey;

const HEADER: &str = "pairs-secret-key-1";
const CHECKSUM_LEN: usize = 4;

/// What can go wrong with a key file. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file exists but its content is not a valid key.
    #[error(
        "key file {path} is corrupt ({why}); it was left untouched: restore it from a backup, or move it away to create a new identity"
    )]
    Corrupt {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The file exists but cannot be read.
    #[error("cannot read key file {path}: {cause}")]
    Unreadable {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        cause: io::Error,
    },
    /// The file does not exist and cannot be created.
    #[error(
        "cannot create key file in {dir}: {cause} (choose a writable directory with --data-dir or PAIRS_HOME)"
    )]
    NotWritable {
        /// The directory the key should live in.
        dir: PathBuf,
        /// The I/O error.
        cause: io::Error,
    },
}

/// Loads the key at `path`, or creates and stores a new one if there is no file there.
///
/// Returns the key and whether it was just created.
pub fn load_or_create(path: &Path) -> Result<(SecretKey, bool), KeyFileError> {
    match load(path) {
        Ok(key) => Ok((key, false)),
        // A missing file, or a data directory path that is blocked by a file: try to create, which
        // reports the directory as not writable.
        Err(KeyFileError::Unreadable { cause, .. })
            if matches!(
                cause.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            let key = SecretKey::generate();
            match create(path, &key) {
                Ok(()) => Ok((key, true)),
                // Another process created it between our read and our link: theirs wins.
                Err(KeyFileError::NotWritable { cause, .. })
                    if cause.kind() == io::ErrorKind::AlreadyExists && path.is_file() =>
                {
                    load(path).map(|key| (key, false))
                }
                Err(err) => Err(err),
            }
        }
        Err(err) => Err(err),
    }
}

/// Loads the key stored at `path`.
pub fn load(path: &Path) -> Result<SecretKey, KeyFileError> {
    let text = fs::read(path).map_err(|cause| KeyFileError::Unreadable {
        path: path.to_owned(),
        cause,
    })?;
    decode(&text).map_err(|why| KeyFileError::Corrupt {
        path: path.to_owned(),
        why,
    })
}

/// Stores `key` at `path`, which must not exist yet. Creates the parent directories (mode 0700).
pub fn create(path: &Path, key: &SecretKey) -> Result<(), KeyFileError> {
    let dir = path.parent().unwrap_or(Path::new(".")).to_owned();
    let not_writable = |cause| KeyFileError::NotWritable {
        dir: dir.clone(),
        cause,
    };
    create_private_dir(&dir).map_err(not_writable)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("key"),
        std::process::id()
    ));
    let result = write_private_file(&tmp, encode(key).as_bytes())
        .and_then(|()| fs::hard_link(&tmp, path))
        .and_then(|()| File::open(&dir)?.sync_all());
    let _ = fs::remove_file(&tmp);
    result.map_err(not_writable)
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

fn encode(key: &SecretKey) -> String {
    let secret = key.to_bytes();
    let mut body = secret.to_vec();
    body.extend_from_slice(&checksum(&secret));
    format!("{HEADER} {}\n", base32::encode(&body))
}

fn decode(text: &[u8]) -> Result<SecretKey, &'static str> {
    let text = std::str::from_utf8(text).map_err(|_| "not text")?;
    let body = text
        .trim_end()
        .strip_prefix(HEADER)
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or("unknown format")?;
    let bytes = base32::decode(body).ok_or("bad encoding")?;
    if bytes.len() != 32 + CHECKSUM_LEN {
        return Err("wrong length");
    }
    let (secret, sum) = bytes.split_at(32);
    let secret: [u8; 32] = secret.try_into().expect("split at 32");
    if sum != checksum(&secret) {
        return Err("checksum mismatch");
    }
    Ok(SecretKey::from_bytes(&secret))
}

fn checksum(secret: &[u8; 32]) -> [u8; CHECKSUM_LEN] {
    let hash = blake3::derive_key("pairs secret key file checksum", secret);
    hash[..CHECKSUM_LEN].try_into().expect("hash is 32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_then_loads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/node.key");
        let (first, created) = load_or_create(&path).unwrap();
        assert!(created);
        let (second, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(first.node_id(), second.node_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn corrupt_file_is_an_error_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        load_or_create(&path).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'a' { b'b' } else { b'a' };
        fs::write(&path, &bytes).unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(
            matches!(
                err,
                KeyFileError::Corrupt {
                    why: "checksum mismatch",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(fs::read(&path).unwrap(), bytes);

        fs::write(&path, b"garbage").unwrap();
        assert!(matches!(
            load(&path),
            Err(KeyFileError::Corrupt {
                why: "unknown format",
                ..
            })
        ));
        fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            load(&path),
            Err(KeyFileError::Corrupt {
                why: "not text",
                ..
            })
        ));
    }

    #[test]
    fn unwritable_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"").unwrap();
        let err = load_or_create(&blocker.join("node.key")).unwrap_err();
        assert!(matches!(err, KeyFileError::NotWritable { .. }), "{err}");
        assert!(err.to_string().contains("--data-dir"));
    }
}
