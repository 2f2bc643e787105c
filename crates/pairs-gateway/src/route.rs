//! From a request's origin and path to what it asks for: the gateway's own page, or a path in a site.

use percent_encoding::percent_decode_str;

use crate::host::Origin;
use crate::source::Site;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// The plain origin's `/`: a short page saying what the gateway is.
    Home,
    /// A path in a site.
    Site(SitePath),
    /// Nothing the gateway serves (a plain-origin path outside `/blob/` and `/share/`).
    NotFound,
}

/// A path in a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SitePath {
    /// The site.
    pub site: Site,
    /// Whether the site is served under the plain origin (sandboxed) rather than as its own origin.
    pub under_plain: bool,
    /// The decoded segments inside the site.
    pub segments: Vec<String>,
    /// Whether the request's path ended with `/` (a directory's URL).
    pub trailing_slash: bool,
}

impl SitePath {
    /// The path as the [`Source`](crate::Source) takes it.
    pub fn joined(&self) -> String {
        self.segments.join("/")
    }

    /// The URL path of the site's root, e.g. `/share/TICKET/` or `/`, percent-encoded.
    pub fn site_root(&self) -> String {
        match &self.site {
            Site::Blob(text) => format!("/blob/{}/", encode_segment(text)),
            Site::Share(text) => format!("/share/{}/", encode_segment(text)),
            Site::Origin(_) => "/".to_owned(),
        }
    }
}

/// Why a path is refused with 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadPath(pub &'static str);

/// Routes `path` (the raw, percent-encoded path of the request URI) on `origin`.
pub(crate) fn route(origin: &Origin, path: &str) -> Result<Route, BadPath> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(BadPath("the path must start with /"));
    };
    let trailing_slash = rest.is_empty() || rest.ends_with('/');
    let mut segments = decode_segments(rest)?;
    match origin {
        Origin::Site(label) => Ok(Route::Site(SitePath {
            site: Site::Origin(label.clone()),
            under_plain: false,
            segments,
            trailing_slash,
        })),
        Origin::Plain => {
            if segments.is_empty() {
                return Ok(Route::Home);
            }
            if segments.len() < 2 {
                return Ok(Route::NotFound);
            }
            let make: fn(String) -> Site = match segments[0].as_str() {
                "blob" => Site::Blob,
                "share" => Site::Share,
                _ => return Ok(Route::NotFound),
            };
            let mut rest = segments.split_off(1);
            let site = make(rest.remove(0));
            // `/share/TEXT` alone is the site's root without its slash.
            Ok(Route::Site(SitePath {
                site,
                under_plain: true,
                segments: rest,
                trailing_slash,
            }))
        }
    }
}

/// Splits and decodes the path after its first `/`. Empty segments are refused, except that the path
/// may end with `/`.
fn decode_segments(rest: &str) -> Result<Vec<String>, BadPath> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    rest.split('/').map(decode_segment).collect()
}

fn decode_segment(raw: &str) -> Result<String, BadPath> {
    if raw.is_empty() {
        return Err(BadPath("empty path segment"));
    }
    let text = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| BadPath("the path is not UTF-8"))?;
    if text == "." || text == ".." {
        return Err(BadPath("'.' and '..' are not allowed in paths"));
    }
    if text.contains('\0') {
        return Err(BadPath("NUL is not allowed in paths"));
    }
    if text.contains('/') || text.contains('\\') {
        return Err(BadPath("an encoded / or a \\ is not allowed in paths"));
    }
    Ok(text.into_owned())
}

/// Characters left as they are in a path segment: RFC 3986 unreserved plus a few sub-delims that are
/// safe in paths. Everything else is percent-encoded.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b'@');

/// Percent-encodes one path segment.
pub(crate) fn encode_segment(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(site: Site, under_plain: bool, segments: &[&str], trailing_slash: bool) -> Route {
        Route::Site(SitePath {
            site,
            under_plain,
            segments: segments.iter().map(|s| s.to_string()).collect(),
            trailing_slash,
        })
    }

    #[test]
    fn plain_origin() {
        let plain = Origin::Plain;
        assert_eq!(route(&plain, "/"), Ok(Route::Home));
        assert_eq!(route(&plain, "/favicon.ico"), Ok(Route::NotFound));
        assert_eq!(route(&plain, "/blob"), Ok(Route::NotFound));
        assert_eq!(route(&plain, "/blob/"), Ok(Route::NotFound));
        assert_eq!(route(&plain, "/other/x/y"), Ok(Route::NotFound));
        assert_eq!(
            route(&plain, "/blob/abc"),
            Ok(site(Site::Blob("abc".into()), true, &[], false))
        );
        assert_eq!(
            route(&plain, "/blob/abc/"),
            Ok(site(Site::Blob("abc".into()), true, &[], true))
        );
        assert_eq!(
            route(&plain, "/share/T/a%20b/c.txt"),
            Ok(site(
                Site::Share("T".into()),
                true,
                &["a b", "c.txt"],
                false
            ))
        );
        assert_eq!(
            route(&plain, "/share/T/dir/"),
            Ok(site(Site::Share("T".into()), true, &["dir"], true))
        );
    }

    #[test]
    fn site_origin() {
        let origin = Origin::Site("key".into());
        assert_eq!(
            route(&origin, "/"),
            Ok(site(Site::Origin("key".into()), false, &[], true))
        );
        assert_eq!(
            route(&origin, "/blob/x"),
            Ok(site(
                Site::Origin("key".into()),
                false,
                &["blob", "x"],
                false
            ))
        );
    }

    #[test]
    fn refuses_escapes() {
        let origin = Origin::Site("key".into());
        for bad in [
            "/../etc/passwd",
            "/a/../b",
            "/a/%2e%2e/b",
            "/a/%2E%2E",
            "/./a",
            "/a%00b",
            "/a%2fb",
            "/a%5cb",
            "/a//b",
            "//a",
            "/%ff",
            "relative",
        ] {
            assert!(route(&origin, bad).is_err(), "{bad}");
            assert!(
                route(&Origin::Plain, bad).is_err() || bad == "relative",
                "{bad}"
            );
        }
        // A dotted name that is not exactly '.' or '..' is an ordinary name.
        assert!(route(&origin, "/..a/.b/c..").is_ok());
    }

    #[test]
    fn encoding_round_trips() {
        for name in ["plain.txt", "a b", "ü/x?#%", "a:b"] {
            let encoded = encode_segment(name);
            assert!(!encoded.contains(['/', '?', '#', ' ', ':']), "{encoded}");
            assert_eq!(percent_decode_str(&encoded).decode_utf8().unwrap(), name);
        }
    }
}
