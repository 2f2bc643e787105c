//! One request to one response: the host check, the method, the route, then the site's file, index,
//! listing or 404 page, with ranges, ETags and the security headers.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures_lite::stream;
use tracing::debug;

use crate::host::{self, Origin};
use crate::listing;
use crate::range::{self, Ranged};
use crate::route::{self, Route, SitePath};
use crate::source::{File, GatewayError, RangeReader, Resolved, Site, Source};
use crate::{CHUNK, Config};

/// What every handler needs.
pub(crate) struct Inner {
    pub source: Arc<dyn Source>,
    /// The port the gateway listens on, which `Host` must name.
    pub port: u16,
    pub config: Config,
}

/// The axum app: every request goes through [`handle`].
pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new().fallback(handle).with_state(inner)
}

/// The policy for the gateway's own pages (listings, errors, home): nothing but inline style.
const OWN_PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'";
/// What sites under the plain origin get: an opaque origin, so their pages reach no cookies or
/// storage of `localhost` (and no other site's), and run no scripts. Sites run normally at their own
/// `KEY.localhost` origin.
const PLAIN_SITE_CSP: &str = "sandbox";
/// Blobs never change: browsers may keep them.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Shares change: browsers revalidate with the ETag every time.
const REVALIDATE: &str = "no-cache";

async fn handle(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let Some(origin) = origin_of(&request, inner.port) else {
        return text(
            StatusCode::FORBIDDEN,
            &format!(
                "this gateway answers only requests for localhost:{0}, 127.0.0.1:{0}, [::1]:{0} and KEY.localhost:{0}\n",
                inner.port
            ),
        );
    };
    let head = match *request.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "the gateway is read-only: GET and HEAD only\n",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
    };
    let uri = request.uri();
    let route = match route::route(&origin, uri.path()) {
        Ok(route) => route,
        Err(bad) => return text(StatusCode::BAD_REQUEST, &format!("bad path: {}\n", bad.0)),
    };
    let mut response = match route {
        Route::Home => home(inner.port),
        Route::NotFound => text(StatusCode::NOT_FOUND, "not found\n"),
        Route::Site(path) => {
            let ask = Ask {
                inner: &inner,
                path: &path,
                headers: request.headers(),
                head,
            };
            ask.serve(uri.path(), uri.query()).await
        }
    };
    if head {
        // Headers (Content-Length included) as for GET; no body. A file's body stream is dropped
        // before its first read.
        *response.body_mut() = Body::empty();
    }
    response
}

/// The origin the request is for, if it names this gateway: the URI's authority when it has one
/// (absolute form), which must then agree with `Host`.
fn origin_of(request: &Request, port: u16) -> Option<Origin> {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|value| value.to_str().ok());
    let authority = request
        .uri()
        .authority()
        .map(|authority| authority.as_str());
    let name = match (authority, host) {
        (Some(authority), Some(Some(host))) if authority.eq_ignore_ascii_case(host) => authority,
        (Some(authority), None) => authority,
        (None, Some(Some(host))) => host,
        _ => return None,
    };
    host::check(name, port)
}

/// One request for a path in a site.
struct Ask<'a> {
    inner: &'a Inner,
    path: &'a SitePath,
    headers: &'a HeaderMap,
    /// A HEAD request: headers only, sent without waiting for the body's bytes.
    head: bool,
}

