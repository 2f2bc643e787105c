//! A small site in memory, a gateway serving it on its own runtime thread, and curl as the client.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use pairs_gateway::{
    BoxFuture, Config, DirEntry, File, Gateway, GatewayError, RangeReader, Resolved, Site, Source,
};

/// The share's key, as a node would print it (52 characters of base32).
pub const KEY: &str = "rbqrhetzscjzw6e6b5uqmpvmmxcvkiyzhoo7z5ghqnx4wm3oi5ea";
/// The share's ticket, in mixed case: the gateway passes it on as written.
pub const TICKET: &str = "shareTicketOfTheTestSite";
/// A raw blob's hash: the 1 MiB binary file.
pub const HASH: &str = "5d1be7e9dda1ee8896be5b7e34a85ee16452a7b4";
/// A share whose source fails.
pub const BROKEN: &str = "broken";
/// A share whose source never answers.
pub const SLOW: &str = "slow";
/// A share with one file, `short.bin`, that promises more bytes than its reader has.
pub const SHORT: &str = "short";
/// A share with one file, `live.bin` (the 1 MiB binary), whose bytes arrive as the test releases
/// them ([`Arriving`]).
pub const ARRIVING: &str = "arriving";

/// The background colour the site's CSS sets: the browser test looks for it in the screenshot.
pub const BACKGROUND: [u8; 3] = [0x12, 0xab, 0x34];

pub const INDEX_HTML: &str = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>test site</title>\
    <link rel=\"stylesheet\" href=\"style.css\"></head>\n<body><h1>pairs test site</h1>\
    <p><a href=\"sub/\">sub</a></p></body></html>\n";
pub const STYLE_CSS: &str =
    "html, body { background: #12ab34; margin: 0; height: 100%; }\nh1 { color: #ffffff; }\n";
pub const NOT_FOUND_HTML: &str = "<!DOCTYPE html>\n<h1>custom not found page</h1>\n";
pub const DOCS_INDEX_HTML: &str = "<!DOCTYPE html>\n<h1>docs index</h1>\n";
/// A page whose script reports whether it ran and could use storage (it cannot under the plain
/// origin's sandbox).
pub const SCRIPT_HTML: &str = "<!DOCTYPE html>\n<html><body><p id=\"out\">script did not run</p><script>\
    var out = document.getElementById('out');\
    try { localStorage.setItem('k', 'v'); out.textContent = 'script ran, storage ' + localStorage.getItem('k'); }\
    catch (e) { out.textContent = 'script ran, no storage'; }</script></body></html>\n";

/// 1 MiB of deterministic noise.
pub fn binary() -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The test site: files by path; directories are implied by the paths.
pub struct MemSource {
    files: BTreeMap<String, Arc<Vec<u8>>>,
    /// The largest buffer any read was asked to fill: reads come in chunks.
    pub largest_read: Arc<AtomicUsize>,
    /// The file of the [`ARRIVING`] share.
    pub arriving: Arc<Arriving>,
}

impl MemSource {
    pub fn new() -> MemSource {
        let mut files = BTreeMap::new();
        let mut add = |path: &str, bytes: Vec<u8>| {
            files.insert(path.to_owned(), Arc::new(bytes));
        };
        add("index.html", INDEX_HTML.into());
        add("style.css", STYLE_CSS.into());
        add("404.html", NOT_FOUND_HTML.into());
        add("data.bin", binary());
        add("sub/a.txt", b"file a\n".to_vec());
        add("sub/b c.txt", b"file b c\n".to_vec());
        add("sub/deeper/d.txt", b"file d\n".to_vec());
        add("docs/index.html", DOCS_INDEX_HTML.into());
        add("script.html", SCRIPT_HTML.into());
        MemSource {
            files,
            largest_read: Arc::default(),
            arriving: Arc::new(Arriving {
                bytes: binary(),
                arrived: AtomicU64::new(0),
                more: tokio::sync::Notify::new(),
            }),
        }
    }

    fn file(&self, bytes: &Arc<Vec<u8>>) -> File {
        let reader = Counting {
            bytes: bytes.clone(),
            largest: self.largest_read.clone(),
        };
        File::new(bytes.len() as u64, etag(bytes), Arc::new(reader))
    }

    fn lookup(&self, path: &str) -> Resolved {
        if let Some(bytes) = self.files.get(path) {
            return Resolved::File(self.file(bytes));
        }
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut entries: Vec<DirEntry> = Vec::new();
        for (name, bytes) in self.files.range(prefix.clone()..) {
            let Some(rest) = name.strip_prefix(&prefix) else {
                break;
            };
            match rest.split_once('/') {
                Some((dir, _)) => {
                    if !entries.iter().any(|e| e.name == dir) {
                        entries.push(DirEntry::dir(dir));
                    }
                }
                None => entries.push(DirEntry::file(rest, bytes.len() as u64)),
            }
        }
        if entries.is_empty() {
            Resolved::NotFound
        } else {
            Resolved::Directory(entries)
        }
    }
}

