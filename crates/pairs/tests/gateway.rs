//! The node's HTTP gateway between in-process nodes on loopback: node A shares a small site, node B
//! (which does not hold it) serves it to curl and to headless Chromium, fetching from A on demand.
//! Then the command line: `pairs node` with its gateway, `pairs site publish` through it and alone.

#![cfg(feature = "gateway")]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pairs::Node;
use pairs::base::Ticket as _;
use pairs::blobs::store::ImportMode;
use pairs::blobs::ticket::BlobFormat;
use pairs::blobs::{BlobStatus, GROUP_SIZE, Layer};
use pairs::gateway::{blob_url, share_origin_url, share_url};
use pairs::share::ShareHandle;

use common::node_proc::NodeProc;
use common::{Home, SHORT, lines_of, stderr_text};

const WAIT: Duration = Duration::from_secs(60);

/// The page's background, set by its stylesheet: found in the screenshot, it proves both arrived.
const BACKGROUND: [u8; 3] = [0x12, 0xab, 0x34];
const INDEX_HTML: &str = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>site</title>\
    <link rel=\"stylesheet\" href=\"style.css\"></head>\n<body><h1>pairs site</h1>\
    <p><a href=\"sub/\">sub</a></p></body></html>\n";
const STYLE_CSS: &str =
    "html, body { background: #12ab34; margin: 0; height: 100%; }\nh1 { color: #ffffff; }\n";
const SUB_HTML: &str = "<!DOCTYPE html>\n<h1>a page in a folder</h1>\n";

async fn node(dir: &Path, gateway: Option<u16>) -> Node {
    Node::builder()
        .data_dir(dir)
        .fresh_key()
        .isolated(true)
        .bind(Some("127.0.0.1:0".parse().unwrap()))
        .gateway(gateway)
        .spawn()
        .await
        .expect("node starts")
}

/// 1 MiB of deterministic noise.
fn binary() -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(7);
    (0..1 << 20).map(|_| rng.u8(..)).collect()
}

/// Writes the site into `dir`: a page, its stylesheet, a folder with a page and a text file, and
/// a binary.
fn write_site(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("index.html"), INDEX_HTML).unwrap();
    std::fs::write(dir.join("style.css"), STYLE_CSS).unwrap();
    std::fs::write(dir.join("sub/page.html"), SUB_HTML).unwrap();
    std::fs::write(dir.join("sub/notes.txt"), "notes\n").unwrap();
    std::fs::write(dir.join("data.bin"), binary()).unwrap();
}

/// A share of the site, published by `owner`.
async fn share_site(owner: &Node, dir: &Path) -> ShareHandle {
    write_site(dir);
    let share = owner.shares().create(dir).await.unwrap();
    share
        .wait_for(WAIT, |s| s.in_step && s.files == 5)
        .await
        .unwrap();
    share
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Seconds from the start until the first byte of the answer (curl's `time_starttransfer`).
    first_byte: f64,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("a UTF-8 body")
    }
}

/// `/usr/bin/curl` with `args` (a URL among them), on a blocking thread: the nodes run on this
/// runtime.
async fn curl(args: &[&str]) -> Reply {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || curl_blocking(&args))
        .await
        .unwrap()
}

