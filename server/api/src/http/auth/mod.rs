//! Who is calling: [`AuthUser`], extracted from every authenticated request.
//!
//! Two modes, chosen in config: OpenID Connect bearer tokens ([`oidc`]), or the
//! development identity, which only exists on a loopback listener (enforced at start-up
//! by [`crate::config::Config::validate`]).

pub mod oidc;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use cairn_audit::{TenantId, UserId};

use super::AppState;
use super::error::ApiError;

/// A role a token can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Uses the copilot: runs, tool invocation.
    User,
    /// Installs and configures plugins for the tenant.
    Admin,
    /// Reads and verifies the audit ledger.
    Auditor,
    /// Approves, denies and cancels other users' runs in the tenant (when the approval
    /// policy's `approver_roles` names it, as it does by default).
    Approver,
}

impl Role {
    /// Parses a role name; unknown names are ignored by callers.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            "auditor" => Some(Role::Auditor),
            "approver" => Some(Role::Approver),
            _ => None,
        }
    }

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::Approver => "approver",
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthUser {
    /// The tenant whose data the caller may see, and only that.
    pub tenant: TenantId,
    /// The user (the token's subject).
    pub user: UserId,
    /// The caller's roles.
    pub roles: Vec<Role>,
}

impl AuthUser {
    /// The development identity.
    pub fn dev() -> Self {
        Self {
            tenant: TenantId::parse("dev").expect("valid tenant"),
            user: UserId::parse("dev").expect("valid user"),
            roles: vec![Role::User, Role::Admin, Role::Auditor],
        }
    }

    /// The caller as the agent judges it when they decide or cancel a run.
    pub fn caller(&self) -> cairn_agent::Caller {
        cairn_agent::Caller::user(self.user.clone(), self.roles.iter().map(|r| r.as_str()))
    }

    /// The caller as the application layer takes it.
    pub fn principal(&self) -> cairn_app::Principal {
        cairn_app::Principal {
            tenant: self.tenant.clone(),
            user: self.user.clone(),
            roles: self.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        }
    }

    /// 403 unless the caller has `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.roles.contains(&role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this requires the {} role",
                role.as_str()
            )))
        }
    }

    /// 403 unless the caller has one of `roles`.
    pub fn require_any(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.iter().any(|r| self.roles.contains(r)) {
            Ok(())
        } else {
            let names: Vec<_> = roles.iter().map(|r| r.as_str()).collect();
            Err(ApiError::Forbidden(format!(
                "this requires one of the roles {}",
                names.join(", ")
            )))
        }
    }
}

/// How requests are authenticated.
#[derive(Clone)]
pub enum Authenticator {
    /// Every request is [`AuthUser::dev`].
    Dev,
    /// Bearer JWTs from an OpenID Connect issuer.
    Oidc(Arc<oidc::OidcVerifier>),
}

impl Authenticator {
    /// Authenticates one request from its `Authorization` header.
    pub async fn authenticate(&self, parts: &Parts) -> Result<AuthUser, ApiError> {
        match self {
            Authenticator::Dev => Ok(AuthUser::dev()),
            Authenticator::Oidc(verifier) => {
                let token = bearer_token(parts)?;
                verifier.verify(token).await
            }
        }
    }
}

fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("a bearer token is required".into()))?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    let (scheme, token) = text
        .split_once(' ')
        .ok_or_else(|| ApiError::Unauthorized("malformed Authorization header".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <token>`".into(),
        ));
    }
    Ok(token.trim())
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        state.auth.authenticate(parts).await
    }
}
