//! Without `-v`, commands print only what the user must act on, in plain text when stderr is not a
//! terminal: no library log lines, no colours.

mod common;

use common::{Home, stderr_text};

/// Lines that look like log output (a level) or carry terminal colours.
fn noise(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| {
            l.contains(" ERROR ")
                || l.contains(" WARN ")
                || l.contains(" INFO ")
                || l.contains('\u{1b}')
        })
        .collect()
}

#[test]
fn a_dht_that_cannot_bootstrap_prints_no_library_errors() {
    let home = Home::new();
    let node = pairs::base::SecretKey::generate().node_id().to_string();
    // A bootstrap address nothing answers on: the DHT cannot fill its routing table.
    let out = home.run(&[
        "connect",
        &node,
        "--dht-bootstrap",
        "127.0.0.1:9",
        "--timeout",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_text(&out);
    assert!(noise(&err).is_empty(), "{err}");
    assert!(err.contains("pairs: error:"), "{err}");
}

#[test]
fn mdns_on_a_clean_run_prints_no_warnings() {
    let home = Home::new();
    // Not isolated (mDNS on; tests run in a namespace whose only link is loopback), no DHT.
    let out = home
        .pairs(&[
            "paste",
            "--receive",
            "--no-dht",
            "--bind",
            "127.0.0.1:0",
            "--timeout",
            "2",
        ])
        .env_remove("PAIRS_ISOLATED")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = stderr_text(&out);
    assert!(noise(&err).is_empty(), "{err}");
    assert!(err.contains("found no sender"), "{err}");
}
