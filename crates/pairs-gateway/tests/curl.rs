//! The gateway over real HTTP, with curl as the client, serving the in-memory test site.

mod common;

use std::sync::atomic::Ordering;

use common::{
    ARRIVING, BROKEN, DOCS_INDEX_HTML, HASH, INDEX_HTML, KEY, NOT_FOUND_HTML, Running, SHORT, SLOW,
    STYLE_CSS, TICKET, binary, curl,
};

#[test]
fn home_page_says_what_it_is() {
    let gateway = Running::start();
    for url in [
        gateway.plain("/"),
        format!("http://localhost:{}/", gateway.port),
    ] {
        let reply = curl(&[&url]);
        assert_eq!(reply.status, 200);
        assert!(reply.text().contains("pairs gateway"), "{}", reply.text());
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    }
    assert_eq!(curl(&[&gateway.plain("/favicon.ico")]).status, 404);
}

#[test]
fn share_origin_serves_the_site() {
    let gateway = Running::start();
    // curl resolves every *.localhost name to loopback itself (since 7.78), as browsers do, so this
    // needs no DNS: it works in a namespace with only `lo`.
    let reply = curl(&[&gateway.origin("/")]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), INDEX_HTML);
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        reply.header("content-length"),
        Some(INDEX_HTML.len().to_string().as_str())
    );
    assert!(reply.header("etag").is_some_and(|tag| tag.starts_with('"')));
    assert_eq!(reply.header("cache-control"), Some("no-cache"));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(reply.header("referrer-policy"), Some("same-origin"));
    // Sites run normally at their own origin: not sandboxed.
    assert_eq!(reply.header("content-security-policy"), None);

    let reply = curl(&[&gateway.origin("/style.css")]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), STYLE_CSS);
    assert_eq!(
        reply.header("content-type"),
        Some("text/css; charset=utf-8")
    );

    // Host names are case-insensitive: the label reaches the source in lowercase.
    let upper = format!(
        "http://{}.LOCALHOST:{}/style.css",
        KEY.to_uppercase(),
        gateway.port
    );
    assert_eq!(curl(&[&upper]).text(), STYLE_CSS);

    // The same origin through an explicit Host header, as a browser sends it.
    let host = format!("Host: {KEY}.localhost:{}", gateway.port);
    assert_eq!(
        curl(&["-H", &host, &gateway.plain("/style.css")]).text(),
        STYLE_CSS
    );

    // An origin no share answers to.
    let unknown = format!("http://unknown.localhost:{}/", gateway.port);
    assert_eq!(curl(&[&unknown]).status, 404);
}

#[test]
fn ranges() {
    let gateway = Running::start();
    let data = binary();
    let url = gateway.origin("/data.bin");
    let size = data.len();

    let whole = curl(&[&url]);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        whole.header("content-length"),
        Some(size.to_string().as_str())
    );
    assert_eq!(
        whole.header("content-type"),
        Some("application/octet-stream")
    );
    assert!(whole.body == data, "the whole file, byte for byte");
    // Read in chunks, never whole.
    let largest = gateway.source.largest_read.load(Ordering::Relaxed);
    assert!(
        largest > 0 && largest <= pairs_gateway::CHUNK,
        "largest read {largest}"
    );

    let reply = curl(&["-H", "Range: bytes=1000-1999", &url]);
    assert_eq!(reply.status, 206);
    assert_eq!(
        reply.header("content-range"),
        Some(format!("bytes 1000-1999/{size}").as_str())
    );
    assert_eq!(reply.header("content-length"), Some("1000"));
    assert!(reply.body == data[1000..2000]);

    // Open-ended, crossing chunk boundaries.
    let reply = curl(&["-H", "Range: bytes=65000-", &url]);
    assert_eq!(reply.status, 206);
    assert_eq!(
        reply.header("content-range"),
        Some(format!("bytes 65000-{}/{size}", size - 1).as_str())
    );
    assert!(reply.body == data[65000..]);

    // A suffix.
    let reply = curl(&["-H", "Range: bytes=-100", &url]);
    assert_eq!(reply.status, 206);
    assert_eq!(
        reply.header("content-range"),
        Some(format!("bytes {}-{}/{size}", size - 100, size - 1).as_str())
    );
    assert!(reply.body == data[size - 100..]);

    // curl's own -r option, the last byte only.
    let last = format!("{}-{}", size - 1, size - 1);
    let reply = curl(&["-r", &last, &url]);
    assert_eq!(reply.status, 206);
    assert_eq!(reply.body, [data[size - 1]]);

    // Nothing of the range exists: 416 naming the size.
    let reply = curl(&["-H", &format!("Range: bytes={size}-"), &url]);
    assert_eq!(reply.status, 416);
    assert_eq!(
        reply.header("content-range"),
        Some(format!("bytes */{size}").as_str())
    );

    // Several ranges are answered with the whole file (allowed: a server may ignore Range).
    let reply = curl(&["-H", "Range: bytes=0-1,5-6", &url]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), size);

    // If-Range: the range only while the ETag still matches.
    let etag = whole.header("etag").unwrap();
    let reply = curl(&[
        "-H",
        "Range: bytes=0-9",
        "-H",
        &format!("If-Range: {etag}"),
        &url,
    ]);
    assert_eq!(reply.status, 206);
    assert!(reply.body == data[..10]);
    let reply = curl(&["-H", "Range: bytes=0-9", "-H", "If-Range: \"stale\"", &url]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), size);
}

