//! [`AppError`]: what an application action can fail with, in terms any transport can
//! render. HTTP maps each variant onto one status (`cairn_server::http::error`); another
//! transport (MCP) maps the same variants onto its own errors, so a rule such as "a
//! policy denial names the rule" is decided here once.

use cairn_agent::AgentError;

/// A `Result` of an application action.
pub type AppResult<T> = Result<T, AppError>;

/// Why an application action failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed (a field is missing, blank or of the wrong form).
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code, e.g. `invalid_body`.
        code: &'static str,
        /// What was wrong.
        message: String,
        /// The field at fault.
        field: Option<String>,
    },
    /// The caller may not do this (not the run's owner nor an approver).
    #[error("{0}")]
    Forbidden(String),
    /// The approval policy refuses the call; the message names the rule.
    #[error("{0}")]
    PolicyDenied(String),
    /// No such thing in the caller's tenant (another tenant's is the same answer).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state.
    #[error("{message}")]
    Conflict {
        /// Machine-readable code, e.g. `run_ended`.
        code: &'static str,
        /// What conflicts.
        message: String,
    },
    /// Well-formed but not acceptable (schema validation, a bad package or policy).
    #[error("{message}")]
    Unprocessable {
        /// Machine-readable code.
        code: &'static str,
        /// What was wrong.
        message: String,
        /// The field at fault.
        field: Option<String>,
    },
    /// No capacity right now; try again after `retry_after`.
    #[error("{message}")]
    Busy {
        /// What was refused.
        message: String,
        /// When to try again.
        retry_after: std::time::Duration,
    },
    /// The work was accepted but failed on what it depends on (the model, a budget);
    /// the run is in the ledger.
    #[error("{message}")]
    Failed {
        /// Machine-readable code, e.g. `run_failed`.
        code: &'static str,
        /// What happened.
        message: String,
    },
    /// A dependency (the ledger) cannot be reached; nothing was changed.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure: logged by the transport, never described.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    /// A malformed request naming `field`.
    pub fn bad_request(
        code: &'static str,
        message: impl Into<String>,
        field: Option<String>,
    ) -> Self {
        AppError::BadRequest {
            code,
            message: message.into(),
            field,
        }
    }

    /// An unacceptable request naming `field`.
    pub fn unprocessable(
        code: &'static str,
        message: impl Into<String>,
        field: Option<String>,
    ) -> Self {
        AppError::Unprocessable {
            code,
            message: message.into(),
            field,
        }
    }

    /// `invalid_body` naming `field`, the message prefixed by it.
    pub(crate) fn invalid_body(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let field = field.into();
        AppError::bad_request("invalid_body", format!("{field}: {message}"), Some(field))
    }
}

impl From<AgentError> for AppError {
    fn from(error: AgentError) -> Self {
        let message = error.to_string();
        match error {
            AgentError::RunNotFound(_) => AppError::NotFound("run not found".into()),
            AgentError::NotAwaitingApproval { .. } => AppError::Conflict {
                code: "not_awaiting_approval",
                message,
            },
            AgentError::RunEnded { .. } => AppError::Conflict {
                code: "run_ended",
                message,
            },
            AgentError::NotPermitted { .. } => AppError::Forbidden(message),
            AgentError::RunBusy(_) => AppError::Conflict {
                code: "run_busy",
                message,
            },
            AgentError::ArgumentsMismatch { .. } => AppError::Conflict {
                code: "arguments_mismatch",
                message,
            },
            AgentError::CallNotPending { .. }
            | AgentError::UndecidedCalls { .. }
            | AgentError::DuplicateDecision { .. } => {
                AppError::unprocessable("invalid_decisions", message, Some("decisions".into()))
            }
            AgentError::UnknownTool { tool, .. } => {
                AppError::NotFound(format!("plugin has no enabled tool `{tool}`"))
            }
            AgentError::InvalidArguments { field, .. } => {
                AppError::unprocessable("invalid_arguments", message, Some(field))
            }
            AgentError::Invalid { what, .. } => {
                AppError::bad_request("invalid_value", message, Some(what.to_owned()))
            }
            AgentError::Ledger { source, .. } if source.is_unavailable() => {
                AppError::Unavailable("the audit ledger is unavailable".into())
            }
            e => AppError::Internal(anyhow::Error::new(e)),
        }
    }
}

impl From<cairn_audit::LedgerError> for AppError {
    fn from(error: cairn_audit::LedgerError) -> Self {
        use cairn_audit::LedgerError;
        match error {
            LedgerError::RunNotFound(_) => AppError::NotFound("run not found".into()),
            e if e.is_unavailable() => {
                AppError::Unavailable("the audit ledger is unavailable".into())
            }
            e => AppError::Internal(anyhow::Error::new(e)),
        }
    }
}
