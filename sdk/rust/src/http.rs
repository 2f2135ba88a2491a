//! A small blocking HTTP client over `wasi:http/outgoing-handler`.
//!
//! The host checks every request against the manifest's `outbound_hosts` (and refuses
//! loopback and private addresses), injects OAuth credentials itself, and caps response
//! sizes and request counts. Redirects are followed here, up to [`MAX_REDIRECTS`], each
//! hop as a new outgoing request, so the host checks every hop too.
//!
//! ```no_run
//! use cairn_sdk::prelude::*;
//! # fn f() -> Result<(), ToolError> {
//! let response = http::get("https://api.example.com/status")?.error_for_status()?;
//! let status: serde_json::Value = response.json()?;
//!
//! let created = http::request(
//!     http::Request::post("https://api.example.com/notes")
//!         .header("accept", "application/json")
//!         .json(&serde_json::json!({ "text": "hello" }))?,
//! )?;
//! # Ok(()) }
//! ```
//!
//! Errors convert into [`ToolError`]: a refusal by the host becomes `egress_denied`, a
//! timeout `upstream_timeout`, everything else about the remote side `upstream_error`.
//! On native targets requests go to the mock installed by
//! [`crate::testing::mock_http`].

use crate::ToolError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How many redirects [`request`] follows before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// An HTTP method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        }
    }
}

/// An outgoing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// An absolute `http://` or `https://` URL.
    pub url: String,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
    /// Whether to follow redirects (up to [`MAX_REDIRECTS`]); on by default.
    pub follow_redirects: bool,
}

impl Request {
    /// A request with no headers and no body.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Self {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: None,
            follow_redirects: true,
        }
    }

    /// A GET request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }

    /// A POST request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new(Method::Post, url)
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sets a JSON body and `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Self, HttpError> {
        let body = serde_json::to_vec(value).map_err(|e| HttpError::Other(e.to_string()))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Returns redirects to the caller instead of following them.
    pub fn no_redirects(mut self) -> Self {
        self.follow_redirects = false;
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// A response, body read in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The URL that answered, after redirects.
    pub url: String,
}

impl Response {
    /// A response with `status` and `body` and no headers, e.g. for test mocks.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
            url: String::new(),
        }
    }

    /// Adds a header (for test mocks).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body decoded as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::Decode {
            url: self.url.clone(),
            message: e.to_string(),
        })
    }

    /// This response if its status is 2xx, else [`HttpError::Status`] with the start of
    /// the body.
    pub fn error_for_status(self) -> Result<Self, HttpError> {
        if self.is_success() {
            return Ok(self);
        }
        let mut body = self.text();
        if body.len() > 200 {
            let mut cut = 200;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
            body.push('…');
        }
        Err(HttpError::Status {
            status: self.status,
            url: self.url,
            body,
        })
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The host refused the request: the destination is not in the manifest's
    /// `outbound_hosts`, resolves to a private address, a header is forbidden, or the
    /// plugin used up its outbound requests.
    #[error("the host refused the request: {0}")]
    Denied(String),
    /// The URL is not an absolute `http(s)://` URL.
    #[error("invalid URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Connecting, or waiting for the response, took too long.
    #[error("the request timed out: {0}")]
    Timeout(String),
    /// The destination could not be reached (DNS, refused, reset, TLS).
    #[error("could not reach the server: {0}")]
    Connection(String),
    /// More than [`MAX_REDIRECTS`] redirects.
    #[error("too many redirects (more than {MAX_REDIRECTS}), last to {url}")]
    TooManyRedirects {
        /// The last location.
        url: String,
    },
    /// A non-2xx status, from [`Response::error_for_status`].
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// The URL that answered.
        url: String,
        /// The start of the body.
        body: String,
    },
    /// The body is not the JSON expected.
    #[error("{url} answered with unexpected content: {message}")]
    Decode {
        /// The URL that answered.
        url: String,
        /// What serde said.
        message: String,
    },
    /// Any other failure.
    #[error("HTTP request failed: {0}")]
    Other(String),
}

