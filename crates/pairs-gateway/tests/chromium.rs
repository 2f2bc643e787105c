//! A real browser: headless Chromium loads the test site at its own origin, `http://KEY.localhost:PORT/`,
//! and screenshots it. The site's CSS sets the page's colour, so finding that colour in the picture
//! proves the page and its stylesheet both came through the gateway.
//!
//! Needs Debian's `chromium` (CI installs it); without it the test fails saying so. Chromium resolves
//! every `*.localhost` name to loopback itself, so this works in a namespace with only `lo`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{BACKGROUND, Running, TICKET};

/// Flags for a headless Chromium that talks to nothing but the page it is given.
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
    // Colours exactly as the CSS says.
    "--force-color-profile=srgb",
    "--window-size=800,600",
];

/// Runs headless Chromium with a fresh profile in `dir` on `url`, with `extra` flags; fails the test if
/// Chromium is missing or fails.
fn chromium(dir: &Path, extra: &[&str], url: &str) -> Output {
    let output = Command::new("/usr/bin/timeout")
        .args(["--kill-after=5", "120", "chromium"])
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("running /usr/bin/timeout failed (coreutils)");
    if output.status.code() == Some(127) {
        panic!(
            "chromium is not installed: these tests need Debian's chromium (apt-get install chromium)"
        );
    }
    assert!(
        output.status.success(),
        "chromium failed ({}) on {url}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn chromium_renders_a_share_origin() {
    let gateway = Running::start();
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("page.png");
    let url = gateway.origin("/");
    let output = chromium(
        dir.path(),
        &[&format!("--screenshot={}", shot.display())],
        &url,
    );
    let png = std::fs::read(&shot).unwrap_or_else(|err| {
        panic!(
            "chromium wrote no screenshot ({err}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let (width, height, pixels) = decode_rgb(&png);
    assert_eq!((width, height), (800, 600));

    let total = pixels.len();
    let background = pixels.iter().filter(|&&p| p == BACKGROUND).count();
    let white = pixels.iter().filter(|&&p| p == [0xff, 0xff, 0xff]).count();
    // The stylesheet's colour fills the page (it came through the gateway), and the heading's white
    // text is drawn on it (the page is not blank).
    assert!(
        background * 10 > total * 9,
        "{background} of {total} pixels have the CSS's background colour"
    );
    assert!(
        white > 100,
        "only {white} white pixels: the heading was not drawn"
    );
    if let Ok(keep) = std::env::var("PAIRS_GATEWAY_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}

/// Scripts run with storage at a share's own origin; under the plain origin the sandbox stops them.
#[test]
fn chromium_sandboxes_the_plain_origin() {
    let gateway = Running::start();
    let dir = tempfile::tempdir().unwrap();
    let dom =
        |url: &str| String::from_utf8(chromium(dir.path(), &["--dump-dom"], url).stdout).unwrap();

    let own = dom(&gateway.origin("/script.html"));
    assert!(own.contains("script ran, storage v"), "{own}");

    let plain = dom(&gateway.plain(&format!("/share/{TICKET}/script.html")));
    assert!(plain.contains("script did not run"), "{plain}");
}

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
