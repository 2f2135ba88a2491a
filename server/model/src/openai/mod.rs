//! The OpenAI-compatible provider: vLLM, llama.cpp's server, Ollama, SGLang or a cloud
//! endpoint, anything that serves `POST {base}/chat/completions`.
//!
//! # Why reqwest and not async-openai
//!
//! DESIGN.md names async-openai; this module uses reqwest (the HTTP client async-openai
//! itself wraps) because async-openai 0.43 cannot give us what the provider must do:
//! - its error path keeps the status and body but drops the headers, so `Retry-After`
//!   is lost; and a 4xx whose body is not OpenAI's `{"error":{…}}` (FastAPI's
//!   `{"detail":…}` from vLLM, plain text from proxies) becomes a JSON decoding error
//!   with no status at all, so we could not tell "rejected" from "malformed";
//! - its default client retries by itself (three times, its own backoff); removing that
//!   needs its `middleware` feature and a tower service, in which we would write this
//!   same retry loop, only further from the errors it decides on;
//! - its typed responses drop `reasoning_content` / `reasoning`; with `byot` we would
//!   read `serde_json::Value` ourselves anyway, which is all this module does.
//!
//! What is left of the client is a URL, a bearer header and a JSON body: reqwest does
//! that, and the wire format lives in [`wire`] as plain JSON.
//!
//! # Retries
//!
//! 429, 5xx and connection failures are retried up to [`OpenAiConfig::max_retries`]
//! times. The wait is the server's `Retry-After` (seconds or an HTTP date; also
//! `retry-after-ms`) when it sent one, else exponential backoff from
//! [`OpenAiConfig::backoff_base`] capped at [`OpenAiConfig::backoff_cap`], with jitter so
//! that many runs hit by the same outage do not come back in step. A server that asks
//! for a longer wait than [`OpenAiConfig::max_retry_after`] is not waited out: the
//! error goes back at once, so the run can fail or be retried later instead of holding
//! a worker. Other 4xx are never retried ([`ModelError::Rejected`]). A timeout is not
//! retried either: the request may still be generating on the server, and the loop
//! decides with [`ModelError::retryable`].

mod stream;
mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use tokio::time::Instant;

pub use stream::collect_stream;

use crate::reasoning::ReasoningReplay;
use crate::{ChatModel, ChatRequest, ChatResponse, ChatStream, ModelError};

/// An API key. It never appears in `Debug` output or logs: there is no `Display`, and
/// `Debug` prints a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key, for instance read from the environment.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// How to reach an OpenAI-compatible server and how patient to be with it.
///
/// Start from [`OpenAiConfig::new`] and override fields with struct update syntax:
/// `OpenAiConfig { max_retries: 5, ..OpenAiConfig::new(url, model) }`.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// The API base, up to and including the version: `http://localhost:8000/v1`
    /// (vLLM), `http://localhost:11434/v1` (Ollama). `/chat/completions` is appended.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …`; local servers usually need none.
    pub api_key: Option<ApiKey>,
    /// The model to ask for, as the server names it.
    pub model: String,
    /// How long one attempt may take: the whole answer when not streaming, the headers
    /// and then each gap between chunks when streaming. Default 120 s.
    pub request_timeout: Duration,
    /// Retries after the first attempt on 429, 5xx and connection failures. Default 3.
    pub max_retries: u32,
    /// The first backoff wait; it doubles on each retry. Default 500 ms.
    pub backoff_base: Duration,
    /// The longest backoff wait. Default 10 s.
    pub backoff_cap: Duration,
    /// The longest `Retry-After` we wait out; beyond it the error is returned at once.
    /// Default 60 s.
    pub max_retry_after: Duration,
    /// Whether and how earlier reasoning is sent back. Default none.
    pub reasoning_replay: ReasoningReplay,
}

impl OpenAiConfig {
    /// A config with the defaults documented on each field.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            request_timeout: Duration::from_secs(120),
            max_retries: 3,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
            reasoning_replay: ReasoningReplay::None,
        }
    }
}

/// Why an [`OpenAiCompatible`] provider could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OpenAiConfigError {
    /// The base URL does not parse or is not http(s).
    #[error("the model base URL {url:?} is not a valid http(s) URL: {reason}")]
    BaseUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The API key cannot be sent in an HTTP header.
    #[error("the model API key contains characters not allowed in an HTTP header")]
    ApiKey,
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client for the model: {0}")]
    Client(String),
}