impl Source for MemSource {
    fn resolve<'a>(
        &'a self,
        site: &'a Site,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Resolved, GatewayError>> {
        Box::pin(async move {
            match site {
                Site::Origin(key) if key == KEY => Ok(self.lookup(path)),
                Site::Share(ticket) if ticket == TICKET => Ok(self.lookup(path)),
                Site::Share(ticket) if ticket == BROKEN => Err(GatewayError::Unavailable(
                    "no provider of this share answered".into(),
                )),
                Site::Share(ticket) if ticket == SLOW => std::future::pending().await,
                Site::Share(ticket) if ticket == SHORT && path == "short.bin" => Ok(
                    Resolved::File(File::new(1 << 20, "short", Arc::new(vec![7u8; 100_000]))),
                ),
                Site::Share(ticket) if ticket == ARRIVING && path == "live.bin" => {
                    let size = self.arriving.bytes.len() as u64;
                    Ok(Resolved::File(File::new(
                        size,
                        "live",
                        self.arriving.clone(),
                    )))
                }
                Site::Blob(hash) if hash == HASH && path.is_empty() => Ok(self.lookup("data.bin")),
                _ => Ok(Resolved::NotFound),
            }
        })
    }
}

/// A stand-in for a content hash.
fn etag(bytes: &[u8]) -> String {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for &b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

struct Counting {
    bytes: Arc<Vec<u8>>,
    largest: Arc<AtomicUsize>,
}

impl RangeReader for Counting {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.largest.fetch_max(buf.len(), Ordering::Relaxed);
        self.bytes.read_at(buf, offset)
    }
}

/// A file whose bytes arrive in order as the test releases them, like a download under way: reads
/// past what arrived fail, so a gateway that did not wait would send a broken body.
pub struct Arriving {
    pub bytes: Vec<u8>,
    arrived: AtomicU64,
    more: tokio::sync::Notify,
}

impl Arriving {
    /// Makes the first `n` bytes readable.
    pub fn release(&self, n: u64) {
        self.arrived.fetch_max(n, Ordering::SeqCst);
        self.more.notify_waiters();
    }
}

impl RangeReader for Arriving {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset + buf.len() as u64 > self.arrived.load(Ordering::SeqCst) {
            return Err(io::Error::other("read past the bytes that arrived"));
        }
        let start = offset as usize;
        buf.copy_from_slice(&self.bytes[start..start + buf.len()]);
        Ok(buf.len())
    }

    fn ready(&self, offset: u64, _end: u64) -> BoxFuture<'_, io::Result<u64>> {
        Box::pin(async move {
            loop {
                let more = self.more.notified();
                let arrived = self.arrived.load(Ordering::SeqCst);
                if arrived > offset {
                    return Ok(arrived - offset);
                }
                more.await;
            }
        })
    }
}

/// A gateway serving [`MemSource`] on 127.0.0.1, on a runtime thread of its own (so tests may block on
/// curl). Dropping it shuts the gateway down and waits until `run` has returned.
pub struct Running {
    pub port: u16,
    pub source: Arc<MemSource>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    pub fn start() -> Running {
        Running::start_with(Config::default())
    }

    pub fn start_with(config: Config) -> Running {
        let source = Arc::new(MemSource::new());
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving: Arc<dyn Source> = source.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let gateway = Gateway::bind("127.0.0.1:0".parse().unwrap())
                    .await
                    .expect("bind 127.0.0.1:0")
                    .with_config(config);
                port_tx.send(gateway.local_addr().port()).unwrap();
                gateway
                    .run(serving, async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        // The listener is bound before the port is sent: connections made from now on are accepted.
        let port = port_rx.recv().expect("the gateway thread failed to bind");
        Running {
            port,
            source,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn plain(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `http://KEY.localhost:PORT` followed by `path`.
    pub fn origin(&self, path: &str) -> String {
        format!("http://{KEY}.localhost:{}{path}", self.port)
    }

    /// Stops the gateway and waits for `run` to return.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the gateway thread panicked");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// What curl received.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// A header's value (the first, by case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("a UTF-8 body")
    }
}

/// Runs `/usr/bin/curl` with `args` (a URL among them), never following redirects.
pub fn curl(args: &[&str]) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head");
    let body = dir.path().join("body");
    let output = Command::new("/usr/bin/curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "30",
            "--noproxy",
            "*",
        ])
        .arg("--dump-header")
        .arg(&head)
        .arg("--output")
        .arg(&body)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("running /usr/bin/curl failed ({err}); install Debian curl"));
    assert!(
        output.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let head = std::fs::read_to_string(&head).unwrap();
    // After redirects (--location) the file holds every response's head: read the last.
    let last = head.rfind("\nHTTP/").map_or(0, |at| at + 1);
    let mut lines = head[last..].lines();
    let status_line = lines.next().expect("a status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect(status_line);
    let headers = lines
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let body = std::fs::read(&body).unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}
