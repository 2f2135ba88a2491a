//! `/v1/plugins`: install, list, inspect, enable, disable, configure, and invoke a tool
//! directly (for testing; the invocation is audited like any other tool call).

use std::collections::BTreeMap;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use cairn_audit::{Actor, NewRun, NewStep, RunId, StepKind};
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
        .routes(routes!(get_plugin))
        .routes(routes!(enable))
        .routes(routes!(disable))
        .routes(routes!(put_config))
        .routes(routes!(invoke))
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        match error {
            RegistryError::NotFound => ApiError::NotFound("plugin not found".into()),
            RegistryError::AlreadyInstalled(_) => ApiError::Conflict {
                code: "already_installed",
                message: error.to_string(),
            },
            RegistryError::Disabled(_) => ApiError::Conflict {
                code: "plugin_disabled",
                message: error.to_string(),
            },
            RegistryError::Package(_) => {
                ApiError::unprocessable("invalid_package", error.to_string(), None)
            }
            RegistryError::UnknownSetting(ref key) => ApiError::unprocessable(
                "unknown_setting",
                error.to_string(),
                Some(format!("config.{key}")),
            ),
            RegistryError::Load(cairn_runtime::RuntimeError::Config(_)) => {
                ApiError::unprocessable("invalid_config", error.to_string(), Some("config".into()))
            }
            RegistryError::Load(_) => {
                ApiError::unprocessable("plugin_load_failed", error.to_string(), None)
            }
            RegistryError::EgressCeiling(ref violation) => {
                let field = Some(violation.field.clone());
                ApiError::unprocessable("egress_ceiling", error.to_string(), field)
            }
            RegistryError::Storage(e) => ApiError::Internal(e),
        }
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

/// Installs a plugin package (`.cairnpkg`, as `cairn plugin build` writes it) for the
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
    let bytes = axum::body::to_bytes(body, state.limits.max_package_bytes)
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
        })?;
    let installation = state
        .registry
        .install(user.tenant.as_str(), user.user.as_str(), &bytes)
        .await?;
    let (installation, manifest) = state
        .registry
        .get(user.tenant.as_str(), installation.id)
        .await?;
    Ok((
        StatusCode::CREATED,
        AppJson(detail(installation, &manifest)),
    ))
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
        plugins: state.registry.list(user.tenant.as_str()).await,
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
    let (installation, manifest) = state.registry.get(user.tenant.as_str(), path.id).await?;
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
        (status = 422, description = "The plugin cannot be loaded (settings).", body = ErrorBody)
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
        .set_enabled(user.tenant.as_str(), path.id, true)
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
        (status = 404, description = "No such plugin in this tenant.", body = ErrorBody)
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
        .set_enabled(user.tenant.as_str(), path.id, false)
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
        (status = 415, description = "Not JSON.", body = ErrorBody),
        (status = 422, description = "A setting is unknown or the plugin rejects them.", body = ErrorBody)
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
        .set_config(user.tenant.as_str(), path.id, body.config)
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

/// The outcome of a direct invocation.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvokeResult {
    /// The audited run that recorded the call.
    pub run_id: Uuid,
    /// `ok` or `error`.
    pub status: &'static str,
    /// The tool's result, when it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// What went wrong, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<InvokeError>,
}

/// A failed tool call.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvokeError {
    /// `error.type`: `tool`, `timeout`, `trap`, …
    #[serde(rename = "type")]
    pub error_type: String,
    /// The message.
    pub message: String,
}