impl Ask<'_> {
    async fn serve(&self, raw_path: &str, query: Option<&str>) -> Response {
        let joined = self.path.joined();
        let resolved = match self.resolve(&joined).await {
            Ok(resolved) => resolved,
            Err(err) => return self.secured(error(&err)),
        };
        match resolved {
            Resolved::NotFound => self.not_found().await,
            // `file/` is not the file's URL (relative links would resolve wrongly); the site's root
            // (a single blob) is the exception, with or without its slash.
            Resolved::File(_) if self.path.trailing_slash && !self.path.segments.is_empty() => {
                self.not_found().await
            }
            Resolved::File(file) => {
                let name = self.path.segments.last().map_or("", String::as_str);
                self.file(file, name, StatusCode::OK).await
            }
            Resolved::Directory(mut entries) => {
                if !self.path.trailing_slash {
                    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
                    return self.secured(redirect(&format!("{raw_path}/{query}")));
                }
                listing::sort(&mut entries);
                let dir_url = format!(
                    "{}{}",
                    self.path.site_root(),
                    display_path(&self.path.segments)
                );
                if wants_json(query) {
                    return self.own_page("application/json", listing::json(&dir_url, &entries));
                }
                let index = if joined.is_empty() {
                    "index.html".to_owned()
                } else {
                    format!("{joined}/index.html")
                };
                match self.resolve(&index).await {
                    Ok(Resolved::File(file)) => self.file(file, "index.html", StatusCode::OK).await,
                    Ok(_) => {
                        let is_root = self.path.segments.is_empty();
                        self.own_page(
                            "text/html; charset=utf-8",
                            listing::html(&dir_url, &entries, is_root),
                        )
                    }
                    Err(err) => self.secured(error(&err)),
                }
            }
        }
    }

    async fn resolve(&self, path: &str) -> Result<Resolved, GatewayError> {
        let site: &Site = &self.path.site;
        match tokio::time::timeout(
            self.inner.config.resolve_timeout,
            self.inner.source.resolve(site, path),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(GatewayError::Timeout),
        }
    }

    /// 404, with the site's own `404.html` when it has one.
    async fn not_found(&self) -> Response {
        match self.resolve("404.html").await {
            Ok(Resolved::File(file)) => self.file(file, "404.html", StatusCode::NOT_FOUND).await,
            _ => self.secured(text(StatusCode::NOT_FOUND, "not found\n")),
        }
    }

    /// A file: 200 (or `status`, for a 404 page), 206, 304 or 416.
    async fn file(&self, file: File, name: &str, status: StatusCode) -> Response {
        let etag = range::quote(&file.etag);
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&etag) {
            headers.insert(header::ETAG, value);
        }
        let cache = match self.path.site {
            Site::Blob(_) => IMMUTABLE,
            Site::Share(_) | Site::Origin(_) => REVALIDATE,
        };
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        let content_type = file
            .content_type
            .clone()
            .unwrap_or_else(|| guess_type(name));
        let content_type = HeaderValue::from_str(&content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream"));

        if status != StatusCode::OK {
            // An error page: no conditions, no ranges.
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.remove(header::ETAG);
            headers.insert(header::CONTENT_TYPE, content_type);
            return self.secured(self.body(status, headers, &file, 0..file.size).await);
        }

        let if_none_match = self
            .headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok());
        if if_none_match.is_some_and(|value| range::none_match(value, &file.etag)) {
            return self.secured(with_headers(
                StatusCode::NOT_MODIFIED,
                headers,
                Body::empty(),
            ));
        }

        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        headers.insert(header::CONTENT_TYPE, content_type);
        let range = self
            .headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok());
        let if_range = self
            .headers
            .get(header::IF_RANGE)
            .map(|v| v.to_str().unwrap_or(""));
        let ranged = match range {
            Some(range)
                if if_range.is_none_or(|value| range::if_range_matches(value, &file.etag)) =>
            {
                range::parse_range(range, file.size)
            }
            _ => Ranged::Full,
        };
        match ranged {
            Ranged::Full => self.secured(
                self.body(StatusCode::OK, headers, &file, 0..file.size)
                    .await,
            ),
            Ranged::Partial(range) => {
                let content_range =
                    format!("bytes {}-{}/{}", range.start, range.end - 1, file.size);
                headers.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&content_range).expect("ascii"),
                );
                self.secured(
                    self.body(StatusCode::PARTIAL_CONTENT, headers, &file, range)
                        .await,
                )
            }
            Ranged::Unsatisfiable => {
                let content_range = format!("bytes */{}", file.size);
                headers.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&content_range).expect("ascii"),
                );
                headers.remove(header::CONTENT_TYPE);
                let mut response =
                    text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
                response.headers_mut().extend(headers);
                self.secured(response)
            }
        }
    }

    /// A response with `range` of `file` as its body. The headers are known already; they go out with
    /// the first bytes of the range (a file still arriving waits for them, at most
    /// [`Config::read_timeout`], else 504), or at once for HEAD.
    async fn body(
        &self,
        status: StatusCode,
        mut headers: HeaderMap,
        file: &File,
        range: Range<u64>,
    ) -> Response {
        headers.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(range.end - range.start),
        );
        if self.head || range.is_empty() {
            return with_headers(status, headers, Body::empty());
        }
        let timeout = self.inner.config.read_timeout;
        let first =
            match tokio::time::timeout(timeout, file.reader.ready(range.start, range.end)).await {
                Ok(Ok(0)) => {
                    return error(&GatewayError::Unavailable(format!(
                        "the file ended at byte {}",
                        range.start
                    )));
                }
                Ok(Ok(available)) => available,
                Ok(Err(err)) => return error(&GatewayError::Unavailable(err.to_string())),
                Err(_) => {
                    return text(
                        StatusCode::GATEWAY_TIMEOUT,
                        "the content did not arrive in time\n",
                    );
                }
            };
        with_headers(
            status,
            headers,
            read_body(file.reader.clone(), range, first, timeout),
        )
    }

    /// A page the gateway writes itself (a listing).
    fn own_page(&self, content_type: &'static str, body: String) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(REVALIDATE));
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(OWN_PAGE_CSP),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        self.secured(with_headers(StatusCode::OK, headers, Body::from(body)))
    }

    /// Adds the headers that depend on where the site is served.
    fn secured(&self, mut response: Response) -> Response {
        let headers = response.headers_mut();
        if self.path.under_plain {
            let csp = match headers.get(header::CONTENT_SECURITY_POLICY) {
                Some(own) => format!("{PLAIN_SITE_CSP}; {}", own.to_str().unwrap_or_default()),
                None => PLAIN_SITE_CSP.to_owned(),
            };
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_str(&csp).expect("ascii"),
            );
            // The ticket in the URL is nobody else's business.
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
        } else {
            // Neither is the share's key in the origin.
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            );
        }
        response
    }
}

