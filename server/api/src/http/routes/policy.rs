//! `/v1/policy`: the caller's tenant's approval policy (`cairn_app::policy`). Reading it
//! takes the admin or auditor role, changing it the admin role; every change is an admin
//! action in the ledger (`policy.update`, who, when, before and after) and governs the
//! next decision on every host over the database.

use axum::extract::State;
use cairn_app::policy::{PolicyView, TenantPolicy};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;
use crate::http::auth::{AuthUser, Role};
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::AppJson;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_policy, put_policy))
}

/// The tenant's approval policy: its own, once an admin stored one, else the deployment
/// policy file's entry for the tenant (`source` says which).
#[utoipa::path(get, path = "/v1/policy", tag = "policy", security(("bearer" = [])),
    responses(
        (status = 200, description = "The policy.", body = PolicyView),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Neither an admin nor an auditor.", body = ErrorBody),
        (status = 503, description = "The database cannot be reached.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str()))]
async fn get_policy(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<AppJson<PolicyView>> {
    user.require_any(&[Role::Admin, Role::Auditor])?;
    Ok(AppJson(state.app.policy(&user.tenant).await?))
}

/// Replaces the tenant's approval policy. Recorded in the ledger as the admin action
/// `policy.update` (who, when, the policy before and after) before it is stored; a
/// malformed policy is refused, naming the problem, and changes nothing.
#[utoipa::path(put, path = "/v1/policy", tag = "policy", security(("bearer" = [])),
    request_body = TenantPolicy,
    responses(
        (status = 200, description = "Stored; every host decides by it from now on.", body = PolicyView),
        (status = 400, description = "Malformed body: an unknown field or mode (the field is named).", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an admin.", body = ErrorBody),
        (status = 409, description = "`changed_meanwhile`: another request changed the policy while this one was applied; nothing of this one was stored (read it again and retry).", body = ErrorBody),
        (status = 413, description = "Body larger than max_body_bytes.", body = ErrorBody),
        (status = 415, description = "Not JSON.", body = ErrorBody),
        (status = 422, description = "A tool key is not `<plugin id>.<tool name>` (the key is named).", body = ErrorBody),
        (status = 503, description = "The ledger or the database cannot be reached; nothing was changed.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str()))]
async fn put_policy(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(body): AppJson<TenantPolicy>,
) -> ApiResult<AppJson<PolicyView>> {
    user.require(Role::Admin)?;
    Ok(AppJson(
        state.app.set_policy(&user.principal(), body).await?,
    ))
}
