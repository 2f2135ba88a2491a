//! OpenID Connect bearer tokens: JWT access tokens checked against the issuer's keys.
//!
//! The discovery document (`<issuer>/.well-known/openid-configuration`) names the JWKS;
//! keys are cached for `jwks_cache_seconds`. The verifier is built to survive its issuer:
//!
//! - **No request waits on a refresh.** The cache is read under a lock held only to clone
//!   an `Arc`, never across a fetch. When the keys are stale, a token whose key is in the
//!   cache is still checked against it at once, and one background task refreshes them.
//! - **Stale keys keep verifying while the issuer is down.** A failed fetch keeps the old
//!   keys and is retried on a bounded schedule ([`RETRY_FIRST`] doubling up to
//!   [`RETRY_MAX`]), not on every request.
//! - **Unknown key ids are rate-limited globally.** A token whose `kid` is not cached (the
//!   issuer rotated its key, or someone made one up) makes the keys be fetched again at
//!   most every `jwks_min_refetch_seconds`, for all callers together, and never during the
//!   retry back-off. One fetch runs at a time; while it runs, other tokens are judged by
//!   the cached keys (only the very first fetch, with nothing cached, is waited for).
//! - **Access tokens only.** An ID token is a JWT from the same issuer, often with a
//!   matching `aud`; it must not open the API. By default a token must carry the header
//!   `typ: at+jwt` (RFC 9068 §2.1); issuers that do not set it are configured with an
//!   explicit claim rule instead (`required_claims`, e.g. `token_use = "access"`), and
//!   configuration refuses to have neither.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_audit::{TenantId, UserId};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::Mutex;

use super::{AuthUser, Role};
use crate::config::OidcConfig;
use crate::http::error::ApiError;

/// The first wait after a failed fetch before the issuer is asked again.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between attempts while the issuer stays down.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// Checks bearer tokens for one issuer and audience.
pub struct OidcVerifier {
    config: OidcConfig,
    client: reqwest::Client,
    /// The keys and when the issuer may next be asked. Held only to read or replace.
    state: SyncMutex<KeyState>,
    /// One fetch at a time; only requests that need keys the cache lacks wait on it.
    fetching: Mutex<()>,
}

#[derive(Default)]
struct KeyState {
    keys: Option<Arc<CachedKeys>>,
    /// When the last fetch was started (success or not): the global rate limit.
    last_attempt: Option<Instant>,
    /// Failed fetches in a row, for the back-off.
    failures: u32,
}

struct CachedKeys {
    keys: JwkSet,
    fetched_at: Instant,
}

impl KeyState {
    /// How long after the last attempt the issuer may be asked again.
    fn backoff(&self) -> Duration {
        if self.failures == 0 {
            return Duration::ZERO;
        }
        RETRY_FIRST
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(RETRY_MAX)
    }

    /// Whether a fetch may start now, given the minimum gap `min_gap` the caller's reason
    /// for fetching allows (0 for a stale or empty cache, the refetch limit for an
    /// unknown key id).
    fn may_fetch(&self, min_gap: Duration) -> bool {
        self.last_attempt
            .is_none_or(|t| t.elapsed() >= min_gap.max(self.backoff()))
    }
}

/// The algorithms accepted. Symmetric ones never: the key would be public.
const ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