/// `?format=json` asks for a directory's JSON listing.
fn wants_json(query: Option<&str>) -> bool {
    query.is_some_and(|query| query.split('&').any(|pair| pair == "format=json"))
}

/// The decoded path of a directory below its site's root, for display: `a/b/` or empty.
fn display_path(segments: &[String]) -> String {
    segments.iter().map(|s| format!("{s}/")).collect()
}

/// The media type for a file name; text types say UTF-8.
fn guess_type(name: &str) -> String {
    let Some(mime) = mime_guess::from_path(name).first() else {
        return "application/octet-stream".to_owned();
    };
    let textual = mime.type_() == mime_guess::mime::TEXT
        || matches!(
            mime.essence_str(),
            "application/javascript" | "application/json" | "image/svg+xml"
        );
    if textual && mime.get_param(mime_guess::mime::CHARSET).is_none() {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.to_string()
    }
}

/// Streams `range` of `reader`, one chunk of at most [`CHUNK`] bytes at a time, each read on a blocking
/// thread, never more than [`RangeReader::ready`] allowed (`available`: what it allowed from
/// `range.start` on). A read error, a wait longer than `timeout` or a file shorter than promised ends
/// the body early, so the client sees the transfer fail rather than a short file.
fn read_body(
    reader: Arc<dyn RangeReader>,
    range: Range<u64>,
    available: u64,
    timeout: Duration,
) -> Body {
    let chunks = stream::unfold(
        (reader, range, available),
        move |(reader, range, available)| async move {
            if range.is_empty() {
                return None;
            }
            let offset = range.start;
            let available = match available {
                0 => match tokio::time::timeout(timeout, reader.ready(offset, range.end)).await {
                    Ok(Ok(0)) => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the file ended at byte {offset}"),
                    )),
                    Ok(result) => result,
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("byte {offset} did not arrive in time"),
                    )),
                },
                available => Ok(available),
            };
            let read = match available {
                Ok(available) => {
                    let len = (range.end - offset).min(available).min(CHUNK as u64) as usize;
                    let task_reader = reader.clone();
                    tokio::task::spawn_blocking(move || read_exact_at(&*task_reader, len, offset))
                        .await
                        .unwrap_or_else(|err| Err(io::Error::other(err)))
                        .map(|bytes| (bytes, available - len as u64))
                }
                Err(err) => Err(err),
            };
            match read {
                Ok((bytes, left)) => {
                    let next = offset + bytes.len() as u64..range.end;
                    Some((Ok(bytes), (reader, next, left)))
                }
                Err(err) => {
                    debug!(%err, offset, "gateway: reading a file failed; ending the response early");
                    Some((Err(err), (reader, range.end..range.end, 0)))
                }
            }
        },
    );
    Body::from_stream(chunks)
}

fn read_exact_at(reader: &dyn RangeReader, len: usize, offset: u64) -> io::Result<Bytes> {
    let mut buf = vec![0; len];
    let mut filled = 0;
    while filled < len {
        match reader.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the file ended at byte {}", offset + filled as u64),
                ));
            }
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(Bytes::from(buf))
}

fn with_headers(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// A short plain-text response (errors and refusals).
fn text(status: StatusCode, message: &str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(message.len()));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(OWN_PAGE_CSP),
    );
    with_headers(status, headers, Body::from(message.to_owned()))
}

fn error(err: &GatewayError) -> Response {
    let status = match err {
        GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
        GatewayError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    text(status, &format!("{err}\n"))
}

/// A redirect to `location` (a path of this origin). 302 rather than 301: a share's directory may
/// become a file later, and browsers keep 301s.
fn redirect(location: &str) -> Response {
    let mut response = text(StatusCode::FOUND, &format!("see {location}\n"));
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The plain origin's `/`.
fn home(port: u16) -> Response {
    text(
        StatusCode::OK,
        &format!(
            "pairs gateway\n\nThis is a pairs node's local HTTP gateway. It serves blobs at /blob/HASH/, \
             shares at /share/TICKET/, and each share as its own site at http://KEY.localhost:{port}/.\n"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert_eq!(guess_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(guess_type("style.css"), "text/css; charset=utf-8");
        assert_eq!(guess_type("a.png"), "image/png");
        assert_eq!(guess_type("data.bin"), "application/octet-stream");
        assert_eq!(guess_type("noext"), "application/octet-stream");
        assert_eq!(guess_type(""), "application/octet-stream");
        assert!(
            guess_type("app.js").ends_with("javascript; charset=utf-8"),
            "{}",
            guess_type("app.js")
        );
    }

    #[test]
    fn short_reader_fails() {
        let data: &'static [u8] = b"0123456789";
        assert_eq!(&read_exact_at(&data, 4, 3).unwrap()[..], b"3456");
        let err = read_exact_at(&data, 4, 8).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