fn curl_blocking(args: &[String]) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head");
    let body = dir.path().join("body");
    let output = Command::new("/usr/bin/curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "60",
            "--noproxy",
            "*",
        ])
        .args(["--write-out", "%{time_starttransfer}"])
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
    let mut lines = head.lines();
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
    Reply {
        status,
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
        first_byte: String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(f64::NAN),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_share_not_on_the_node_browses_through_its_gateway() {
    let (a_dir, b_dir, site) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = node(a_dir.path(), None).await;
    let b = node(b_dir.path(), Some(0)).await;
    assert_eq!(a.gateway_addr(), None, "no gateway unless asked");
    let addr = b.gateway_addr().expect("B serves the gateway");
    assert!(addr.ip().is_loopback(), "{addr}");
    let port = addr.port();

    let share = share_site(&a, site.path()).await;
    let ticket = share.ticket().to_ticket();
    let base = share_url(&ticket, port);

    // The first page of a share B has never seen: B catches up with A's log, then fetches the page.
    let started = Instant::now();
    let page = curl(&[&base]).await;
    let took = started.elapsed();
    assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
    assert_eq!(page.text(), INDEX_HTML);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    eprintln!(
        "first page of a share not on the node: first byte after {:.0} ms (curl), {:.0} ms in all",
        page.first_byte * 1000.0,
        took.as_secs_f64() * 1000.0
    );
    // A file not fetched yet, of a share B now holds: a blob from A.
    let css = curl(&[&format!("{base}style.css")]).await;
    eprintln!(
        "a file of a share held, not fetched yet: first byte after {:.0} ms",
        css.first_byte * 1000.0
    );
    assert_eq!(css.text(), STYLE_CSS);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));

    // The same share as its own origin: the label is the share's key.
    let origin = share_origin_url(share.id(), addr);
    assert!(origin.starts_with(&format!("http://{}.localhost:", share.id())));
    let page = curl(&[&origin]).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.text(), INDEX_HTML);
    // Sites run at their own origin: not sandboxed.
    assert_eq!(page.header("content-security-policy"), None);
    let upper = origin.replace(
        &share.id().to_string(),
        &share.id().to_string().to_uppercase(),
    );
    assert_eq!(
        curl(&[&format!("{upper}sub/page.html")]).await.text(),
        SUB_HTML
    );

    // The binary: whole, a range, its ETag.
    let data = binary();
    let whole = curl(&[&format!("{origin}data.bin")]).await;
    assert_eq!(whole.status, 200);
    assert!(whole.body == data, "the binary arrived intact");
    let etag = whole.header("etag").expect("an ETag").to_owned();
    let hash = blake3::hash(&data).to_hex().to_string();
    assert_eq!(etag, format!("\"{hash}\""), "the ETag is the content hash");
    let part = curl(&[&format!("{origin}data.bin"), "-H", "Range: bytes=1000-1999"]).await;
    assert_eq!(part.status, 206);
    assert_eq!(
        part.header("content-range"),
        Some("bytes 1000-1999/1048576")
    );
    assert!(part.body == data[1000..2000], "the range's bytes");
    let tail = curl(&[&format!("{origin}data.bin"), "-H", "Range: bytes=-100"]).await;
    assert!(tail.body == data[data.len() - 100..]);
    let same = curl(&[
        &format!("{origin}data.bin"),
        "-H",
        &format!("If-None-Match: {etag}"),
    ])
    .await;
    assert_eq!(same.status, 304);
    assert!(same.body.is_empty());

    // Directories: listings as JSON, the redirect to the slash, 404s.
    let listing = curl(&[&format!("{origin}sub/?format=json")]).await;
    assert_eq!(listing.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&listing.body).unwrap();
    let names: Vec<&str> = json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["notes.txt", "page.html"]);
    let root = curl(&[&format!("{base}?format=json")]).await;
    let json: serde_json::Value = serde_json::from_slice(&root.body).unwrap();
    let entries = json["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["name"] == "sub" && e["type"] == "dir"),
        "{json}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["name"] == "data.bin" && e["size"] == 1 << 20),
        "{json}"
    );
    assert_eq!(curl(&[&format!("{origin}sub")]).await.status, 302);
    assert_eq!(curl(&[&format!("{origin}missing.html")]).await.status, 404);
    assert_eq!(curl(&[&format!("{base}sub/nope/")]).await.status, 404);
    // Nothing is writable, and only the gateway's own names are answered.
    let put = curl(&[&format!("{origin}index.html"), "-X", "PUT", "-d", "x"]).await;
    assert_eq!(put.status, 405);
    let rebound = curl(&[
        &format!("http://127.0.0.1:{port}/"),
        "-H",
        "Host: evil.example",
    ])
    .await;
    assert_eq!(rebound.status, 403);

    // A blob A shares: by ticket (naming A), a file and a collection.
    let blobs_dir = tempfile::tempdir().unwrap();
    let note = blobs_dir.path().join("note.txt");
    std::fs::write(&note, b"a note, as a blob\n").unwrap();
    let added = a.blobs().add(&note, ImportMode::Copy).await.unwrap();
    a.blobs().share(added.hash).await.unwrap();
    let blob_ticket = a.blobs().ticket(added.hash, added.format).to_ticket();
    let reply = curl(&[&blob_url(&blob_ticket, port)]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "a note, as a blob\n");
    assert_eq!(
        reply.header("etag"),
        Some(format!("\"{}\"", added.hash).as_str())
    );
    // Under a name, the type follows it; by its bare hash, now that B holds it.
    let named = curl(&[&format!(
        "{}note.txt",
        blob_url(&added.hash.to_string(), port)
    )])
    .await;
    assert_eq!(named.text(), "a note, as a blob\n");
    assert_eq!(
        named.header("content-type"),
        Some("text/plain; charset=utf-8")
    );

    let folder = a
        .blobs()
        .add(site.path(), ImportMode::Reference)
        .await
        .unwrap();
    a.blobs().share(folder.hash).await.unwrap();
    let folder_url = blob_url(
        &a.blobs().ticket(folder.hash, folder.format).to_ticket(),
        port,
    );
    let listing = curl(&[&format!("{folder_url}sub/?format=json")]).await;
    assert_eq!(
        listing.status,
        200,
        "{}",
        String::from_utf8_lossy(&listing.body)
    );
    assert!(listing.text().contains("page.html"), "{}", listing.text());
    assert_eq!(
        curl(&[&format!("{folder_url}sub/page.html")]).await.text(),
        SUB_HTML
    );
    assert_eq!(curl(&[&format!("{folder_url}nothing")]).await.status, 404);
    assert_eq!(
        curl(&[&blob_url("not-a-hash", port)]).await.status,
        400,
        "a name that is no hash or ticket"
    );

    b.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the gateway stops with the node"
    );
    a.shutdown().await;
}