impl From<HttpError> for ToolError {
    fn from(e: HttpError) -> Self {
        let code = match &e {
            HttpError::Denied(_) => "egress_denied",
            HttpError::InvalidUrl { .. } => "invalid_url",
            HttpError::Timeout(_) => "upstream_timeout",
            HttpError::Connection(_)
            | HttpError::TooManyRedirects { .. }
            | HttpError::Status { .. }
            | HttpError::Decode { .. }
            | HttpError::Other(_) => "upstream_error",
        };
        ToolError::new(code, e.to_string())
    }
}

/// GETs `url`, following redirects.
pub fn get(url: &str) -> Result<Response, HttpError> {
    request(Request::get(url))
}

/// GETs `url` with `accept: application/json`, requires a 2xx status and decodes the body.
pub fn get_json<T: DeserializeOwned>(url: &str) -> Result<T, HttpError> {
    request(Request::get(url).header("accept", "application/json"))?
        .error_for_status()?
        .json()
}

/// Sends `req`, following redirects (unless turned off) with a new request per hop.
///
/// 301, 302 and 303 turn a POST (any method but HEAD, for 303) into a bodiless GET; 307
/// and 308 repeat the request as it was. A hop to another origin drops `authorization`,
/// `cookie` and `proxy-authorization` headers.
pub fn request(req: Request) -> Result<Response, HttpError> {
    let mut url = Url::parse(&req.url)?;
    let mut req = req;
    let mut redirects = 0;
    loop {
        let mut response = imp::send(&req, &url)?;
        response.url = url.to_string();
        let location = match response.status {
            301 | 302 | 303 | 307 | 308 if req.follow_redirects => {
                match response.header("location") {
                    Some(l) => l.to_owned(),
                    None => return Ok(response),
                }
            }
            _ => return Ok(response),
        };
        if redirects == MAX_REDIRECTS {
            return Err(HttpError::TooManyRedirects {
                url: location.to_string(),
            });
        }
        redirects += 1;
        let next = url.join(&location)?;
        let to_get = match response.status {
            303 => req.method != Method::Head,
            301 | 302 => req.method == Method::Post,
            _ => false,
        };
        if to_get {
            req.method = Method::Get;
            req.body = None;
            req.headers.retain(|(k, _)| {
                !k.eq_ignore_ascii_case("content-type") && !k.eq_ignore_ascii_case("content-length")
            });
        }
        if next.origin() != url.origin() {
            req.headers.retain(|(k, _)| {
                !["authorization", "cookie", "proxy-authorization"]
                    .iter()
                    .any(|h| k.eq_ignore_ascii_case(h))
            });
        }
        req.url = next.to_string();
        url = next;
    }
}

/// Percent-encodes `s` for use as one query value or path segment: everything but
/// RFC 3986 unreserved characters is encoded.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// An absolute http(s) URL split the way `wasi:http` wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    pub(crate) https: bool,
    pub(crate) authority: String,
    pub(crate) path_and_query: String,
}