/// A chat model behind an OpenAI-compatible HTTP API. Cheap to clone; clones share
/// one connection pool.
///
/// 429, 5xx and connection failures are retried with jittered exponential backoff,
/// honouring `Retry-After` up to [`OpenAiConfig::max_retry_after`]; the final error
/// says how many attempts were made. Other 4xx are [`ModelError::Rejected`] at once;
/// a timeout is [`ModelError::Timeout`] and is not retried here. Reasoning is read from
/// `reasoning_content`, `reasoning` or a leading `<think>` block (see
/// [`crate::reasoning`]). It talks HTTP through reqwest rather than async-openai,
/// because that client drops `Retry-After`, loses the status of non-JSON 4xx bodies and
/// retries by its own policy (the reasons are spelled out in `src/openai/mod.rs`).
///
/// ```no_run
/// use cairn_model::{ChatMessage, ChatModel, ChatRequest, OpenAiCompatible, OpenAiConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let model = OpenAiCompatible::new(OpenAiConfig {
///     max_retries: 5,
///     ..OpenAiConfig::new("http://localhost:8000/v1", "Qwen/Qwen3-8B")
/// })?;
/// let request = ChatRequest {
///     messages: vec![ChatMessage::user("What is on my list today?")],
///     ..ChatRequest::default()
/// };
/// let answer = model.chat(&request).await?;
/// println!("{:?} {:?}", answer.message.reasoning, answer.message.content);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct OpenAiCompatible {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: OpenAiConfig,
    url: String,
    headers: HeaderMap,
    client: reqwest::Client,
}

/// One attempt's failure, and whether another attempt could help.
enum Failure {
    Final(ModelError),
    Retry {
        error: ModelError,
        retry_after: Option<Duration>,
    },
}

