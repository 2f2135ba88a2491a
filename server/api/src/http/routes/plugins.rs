//! `/v1/plugins`: install, list, inspect, enable, disable, configure, and invoke a tool
//! directly (for testing; the invocation is audited like any other tool call).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
pub use cairn_app::invoke::{InvokeError, InvokeResult};
use cairn_manifest::{Annotations, Manifest};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::{ArrayBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::http::AppState;
use crate::http::auth::{AuthUser, Role};
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppPath};
use crate::registry::{Installation, RegistryError};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(install, list))
        .routes(routes!(get_plugin, uninstall))
        .routes(routes!(upgrade))
        .routes(routes!(enable))
        .routes(routes!(disable))
        .routes(routes!(put_config))
        .routes(routes!(invoke))
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        cairn_app::AppError::from(error).into()
    }
}

/// `{id}` in plugin routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginPath {
    id: Uuid,
}

/// `{id}` and `{tool}` in the invoke route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolPath {
    id: Uuid,
    tool: String,
}

/// A tool as the API describes it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ToolView {
    /// Tool name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its arguments.
    pub input_schema: Value,
    /// JSON Schema of its result.
    pub output_schema: Value,
    /// MCP-style annotations.
    pub annotations: AnnotationsView,
    /// Example requests.
    pub examples: Vec<String>,
}

/// A tool's annotations.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnnotationsView {
    /// Reads only; needs no approval.
    pub read_only: bool,
    /// May destroy data.
    pub destructive: bool,
    /// Repeating it changes nothing more.
    pub idempotent: bool,
    /// Talks to the outside world.
    pub open_world: bool,
}

impl From<&Annotations> for AnnotationsView {
    fn from(a: &Annotations) -> Self {
        Self {
            read_only: a.read_only,
            destructive: a.destructive,
            idempotent: a.idempotent,
            open_world: a.open_world,
        }
    }
}

/// An installation with its tools: the installation's fields, and `tools`.
#[derive(Debug, Serialize)]
pub struct PluginDetail {
    /// The installation.
    #[serde(flatten)]
    pub installation: Installation,
    /// The tools its manifest declares.
    pub tools: Vec<ToolView>,
}

// Written by hand: `Installation`'s schema is closed (`additionalProperties: false`, from
// the `deny_unknown_fields` that guards the registry file), so the derived
// `allOf: [Installation, {tools}]` matched no object at all, the very one this route
// returns included. This is `Installation`'s schema with `tools` added, closed again.
impl utoipa::PartialSchema for PluginDetail {
    fn schema() -> RefOr<Schema> {
        let tools = RefOr::T(Schema::Array(
            ArrayBuilder::new()
                .items(Ref::from_schema_name(ToolView::name()))
                .description(Some("The tools its manifest declares."))
                .build(),
        ));
        match Installation::schema() {
            RefOr::T(Schema::Object(mut object)) => {
                object.properties.insert("tools".into(), tools);
                object.required.push("tools".into());
                object.description = Some("An installation with its tools.".into());
                RefOr::T(Schema::Object(object))
            }
            other => other,
        }
    }
}

impl ToSchema for PluginDetail {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((ToolView::name().into(), ToolView::schema()));
        <ToolView as ToSchema>::schemas(schemas);
    }
}

fn detail(installation: Installation, manifest: &Manifest) -> PluginDetail {
    PluginDetail {
        installation,
        tools: manifest
            .tools
            .iter()
            .map(|t| ToolView {
                name: t.name.to_string(),
                description: t.description.clone(),
                input_schema: t.input_schema.clone(),
                output_schema: t.output_schema.clone(),
                annotations: (&t.annotations).into(),
                examples: t.examples.clone(),
            })
            .collect(),
    }
}

/// The list of a tenant's plugins.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginList {
    /// Installations, oldest first.
    pub plugins: Vec<Installation>,
}

/// Installs a plugin package (`.cairnpkg`, as `cairn-plugin build` writes it) for the
/// caller's tenant. The component's digest is pinned; the plugin starts disabled.
#[utoipa::path(post, path = "/v1/plugins", tag = "plugins",
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The package archive."),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Installed (disabled).", body = PluginDetail),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an admin.", body = ErrorBody),
        (status = 409, description = "Already installed.", body = ErrorBody),
        (status = 413, description = "Package too large.", body = ErrorBody),
        (status = 415, description = "Not application/octet-stream.", body = ErrorBody),
        (status = 422, description = "Not a valid package.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str()))]
async fn install(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, AppJson<PluginDetail>)> {
    user.require(Role::Admin)?;
    let bytes = package_body(&state, &headers, body).await?;
    let installation = state
        .registry
        .install(&user.tenant, &user.user, &bytes)
        .await?;
    let (installation, manifest) = state.registry.get(&user.tenant, installation.id).await?;
    Ok((
        StatusCode::CREATED,
        AppJson(detail(installation, &manifest)),
    ))
}

/// A package archive from a request body: `application/octet-stream`, at most
/// `max_package_bytes`.
async fn package_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<axum::body::Bytes> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/octet-stream")
        && !content_type.starts_with("application/vnd.cairn.package")
    {
        return Err(ApiError::UnsupportedMediaType(
            "expected the package archive with `Content-Type: application/octet-stream`".into(),
        ));
    }
    axum::body::to_bytes(body, state.limits.max_package_bytes)
        .await
        .map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::PayloadTooLarge(format!(
                    "package larger than {} bytes (max_package_bytes)",
                    state.limits.max_package_bytes
                ))
            } else {
                ApiError::bad_request("invalid_body", format!("reading the body: {e}"), None)
            }
        })
}