/// Calls one tool of an enabled plugin in the sandbox, as the caller, and records the
/// call in the ledger (a run with the request, the call, and its result or error).
#[utoipa::path(post, path = "/v1/plugins/{id}/tools/{tool}/invoke", tag = "plugins", security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "The installation id."),
        ("tool" = String, Path, description = "The tool's name.")
    ),
    request_body = InvokeBody,
    responses(
        (status = 200, description = "The call ran (see `status`); it is in the ledger as `run_id`.", body = InvokeResult),
        (status = 400, description = "Malformed body or id.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not a user.", body = ErrorBody),
        (status = 404, description = "No such plugin or tool.", body = ErrorBody),
        (status = 409, description = "The plugin is disabled.", body = ErrorBody),
        (status = 413, description = "Body larger than max_body_bytes.", body = ErrorBody),
        (status = 415, description = "Not JSON.", body = ErrorBody),
        (status = 422, description = "Arguments do not match the input schema.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str(), id = %path.id, tool = %path.tool))]
async fn invoke(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(path): AppPath<ToolPath>,
    AppJson(body): AppJson<InvokeBody>,
) -> ApiResult<AppJson<InvokeResult>> {
    user.require(Role::User)?;
    let tenant = user.tenant.as_str();
    let (installation, manifest, plugin) = state.registry.plugin(tenant, path.id).await?;
    let tool = manifest
        .tool(&path.tool)
        .ok_or_else(|| ApiError::NotFound(format!("plugin has no tool `{}`", path.tool)))?;
    validate_arguments(&tool.input_schema, &body.arguments)?;

    let plugin_id = cairn_audit::PluginId::parse(installation.plugin_id.as_str())
        .map_err(|e| ApiError::Internal(e.into()))?;
    let tool_name = cairn_audit::ToolName::parse(tool.name.as_str())
        .map_err(|e| ApiError::Internal(e.into()))?;
    let actor = Actor::parse(format!("user:{}", user.user.as_str()))
        .map_err(|e| ApiError::Internal(e.into()))?;
    let call_id = format!("call_{}", Uuid::new_v4().simple());

    // The call is recorded before it runs: an action that is not in the ledger must not
    // happen.
    let run = state
        .ledger
        .start_run(NewRun {
            tenant: user.tenant.clone(),
            user: user.user.clone(),
            conversation_id: None,
            model: "direct-invoke".into(),
        })
        .await?;
    let append = |step: StepKind, actor: Actor| {
        let ledger = state.ledger.clone();
        let tenant = user.tenant.clone();
        async move {
            ledger
                .append(&tenant, run.id, NewStep { actor, step })
                .await
        }
    };
    append(
        StepKind::UserMessage {
            text: format!(
                "direct invocation of {}/{} with {}",
                installation.plugin_id, tool.name, body.arguments
            ),
        },
        actor.clone(),
    )
    .await?;
    append(
        StepKind::ToolCall {
            plugin_id: Some(plugin_id.clone()),
            tool_name: tool_name.clone(),
            call_id: call_id.clone(),
            arguments: body.arguments.clone(),
        },
        actor.clone(),
    )
    .await?;

    let started = Instant::now();
    let context = cairn_runtime::CallContext::new(tenant, user.user.as_str());
    let outcome = plugin
        .call(&context, tool.name.as_str(), &body.arguments.to_string())
        .await;
    let elapsed = started.elapsed();
    state.metrics.record_tool_call(
        &installation.plugin_id,
        tool.name.as_str(),
        outcome.is_ok(),
        elapsed,
    );
    let plugin_actor = Actor::parse(format!("plugin:{}", installation.plugin_id))
        .map_err(|e| ApiError::Internal(e.into()))?;
    let result = match outcome {
        Ok(outcome) => {
            let value: Value =
                serde_json::from_str(&outcome.output).unwrap_or(Value::String(outcome.output));
            append(
                StepKind::ToolResult {
                    plugin_id: Some(plugin_id),
                    tool_name,
                    call_id,
                    result: value.clone(),
                    duration_ms: elapsed.as_millis() as u64,
                },
                plugin_actor,
            )
            .await?;
            append(
                StepKind::FinalAnswer {
                    text: value.to_string(),
                },
                Actor::parse("system:direct-invoke").map_err(|e| ApiError::Internal(e.into()))?,
            )
            .await?;
            InvokeResult {
                run_id: run.id.as_uuid(),
                status: "ok",
                result: Some(value),
                error: None,
            }
        }
        Err(failure) => {
            let error_type = error_type(&failure.error);
            let message = failure.error.to_string();
            let refused = ApiError::call_refusal(&failure.error);
            append(
                StepKind::ToolError {
                    plugin_id: Some(plugin_id),
                    tool_name,
                    call_id,
                    error_type: error_type.clone(),
                    message: message.clone(),
                },
                plugin_actor,
            )
            .await?;
            append(
                StepKind::RunFailed {
                    error_type: error_type.clone(),
                    message: message.clone(),
                },
                Actor::parse("system:direct-invoke").map_err(|e| ApiError::Internal(e.into()))?,
            )
            .await?;
            // Refused for want of a call slot: recorded, and answered 429 + Retry-After.
            if let Some(refused) = refused {
                return Err(refused);
            }
            InvokeResult {
                run_id: run.id.as_uuid(),
                status: "error",
                result: None,
                error: Some(InvokeError {
                    error_type,
                    message,
                }),
            }
        }
    };
    let _: RunId = run.id;
    Ok(AppJson(result))
}

fn error_type(error: &cairn_runtime::CallError) -> String {
    use cairn_runtime::CallError;
    match error {
        CallError::Tool { .. } => "tool",
        CallError::UnknownTool { .. } => "unknown_tool",
        CallError::Timeout { .. } => "timeout",
        CallError::MemoryLimit { .. } => "memory_limit",
        CallError::OutputTooLarge { .. } => "output_too_large",
        CallError::InvalidOutput { .. } => "invalid_output",
        CallError::EgressDenied(_) => "egress_denied",
        CallError::HttpResponseTooLarge { .. } => "http_response_too_large",
        CallError::Trap { .. } => "trap",
        CallError::Busy { .. } => "busy",
        _ => "host",
    }
    .to_owned()
}

/// Checks arguments against the tool's input schema; the first problem becomes a 422
/// naming the field (as a path like `arguments.priority`).
fn validate_arguments(schema: &Value, arguments: &Value) -> ApiResult<()> {
    let validator = jsonschema::draft202012::new(schema)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("tool input schema: {e}")))?;
    let Some(error) = validator.iter_errors(arguments).next() else {
        return Ok(());
    };
    let pointer = error.instance_path().as_str().to_owned();
    let mut field = String::from("arguments");
    for segment in pointer.split('/').skip(1) {
        field.push('.');
        field.push_str(&segment.replace("~1", "/").replace("~0", "~"));
    }
    // `required` and `additionalProperties` fail at the parent object; name the member.
    use jsonschema::error::ValidationErrorKind;
    let member = match error.kind() {
        ValidationErrorKind::Required { property } => property.as_str().map(str::to_owned),
        ValidationErrorKind::AdditionalProperties { unexpected } => unexpected.first().cloned(),
        _ => None,
    };
    if let Some(name) = member {
        field.push('.');
        field.push_str(&name);
    }
    Err(ApiError::unprocessable(
        "invalid_arguments",
        format!("{field}: {error}"),
        Some(field),
    ))
}
