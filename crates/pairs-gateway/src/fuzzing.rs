//! The gateway's request parsers as one entry point for fuzz targets. Not a stable API: only built
//! with the `fuzzing` feature.

use crate::range::Ranged;
use crate::route::Route;

/// The request parts a client controls, as the gateway reads them.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    /// The `Host` header.
    pub host: &'a str,
    /// The raw (percent-encoded) path of the request URI.
    pub path: &'a str,
    /// The `Range` header.
    pub range: &'a str,
    /// The `If-None-Match` header.
    pub if_none_match: &'a str,
    /// The `If-Range` header.
    pub if_range: &'a str,
}

/// Runs every parser the gateway applies to a request for a file of `size` bytes with entity tag
/// `etag` on a gateway listening on `port`, checking what each one promises:
/// an accepted host is one of the gateway's names, a routed path has only plain segments (no `.`,
/// `..`, empty, NUL, `/` or `\`) that survive encoding unchanged, a range lies inside the file.
///
/// # Panics
///
/// When a promise is broken: that is the bug the fuzzer looks for.
pub fn request(request: &Request<'_>, port: u16, size: u64, etag: &str) {
    if let Some(origin) = crate::host::check(request.host, port)
        && let Ok(Route::Site(site)) = crate::route::route(&origin, request.path)
    {
        for segment in &site.segments {
            assert!(
                !segment.is_empty() && segment != "." && segment != "..",
                "segment {segment:?}"
            );
            assert!(!segment.contains(['/', '\\', '\0']), "segment {segment:?}");
            let encoded = crate::route::encode_segment(segment);
            let again = crate::route::route(&origin, &format!("/{encoded}"));
            match (&origin, again) {
                (crate::host::Origin::Site(_), Ok(Route::Site(back))) => {
                    assert_eq!(back.segments, std::slice::from_ref(segment), "{encoded}")
                }
                (crate::host::Origin::Site(_), other) => panic!("{encoded}: {other:?}"),
                _ => {}
            }
        }
        let _ = (site.joined(), site.site_root());
    }
    if let Some(crate::host::Origin::Site(label)) = crate::host::check(request.host, port) {
        assert!(crate::host::is_label(&label), "{label:?}");
    }
    match crate::range::parse_range(request.range, size) {
        Ranged::Partial(range) => assert!(
            range.start < range.end && range.end <= size,
            "{range:?} of {size}"
        ),
        Ranged::Full | Ranged::Unsatisfiable => {}
    }
    let _ = crate::range::none_match(request.if_none_match, etag);
    let _ = crate::range::if_range_matches(request.if_range, etag);
    let _ = crate::range::quote(etag);
}
