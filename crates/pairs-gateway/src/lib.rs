//! The node's local HTTP gateway: blobs and shares for the browser on this machine.
//!
//! It listens on a loopback address only and answers:
//!
//! - `http://localhost:PORT/` — a short page saying what this is;
//! - `http://localhost:PORT/blob/HASH/PATH` — a blob (or a file of a collection);
//! - `http://localhost:PORT/share/TICKET/PATH` — a file of a share;
//! - `http://KEY.localhost:PORT/PATH` — a share as its own origin ([`origin_url`]), so sites never
//!   share cookies or storage. Pages under the plain origin are sandboxed (`Content-Security-Policy:
//!   sandbox`: an opaque origin, no scripts); sites run normally at their own origin.
//!
//! Directories serve their `index.html`, or a listing (HTML; JSON with `?format=json`), and a path
//! without its trailing slash is redirected to the directory's URL so relative links work. A missing
//! path is a 404 with the site's own `404.html` when it has one. Files support a single `Range`
//! (206/416, `Accept-Ranges: bytes`), a strong `ETag` (the [`File::etag`] the source gives) with
//! `If-None-Match` (304) and `If-Range`, and HEAD; any other method is 405. Bodies are streamed in
//! chunks of [`CHUNK`] bytes read on blocking threads, never held whole in memory. A file may still
//! be arriving ([`RangeReader::ready`]): its headers go out with the first bytes of the range asked
//! for, and the rest follows as it comes; if the first bytes take longer than
//! [`Config::read_timeout`] the answer is 504, if later ones do the connection is closed (a truncated
//! body, never a short file that looks whole). HEAD does not wait.
//!
//! Only requests whose `Host` names the gateway (`127.0.0.1`, `localhost`, `[::1]` or
//! `LABEL.localhost`, with its port) are answered; anything else is 403, which defeats DNS rebinding.
//! Paths are percent-decoded; `.`/`..` segments, empty segments, NUL, encoded `/` and `\` are 400.
//!
//! What is served comes from a [`Source`], which the node implements. This crate depends on no other
//! pairs crate.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # async fn example(source: Arc<dyn pairs_gateway::Source>) -> std::io::Result<()> {
//! let gateway = pairs_gateway::Gateway::bind("127.0.0.1:0".parse().unwrap()).await?;
//! let port = gateway.local_addr().port();
//! println!("{:?}", pairs_gateway::origin_url("rbqrhetzscjzw6e6b5uqmpvmmxcvkiyzhoo7z5ghqnx4wm3oi5ea", port));
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let task = tokio::spawn(gateway.run(source, async move { let _ = stopped.await; }));
//! // ...
//! let _ = stop.send(());
//! task.await.unwrap();
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod host;
mod listing;
mod range;
mod respond;
mod route;
mod server;
mod source;

pub use server::{Config, Gateway};

/// Entry points for fuzzing the request parsers (behind the `fuzzing` feature; not a stable API).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub use source::{BoxFuture, DirEntry, File, GatewayError, RangeReader, Resolved, Site, Source};

/// The most a body chunk holds: the size of each read from a [`RangeReader`].
pub const CHUNK: usize = 64 * 1024;

/// The URL of a share served as its own origin, `http://KEY.localhost:PORT/`, with the key in lowercase.
///
/// `None` if `key` cannot be a DNS label: more than 63 characters, or characters other than ASCII
/// letters, digits and `-` (a 32-byte key in base32 is 52 characters and fits). The gateway hands the
/// label to [`Source::resolve`] as [`Site::Origin`], in lowercase.
pub fn origin_url(key: &str, port: u16) -> Option<String> {
    let label = key.to_ascii_lowercase();
    host::is_label(&label).then(|| format!("http://{label}.localhost:{port}/"))
}

/// The URL of a blob under the plain origin, `http://localhost:PORT/blob/HASH/`.
pub fn blob_url(hash: &str, port: u16) -> String {
    format!(
        "http://localhost:{port}/blob/{}/",
        route::encode_segment(hash)
    )
}

/// The URL of a share under the plain origin, `http://localhost:PORT/share/TICKET/` (sandboxed: for
/// files; a share meant as a site is better opened at its [`origin_url`]).
pub fn share_url(ticket: &str, port: u16) -> String {
    format!(
        "http://localhost:{port}/share/{}/",
        route::encode_segment(ticket)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let key = "RBQRHETZSCJZW6E6B5UQMPVMMXCVKIYZHOO7Z5GHQNX4WM3OI5EA";
        assert_eq!(
            origin_url(key, 8080).as_deref(),
            Some("http://rbqrhetzscjzw6e6b5uqmpvmmxcvkiyzhoo7z5ghqnx4wm3oi5ea.localhost:8080/")
        );
        assert_eq!(origin_url(&"a".repeat(64), 1), None);
        assert_eq!(origin_url("a.b", 1), None);
        assert_eq!(origin_url("", 1), None);
        assert_eq!(blob_url("abc", 5), "http://localhost:5/blob/abc/");
        assert_eq!(share_url("t x", 5), "http://localhost:5/share/t%20x/");
    }
}
