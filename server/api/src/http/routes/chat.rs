//! `POST /v1/chat/completions`: OpenAI's chat completions over the reasoning loop, so any
//! OpenAI client (SDKs, LangChain, editors) can talk to Cairn. The translation is
//! `cairn_app::openai`'s; this route parses, authorises, and writes JSON or SSE.
//!
//! Each request is one run, recorded in the ledger like any other. The tenant's enabled
//! plugins are server-side tools: the loop calls them and the client only sees the
//! answer. Tools the *client* sends are offered to the model too; when the model calls
//! one, the run stops there (it is recorded as cancelled, with the calls, since the
//! client, not Cairn, runs them) and the calls are returned as `tool_calls` with
//! `finish_reason: "tool_calls"`, as OpenAI would. The client then sends the results in
//! a new request, which is a new run.
//!
//! The response's `id` is `chatcmpl-<run id>`; the run id is also `cairn_run_id` and, for
//! non-streamed answers, the `x-cairn-run-id` header. A run that pauses for approval of
//! a server-side tool is answered with an assistant message saying what waits for
//! approval (`finish_reason: "stop"`), plus `cairn_status: "awaiting_approval"` and
//! `cairn_pending_approvals`; decide with `POST /v1/runs/{id}/approvals`.
//!
//! With `stream: true` the answer comes as `chat.completion.chunk` events ending with
//! `data: [DONE]`. The loop asks the model for whole answers (it must record each one
//! before acting on it), so the chunks carry the final answer once the run has it;
//! until then the stream sends keep-alive comments.
//!
//! Earlier turns of the conversation (assistant messages, tool results) are given to the
//! model as a transcript in the run's one user message, so they are in the ledger too;
//! system and developer messages are added to the deployment's system prompt.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
pub use cairn_app::openai::{
    ChatCompletion, ChatCompletionRequest, ChatUsage, Choice, InputFunction, InputMessage,
    InputRole, InputTool, ModelList, ModelObject, OutputFunction, OutputMessage, OutputToolCall,
};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;
use crate::http::auth::{AuthUser, Role};
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{AppJson, AppPath};

/// The path of one model.
#[derive(Debug, serde::Deserialize)]
struct ModelPath {
    id: String,
}

pub(crate) fn router() -> OpenApiRouter<AppState> {
    // A model's id may hold slashes (`Qwen/Qwen3-8B`), which OpenAI clients put in the
    // path as they are: the route takes the rest of the path, the document says `{id}`.
    let (schemas, paths, _) = routes!(get_model);
    let mut components = utoipa::openapi::ComponentsBuilder::new().build();
    components.schemas.extend(schemas);
    let documented = utoipa::openapi::OpenApiBuilder::new()
        .paths(paths)
        .components(Some(components))
        .build();
    OpenApiRouter::new()
        .routes(routes!(chat_completions))
        .routes(routes!(list_models))
        .merge(
            OpenApiRouter::with_openapi(documented)
                .route("/v1/models/{*id}", axum::routing::get(get_model)),
        )
}

/// Lists the models this deployment serves (OpenAI's `GET /v1/models`): the one model
/// every run uses, which is what `model` names in a chat completion's answer.
#[utoipa::path(get, path = "/v1/models", tag = "chat", security(("bearer" = [])),
    responses(
        (status = 200, description = "OpenAI's `list` of `model` objects.", body = ModelList),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not a user.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str()))]
async fn list_models(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<AppJson<ModelList>> {
    user.require(Role::User)?;
    Ok(AppJson(state.app.models()))
}

/// One served model by its id (OpenAI's `GET /v1/models/{id}`).
#[utoipa::path(get, path = "/v1/models/{id}", tag = "chat", security(("bearer" = [])),
    params(("id" = String, Path, description = "The model's id, as `GET /v1/models` lists it.")),
    responses(
        (status = 200, description = "The `model` object.", body = ModelObject),
        (status = 400, description = "The path is not valid UTF-8.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not a user.", body = ErrorBody),
        (status = 404, description = "This deployment does not serve that model.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str()))]
async fn get_model(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(path): AppPath<ModelPath>,
) -> ApiResult<AppJson<ModelObject>> {
    user.require(Role::User)?;
    Ok(AppJson(state.app.model(&path.id)?))
}

/// One server-sent event of a streamed answer (documentation only).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ChunkEvent {
    /// A `chat.completion.chunk` as JSON, an error body as JSON, or `[DONE]` last.
    data: String,
}

/// Creates a model response. Each request is one run: see the module documentation for
/// how server-side plugins, client tools, approvals and streaming map onto OpenAI's
/// format.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "chat", security(("bearer" = [])),
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The answer (`chat.completion`), or with `stream: true` `chat.completion.chunk` events ending with `data: [DONE]`. The run id is in `id` (`chatcmpl-<run id>`), `cairn_run_id` and the `x-cairn-run-id` header.",
            content(
                (ChatCompletion = "application/json"),
                (ChunkEvent = "text/event-stream")
            ),
            headers(("x-cairn-run-id" = String, description = "The run (non-streamed answers)."))),
        (status = 400, description = "Malformed body (the field is named), `n` above 1, a `tool_choice` that is not `auto`, `none`, `required` or a named function of the request or the tenant (or `required` with no tool to call).", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Not a user.", body = ErrorBody),
        (status = 409, description = "The run was cancelled meanwhile.", body = ErrorBody),
        (status = 413, description = "Body larger than max_body_bytes.", body = ErrorBody),
        (status = 415, description = "Not JSON.", body = ErrorBody),
        (status = 502, description = "The run failed (model error, step budget, deadline); it is in the ledger.", body = ErrorBody)
    ))]
#[tracing::instrument(skip_all, fields(tenant = %user.tenant.as_str()))]
async fn chat_completions(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(body): AppJson<ChatCompletionRequest>,
) -> ApiResult<Response> {
    user.require(Role::User)?;
    let chat = state.app.prepare_chat(&user.principal(), body).await?;
    if chat.streamed() {
        let stream = futures::stream::once(async move {
            let events = match chat.run().await {
                Ok(answer) => answer
                    .chunks()
                    .into_iter()
                    .map(|data| Event::default().data(data))
                    .collect(),
                Err(e) => {
                    let (_, body) = ApiError::from(e).to_body();
                    vec![Event::default().json_data(body).unwrap_or_default()]
                }
            };
            futures::stream::iter(
                events
                    .into_iter()
                    .chain([Event::default().data("[DONE]")])
                    .map(Ok::<_, Infallible>),
            )
        });
        use futures::StreamExt;
        return Ok(Sse::new(stream.flatten())
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let answer = chat.run().await?;
    let run_id = answer.run_id().to_string();
    let mut response = (StatusCode::OK, AppJson(answer.completion())).into_response();
    if let Ok(value) = HeaderValue::from_str(&run_id) {
        response.headers_mut().insert("x-cairn-run-id", value);
    }
    Ok(response)
}