#[test]
fn etag_and_if_none_match() {
    let gateway = Running::start();
    let url = gateway.origin("/style.css");
    let first = curl(&[&url]);
    let etag = first.header("etag").expect("an ETag").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"),
        "strong: {etag}"
    );

    let reply = curl(&["-H", &format!("If-None-Match: {etag}"), &url]);
    assert_eq!(reply.status, 304);
    assert!(reply.body.is_empty());
    assert_eq!(reply.header("etag"), Some(etag.as_str()));

    let reply = curl(&["-H", &format!("If-None-Match: \"other\", {etag}"), &url]);
    assert_eq!(reply.status, 304);

    let reply = curl(&["-H", "If-None-Match: \"other\"", &url]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), STYLE_CSS);

    // Another file has another tag.
    assert_ne!(
        curl(&[&gateway.origin("/")]).header("etag"),
        Some(etag.as_str())
    );
}

#[test]
fn directories_index_and_listings() {
    let gateway = Running::start();

    // Without its slash, a directory redirects to its URL (so relative links work).
    let reply = curl(&[&gateway.origin("/sub")]);
    assert_eq!(reply.status, 302);
    assert_eq!(reply.header("location"), Some("/sub/"));
    let reply = curl(&[&gateway.origin("/sub?format=json")]);
    assert_eq!(reply.header("location"), Some("/sub/?format=json"));

    // A directory with an index.html serves it.
    let reply = curl(&[&gateway.origin("/docs")]);
    assert_eq!(reply.header("location"), Some("/docs/"));
    let reply = curl(&["--location", &gateway.origin("/docs")]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), DOCS_INDEX_HTML);

    // Otherwise a listing, directories first.
    let reply = curl(&[&gateway.origin("/sub/")]);
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let page = reply.text();
    assert!(page.contains("Index of /sub/"), "{page}");
    assert!(page.contains("<a href=\"../\">"), "{page}");
    assert!(page.contains("<a href=\"./deeper/\">deeper/</a>"), "{page}");
    assert!(page.contains("<a href=\"./a.txt\">a.txt</a>"), "{page}");
    assert!(
        page.contains("<a href=\"./b%20c.txt\">b c.txt</a>"),
        "{page}"
    );
    assert!(page.find("deeper/").unwrap() < page.find("a.txt").unwrap());
    // The listing's links work.
    assert_eq!(
        curl(&[&gateway.origin("/sub/b%20c.txt")]).text(),
        "file b c\n"
    );

    // JSON with ?format=json.
    let reply = curl(&[&gateway.origin("/sub/?format=json")]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let listing: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        listing,
        serde_json::json!({"path": "/sub/", "entries": [
            {"name": "deeper", "type": "dir"},
            {"name": "a.txt", "type": "file", "size": 7},
            {"name": "b c.txt", "type": "file", "size": 9},
        ]})
    );

    // The root's JSON listing even though it has an index.html.
    let reply = curl(&[&gateway.origin("/?format=json")]);
    let listing: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(listing["path"], "/");
    assert_eq!(listing["entries"].as_array().unwrap().len(), 7, "{listing}");

    // A file is not a directory.
    assert_eq!(curl(&[&gateway.origin("/style.css/")]).status, 404);
}