/// `len` bytes of deterministic noise from `seed`.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes);
    bytes
}

/// 64 MiB, larger than anything a page needs to wait for whole.
const LARGE: usize = 64 << 20;

/// The status of `hash` in `node`'s store.
fn status(node: &Node, hash: &pairs::blobs::Hash) -> BlobStatus {
    node.blobs().store().unwrap().status(hash).unwrap()
}

/// A GET over a raw connection: its head, then body bytes until `len` of them came.
async fn get_start(port: u16, path: &str, len: usize) -> (String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let read = async {
        loop {
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n")
                && received.len() >= end + 4 + len
            {
                return end + 4;
            }
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the response ended after {} bytes", received.len());
            received.extend_from_slice(&chunk[..n]);
        }
    };
    let head_end = tokio::time::timeout(WAIT, read)
        .await
        .expect("the bytes came in time");
    let head = String::from_utf8_lossy(&received[..head_end]).to_lowercase();
    received.drain(..head_end);
    received.truncate(len);
    (head, received)
}

/// A 64 MiB blob of which A holds every group but one: B's copy can never be complete, so whatever
/// B's gateway serves of it was served before the blob was complete there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_file_is_served_while_it_downloads() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(a_dir.path(), None).await;
    let b = node(b_dir.path(), Some(0)).await;
    let port = b.gateway_addr().unwrap().port();

    let data = noise(LARGE, 11);
    let (hash, layer) = Layer::of(&data);
    let missing = 1000; // a group in the middle, that nobody has
    {
        let store = a.blobs().store().unwrap();
        let (partial, mut have) = store.partial(&hash, &layer, None).unwrap();
        for group in (0..layer.groups()).filter(|&g| g != missing) {
            let at = (group * GROUP_SIZE) as usize;
            let end = (at + GROUP_SIZE as usize).min(data.len());
            partial.write_group(group, &data[at..end]).unwrap();
            have.set(group);
        }
        partial.checkpoint(&have).unwrap();
    }
    a.blobs().share(hash).await.unwrap();
    let url = blob_url(&a.blobs().ticket(hash, BlobFormat::Raw).to_ticket(), port);
    assert!(matches!(status(&b, &hash), BlobStatus::Absent));

    // A range near the end: its bytes come, right, while the blob cannot be complete on B.
    let (first, last) = (LARGE - 3_000_000, LARGE - 1_000_001);
    let part = curl(&[&url, "-H", &format!("Range: bytes={first}-{last}")]).await;
    assert_eq!(part.status, 206, "{}", String::from_utf8_lossy(&part.body));
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes {first}-{last}/{LARGE}").as_str())
    );
    assert_eq!(part.header("etag"), Some(format!("\"{hash}\"").as_str()));
    assert!(part.body == data[first..=last], "the range's bytes");
    assert!(
        matches!(status(&b, &hash), BlobStatus::Partial { .. }),
        "served before the blob was complete"
    );

    // A whole GET: headers at once with the file's size, then the bytes in order, up to the group
    // nobody has.
    let upto = (missing * GROUP_SIZE) as usize;
    let path = url.split_once(&format!(":{port}")).unwrap().1.to_owned();
    let (head, body) = get_start(port, &path, upto).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {LARGE}\r\n")),
        "{head}"
    );
    assert!(head.contains("accept-ranges: bytes\r\n"), "{head}");
    assert!(body == data[..upto], "the first {upto} bytes, in order");
    assert!(matches!(status(&b, &hash), BlobStatus::Partial { .. }));

    b.shutdown().await;
    a.shutdown().await;
}

