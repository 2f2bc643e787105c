//! What the gateway asks of the node: the [`Source`] trait and the answers it gives.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

/// A boxed future that is `Send`, so [`Source`] stays object-safe without extra crates.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The site a request is for: what the URL named, as text, for the [`Source`] to parse.
///
/// The gateway checks only that the text is one non-empty path segment (percent-decoded, no `/`, NUL
/// or `..`); whether it names anything is the source's business.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Site {
    /// `http://localhost:PORT/blob/TEXT/…`: a blob's hash or ticket, as written in the URL.
    Blob(String),
    /// `http://localhost:PORT/share/TEXT/…`: a share's ticket (or key), as written in the URL.
    Share(String),
    /// `http://LABEL.localhost:PORT/…`: a share served as its own origin. The label is lowercase
    /// (host names are case-insensitive, so the browser may have sent any case): parse it
    /// case-insensitively. It is 1 to 63 characters of `a-z`, `0-9` and `-` (a DNS label), which fits
    /// a 32-byte key in base32 (52 characters).
    Origin(String),
}

/// What a path of a site is.
pub enum Resolved {
    /// A file, served with ranges and its ETag.
    File(File),
    /// A directory and what is in it (any order; the gateway sorts). The gateway serves its
    /// `index.html` (resolved separately) or a listing.
    Directory(Vec<DirEntry>),
    /// Nothing is there (or the site is unknown).
    NotFound,
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resolved::File(file) => f.debug_tuple("File").field(file).finish(),
            Resolved::Directory(entries) => f.debug_tuple("Directory").field(entries).finish(),
            Resolved::NotFound => f.write_str("NotFound"),
        }
    }
}

/// A file to serve: its size, its strong validator and where to read it.
#[derive(Clone)]
pub struct File {
    /// The size in bytes; the reader must deliver exactly this many.
    pub size: u64,
    /// The strong entity tag without quotes, e.g. the content hash in hex. It must change whenever the
    /// content does (same tag means same bytes): ranges of one response may be combined with another's.
    /// Visible ASCII without `"` (hex is safe); a tag that is not is left out of the response.
    pub etag: String,
    /// The media type, e.g. `image/png`. `None` guesses from the file name in the URL (the last path
    /// segment, or `index.html`), falling back to `application/octet-stream`.
    pub content_type: Option<String>,
    /// Where the bytes are read from, in chunks, on a blocking thread.
    pub reader: Arc<dyn RangeReader>,
}

impl File {
    /// A file of `size` bytes read from `reader`, with `etag` as its strong validator.
    pub fn new(size: u64, etag: impl Into<String>, reader: Arc<dyn RangeReader>) -> File {
        File {
            size,
            etag: etag.into(),
            content_type: None,
            reader,
        }
    }

    /// A file held in memory.
    pub fn from_bytes(bytes: impl Into<Bytes>, etag: impl Into<String>) -> File {
        let bytes: Bytes = bytes.into();
        File::new(bytes.len() as u64, etag, Arc::new(bytes))
    }

    /// The same file with an explicit media type.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> File {
        self.content_type = Some(content_type.into());
        self
    }
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("size", &self.size)
            .field("etag", &self.etag)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name: one path segment (no `/`).
    pub name: String,
    /// Whether the entry is a directory.
    pub is_dir: bool,
    /// The size in bytes of a file (ignored for a directory).
    pub size: u64,
}

impl DirEntry {
    /// A file entry.
    pub fn file(name: impl Into<String>, size: u64) -> DirEntry {
        DirEntry {
            name: name.into(),
            is_dir: false,
            size,
        }
    }

    /// A directory entry.
    pub fn dir(name: impl Into<String>) -> DirEntry {
        DirEntry {
            name: name.into(),
            is_dir: true,
            size: 0,
        }
    }
}

/// Random access to a file's bytes, like [`std::os::unix::fs::FileExt::read_at`].
///
/// Calls may block (disk reads): the gateway makes them on tokio's blocking threads, one chunk of at
/// most [`CHUNK`](crate::CHUNK) bytes at a time, so a file is never held in memory whole.
///
/// A file may still be arriving (fetched from peers while it is served): before each read the gateway
/// awaits [`ready`](RangeReader::ready), and reads no more than it allowed.
pub trait RangeReader: Send + Sync + 'static {
    /// Reads up to `buf.len()` bytes at `offset`, returning how many were read (0 only at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Waits until the bytes at `offset` may be read, for a response that reads `offset..end` in
    /// order (a hint of what to fetch first), and returns how many bytes from `offset` on may be read
    /// now: at least 1 when `offset < end`. An error ends the response: before its headers with 502,
    /// after them by closing the connection. The default, for a file that is all here, allows the
    /// rest at once.
    ///
    /// The gateway bounds each wait by [`Config::read_timeout`](crate::Config::read_timeout).
    fn ready(&self, offset: u64, end: u64) -> BoxFuture<'_, io::Result<u64>> {
        Box::pin(std::future::ready(Ok(end.saturating_sub(offset))))
    }
}

impl RangeReader for Bytes {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        read_slice(self, buf, offset)
    }
}

impl RangeReader for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        read_slice(self, buf, offset)
    }
}

impl RangeReader for &'static [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        read_slice(self, buf, offset)
    }
}

fn read_slice(data: &[u8], buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let n = buf.len().min(data.len() - start);
    buf[..n].copy_from_slice(&data[start..start + n]);
    Ok(n)
}

#[cfg(unix)]
impl RangeReader for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

/// Why a source could not answer. The gateway turns it into a short plain-text error response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The site's text is not a valid hash, ticket or key: 400 Bad Request.
    #[error("{0}")]
    BadRequest(String),
    /// The content could not be reached or read (no provider, a store error): 502 Bad Gateway.
    #[error("{0}")]
    Unavailable(String),
    /// The content did not arrive in time: 504 Gateway Timeout.
    #[error("timed out")]
    Timeout,
}

impl From<io::Error> for GatewayError {
    fn from(err: io::Error) -> GatewayError {
        GatewayError::Unavailable(err.to_string())
    }
}

/// What the gateway serves: implemented by the node.
///
/// `path` is the percent-decoded path inside the site, segments joined by `/`, without leading or
/// trailing slash; `""` is the site's root. The gateway guarantees every segment is non-empty and none
/// is `.` or `..` or contains NUL or `\`. A directory's `index.html` and a site's `404.html` are asked
/// for like any other path. Calls may come concurrently; each is bounded by
/// [`Config::resolve_timeout`](crate::Config::resolve_timeout). A file need not be here whole to
/// be resolved: its [`RangeReader::ready`] waits for its bytes as they arrive.
pub trait Source: Send + Sync + 'static {
    /// Looks up `path` in `site`.
    fn resolve<'a>(
        &'a self,
        site: &'a Site,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Resolved, GatewayError>>;
}

impl<S: Source + ?Sized> Source for Arc<S> {
    fn resolve<'a>(
        &'a self,
        site: &'a Site,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Resolved, GatewayError>> {
        (**self).resolve(site, path)
    }
}