/// Upgrades (or downgrades) a plugin to another package of the same plugin id. Settings
/// the new manifest still declares are kept; an enabled plugin is loaded from the new
/// package first, so one that does not load leaves the old version in place. Recorded in
/// the ledger as `plugin.upgrade` with the versions and digests before and after.
#[utoipa::path(post, path = "/v1/plugins/{id}/upgrade", tag = "plugins",
    params(("id" = Uuid, Path, description = "The installation id.")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The new package archive."),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Upgraded.", body = PluginDetail),
        (status = 400, description = "Malformed id.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an admin.", body = ErrorBody),
        (status = 404, description = "No such plugin in this tenant.", body = ErrorBody),
        (status = 409, description = "Changed by another request meanwhile.", body = ErrorBody),
        (status = 413, description = "Package too large.", body = ErrorBody),
        (status = 415, description = "Not application/octet-stream.", body = ErrorBody),
        (status = 422, description = "Not a valid package, another plugin's, or it does not load.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str(), id = %path.id))]
async fn upgrade(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(path): AppPath<PluginPath>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<AppJson<PluginDetail>> {
    user.require(Role::Admin)?;
    let bytes = package_body(&state, &headers, body).await?;
    state
        .registry
        .upgrade(&user.tenant, &user.user, path.id, &bytes)
        .await?;
    let (installation, manifest) = state.registry.get(&user.tenant, path.id).await?;
    Ok(AppJson(detail(installation, &manifest)))
}

/// Uninstalls a plugin: its tools can no longer be called, its settings are gone. A run
/// waiting for approval of one of its tools is not blocked: approved later, the call is
/// not run and the model is told the tool is gone. Recorded in the ledger.
#[utoipa::path(delete, path = "/v1/plugins/{id}", tag = "plugins", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The installation id.")),
    responses(
        (status = 204, description = "Uninstalled."),
        (status = 400, description = "Malformed id.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an admin.", body = ErrorBody),
        (status = 404, description = "No such plugin in this tenant.", body = ErrorBody),
        (status = 409, description = "Changed by another request meanwhile.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str(), id = %path.id))]
async fn uninstall(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(path): AppPath<PluginPath>,
) -> ApiResult<StatusCode> {
    user.require(Role::Admin)?;
    state
        .registry
        .uninstall(&user.tenant, &user.user, path.id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists the caller's tenant's plugins.
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins", security(("bearer" = [])),
    responses(
        (status = 200, description = "The tenant's plugins.", body = PluginList),
        (status = 401, description = "No valid token.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str()))]
async fn list(State(state): State<AppState>, user: AuthUser) -> ApiResult<AppJson<PluginList>> {
    user.require_any(&[Role::User, Role::Admin, Role::Auditor])?;
    Ok(AppJson(PluginList {
        plugins: state.registry.list(&user.tenant).await?,
    }))
}

/// One plugin with its tools, their schemas and annotations.
#[utoipa::path(get, path = "/v1/plugins/{id}", tag = "plugins", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The installation id.")),
    responses(
        (status = 200, description = "The plugin.", body = PluginDetail),
        (status = 400, description = "Malformed id.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 404, description = "No such plugin in this tenant.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str(), id = %path.id))]
async fn get_plugin(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(path): AppPath<PluginPath>,
) -> ApiResult<AppJson<PluginDetail>> {
    user.require_any(&[Role::User, Role::Admin, Role::Auditor])?;
    let (installation, manifest) = state.registry.get(&user.tenant, path.id).await?;
    Ok(AppJson(detail(installation, &manifest)))
}

/// Enables a plugin: loads it now, so missing settings are reported here.
#[utoipa::path(post, path = "/v1/plugins/{id}/enable", tag = "plugins", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The installation id.")),
    responses(
        (status = 200, description = "Enabled.", body = Installation),
        (status = 400, description = "Malformed id.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an admin.", body = ErrorBody),
        (status = 404, description = "No such plugin in this tenant.", body = ErrorBody),
        (status = 409, description = "Changed by another request meanwhile.", body = ErrorBody),
        (status = 422, description = "The plugin cannot be loaded (settings).", body = ErrorBody),
        (status = 503, description = "The audit ledger is unavailable; nothing was changed.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str(), id = %path.id))]
async fn enable(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(path): AppPath<PluginPath>,
) -> ApiResult<AppJson<Installation>> {
    user.require(Role::Admin)?;
    let installation = state
        .registry
        .set_enabled(&user.tenant, &user.user, path.id, true)
        .await?;
    Ok(AppJson(installation))
}

/// Disables a plugin: its tools can no longer be called.
#[utoipa::path(post, path = "/v1/plugins/{id}/disable", tag = "plugins", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The installation id.")),
    responses(
        (status = 200, description = "Disabled.", body = Installation),
        (status = 400, description = "Malformed id.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an admin.", body = ErrorBody),
        (status = 404, description = "No such plugin in this tenant.", body = ErrorBody),
        (status = 409, description = "Changed by another request meanwhile.", body = ErrorBody),
        (status = 503, description = "The audit ledger is unavailable; nothing was changed.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str(), id = %path.id))]
async fn disable(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(path): AppPath<PluginPath>,
) -> ApiResult<AppJson<Installation>> {
    user.require(Role::Admin)?;
    let installation = state
        .registry
        .set_enabled(&user.tenant, &user.user, path.id, false)
        .await?;
    Ok(AppJson(installation))
}

/// A plugin's settings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginConfigBody {
    /// Setting name to value; each must be declared in the manifest's `config`.
    pub config: BTreeMap<String, String>,
}

/// Replaces a plugin's settings.
#[utoipa::path(put, path = "/v1/plugins/{id}/config", tag = "plugins", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The installation id.")),
    request_body = PluginConfigBody,
    responses(
        (status = 200, description = "Saved.", body = Installation),
        (status = 400, description = "Malformed body.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not an admin.", body = ErrorBody),
        (status = 404, description = "No such plugin in this tenant.", body = ErrorBody),
        (status = 413, description = "Body larger than max_body_bytes.", body = ErrorBody),
        (status = 409, description = "Changed by another request meanwhile.", body = ErrorBody),
        (status = 415, description = "Not JSON.", body = ErrorBody),
        (status = 422, description = "A setting is unknown, a secret does not open, or the plugin rejects them.", body = ErrorBody),
        (status = 503, description = "The audit ledger is unavailable; nothing was changed.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str(), id = %path.id))]
async fn put_config(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(path): AppPath<PluginPath>,
    AppJson(body): AppJson<PluginConfigBody>,
) -> ApiResult<AppJson<Installation>> {
    user.require(Role::Admin)?;
    let installation = state
        .registry
        .set_config(&user.tenant, &user.user, path.id, body.config)
        .await?;
    Ok(AppJson(installation))
}

/// A direct tool invocation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvokeBody {
    /// The tool's arguments, checked against its `input_schema`.
    pub arguments: Value,
}

/// Calls one tool of an enabled plugin, as the caller, through the same path as a call
/// the model makes: the approval policy decides (`deny` → 403 naming the rule; a tool
/// that needs approval → 202, the run waits for a decision), the call is recorded before
/// it runs, egress decisions and the result (checked against the output schema) after.
#[utoipa::path(post, path = "/v1/plugins/{id}/tools/{tool}/invoke", tag = "plugins", security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The installation id."),
        ("tool" = String, Path, description = "The tool's name.")
    ),
    request_body = InvokeBody,
    responses(
        (status = 200, description = "The call ran (see `status`); it is in the ledger as `run_id`.", body = InvokeResult),
        (status = 202, description = "The tool needs approval; the run waits (`status: awaiting_approval`).", body = InvokeResult),
        (status = 400, description = "Malformed body or id.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not a user, or the approval policy denies the tool (`denied_by_policy`, the rule named; the refusal is in the ledger).", body = ErrorBody),
        (status = 404, description = "No such plugin or tool.", body = ErrorBody),
        (status = 409, description = "The plugin is disabled.", body = ErrorBody),
        (status = 413, description = "Body larger than max_body_bytes.", body = ErrorBody),
        (status = 415, description = "Not JSON.", body = ErrorBody),
        (status = 422, description = "Arguments do not match the input schema (the field is named).", body = ErrorBody),
        (status = 429, description = "No call slot for this tenant in time (`busy`, with `Retry-After`); the refusal is in the ledger.", body = ErrorBody),
        (status = 503, description = "The audit ledger is unavailable; nothing ran.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str(), id = %path.id, tool = %path.tool))]
async fn invoke(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(path): AppPath<ToolPath>,
    AppJson(body): AppJson<InvokeBody>,
) -> ApiResult<(StatusCode, AppJson<InvokeResult>)> {
    user.require(Role::User)?;
    let result = state
        .app
        .invoke(&user.principal(), path.id, path.tool, body.arguments)
        .await?;
    let status = if result.is_pending() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, AppJson(result)))
}