#[test]
fn not_found_uses_the_sites_page() {
    let gateway = Running::start();
    let reply = curl(&[&gateway.origin("/no/such/file.txt")]);
    assert_eq!(reply.status, 404);
    assert_eq!(reply.text(), NOT_FOUND_HTML);
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(reply.header("etag"), None);

    // A HEAD of it: the headers, no body.
    let reply = curl(&["--head", &gateway.origin("/missing")]);
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.header("content-length"),
        Some(NOT_FOUND_HTML.len().to_string().as_str())
    );

    // Under the plain origin too, sandboxed.
    let reply = curl(&[&gateway.plain(&format!("/share/{TICKET}/missing"))]);
    assert_eq!(reply.status, 404);
    assert_eq!(reply.text(), NOT_FOUND_HTML);
    assert_eq!(reply.header("content-security-policy"), Some("sandbox"));

    // A site without a 404.html gets plain text.
    let reply = curl(&[&gateway.plain(&format!("/blob/{HASH}/x"))]);
    assert_eq!(reply.status, 404);
    assert_eq!(reply.text(), "not found\n");
}

#[test]
fn plain_origin_blob_and_share() {
    let gateway = Running::start();

    let reply = curl(&[&gateway.plain(&format!("/blob/{HASH}"))]);
    assert_eq!(reply.status, 200);
    assert!(reply.body == binary());
    assert_eq!(
        reply.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(reply.header("content-security-policy"), Some("sandbox"));
    assert_eq!(reply.header("referrer-policy"), Some("no-referrer"));
    // The root of a single blob, with its slash, is the blob too.
    assert_eq!(
        curl(&[&gateway.plain(&format!("/blob/{HASH}/"))]).status,
        200
    );
    assert_eq!(curl(&[&gateway.plain("/blob/0000")]).status, 404);

    // A share, sandboxed: its page reaches no cookies or storage of this origin.
    let reply = curl(&[&gateway.plain(&format!("/share/{TICKET}"))]);
    assert_eq!(reply.status, 302);
    assert_eq!(
        reply.header("location"),
        Some(format!("/share/{TICKET}/").as_str())
    );
    let reply = curl(&[&gateway.plain(&format!("/share/{TICKET}/"))]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), INDEX_HTML);
    assert_eq!(reply.header("content-security-policy"), Some("sandbox"));
    assert_eq!(reply.header("cache-control"), Some("no-cache"));

    let reply = curl(&[&gateway.plain(&format!("/share/{TICKET}/sub/?format=json"))]);
    let listing: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(listing["path"], format!("/share/{TICKET}/sub/"));
    let csp = reply.header("content-security-policy").unwrap();
    assert!(csp.starts_with("sandbox;"), "{csp}");

    // The source's failure: 502 with its message.
    let reply = curl(&[&gateway.plain(&format!("/share/{BROKEN}/"))]);
    assert_eq!(reply.status, 502);
    assert_eq!(reply.text(), "no provider of this share answered\n");

    // Outside /blob/ and /share/ there is nothing.
    assert_eq!(curl(&[&gateway.plain(&format!("/{TICKET}/"))]).status, 404);
}

