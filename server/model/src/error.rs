//! Why a model request failed.

use std::time::Duration;

/// Why a model request failed. The loop records the message in the ledger; `retryable`
/// says whether trying again could help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// No answer within the request timeout.
    #[error("the model did not answer within {0:?}")]
    Timeout(Duration),
    /// The provider asked us to slow down (HTTP 429) and retries ran out.
    #[error("the model provider is rate limiting (retry after {retry_after:?})")]
    RateLimited {
        /// What the provider's `Retry-After` said, if anything.
        retry_after: Option<Duration>,
    },
    /// The provider failed (HTTP 5xx) and retries ran out.
    #[error("the model provider failed with HTTP {status}: {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// What it said, shortened.
        message: String,
    },
    /// The provider refused the request (HTTP 4xx other than 429).
    #[error("the model provider refused the request with HTTP {status}: {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// What it said, shortened.
        message: String,
    },
    /// The provider could not be reached.
    #[error("cannot reach the model provider: {0}")]
    Unreachable(String),
    /// The answer did not follow the protocol (bad JSON, a broken stream).
    #[error("the model's answer is malformed: {0}")]
    Malformed(String),
    /// The embedded model failed to load or run.
    #[error("the embedded model failed: {0}")]
    Embedded(String),
    /// Tool retrieval's sentence-embedding model failed to load or run (the message
    /// names a missing file and how to fetch it).
    #[error("tool retrieval failed: {0}")]
    Retrieval(String),
}

impl ModelError {
    /// Whether a retry could succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Self::Timeout(_)
                | Self::RateLimited { .. }
                | Self::Server { .. }
                | Self::Unreachable(_)
        )
    }
}