impl OpenAiCompatible {
    /// Checks the config and sets up the HTTP client (TLS with the webpki roots, on the
    /// same ring crypto provider as the rest of Cairn).
    pub fn new(config: OpenAiConfig) -> Result<Self, OpenAiConfigError> {
        let base =
            reqwest::Url::parse(&config.base_url).map_err(|e| OpenAiConfigError::BaseUrl {
                url: config.base_url.clone(),
                reason: e.to_string(),
            })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(OpenAiConfigError::BaseUrl {
                url: config.base_url.clone(),
                reason: format!("scheme {:?} is not http or https", base.scheme()),
            });
        }
        let url = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));

        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(key) = &config.api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", key.0))
                .map_err(|_| OpenAiConfigError::ApiKey)?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| OpenAiConfigError::Client(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| OpenAiConfigError::Client(error_chain(&e)))?;

        Ok(Self {
            inner: Arc::new(Inner {
                config,
                url,
                headers,
                client,
            }),
        })
    }

    /// The config this provider was built from.
    pub fn config(&self) -> &OpenAiConfig {
        &self.inner.config
    }

    /// Sends `body` until a 2xx response arrives, retrying as the module docs say.
    /// Returns the response with its headers read, and the deadline of the attempt that
    /// got it (for reading the body).
    async fn send(
        &self,
        body: &serde_json::Value,
    ) -> Result<(reqwest::Response, Instant), ModelError> {
        let config = &self.inner.config;
        let body = Bytes::from(
            serde_json::to_vec(body).map_err(|e| ModelError::Malformed(e.to_string()))?,
        );
        let mut attempt: u32 = 1;
        loop {
            let deadline = Instant::now() + config.request_timeout;
            let (error, retry_after) = match self.attempt(body.clone(), deadline).await {
                Ok(response) => return Ok((response, deadline)),
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::Retry { error, retry_after }) => (error, retry_after),
            };
            if attempt > config.max_retries {
                return Err(gave_up(error, attempt));
            }
            let wait = match retry_after {
                Some(wait) if wait > config.max_retry_after => {
                    tracing::warn!(attempt, ?wait, %error, "the model server asks for a longer wait than we allow; giving up");
                    return Err(gave_up(error, attempt));
                }
                Some(wait) => wait,
                None => backoff(config, attempt),
            };
            tracing::warn!(attempt, ?wait, %error, "model request failed; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn attempt(&self, body: Bytes, deadline: Instant) -> Result<reqwest::Response, Failure> {
        let timeout = self.inner.config.request_timeout;
        let request = self
            .inner
            .client
            .post(&self.inner.url)
            .headers(self.inner.headers.clone())
            .body(body)
            .send();
        let response = match tokio::time::timeout_at(deadline, request).await {
            Err(_) => return Err(Failure::Final(ModelError::Timeout(timeout))),
            Ok(Err(error)) if error.is_timeout() => {
                return Err(Failure::Final(ModelError::Timeout(timeout)));
            }
            Ok(Err(error)) => {
                return Err(Failure::Retry {
                    error: ModelError::Unreachable(error_chain(&error)),
                    retry_after: None,
                });
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry_after(response.headers());
        let body = match tokio::time::timeout_at(deadline, response.bytes()).await {
            Err(_) => return Err(Failure::Final(ModelError::Timeout(timeout))),
            Ok(body) => body.unwrap_or_default(),
        };
        let message = wire::error_message(&body);
        let code = status.as_u16();
        Err(if code == 429 {
            tracing::debug!(%message, "rate limited");
            Failure::Retry {
                error: ModelError::RateLimited { retry_after },
                retry_after,
            }
        } else if status.is_server_error() {
            Failure::Retry {
                error: ModelError::Server {
                    status: code,
                    message,
                },
                retry_after,
            }
        } else {
            Failure::Final(ModelError::Rejected {
                status: code,
                message,
            })
        })
    }
}

/// The last error, saying how many attempts it took: "the server failed" after one
/// try and after four are different stories in an incident.
fn gave_up(error: ModelError, attempts: u32) -> ModelError {
    let note = |message: String| format!("{message} (gave up after {attempts} attempts)");
    match error {
        ModelError::Server { status, message } => ModelError::Server {
            status,
            message: note(message),
        },
        ModelError::Unreachable(message) => ModelError::Unreachable(note(message)),
        other => other,
    }
}

/// Exponential backoff with "equal jitter": between half and all of
/// `min(cap, base × 2^(attempt-1))`.
fn backoff(config: &OpenAiConfig, attempt: u32) -> Duration {
    let exponential = config
        .backoff_base
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    let capped = exponential.min(config.backoff_cap);
    capped.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// The wait a server asked for: `retry-after-ms` (OpenAI, Azure), else `Retry-After`
/// as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = header("retry-after")?;
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// An error and its causes on one line: reqwest's own message ("error sending
/// request") says nothing without them.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[async_trait::async_trait]
impl ChatModel for OpenAiCompatible {
    fn name(&self) -> &str {
        &self.inner.config.model
    }

    #[tracing::instrument(skip_all, fields(model = %self.inner.config.model))]
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let config = &self.inner.config;
        let body = wire::request_body(&config.model, request, &config.reasoning_replay, false);
        let (response, deadline) = self.send(&body).await?;
        let bytes = match tokio::time::timeout_at(deadline, response.bytes()).await {
            Err(_) => return Err(ModelError::Timeout(config.request_timeout)),
            Ok(Err(error)) => {
                return Err(ModelError::Malformed(format!(
                    "the answer broke off: {}",
                    error_chain(&error)
                )));
            }
            Ok(Ok(bytes)) => bytes,
        };
        let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            ModelError::Malformed(format!(
                "the answer is not JSON ({e}): {}",
                wire::shorten(&String::from_utf8_lossy(&bytes))
            ))
        })?;
        let answer = wire::response_from_wire(&json, &config.model)?;
        tracing::debug!(usage = ?answer.usage, finish = ?answer.finish_reason, "model answered");
        Ok(answer)
    }

    #[tracing::instrument(skip_all, fields(model = %self.inner.config.model))]
    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, ModelError> {
        let config = &self.inner.config;
        let body = wire::request_body(&config.model, request, &config.reasoning_replay, true);
        let (response, _) = self.send(&body).await?;
        Ok(stream::deltas(response, config.request_timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_do_not_print() {
        let config = OpenAiConfig {
            api_key: Some(ApiKey::new("sk-secret")),
            ..OpenAiConfig::new("http://127.0.0.1:1/v1", "m")
        };
        let provider = OpenAiCompatible::new(config).expect("builds");
        let printed = format!("{provider:?}");
        assert!(!printed.contains("sk-secret"), "{printed}");
        assert!(printed.contains("redacted"), "{printed}");
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_milliseconds() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        let later = SystemTime::now() + Duration::from_secs(30);
        headers.insert(
            "retry-after",
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).expect("header"),
        );
        let wait = retry_after(&headers).expect("a date parses");
        assert!(
            wait > Duration::from_secs(28) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        headers.clear();
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let config = OpenAiConfig {
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(350),
            ..OpenAiConfig::new("http://x/v1", "m")
        };
        for _ in 0..50 {
            let first = backoff(&config, 1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = backoff(&config, 3);
            assert!(third >= Duration::from_millis(175) && third <= Duration::from_millis(350));
            assert!(backoff(&config, 40) <= Duration::from_millis(350));
        }
    }

    #[test]
    fn bad_base_urls_are_refused() {
        for url in ["localhost:8000", "ftp://host/v1", ""] {
            assert!(
                OpenAiCompatible::new(OpenAiConfig::new(url, "m")).is_err(),
                "{url} accepted"
            );
        }
    }
}