impl OidcVerifier {
    /// A verifier; nothing is fetched until the first token arrives, so the server can
    /// start while the issuer is briefly down.
    pub fn new(config: OidcConfig) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS configuration for the OIDC client")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the OIDC HTTP client")?;
        Ok(Self {
            config,
            client,
            state: SyncMutex::new(KeyState::default()),
            fetching: Mutex::new(()),
        })
    }

    /// Verifies a token: an access token (`typ` or the configured claim rule), signed by
    /// a published key, with the right `iss`, `aud`, `exp`, `nbf`; then reads the
    /// subject, tenant and roles.
    #[tracing::instrument(skip_all)]
    pub async fn verify(self: &Arc<Self>, token: &str) -> Result<AuthUser, ApiError> {
        let invalid = |why: &str| ApiError::Unauthorized(format!("invalid bearer token: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(invalid("unsupported algorithm"));
        }
        if let Some(expected) = self.config.token_type.as_deref().filter(|t| !t.is_empty())
            && !typ_matches(header.typ.as_deref(), expected)
        {
            return Err(invalid(
                "not an access token (the header's typ must be at+jwt)",
            ));
        }
        let kid = header.kid.ok_or_else(|| invalid("no key id (kid)"))?;
        let jwk = self
            .key(&kid)
            .await?
            .ok_or_else(|| invalid("unknown signing key"))?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| invalid("unusable signing key"))?;

        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.config.leeway_seconds;
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                invalid(match e.kind() {
                    ErrorKind::ExpiredSignature => "expired",
                    ErrorKind::ImmatureSignature => "not yet valid",
                    ErrorKind::InvalidIssuer => "wrong issuer",
                    ErrorKind::InvalidAudience => "wrong audience",
                    ErrorKind::InvalidSignature => "bad signature",
                    ErrorKind::MissingRequiredClaim(_) => "missing required claim",
                    _ => "rejected",
                })
            })?;
        let claims = data.claims;
        check_required_claims(&claims, &self.config.required_claims)
            .map_err(|claim| invalid(&format!("not an access token (claim {claim})")))?;

        let subject = claims
            .get("sub")
            .or_else(|| claims.get("client_id"))
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("no subject"))?;
        let user = UserId::parse(subject).map_err(|_| invalid("malformed subject"))?;
        let tenant = claims
            .get(&self.config.tenant_claim)
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("no tenant claim"))?;
        let tenant = TenantId::parse(tenant).map_err(|_| invalid("malformed tenant claim"))?;
        let mut roles: Vec<Role> = match claims.get(&self.config.roles_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .filter_map(Role::parse)
                .collect(),
            Some(Value::String(list)) => list.split_whitespace().filter_map(Role::parse).collect(),
            _ => Vec::new(),
        };
        roles.sort();
        roles.dedup();
        Ok(AuthUser {
            tenant,
            user,
            roles,
        })
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, KeyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key with id `kid`.
    ///
    /// From the cache when it is there, stale or not (a stale cache is refreshed in the
    /// background). Otherwise after a fetch, if one may start now: for an empty cache
    /// whenever the back-off allows, for an unknown key id at most every
    /// `jwks_min_refetch_seconds`.
    async fn key(self: &Arc<Self>, kid: &str) -> Result<Option<Jwk>, ApiError> {
        let ttl = Duration::from_secs(self.config.jwks_cache_seconds);
        let cached = self.lock_state().keys.clone();
        if let Some(cache) = &cached
            && let Some(found) = cache.keys.find(kid)
        {
            if cache.fetched_at.elapsed() >= ttl {
                self.refresh_in_background();
            }
            return Ok(Some(found.clone()));
        }
        let min_gap = if cached.is_some() {
            Duration::from_secs(self.config.jwks_min_refetch_seconds)
        } else {
            Duration::ZERO
        };
        if !self.lock_state().may_fetch(min_gap) {
            return self.cached_or_unavailable(kid);
        }
        // One fetch at a time. With keys cached, never wait on one in progress (the
        // issuer may hang): the token is judged by the keys we have. With none, there is
        // nothing else to do but wait for the first fetch.
        let _fetching = if cached.is_some() {
            match self.fetching.try_lock() {
                Ok(guard) => guard,
                Err(_) => return self.cached_or_unavailable(kid),
            }
        } else {
            self.fetching.lock().await
        };
        let (found, may) = {
            let state = self.lock_state();
            let found = state.keys.as_ref().and_then(|c| c.keys.find(kid).cloned());
            let fresh_since_we_looked = match (&state.keys, &cached) {
                (Some(now), Some(before)) => !Arc::ptr_eq(now, before),
                (Some(_), None) => true,
                _ => false,
            };
            (found, !fresh_since_we_looked && state.may_fetch(min_gap))
        };
        if found.is_some() || !may {
            return match found {
                Some(k) => Ok(Some(k)),
                None => self.cached_or_unavailable(kid),
            };
        }
        self.fetch_and_store().await;
        self.cached_or_unavailable(kid)
    }

    /// The key from the cache; 503 when there are no keys at all (no token can be checked).
    fn cached_or_unavailable(&self, kid: &str) -> Result<Option<Jwk>, ApiError> {
        match &self.lock_state().keys {
            Some(cache) => Ok(cache.keys.find(kid).cloned()),
            None => Err(ApiError::Unavailable(
                "the identity provider's keys cannot be fetched".into(),
            )),
        }
    }

    /// Starts a refresh on its own task unless one is running or the schedule says wait.
    fn refresh_in_background(self: &Arc<Self>) {
        if !self.lock_state().may_fetch(Duration::ZERO) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let Ok(_fetching) = this.fetching.try_lock() else {
                return;
            };
            if this.lock_state().may_fetch(Duration::ZERO) {
                this.fetch_and_store().await;
            }
        });
    }

    /// Fetches the keys and stores them, or counts the failure (keeping the old keys).
    /// Call with `fetching` held.
    async fn fetch_and_store(&self) {
        self.lock_state().last_attempt = Some(Instant::now());
        let result = self.fetch_keys().await;
        let mut state = self.lock_state();
        match result {
            Ok(keys) => {
                state.keys = Some(Arc::new(CachedKeys {
                    keys,
                    fetched_at: Instant::now(),
                }));
                state.failures = 0;
            }
            Err(error) => {
                state.failures = state.failures.saturating_add(1);
                tracing::warn!(
                    error = format!("{error:#}"),
                    failures = state.failures,
                    retry_in = ?state.backoff(),
                    kept_stale_keys = state.keys.is_some(),
                    "fetching the issuer's keys failed"
                );
            }
        }
    }

    async fn fetch_keys(&self) -> anyhow::Result<JwkSet> {
        let issuer = self.config.issuer.trim_end_matches('/');
        let discovery_url = format!("{issuer}/.well-known/openid-configuration");
        let discovery: Value = self
            .client
            .get(&discovery_url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("GET {discovery_url}"))?
            .json()
            .await
            .with_context(|| format!("{discovery_url}: not JSON"))?;
        let advertised = discovery
            .get("issuer")
            .and_then(Value::as_str)
            .unwrap_or("");
        anyhow::ensure!(
            advertised == self.config.issuer,
            "discovery document's issuer {advertised:?} is not the configured {:?}",
            self.config.issuer
        );
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .context("discovery document has no jwks_uri")?;
        let keys: JwkSet = self
            .client
            .get(jwks_uri)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("GET {jwks_uri}"))?
            .json()
            .await
            .with_context(|| format!("{jwks_uri}: not a JWK set"))?;
        tracing::info!(keys = keys.keys.len(), "fetched the issuer's signing keys");
        Ok(keys)
    }
}