/// A 64 MiB file A holds whole, through B's gateway: a range near its end, then the whole file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_file_streams_whole_through_the_gateway() {
    let (a_dir, b_dir, files) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = node(a_dir.path(), None).await;
    let b = node(b_dir.path(), Some(0)).await;
    let port = b.gateway_addr().unwrap().port();
    let data = noise(LARGE, 12);
    let file = files.path().join("large.bin");
    std::fs::write(&file, &data).unwrap();
    let added = a.blobs().add(&file, ImportMode::Copy).await.unwrap();
    a.blobs().share(added.hash).await.unwrap();
    let url = format!(
        "{}large.bin",
        blob_url(
            &a.blobs().ticket(added.hash, added.format).to_ticket(),
            port
        )
    );

    let tail = curl(&[&url, "-H", "Range: bytes=-100000"]).await;
    assert_eq!(tail.status, 206);
    assert!(tail.body == data[LARGE - 100_000..], "the tail's bytes");
    let whole = curl(&[&url]).await;
    assert_eq!(whole.status, 200);
    assert_eq!(
        whole.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(whole.body.len(), LARGE);
    assert!(whole.body == data, "the whole file, intact");
    eprintln!(
        "64 MiB not on the gateway's node: first byte after {:.0} ms",
        whole.first_byte * 1000.0
    );
    assert!(matches!(
        status(&b, &added.hash),
        BlobStatus::Complete { .. }
    ));
    // The empty blob: nothing to fetch, from anyone.
    let empty = pairs::blobs::Hash::of(b"").to_string();
    let nothing = curl(&[&blob_url(&empty, port)]).await;
    assert_eq!(nothing.status, 200);
    assert_eq!(nothing.header("content-length"), Some("0"));
    assert!(nothing.body.is_empty());

    b.shutdown().await;
    a.shutdown().await;
}

