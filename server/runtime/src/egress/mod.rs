//! Outbound HTTP: deny by default, enforced in one place.
//!
//! Every request a plugin makes goes through [`EgressHooks::send_request`] (wasmtime's
//! `WasiHttpHooks` hook), including each hop of a redirect, because `wasi:http` never
//! follows redirects for the guest. There the request is
//! 1. counted against `max_outbound_requests`,
//! 2. matched against the manifest's `outbound_hosts` (default ports made explicit),
//! 3. checked against the operator's [`EgressCeiling`] (origin allow-list), resolved
//!    (with a timeout), and refused if any address is under the ceiling's denied ranges
//!    or Cairn's own address, whatever the manifest says, or is loopback, private,
//!    link-local, CGNAT and so on (see [`blocked_class`]) unless the matching pattern
//!    names that address,
//! 4. given host-side credentials by the [`EgressAuthorizer`] (the plugin never sees
//!    them, and may not set `Authorization`, `Cookie` or `Proxy-Authorization` itself),
//! 5. sent over a connection to the address checked in step 3, so a second DNS answer
//!    cannot point it elsewhere (no DNS rebinding),
//! 6. and its response body is capped at `max_http_response_bytes`.
//!
//! Each decision is recorded as an [`EgressRecord`] for the audit ledger, with the
//! address actually connected to and secret-looking query values redacted.

mod addr;
mod ceiling;
mod redact;
mod send;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use cairn_manifest::HostPattern;
use http::{HeaderName, HeaderValue};
use wasmtime_wasi_http::{
    DEFAULT_FORBIDDEN_HEADERS, ForbiddenHeaderFilter, RequestOptions, WasiBody, WasiHttpHooks,
};

pub use addr::blocked_class;
pub use ceiling::{
    CeilingRule, CeilingViolation, DEFAULT_DENIED_RANGES, DEFAULT_DNS_TIMEOUT, EgressCeiling,
    IpRange, IpRangeError,
};
pub use redact::redact_url;

/// Headers only the host may set: credentials are injected at egress.
const CREDENTIAL_HEADERS: [HeaderName; 3] = [
    http::header::AUTHORIZATION,
    http::header::COOKIE,
    http::header::PROXY_AUTHORIZATION,
];

fn is_forbidden(name: &HeaderName) -> bool {
    DEFAULT_FORBIDDEN_HEADERS.contains(name) || CREDENTIAL_HEADERS.contains(name)
}

/// One outbound request and what the host decided about it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EgressRecord {
    /// The HTTP method.
    pub method: String,
    /// The URL with its port made explicit, e.g. `https://api.example.com:443/v1/items`,
    /// and the values of secret-looking query keys (`api_key`, `token`, ...) replaced by
    /// `REDACTED` (see [`redact_url`]).
    pub url: String,
    /// The decision.
    pub verdict: EgressVerdict,
}

/// What happened to one outbound request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum EgressVerdict {
    /// Sent, because `rule` (canonical spelling) matched; connected to `address`.
    Allowed {
        /// The `outbound_hosts` entry that allowed it.
        rule: String,
        /// The address the host connected to (the one checked against the policy and
        /// the ceiling); if no connection could be made, the last address tried.
        address: SocketAddr,
    },
    /// Refused before anything was sent.
    Denied {
        /// Which rule refused what.
        denial: EgressDenial,
    },
    /// Sent, but the response body passed `max_http_response_bytes` and was cut off.
    ResponseTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
}