#[test]
fn foreign_hosts_are_refused() {
    let gateway = Running::start();
    let port = gateway.port;
    for host in [
        format!("evil.example:{port}"),
        format!("localhost:{}", port.wrapping_add(1)),
        "localhost".to_owned(),
        format!("127.0.0.1.nip.io:{port}"),
        format!("a.{KEY}.localhost:{port}"),
        format!("localhost.evil.example:{port}"),
    ] {
        let reply = curl(&["-H", &format!("Host: {host}"), &gateway.origin("/")]);
        assert_eq!(reply.status, 403, "{host}");
        assert!(reply.text().contains("answers only"), "{}", reply.text());
        assert!(!reply.text().contains("pairs test site"));
    }
    // DNS rebinding as it happens: a foreign name that resolves to 127.0.0.1.
    let resolve = format!("rebind.example:{port}:127.0.0.1");
    let reply = curl(&[
        "--resolve",
        &resolve,
        &format!("http://rebind.example:{port}/share/{TICKET}/"),
    ]);
    assert_eq!(reply.status, 403);
    // Host is checked before anything else.
    let reply = curl(&[
        "-X",
        "POST",
        "-H",
        "Host: evil.example",
        &gateway.origin("/"),
    ]);
    assert_eq!(reply.status, 403);
}

#[test]
fn read_only() {
    let gateway = Running::start();
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let reply = curl(&["-X", method, "--data", "x", &gateway.origin("/index.html")]);
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    }
    let reply = curl(&["-X", "POST", &gateway.plain("/")]);
    assert_eq!(reply.status, 405);

    // HEAD: the headers of GET, no body.
    let reply = curl(&["--head", &gateway.origin("/data.bin")]);
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-length"),
        Some((1 << 20).to_string().as_str())
    );
    assert!(reply.header("etag").is_some());
    assert_eq!(reply.header("accept-ranges"), Some("bytes"));
}

#[test]
fn escaping_paths_are_refused() {
    let gateway = Running::start();
    for path in [
        "/sub/../index.html",
        "/../index.html",
        "/sub/%2e%2e/index.html",
        "/%2E%2E/x",
        "/./index.html",
    ] {
        // --path-as-is: curl would otherwise squash the dots itself.
        let reply = curl(&["--path-as-is", &gateway.origin(path)]);
        assert_eq!(reply.status, 400, "{path}");
        assert!(reply.text().starts_with("bad path"), "{}", reply.text());
        let plain = format!("/share/{TICKET}{path}");
        assert_eq!(
            curl(&["--path-as-is", &gateway.plain(&plain)]).status,
            400,
            "{plain}"
        );
    }
    for path in [
        "/a%00b",
        "/sub%2fa.txt",
        "/sub%5ca.txt",
        "/sub//a.txt",
        "/%ff",
    ] {
        assert_eq!(
            curl(&["--path-as-is", &gateway.origin(path)]).status,
            400,
            "{path}"
        );
    }
    // Percent-encoded names are decoded.
    assert_eq!(curl(&[&gateway.origin("/%73ub/a.txt")]).text(), "file a\n");
}

#[test]
fn stops_when_asked() {
    let gateway = Running::start();
    let url = gateway.origin("/");
    assert_eq!(curl(&[&url]).status, 200);
    // A keep-alive connection stays open in curl's pool only while curl runs; still, shutdown must
    // return and close the listener.
    gateway.stop();
    let output = std::process::Command::new("/usr/bin/curl")
        .args(["--silent", "--max-time", "10", &url])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(7),
        "curl: connection refused once the gateway stopped"
    );
}

#[test]
fn shutdown_does_not_wait_for_stalled_clients() {
    use std::io::Write;
    let gateway = Running::start();
    // One idle connection, and one whose client never reads the 1 MiB it asked for (the server's
    // writes block once the socket buffers are full).
    let _idle = std::net::TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    let request = format!(
        "GET /data.bin HTTP/1.1\r\nHost: {KEY}.localhost:{}\r\n\r\n",
        gateway.port
    );
    stalled.write_all(request.as_bytes()).unwrap();
    // A request on a third connection completes: the two above were accepted before it was answered.
    assert_eq!(curl(&[&gateway.origin("/")]).status, 200);
    let started = std::time::Instant::now();
    gateway.stop();
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(10),
        "shutdown took {took:?}"
    );
}

