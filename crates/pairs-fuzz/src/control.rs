//! The local control API's frames and the node's configuration file.

use pairs::config::{Config, SourceOptions, Sources};
use pairs::control::{self, Request, Response};

/// Frames on the control socket, read as the node reads requests and as a client reads responses
/// (4-byte length checked against the limit before anything is allocated, version byte, postcard).
pub fn frames(data: &[u8]) {
    let mut reader = data;
    for _ in 0..64 {
        match crate::block_on(control::read_frame::<_, Request>(
            &mut reader,
            control::MAX_REQUEST,
        )) {
            Ok(Some(request)) => {
                let _ = format!("{request:?}");
            }
            Ok(None) | Err(_) => break,
        }
    }
    let mut reader = data;
    for _ in 0..64 {
        match crate::block_on(control::read_frame::<_, Response>(
            &mut reader,
            control::MAX_RESPONSE,
        )) {
            Ok(Some(response)) => {
                let _ = format!("{response:?}");
            }
            Ok(None) | Err(_) => break,
        }
    }
}

/// A `config.toml` as the node reads it, then combined with the command line's defaults (nothing
/// is resolved or contacted: names stay names until the node starts).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text) else {
        return;
    };
    for isolated in [false, true] {
        let config = Config::parse(text).expect("parsed once");
        let _ = Sources::from_config(
            config,
            "config.toml".into(),
            isolated,
            &SourceOptions::default(),
        );
    }
    let _ = config;
}