/// A benchmark, not a test (`bench/gateway-ttfb.sh` runs it in release): the first byte of a 1 GiB
/// file not on the gateway's node, whole and as a range at its end, against the same download by
/// `Blobs::get` (no gateway) in the same run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: bench/gateway-ttfb.sh"]
async fn first_byte_of_a_gibibyte_not_on_the_node() {
    use std::io::Write as _;
    let (a_dir, b_dir, c_dir, d_dir, files) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = node(a_dir.path(), None).await;
    let b = node(b_dir.path(), Some(0)).await;
    let c = node(c_dir.path(), Some(0)).await;
    let file = files.path().join("large.bin");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for part in 0..64 {
            out.write_all(&noise(16 << 20, 100 + part)).unwrap();
        }
        out.flush().unwrap();
    }
    let added = a.blobs().add(&file, ImportMode::Reference).await.unwrap();
    a.blobs().share(added.hash).await.unwrap();
    let ticket = a.blobs().ticket(added.hash, added.format).to_ticket();

    let c_url = format!(
        "{}large.bin",
        blob_url(&ticket, c.gateway_addr().unwrap().port())
    );
    let tail = curl(&[&c_url, "-H", "Range: bytes=-1000000"]).await;
    assert_eq!(tail.status, 206);
    eprintln!(
        "1 GiB not on the node, its last MB: first byte after {:.0} ms",
        tail.first_byte * 1000.0
    );
    // C would go on fetching the rest from A, beside B.
    c.shutdown().await;

    let b_url = format!(
        "{}large.bin",
        blob_url(&ticket, b.gateway_addr().unwrap().port())
    );
    let started = Instant::now();
    let whole = curl(&[&b_url]).await;
    let took = started.elapsed();
    assert_eq!(whole.status, 200);
    assert_eq!(
        blake3::hash(&whole.body).as_bytes(),
        added.hash.as_bytes(),
        "the whole file, intact"
    );
    eprintln!(
        "1 GiB not on the node, whole: first byte after {:.0} ms, last after {:.2} s",
        whole.first_byte * 1000.0,
        took.as_secs_f64()
    );
    // Again, now that B holds it: what the gateway alone costs.
    let started = Instant::now();
    let again = curl(&[&b_url]).await;
    assert_eq!(again.body.len(), whole.body.len());
    eprintln!(
        "1 GiB held by the node: last byte after {:.2} s",
        started.elapsed().as_secs_f64()
    );
    b.shutdown().await;

    let d = node(d_dir.path(), None).await;
    let started = Instant::now();
    d.blobs()
        .get(
            &a.blobs().ticket(added.hash, added.format),
            &d_dir.path().join("large.bin"),
            |_| {},
        )
        .await
        .unwrap();
    eprintln!(
        "1 GiB by Blobs::get, no gateway: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    d.shutdown().await;
    a.shutdown().await;
}

/// Headless Chromium loads the site at its own origin through B's gateway and screenshots it: the
/// stylesheet's colour fills the picture, the heading is drawn on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chromium_renders_a_site_through_the_gateway() {
    let (a_dir, b_dir, site, profile) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = node(a_dir.path(), None).await;
    let b = node(b_dir.path(), Some(0)).await;
    let share = share_site(&a, site.path()).await;
    let addr = b.gateway_addr().unwrap();
    // The origin names only the share's key: B learns where it is from a ticket it was shown.
    let seen = curl(&[&share_url(&share.ticket().to_ticket(), addr.port())]).await;
    assert_eq!(seen.status, 200);
    let url = share_origin_url(share.id(), addr);
    let shot = profile.path().join("page.png");
    let args = vec![
        format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ),
        format!("--screenshot={}", shot.display()),
        url.clone(),
    ];
    let output = tokio::task::spawn_blocking(move || {
        Command::new("/usr/bin/timeout")
            .args(["--kill-after=5", "120", "chromium"])
            .args(CHROMIUM_FLAGS)
            .args(&args)
            .output()
            .expect("running /usr/bin/timeout failed (coreutils)")
    })
    .await
    .unwrap();
    assert_ne!(
        output.status.code(),
        Some(127),
        "chromium is not installed: this test needs Debian's chromium"
    );
    assert!(
        output.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let png = std::fs::read(&shot).expect("chromium wrote a screenshot");
    let (width, height, pixels) = decode_rgb(&png);
    assert_eq!((width, height), (800, 600));
    let total = pixels.len();
    let background = pixels.iter().filter(|&&p| p == BACKGROUND).count();
    let white = pixels.iter().filter(|&&p| p == [0xff, 0xff, 0xff]).count();
    assert!(
        background * 10 > total * 9,
        "{background} of {total} pixels have the CSS's background colour"
    );
    assert!(
        white > 100,
        "only {white} white pixels: the heading was not drawn"
    );
    b.shutdown().await;
    a.shutdown().await;
}