/// Whether a JWT header's `typ` is `expected`, compared as RFC 9068 §4 says: without
/// case, and with or without the `application/` prefix.
fn typ_matches(typ: Option<&str>, expected: &str) -> bool {
    let strip = |t: &str| {
        let t = t.trim();
        t.get(..12)
            .filter(|p| p.eq_ignore_ascii_case("application/"))
            .map_or(t, |_| &t[12..])
            .to_owned()
    };
    typ.is_some_and(|t| strip(t).eq_ignore_ascii_case(&strip(expected)))
}

/// Checks the configured claim rule: each claim present with exactly the value given (or,
/// for an array claim, containing it). Returns the first claim that fails.
fn check_required_claims(
    claims: &serde_json::Map<String, Value>,
    required: &BTreeMap<String, String>,
) -> Result<(), String> {
    for (name, want) in required {
        let ok = match claims.get(name) {
            Some(Value::String(s)) => s == want,
            Some(Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(want)),
            _ => false,
        };
        if !ok {
            return Err(format!("{name} must be {want:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typ_is_compared_as_rfc_9068_says() {
        assert!(typ_matches(Some("at+jwt"), "at+jwt"));
        assert!(typ_matches(Some("AT+JWT"), "at+jwt"));
        assert!(typ_matches(Some("application/at+jwt"), "at+jwt"));
        assert!(!typ_matches(Some("JWT"), "at+jwt"));
        assert!(!typ_matches(None, "at+jwt"));
        assert!(!typ_matches(Some("application/"), "at+jwt"));
    }

    #[test]
    fn the_back_off_doubles_and_is_bounded() {
        let mut s = KeyState::default();
        assert_eq!(s.backoff(), Duration::ZERO);
        let waits: Vec<_> = (1..=10)
            .map(|n| {
                s.failures = n;
                s.backoff()
            })
            .collect();
        assert_eq!(waits[0], RETRY_FIRST);
        assert_eq!(waits[1], RETRY_FIRST * 2);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*waits.last().unwrap(), RETRY_MAX);
        s.failures = u32::MAX;
        assert_eq!(s.backoff(), RETRY_MAX);
    }

    #[test]
    fn claim_rules_need_the_exact_value() {
        let claims = |v: Value| v.as_object().unwrap().clone();
        let rule = BTreeMap::from([("token_use".to_owned(), "access".to_owned())]);
        assert!(
            check_required_claims(&claims(serde_json::json!({"token_use": "access"})), &rule)
                .is_ok()
        );
        assert!(
            check_required_claims(&claims(serde_json::json!({"token_use": "id"})), &rule).is_err()
        );
        assert!(check_required_claims(&claims(serde_json::json!({})), &rule).is_err());
        assert!(
            check_required_claims(&claims(serde_json::json!({"token_use": ["access"]})), &rule)
                .is_ok()
        );
    }
}