/// Why the host refused an outbound request. `Display` says which rule refused what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EgressDenial {
    /// No `outbound_hosts` entry matches the scheme, host and port.
    #[error("{url} is not in the plugin's outbound_hosts [{allowed}]")]
    NotAllowed {
        /// The URL asked for.
        url: String,
        /// The plugin's `outbound_hosts`, canonical spelling, comma-separated.
        allowed: String,
    },
    /// The name is allowed but resolves to an address the host never reaches by name.
    #[error("{host} resolves to {address} ({class}); name the address explicitly to allow it")]
    BlockedAddress {
        /// The URL asked for.
        url: String,
        /// The host name in the URL.
        host: String,
        /// The refused address.
        address: IpAddr,
        /// Its class: `loopback`, `private`, `link-local`, ...
        class: String,
    },
    /// The call already made `max_outbound_requests` requests.
    #[error(
        "request {attempt} to {url} is over the plugin's max_outbound_requests of {limit} per call"
    )]
    TooManyRequests {
        /// The URL asked for.
        url: String,
        /// Which request of the call this was (1-based).
        attempt: u32,
        /// The limit.
        limit: u32,
    },
    /// The host name did not resolve.
    #[error("{url}: {host} did not resolve: {message}")]
    Unresolved {
        /// The URL asked for.
        url: String,
        /// The host name.
        host: String,
        /// The resolver's error.
        message: String,
    },
    /// The operator's egress ceiling refuses the request, whatever the manifest says.
    #[error("{url}: {rule}")]
    Ceiling {
        /// The URL asked for.
        url: String,
        /// The address refused, when the rule is about an address.
        #[serde(skip_serializing_if = "Option::is_none")]
        address: Option<IpAddr>,
        /// Which rule of the ceiling.
        rule: CeilingRule,
    },
    /// The request itself is not acceptable (no host, unsupported scheme, body too big).
    #[error("{url}: {message}")]
    Invalid {
        /// The URL asked for.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The [`EgressAuthorizer`] refused to provide credentials.
    #[error("{url}: no credentials: {message}")]
    Credentials {
        /// The URL asked for.
        url: String,
        /// The authorizer's reason.
        message: String,
    },
}

/// An allowed request, as the [`EgressAuthorizer`] sees it.
#[derive(Debug, Clone)]
pub struct EgressRequest<'a> {
    /// The tenant the call runs for.
    pub tenant: &'a str,
    /// The user the call runs for.
    pub user: &'a str,
    /// The plugin's id.
    pub plugin: &'a str,
    /// The HTTP method.
    pub method: &'a http::Method,
    /// The URL, port explicit.
    pub url: &'a str,
    /// The `outbound_hosts` entry that allowed it.
    pub rule: &'a HostPattern,
}

/// A host-side hook called for every allowed request, before it is sent, that may add
/// headers, so OAuth access tokens (or API keys) reach the upstream without the plugin
/// ever holding them.
#[async_trait::async_trait]
pub trait EgressAuthorizer: Send + Sync {
    /// Headers to set on the request (replacing any of the same name). An `Err` refuses
    /// the request with [`EgressDenial::Credentials`].
    async fn credentials(
        &self,
        request: &EgressRequest<'_>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, String>;
}

/// The default [`EgressAuthorizer`]: adds nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCredentials;

#[async_trait::async_trait]
impl EgressAuthorizer for NoCredentials {
    async fn credentials(
        &self,
        _request: &EgressRequest<'_>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        Ok(Vec::new())
    }
}

/// A plugin's egress policy: its `outbound_hosts` and size limits, under the operator's
/// ceiling. Built once at load.
#[derive(Debug)]
pub(crate) struct EgressPolicy {
    pub(crate) rules: Vec<HostPattern>,
    pub(crate) ceiling: Arc<EgressCeiling>,
    allowed: String,
    pub(crate) max_requests: u32,
    pub(crate) max_response_bytes: u64,
    pub(crate) max_request_bytes: u64,
    /// Values of the plugin's `secret` settings, never written into a record or a log.
    secrets: Vec<String>,
}

impl EgressPolicy {
    /// Also hides these values (the plugin's `secret` settings) wherever they appear in
    /// a recorded URL, not only in secret-looking query keys.
    pub(crate) fn with_secrets(mut self, secrets: Vec<String>) -> Self {
        // Longest first, so a secret containing another is replaced whole.
        self.secrets = secrets.into_iter().filter(|s| s.len() >= 4).collect();
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        self
    }

    fn hide_secrets(&self, url: String) -> String {
        self.secrets.iter().fold(url, |url, secret| {
            url.replace(secret.as_str(), redact::REDACTED)
        })
    }

    pub(crate) fn new(
        rules: Vec<HostPattern>,
        ceiling: Arc<EgressCeiling>,
        max_requests: u32,
        max_response_bytes: u64,
        max_request_bytes: u64,
    ) -> Self {
        let allowed = rules
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            rules,
            ceiling,
            allowed,
            max_requests,
            max_response_bytes,
            max_request_bytes,
            secrets: Vec::new(),
        }
    }
}

/// One call's view of egress: the policy, who the call is for, and the records so far.
/// Shared with the spawned request futures, hence the `Arc` and the lock.
pub(crate) struct CallEgress {
    pub(crate) policy: Arc<EgressPolicy>,
    pub(crate) authorizer: Arc<dyn EgressAuthorizer>,
    pub(crate) tenant: String,
    pub(crate) user: String,
    pub(crate) plugin: String,
    records: Mutex<Vec<EgressRecord>>,
}

