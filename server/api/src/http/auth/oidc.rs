//! OpenID Connect bearer tokens: JWT access tokens checked against the issuer's keys.
//!
//! The discovery document (`<issuer>/.well-known/openid-configuration`) names the JWKS;
//! keys are cached for `jwks_cache_seconds`. A token whose `kid` is not in the cache
//! makes the keys be fetched once more (the issuer rotated its key), at most every
//! `jwks_min_refetch_seconds`, so made-up key ids cannot turn the server into a load
//! generator against the issuer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_audit::{TenantId, UserId};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::Mutex;

use super::{AuthUser, Role};
use crate::config::OidcConfig;
use crate::http::error::ApiError;

/// Checks bearer tokens for one issuer and audience.
pub struct OidcVerifier {
    config: OidcConfig,
    client: reqwest::Client,
    keys: Mutex<Option<CachedKeys>>,
}

struct CachedKeys {
    keys: Arc<JwkSet>,
    fetched_at: Instant,
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
            keys: Mutex::new(None),
        })
    }

    /// Verifies a token: signature by a published key, `iss`, `aud`, `exp`, `nbf`; then
    /// reads the subject, tenant and roles.
    #[tracing::instrument(skip_all)]
    pub async fn verify(&self, token: &str) -> Result<AuthUser, ApiError> {
        let invalid = |why: &str| ApiError::Unauthorized(format!("invalid bearer token: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(invalid("unsupported algorithm"));
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

    /// The key with id `kid`: from the cache, or after one (rate-limited) refetch.
    async fn key(&self, kid: &str) -> Result<Option<jsonwebtoken::jwk::Jwk>, ApiError> {
        let mut cache = self.keys.lock().await;
        let ttl = Duration::from_secs(self.config.jwks_cache_seconds);
        let min_refetch = Duration::from_secs(self.config.jwks_min_refetch_seconds);
        let stale = cache.as_ref().is_none_or(|c| c.fetched_at.elapsed() >= ttl);
        if !stale && let Some(found) = cache.as_ref().and_then(|c| c.keys.find(kid).cloned()) {
            return Ok(Some(found));
        }
        let may_fetch = stale
            || cache
                .as_ref()
                .is_none_or(|c| c.fetched_at.elapsed() >= min_refetch);
        if may_fetch {
            match self.fetch_keys().await {
                Ok(keys) => {
                    *cache = Some(CachedKeys {
                        keys: Arc::new(keys),
                        fetched_at: Instant::now(),
                    });
                }
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "fetching the issuer's keys failed"
                    );
                    // Keep using what we had; without anything, no token can be checked.
                    if cache.is_none() {
                        return Err(ApiError::Unavailable(
                            "the identity provider's keys cannot be fetched".into(),
                        ));
                    }
                }
            }
        }
        Ok(cache.as_ref().and_then(|c| c.keys.find(kid).cloned()))
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
