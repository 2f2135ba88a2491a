//! What web browsers may do: `Host` and `Origin` checks for the development identity, and
//! the configured CORS policy in OIDC mode.
//!
//! The development identity makes every request the administrator, with no credential at
//! all. Listening on loopback keeps other machines out, but not the web pages the
//! developer visits: a page can send a cross-origin `POST` to `http://127.0.0.1:8080`
//! (the browser sends it, only the answer is hidden), and with DNS rebinding
//! (`attacker.example` re-pointed at 127.0.0.1) it can read the answers too. So in dev
//! mode:
//! - the `Host` header must be a loopback name (`127.0.0.1`, `localhost`, `[::1]`) with
//!   the server's own port, which a rebinding page cannot forge (its `Host` is its own
//!   name), and
//! - a state-changing request (anything but `GET`, `HEAD`, `OPTIONS`) carrying an
//!   `Origin` (or `Sec-Fetch-Site`) that is not the server's own is refused.
//!
//! Callers that are not browsers send no `Origin` and are unaffected. In OIDC mode a
//! bearer token is never attached by a browser on its own, so there is no cross-site
//! request forgery to stop; pages of the origins in `[cors] allowed_origins` get CORS
//! headers, and no others (none by default).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::ApiError;

/// The browser rules in force.
#[derive(Clone, Debug)]
pub enum BrowserPolicy {
    /// Development identity on loopback port `port`: loopback `Host` names only, and no
    /// state-changing requests from other origins.
    Dev {
        /// The port the server is bound to.
        port: u16,
    },
    /// OIDC: no `Host` or `Origin` rule (bearer tokens are not ambient credentials);
    /// CORS headers for `cors_origins` (exact origins from `[cors] allowed_origins`).
    Open {
        /// The origins whose pages may call the API.
        cors_origins: Vec<String>,
    },
}

const LOOPBACK_NAMES: [&str; 3] = ["127.0.0.1", "localhost", "[::1]"];

impl BrowserPolicy {
    /// Whether `host` (a `Host` header value) names this server by a loopback name.
    fn loopback_host(port: u16, host: &str) -> bool {
        let (name, given_port) = match host.rsplit_once(':') {
            // `[::1]` alone has colons inside the brackets.
            Some((name, p)) if !p.contains(']') => (name, p.parse::<u16>().ok()),
            _ => (host, Some(80)),
        };
        LOOPBACK_NAMES.iter().any(|n| n.eq_ignore_ascii_case(name)) && given_port == Some(port)
    }

    /// Why a request is refused, if it is.
    /// `authority` is the request URI's, which HTTP/2 sends instead of `Host`.
    fn refusal(
        &self,
        method: &Method,
        authority: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<ApiError> {
        let BrowserPolicy::Dev { port } = *self else {
            return None;
        };
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or(authority)
            .unwrap_or("");
        if !Self::loopback_host(port, host) {
            return Some(ApiError::bad_request(
                "invalid_host",
                format!(
                    "the development identity only answers requests addressed to \
                     127.0.0.1:{port}, localhost:{port} or [::1]:{port}, not Host {host:?}"
                ),
                Some("Host".into()),
            ));
        }
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return None;
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let own = origin.to_str().ok().is_some_and(|o| {
                o.strip_prefix("http://")
                    .is_some_and(|rest| Self::loopback_host(port, rest))
            });
            if !own {
                return Some(ApiError::Forbidden(format!(
                    "cross-origin request refused: the development identity accepts \
                     state-changing requests only from its own origin, not Origin {:?}",
                    String::from_utf8_lossy(origin.as_bytes())
                )));
            }
        }
        let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        if site.is_some_and(|s| s == "cross-site" || s == "same-site") {
            return Some(ApiError::Forbidden(
                "cross-origin request refused (Sec-Fetch-Site): the development identity \
                 accepts state-changing requests only from its own origin"
                    .into(),
            ));
        }
        None
    }
}

/// Middleware: refuses what [`BrowserPolicy`] refuses, before authentication or routing.
pub async fn guard(State(policy): State<BrowserPolicy>, request: Request, next: Next) -> Response {
    let authority = request.uri().authority().map(|a| a.as_str());
    match policy.refusal(request.method(), authority, request.headers()) {
        Some(error) => {
            tracing::warn!(method = %request.method(), %error, "browser request refused");
            error.into_response()
        }
        None => next.run(request).await,
    }
}

/// The CORS layer for `[cors] allowed_origins`, or `None` when there are none (no CORS
/// headers at all, and none ever in dev mode). Origins are exact; credentials (cookies)
/// are not allowed, since the API authenticates with bearer tokens only.
pub fn cors_layer(policy: &BrowserPolicy) -> Option<CorsLayer> {
    let BrowserPolicy::Open {
        cors_origins: origins,
    } = policy
    else {
        return None;
    };
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<_> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn dev_mode_answers_loopback_host_names_with_its_port_only() {
        let dev = BrowserPolicy::Dev { port: 8080 };
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:8080",
            "[::1]:8080",
        ] {
            assert!(
                dev.refusal(&Method::GET, None, &headers(&[("host", host)]))
                    .is_none(),
                "{host}"
            );
        }
        for host in [
            "attacker.example",
            "attacker.example:8080",
            "127.0.0.1:9090",
            "localhost",
            "127.0.0.1.nip.io:8080",
            "[::1]",
            "",
        ] {
            let refused = dev.refusal(&Method::GET, None, &headers(&[("host", host)]));
            assert!(refused.is_some(), "{host}");
        }
        assert!(dev.refusal(&Method::GET, None, &HeaderMap::new()).is_some());
        assert!(
            dev.refusal(&Method::GET, Some("localhost:8080"), &HeaderMap::new())
                .is_none()
        );
        let on80 = BrowserPolicy::Dev { port: 80 };
        assert!(
            on80.refusal(&Method::GET, None, &headers(&[("host", "localhost")]))
                .is_none()
        );
    }

    #[test]
    fn dev_mode_refuses_state_changes_from_other_origins() {
        let dev = BrowserPolicy::Dev { port: 8080 };
        let host = ("host", "127.0.0.1:8080");
        for origin in [
            "https://attacker.example",
            "null",
            "http://127.0.0.1:9999",
            "https://127.0.0.1:8080",
            "http://localhost.attacker.example:8080",
        ] {
            let refused = dev.refusal(&Method::POST, None, &headers(&[host, ("origin", origin)]));
            assert!(refused.is_some(), "{origin}");
        }
        for origin in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:8080",
        ] {
            let ok = dev.refusal(&Method::POST, None, &headers(&[host, ("origin", origin)]));
            assert!(ok.is_none(), "{origin}");
        }
        assert!(
            dev.refusal(&Method::POST, None, &headers(&[host]))
                .is_none()
        );
        assert!(
            dev.refusal(
                &Method::DELETE,
                None,
                &headers(&[host, ("sec-fetch-site", "cross-site")])
            )
            .is_some()
        );
        assert!(
            dev.refusal(
                &Method::GET,
                None,
                &headers(&[host, ("origin", "https://a.example")])
            )
            .is_none()
        );
        assert!(
            BrowserPolicy::Open {
                cors_origins: Vec::new()
            }
            .refusal(
                &Method::POST,
                None,
                &headers(&[("origin", "https://a.example")])
            )
            .is_none()
        );
    }
}