impl CallEgress {
    pub(crate) fn new(
        policy: Arc<EgressPolicy>,
        authorizer: Arc<dyn EgressAuthorizer>,
        tenant: String,
        user: String,
        plugin: String,
    ) -> Self {
        Self {
            policy,
            authorizer,
            tenant,
            user,
            plugin,
            records: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn record(&self, method: &http::Method, url: &str, verdict: EgressVerdict) {
        match &verdict {
            EgressVerdict::Allowed { rule, address } => {
                tracing::info!(plugin = %self.plugin, tenant = %self.tenant, %url, %rule, %address, "egress allowed");
            }
            EgressVerdict::Denied { denial } => {
                tracing::warn!(plugin = %self.plugin, tenant = %self.tenant, %url, %denial, "egress denied");
            }
            EgressVerdict::ResponseTooLarge { limit } => {
                tracing::warn!(plugin = %self.plugin, tenant = %self.tenant, %url, limit, "egress response too large");
            }
        }
        self.records
            .lock()
            .expect("egress records lock")
            .push(EgressRecord {
                method: method.to_string(),
                url: url.to_string(),
                verdict,
            });
    }

    pub(crate) fn take_records(&self) -> Vec<EgressRecord> {
        std::mem::take(&mut *self.records.lock().expect("egress records lock"))
    }
}

/// A request that passed the allowlist and the count; resolution comes next.
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: bool,
    pub(crate) rule: HostPattern,
}

/// The `WasiHttpHooks` of one call's store.
pub(crate) struct EgressHooks {
    call: Arc<CallEgress>,
    sent: u32,
}

impl EgressHooks {
    pub(crate) fn new(call: Arc<CallEgress>) -> Self {
        Self { call, sent: 0 }
    }

    /// Steps 1 and 2: the count and the allowlist. Synchronous, so requests are counted
    /// in the order the guest made them.
    fn admit(&mut self, uri: &http::Uri) -> Result<Target, EgressDenial> {
        self.sent = self.sent.saturating_add(1);
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let tls = scheme == "https";
        let default_port = if tls { 443 } else { 80 };
        let Some(authority) = uri.authority() else {
            return Err(EgressDenial::Invalid {
                url: self.call.policy.hide_secrets(redact_url(&uri.to_string())),
                message: "the request names no host".into(),
            });
        };
        let host = authority.host().to_string();
        let port = authority.port_u16().unwrap_or(default_port);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let url = self
            .call
            .policy
            .hide_secrets(redact_url(&format!("{scheme}://{host}:{port}{path}")));
        let policy = &self.call.policy;
        if self.sent > policy.max_requests {
            return Err(EgressDenial::TooManyRequests {
                url,
                attempt: self.sent,
                limit: policy.max_requests,
            });
        }
        if scheme != "http" && scheme != "https" {
            return Err(EgressDenial::Invalid {
                url,
                message: format!("scheme {scheme} is not supported"),
            });
        }
        if let Err(rule) = policy.ceiling.check_origin(&scheme, &host, port) {
            return Err(EgressDenial::Ceiling {
                url,
                address: None,
                rule,
            });
        }
        match policy
            .rules
            .iter()
            .find(|rule| rule.matches(&scheme, &host, port))
        {
            Some(rule) => Ok(Target {
                url,
                host,
                port,
                tls,
                rule: rule.clone(),
            }),
            None => Err(EgressDenial::NotAllowed {
                url,
                allowed: policy.allowed.clone(),
            }),
        }
    }
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for EgressHooks {
    fn is_forbidden_header(&mut self, name: &HeaderName) -> bool {
        is_forbidden(name)
    }

    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        Arc::new(is_forbidden)
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let call = Arc::clone(&self.call);
        match self.admit(request.uri()) {
            Ok(target) => Box::new(send::send(call, request, options, target)),
            Err(denial) => {
                let (parts, body) = request.into_parts();
                let url = denial_url(&denial).to_string();
                call.record(&parts.method, &url, EgressVerdict::Denied { denial });
                send::drain(body);
                Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
            }
        }
    }
}

pub(crate) fn denial_url(denial: &EgressDenial) -> &str {
    match denial {
        EgressDenial::NotAllowed { url, .. }
        | EgressDenial::BlockedAddress { url, .. }
        | EgressDenial::TooManyRequests { url, .. }
        | EgressDenial::Unresolved { url, .. }
        | EgressDenial::Invalid { url, .. }
        | EgressDenial::Ceiling { url, .. }
        | EgressDenial::Credentials { url, .. } => url,
    }
}
