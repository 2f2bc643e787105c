//! `pairs id` and the key file.

mod common;

use std::fs;

use common::{Home, stderr_text};

#[test]
fn identity_is_created_once_and_persists() {
    let home = Home::new();
    let first = home.run(&["id"]);
    assert!(first.status.success(), "{}", stderr_text(&first));
    let id = String::from_utf8(first.stdout).unwrap();
    assert_eq!(id.trim().len(), 52);
    let again = home.run(&["id"]);
    assert_eq!(String::from_utf8(again.stdout).unwrap(), id);
    assert_ne!(
        String::from_utf8(Home::new().run(&["id"]).stdout).unwrap(),
        id,
        "another home has another identity"
    );
}

#[test]
fn corrupt_key_file_is_an_error_and_left_untouched() {
    let home = Home::new();
    assert!(home.run(&["id"]).status.success());
    let key = home.path().join("node.key");
    let damaged = b"pairs-secret-key-1 thisisnotakey\n";
    fs::write(&key, damaged).unwrap();
    for cmd in [&["id"][..], &["listen", "--bind", "127.0.0.1:0"][..]] {
        let output = home.run(cmd);
        assert_eq!(output.status.code(), Some(1));
        let err = stderr_text(&output);
        assert!(err.contains("corrupt") && err.contains("node.key"), "{err}");
        assert_eq!(fs::read(&key).unwrap(), damaged);
    }
}

#[test]
fn unwritable_data_dir_is_a_clear_error() {
    let home = Home::new();
    let blocker = home.path().join("file");
    fs::write(&blocker, b"").unwrap();
    let output = home
        .pairs(&["id", "--data-dir", blocker.join("sub").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = stderr_text(&output);
    assert!(
        err.contains("cannot create key file") && err.contains("--data-dir"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn usage_mistakes_explain_themselves() {
    let output = Home::new().run(&["connect"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr_text(&output).contains("<TICKET>"));
}

#[test]
fn id_json_and_status_name_the_same_node_with_the_same_field() {
    let home = Home::new();
    let id = String::from_utf8(home.run(&["id"]).stdout).unwrap();
    let id = id.trim();
    let json = home.run(&["id", "--json"]);
    assert!(json.status.success());
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["node"], id);
    let status = home.run(&["status", "--json", "--wait", "1", "--bind", "127.0.0.1:0"]);
    assert!(status.status.success(), "{}", stderr_text(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["node"], id,
        "status reports another node than `pairs id`"
    );
}