impl Url {
    pub(crate) fn parse(url: &str) -> Result<Url, HttpError> {
        let invalid = |reason: &str| HttpError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("not an absolute URL"))?;
        let https = if scheme.eq_ignore_ascii_case("https") {
            true
        } else if scheme.eq_ignore_ascii_case("http") {
            false
        } else {
            return Err(invalid("only http and https are supported"));
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.is_empty() {
            return Err(invalid("no host"));
        }
        if authority.contains('@') {
            return Err(invalid("credentials in URLs are not allowed"));
        }
        if authority
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
            || path.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid("contains spaces or control characters"));
        }
        let path_and_query = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        Ok(Url {
            https,
            authority: authority.to_ascii_lowercase(),
            path_and_query,
        })
    }

    fn origin(&self) -> (bool, &str) {
        (self.https, &self.authority)
    }

    /// Resolves a `Location` header against this URL.
    pub(crate) fn join(&self, location: &str) -> Result<Url, HttpError> {
        let location = location.trim();
        let scheme = if self.https { "https" } else { "http" };
        if location.contains("://") {
            Url::parse(location)
        } else if let Some(rest) = location.strip_prefix("//") {
            Url::parse(&format!("{scheme}://{rest}"))
        } else if location.starts_with('/') {
            Url::parse(&format!("{scheme}://{}{location}", self.authority))
        } else {
            let path = self.path_and_query.split('?').next().unwrap_or("/");
            let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            let dir = if dir.is_empty() { "/" } else { dir };
            Url::parse(&format!("{scheme}://{}{dir}{location}", self.authority))
        }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority, self.path_and_query)
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::{HttpError, Method, Request, Response, Url};
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{
        ErrorCode, Fields, HeaderError, IncomingBody, Method as WasiMethod, OutgoingBody,
        OutgoingRequest, Scheme,
    };
    use wasip2::io::streams::StreamError;

    /// Sends one request (one hop) and reads the whole response.
    pub fn send(req: &Request, url: &Url) -> Result<Response, HttpError> {
        let fields = Fields::new();
        for (name, value) in &req.headers {
            fields.append(name, value.as_bytes()).map_err(|e| match e {
                HeaderError::Forbidden | HeaderError::Immutable => {
                    HttpError::Denied(format!("the header `{name}` may not be set by plugins"))
                }
                HeaderError::InvalidSyntax => {
                    HttpError::Other(format!("the header `{name}` is not valid"))
                }
            })?;
        }
        if let Some(body) = &req.body
            && req.header_value("content-length").is_none()
        {
            let _ = fields.append("content-length", body.len().to_string().as_bytes());
        }
        let request = OutgoingRequest::new(fields);
        let method = match req.method {
            Method::Get => WasiMethod::Get,
            Method::Head => WasiMethod::Head,
            Method::Post => WasiMethod::Post,
            Method::Put => WasiMethod::Put,
            Method::Patch => WasiMethod::Patch,
            Method::Delete => WasiMethod::Delete,
            Method::Options => WasiMethod::Options,
        };
        let bad = |what: &str| HttpError::InvalidUrl {
            url: url.to_string(),
            reason: format!("the host rejected the {what}"),
        };
        request.set_method(&method).map_err(|()| bad("method"))?;
        let scheme = if url.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| bad("scheme"))?;
        request
            .set_authority(Some(&url.authority))
            .map_err(|()| bad("host"))?;
        request
            .set_path_with_query(Some(&url.path_and_query))
            .map_err(|()| bad("path"))?;

        // Take the body before sending and write it after, so a large body cannot block
        // on a pipe nobody reads yet. A request without a body never takes one: the host
        // then sends an empty body.
        let outgoing_body = match &req.body {
            Some(_) => Some(
                request
                    .body()
                    .map_err(|()| HttpError::Other("request body already taken".into()))?,
            ),
            None => None,
        };
        let future = outgoing_handler::handle(request, None).map_err(map_error)?;
        if let (Some(outgoing_body), Some(bytes)) = (outgoing_body, &req.body) {
            {
                let stream = outgoing_body
                    .write()
                    .map_err(|()| HttpError::Other("request body stream unavailable".into()))?;
                for chunk in bytes.chunks(4096) {
                    stream
                        .blocking_write_and_flush(chunk)
                        .map_err(|e| stream_error(e, "writing the request body"))?;
                }
            }
            OutgoingBody::finish(outgoing_body, None).map_err(map_error)?;
        }

        future.subscribe().block();
        let response = match future.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(map_error(code)),
            Some(Err(())) => return Err(HttpError::Other("response already taken".into())),
            None => return Err(HttpError::Other("response not ready".into())),
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        let incoming = response
            .consume()
            .map_err(|()| HttpError::Other("response body already taken".into()))?;
        let mut body = Vec::new();
        {
            let stream = incoming
                .stream()
                .map_err(|()| HttpError::Other("response body stream unavailable".into()))?;
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(chunk) => body.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(e) => return Err(stream_error(e, "reading the response body")),
                }
            }
        }
        let _trailers = IncomingBody::finish(incoming);
        Ok(Response {
            status,
            headers,
            body,
            url: String::new(),
        })
    }

    fn stream_error(e: StreamError, doing: &str) -> HttpError {
        match e {
            StreamError::Closed => HttpError::Connection(format!("connection closed {doing}")),
            StreamError::LastOperationFailed(err) => {
                match wasip2::http::types::http_error_code(&err) {
                    Some(code) => map_error(code),
                    None => HttpError::Connection(format!("{doing}: {}", err.to_debug_string())),
                }
            }
        }
    }

    fn map_error(code: ErrorCode) -> HttpError {
        match code {
            ErrorCode::HttpRequestDenied => {
                HttpError::Denied("the destination is not allowed for this plugin".into())
            }
            ErrorCode::DestinationIpProhibited => {
                HttpError::Denied("the destination address is prohibited".into())
            }
            ErrorCode::HttpRequestUriInvalid => HttpError::InvalidUrl {
                url: String::new(),
                reason: "the host rejected the URL".into(),
            },
            ErrorCode::DnsTimeout
            | ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::HttpResponseTimeout => HttpError::Timeout(format!("{code:?}")),
            ErrorCode::DnsError(_)
            | ErrorCode::DestinationNotFound
            | ErrorCode::DestinationUnavailable
            | ErrorCode::DestinationIpUnroutable
            | ErrorCode::ConnectionRefused
            | ErrorCode::ConnectionTerminated
            | ErrorCode::ConnectionLimitReached
            | ErrorCode::TlsProtocolError
            | ErrorCode::TlsCertificateError
            | ErrorCode::TlsAlertReceived(_) => HttpError::Connection(format!("{code:?}")),
            ErrorCode::HttpResponseBodySize(_) | ErrorCode::HttpResponseHeaderSectionSize(_) => {
                HttpError::Other("the response is larger than this plugin may receive".into())
            }
            other => HttpError::Other(format!("{other:?}")),
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod imp {
    use super::{HttpError, Request, Response, Url};
    use std::cell::RefCell;

    type Handler = Box<dyn FnMut(&Request) -> Result<Response, HttpError>>;

    thread_local! {
        static MOCK: RefCell<Option<Handler>> = const { RefCell::new(None) };
    }

    pub fn send(req: &Request, url: &Url) -> Result<Response, HttpError> {
        let mut hop = req.clone();
        hop.url = url.to_string();
        MOCK.with(|m| match m.borrow_mut().as_mut() {
            Some(handler) => handler(&hop),
            None => Err(HttpError::Other(
                "no HTTP mock installed; use cairn_sdk::testing::mock_http".into(),
            )),
        })
    }

    pub fn set_mock(handler: Option<Handler>) {
        MOCK.with(|m| *m.borrow_mut() = handler);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = Url::parse("https://CRM.example.com:8443/a/b?q=1#frag").unwrap();
        assert!(u.https);
        assert_eq!(u.authority, "crm.example.com:8443");
        assert_eq!(u.path_and_query, "/a/b?q=1");
        assert_eq!(Url::parse("http://h?x=1").unwrap().path_and_query, "/?x=1");
        assert_eq!(Url::parse("http://h").unwrap().path_and_query, "/");
        for bad in [
            "ftp://h/",
            "h/path",
            "https:///x",
            "https://u:p@h/",
            "https://h/a b",
        ] {
            assert!(
                matches!(Url::parse(bad), Err(HttpError::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn joins_locations() {
        let base = Url::parse("https://h/a/b?x=1").unwrap();
        let j = |l: &str| base.join(l).unwrap().to_string();
        assert_eq!(j("/c"), "https://h/c");
        assert_eq!(j("c?y=2"), "https://h/a/c?y=2");
        assert_eq!(j("//other/x"), "https://other/x");
        assert_eq!(j("http://other/x"), "http://other/x");
        assert!(base.join("ftp://x/").is_err());
    }

    #[test]
    fn encodes_components() {
        assert_eq!(encode_component("a b&c/d~é"), "a%20b%26c%2Fd~%C3%A9");
    }

    #[test]
    fn error_codes() {
        let e: ToolError = HttpError::Denied("x".into()).into();
        assert_eq!(e.code, "egress_denied");
        let e: ToolError = HttpError::Status {
            status: 500,
            url: "u".into(),
            body: "b".into(),
        }
        .into();
        assert_eq!(e.code, "upstream_error");
        let e: ToolError = HttpError::Timeout("t".into()).into();
        assert_eq!(e.code, "upstream_timeout");
    }

    #[test]
    fn error_for_status_truncates_body() {
        let r = Response::new(502, "é".repeat(300));
        match r.error_for_status() {
            Err(HttpError::Status { status, body, .. }) => {
                assert_eq!(status, 502);
                assert!(body.len() <= 204);
                assert!(body.ends_with('…'));
            }
            other => panic!("{other:?}"),
        }
    }
}