/// Flags for a headless Chromium that talks to nothing but the page it is given (as in the
/// pairs-gateway tests).
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    // As root Chromium runs only without its sandbox.
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--metrics-recording-only",
    "--disable-extensions",
    "--hide-scrollbars",
    "--force-color-profile=srgb",
    "--window-size=800,600",
];

/// Decodes an 8-bit RGB or RGBA PNG into its size and RGB pixels.
fn decode_rgb(png_bytes: &[u8]) -> (u32, u32, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a PNG of sane size")];
    let info = reader.next_frame(&mut buf).expect("a PNG frame");
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let pixels = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, pixels)
}

/// `pairs node` serves the gateway on the configured port and says where; `pairs site publish`
/// through it prints the site's URL, which serves the page, and publishing again is the same site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_publish_through_the_running_node() {
    let home = Home::new();
    std::fs::write(home.path().join("config.toml"), "[gateway]\nport = 0\n").unwrap();
    let site = tempfile::tempdir().unwrap();
    write_site(site.path());
    let node = NodeProc::start(&home, "127.0.0.1:0", &[]);

    let status = home.run(&["node", "status", "--json"]);
    assert!(status.status.success(), "{}", stderr_text(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let gateway = status["gateway"]
        .as_str()
        .expect("the status names the gateway");
    assert!(gateway.starts_with("http://localhost:"), "{gateway}");

    let publish = || {
        let out = home.run(&["site", "publish", site.path().to_str().unwrap(), "--json"]);
        assert!(out.status.success(), "{}", stderr_text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = publish();
    let url = first["url"].as_str().unwrap().to_owned();
    let port = gateway
        .trim_start_matches("http://localhost:")
        .trim_end_matches('/');
    assert!(url.ends_with(&format!(".localhost:{port}/")), "{url}");
    assert!(first["ticket"].as_str().unwrap().starts_with("share"));
    assert_eq!(
        publish()["url"],
        first["url"],
        "the same folder is the same site"
    );

    let page = curl(&[&url]).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.text(), INDEX_HTML);
    assert_eq!(
        curl(&[&format!("{url}sub/page.html")]).await.text(),
        SUB_HTML
    );

    let no_index = tempfile::tempdir().unwrap();
    let out = home.run(&["site", "publish", no_index.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr_text(&out).contains("no index.html"),
        "{}",
        stderr_text(&out)
    );
    assert!(node.stop().success());
}

/// Without a node, `pairs site publish` runs one with the gateway until stopped; a configured port
/// that is taken is an error that says how to pick another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_publish_on_its_own_and_a_taken_port() {
    let home = Home::new();
    let site = tempfile::tempdir().unwrap();
    write_site(site.path());
    let mut child = home
        .pairs(&[
            "site",
            "publish",
            site.path().to_str().unwrap(),
            "--gateway-port",
            "0",
            "--bind",
            "127.0.0.1:0",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = lines_of(child.stdout.take().unwrap());
    let url = stdout.recv_timeout(SHORT).expect("the site's URL");
    let ticket = stdout.recv_timeout(SHORT).expect("the share ticket");
    assert!(
        url.starts_with("http://") && url.contains(".localhost:"),
        "{url}"
    );
    assert!(ticket.starts_with("share"), "{ticket}");
    let page = curl(&[&url]).await;
    assert_eq!(page.text(), INDEX_HTML);
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = common::wait_status(child, SHORT);
    assert!(status.success(), "{status}");

    // A port taken by someone else.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    std::fs::write(
        home.path().join("config.toml"),
        format!("[gateway]\nport = {port}\n"),
    )
    .unwrap();
    let out = home.run(&["node", "--bind", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = stderr_text(&out);
    assert!(
        err.contains("in use") && err.contains("[gateway] port"),
        "{err}"
    );
}
