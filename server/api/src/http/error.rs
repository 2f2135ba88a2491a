//! The one error type of every handler, and the JSON shape of every error the API sends:
//! `{"error": {"code", "message", "field"?}}`.
//!
//! 4xx bodies say precisely what was wrong and where; a 500 says nothing beyond
//! `internal error` (its cause is logged here, never sent: it may name files, SQL or
//! internals an attacker could use).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code, e.g. `invalid_json`, `not_found`, `unauthorized`.
    pub code: String,
    /// What was wrong, for people.
    pub message: String,
    /// The field, parameter or JSON path at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (bad JSON, bad query, bad id).
    #[error("{message}")]
    BadRequest {
        /// Code, e.g. `invalid_json`.
        code: &'static str,
        /// Message.
        message: String,
        /// Field at fault.
        field: Option<String>,
    },
    /// 401: no valid credentials. Sent with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but lacks the role.
    #[error("{0}")]
    Forbidden(String),
    /// 403: the approval policy refuses the action; the message names the rule.
    #[error("{0}")]
    PolicyDenied(String),
    /// 404: no such thing (or it belongs to another tenant: the same answer, on purpose).
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists with other methods.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: the request conflicts with the current state.
    #[error("{message}")]
    Conflict {
        /// Code.
        code: &'static str,
        /// Message.
        message: String,
    },
    /// 413: the body is larger than allowed.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: wrong content type.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed, but not acceptable (schema validation, a bad package).
    #[error("{message}")]
    Unprocessable {
        /// Code.
        code: &'static str,
        /// Message.
        message: String,
        /// Field at fault.
        field: Option<String>,
    },
    /// 429: no capacity right now (every call slot of the tenant or the host was taken
    /// for the whole bounded wait). Sent with `Retry-After` in seconds.
    #[error("{message}")]
    TooManyRequests {
        /// Message.
        message: String,
        /// When to try again.
        retry_after: std::time::Duration,
    },
    /// 502: the work was accepted but what it depends on failed (a run whose model
    /// failed, or that ran out of steps or time); the run is in the ledger.
    #[error("{message}")]
    BadGateway {
        /// Code, e.g. `run_failed`.
        code: &'static str,
        /// Message.
        message: String,
    },
    /// 503: a dependency (ledger, identity provider) cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected failure. Logged, never described to the caller.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A 400 naming a field.
    pub fn bad_request(
        code: &'static str,
        message: impl Into<String>,
        field: Option<String>,
    ) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
            field,
        }
    }

    /// A 422 naming a field.
    pub fn unprocessable(
        code: &'static str,
        message: impl Into<String>,
        field: Option<String>,
    ) -> Self {
        ApiError::Unprocessable {
            code,
            message: message.into(),
            field,
        }
    }

    /// The HTTP answer a failed tool call gets instead of a result, if it gets one: only
    /// a call refused for want of a slot (nothing ran) is answered `429`.
    pub fn call_refusal(error: &cairn_runtime::CallError) -> Option<Self> {
        match error {
            cairn_runtime::CallError::Busy { retry_after, .. } => Some(ApiError::TooManyRequests {
                message: error.to_string(),
                retry_after: *retry_after,
            }),
            _ => None,
        }
    }

    /// The status and body this error is answered with (also where no response can
    /// carry it, e.g. inside an event stream).
    pub fn to_body(&self) -> (StatusCode, ErrorBody) {
        let (status, code, message, field) = self.parts();
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
                field,
            },
        };
        (status, body)
    }

    fn parts(&self) -> (StatusCode, &'static str, String, Option<String>) {
        match self {
            ApiError::BadRequest {
                code,
                message,
                field,
            } => (
                StatusCode::BAD_REQUEST,
                code,
                message.clone(),
                field.clone(),
            ),
            ApiError::Unauthorized(m) => {
                (StatusCode::UNAUTHORIZED, "unauthorized", m.clone(), None)
            }
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.clone(), None),
            ApiError::PolicyDenied(m) => {
                (StatusCode::FORBIDDEN, "denied_by_policy", m.clone(), None)
            }
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m.clone(), None),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method".into(),
                None,
            ),
            ApiError::Conflict { code, message } => {
                (StatusCode::CONFLICT, code, message.clone(), None)
            }
            ApiError::PayloadTooLarge(m) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                m.clone(),
                None,
            ),
            ApiError::UnsupportedMediaType(m) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                m.clone(),
                None,
            ),
            ApiError::Unprocessable {
                code,
                message,
                field,
            } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                code,
                message.clone(),
                field.clone(),
            ),
            ApiError::TooManyRequests { message, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "busy", message.clone(), None)
            }
            ApiError::BadGateway { code, message } => {
                (StatusCode::BAD_GATEWAY, code, message.clone(), None)
            }
            ApiError::Unavailable(m) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                m.clone(),
                None,
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error".into(),
                None,
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(cause) => tracing::error!(error = ?cause, "internal error"),
            ApiError::Unavailable(m) => tracing::warn!(error = %m, "dependency unavailable"),
            _ => {}
        }
        let (status, body) = self.to_body();
        let mut response = (status, axum::Json(body)).into_response();
        if let ApiError::TooManyRequests { retry_after, .. } = &self {
            let seconds = retry_after.as_secs().max(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"cairn\""),
            );
        }
        response
    }
}

impl From<cairn_audit::LedgerError> for ApiError {
    fn from(error: cairn_audit::LedgerError) -> Self {
        use cairn_audit::LedgerError;
        match error {
            LedgerError::RunNotFound(_) => ApiError::NotFound("run not found".into()),
            e if e.is_unavailable() => {
                ApiError::Unavailable("the audit ledger is unavailable".into())
            }
            e => ApiError::Internal(anyhow::Error::new(e)),
        }
    }
}

impl From<cairn_app::AppError> for ApiError {
    /// One status per application failure, whichever route it came from.
    fn from(error: cairn_app::AppError) -> Self {
        use cairn_app::AppError;
        match error {
            AppError::BadRequest {
                code,
                message,
                field,
            } => ApiError::BadRequest {
                code,
                message,
                field,
            },
            AppError::Forbidden(m) => ApiError::Forbidden(m),
            AppError::PolicyDenied(m) => ApiError::PolicyDenied(m),
            AppError::NotFound(m) => ApiError::NotFound(m),
            AppError::Conflict { code, message } => ApiError::Conflict { code, message },
            AppError::Unprocessable {
                code,
                message,
                field,
            } => ApiError::Unprocessable {
                code,
                message,
                field,
            },
            AppError::Busy {
                message,
                retry_after,
            } => ApiError::TooManyRequests {
                message,
                retry_after,
            },
            AppError::Failed { code, message } => ApiError::BadGateway { code, message },
            AppError::Unavailable(m) => ApiError::Unavailable(m),
            AppError::Internal(e) => ApiError::Internal(e),
        }
    }
}

/// The handler result.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn busy_is_429_with_retry_after() {
        let busy = cairn_runtime::CallError::Busy {
            scope: cairn_runtime::SlotScope::Tenant,
            limit: 2,
            waited: std::time::Duration::from_millis(1500),
            retry_after: std::time::Duration::from_secs(2),
        };
        let response = ApiError::call_refusal(&busy).unwrap().into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let timeout = cairn_runtime::CallError::Trap {
            message: "x".into(),
        };
        assert!(ApiError::call_refusal(&timeout).is_none());
    }

    #[tokio::test]
    async fn internal_errors_are_opaque() {
        let response =
            ApiError::Internal(anyhow::anyhow!("password=hunter2 in /etc/secret")).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "internal", "message": "internal error"}})
        );
    }
}
