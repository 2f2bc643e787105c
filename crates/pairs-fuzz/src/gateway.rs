//! The HTTP gateway's request parsers: `Host`, the path, `Range` and the ETag conditions.

use arbitrary::{Arbitrary, Unstructured};

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    port: u16,
    size: u64,
    host: &'a str,
    path: &'a str,
    range: &'a str,
    if_none_match: &'a str,
    if_range: &'a str,
}

/// One request's client-controlled parts through every gateway parser (see
/// `pairs_gateway::fuzzing::request` for the promises checked).
pub fn request(data: &[u8]) {
    let Ok(input) = Input::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    pairs_gateway::fuzzing::request(
        &pairs_gateway::fuzzing::Request {
            host: input.host,
            path: input.path,
            range: input.range,
            if_none_match: input.if_none_match,
            if_range: input.if_range,
        },
        input.port,
        input.size,
        "0123abcd",
    );
}