#[test]
fn a_slow_source_times_out() {
    let config = pairs_gateway::Config {
        resolve_timeout: std::time::Duration::from_millis(200),
        ..Default::default()
    };
    let gateway = Running::start_with(config);
    let reply = curl(&[&gateway.plain(&format!("/share/{SLOW}/index.html"))]);
    assert_eq!(reply.status, 504);
    assert_eq!(reply.text(), "timed out\n");
}

#[test]
fn a_file_shorter_than_promised_fails_the_transfer() {
    let gateway = Running::start();
    let url = gateway.plain(&format!("/share/{SHORT}/short.bin"));
    let output = std::process::Command::new("/usr/bin/curl")
        .args([
            "--silent",
            "--max-time",
            "30",
            "--output",
            "/dev/null",
            &url,
        ])
        .output()
        .unwrap();
    // 18: "partial file", the connection closed before Content-Length bytes came.
    assert_eq!(
        output.status.code(),
        Some(18),
        "curl must see a failed transfer, not a short file"
    );
}

/// Reads from `stream` until `buf` holds at least `len` bytes (or the stream ends).
fn read_until_len(stream: &mut std::net::TcpStream, buf: &mut Vec<u8>, len: usize) {
    use std::io::Read;
    let mut chunk = [0u8; 64 * 1024];
    while buf.len() < len {
        match stream.read(&mut chunk).expect("reading the response") {
            0 => break,
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[test]
fn a_file_is_served_as_its_bytes_arrive() {
    use std::io::Write;
    let gateway = Running::start();
    let arriving = gateway.source.arriving.clone();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET /share/{ARRIVING}/live.bin HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        gateway.port
    )
    .unwrap();
    // Only the first 300,000 bytes are here: the headers and those bytes come, the rest waits.
    arriving.release(300_000);
    let mut received = Vec::new();
    let mut head_end = None;
    while head_end.is_none() {
        let want = received.len() + 1;
        read_until_len(&mut stream, &mut received, want);
        head_end = received
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| at + 4);
    }
    let head_end = head_end.unwrap();
    let head = String::from_utf8_lossy(&received[..head_end]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-length: 1048576\r\n"), "{head}");
    assert!(head.contains("etag: \"live\"\r\n"), "{head}");
    assert!(head.contains("accept-ranges: bytes\r\n"), "{head}");
    read_until_len(&mut stream, &mut received, head_end + 300_000);
    let data = &arriving.bytes;
    assert!(
        received[head_end..] == data[..300_000],
        "the bytes that arrived, and no more: got {}",
        received.len() - head_end
    );
    // The rest arrives: the body completes, intact.
    arriving.release(data.len() as u64);
    read_until_len(&mut stream, &mut received, usize::MAX);
    assert!(received[head_end..] == data[..], "the whole file, intact");
}

#[test]
fn a_file_that_never_arrives_is_a_504_and_head_answers_at_once() {
    let config = pairs_gateway::Config {
        read_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let gateway = Running::start_with(config);
    let url = gateway.plain(&format!("/share/{ARRIVING}/live.bin"));
    let reply = curl(&[&url]);
    assert_eq!(reply.status, 504);
    assert_eq!(reply.text(), "the content did not arrive in time\n");
    // HEAD needs no byte of the body: its headers are known.
    let head = curl(&["--head", &url]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("1048576"));
    assert_eq!(head.header("etag"), Some("\"live\""));
}

#[test]
fn a_file_that_stops_arriving_ends_in_a_truncated_body() {
    let config = pairs_gateway::Config {
        read_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let gateway = Running::start_with(config);
    let arriving = gateway.source.arriving.clone();
    arriving.release(100_000);
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    let output = std::process::Command::new("/usr/bin/curl")
        .args(["--silent", "--max-time", "30", "--output"])
        .arg(&body)
        .arg(gateway.plain(&format!("/share/{ARRIVING}/live.bin")))
        .output()
        .unwrap();
    // 18: "partial file": the connection closed before Content-Length bytes came.
    assert_eq!(output.status.code(), Some(18), "a failed transfer");
    let got = std::fs::read(&body).unwrap();
    assert!(
        got == arriving.bytes[..100_000],
        "what arrived, and nothing else: {} bytes",
        got.len()
    );
}
