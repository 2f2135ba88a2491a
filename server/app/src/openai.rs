//! The OpenAI-compatible chat completions translation: a `chat.completion` request
//! becomes one run of the loop (its message, system instructions, client tools and token
//! caps as the run's [`RunSettings`]), and how the run ended becomes a `chat.completion`
//! or its `chat.completion.chunk`s.
//!
//! Each request is one run, recorded in the ledger like any other. The tenant's enabled
//! plugins are server-side tools: the loop calls them and the client only sees the
//! answer. Tools the *client* sends are offered to the model too; when the model calls
//! one, the run stops there (it is recorded as cancelled, with the calls, since the
//! client, not Cairn, runs them) and the calls are returned as `tool_calls` with
//! `finish_reason: "tool_calls"`, as OpenAI would. The client then sends the results in
//! a new request, which is a new run.
//!
//! The answer's `id` is `chatcmpl-<run id>`; the run id is also `cairn_run_id`. A run
//! that pauses for approval of a server-side tool is answered with an assistant message
//! saying what waits for approval (`finish_reason: "stop"`), plus `cairn_status:
//! "awaiting_approval"` and `cairn_pending_approvals`.
//!
//! Streamed, the answer comes as `chat.completion.chunk`s: the loop asks the model for
//! whole answers (it must record each one before acting on it), so the chunks carry the
//! final answer once the run has it.
//!
//! `tool_choice` `"required"` or a named function forces a call on the run's *first*
//! model request only: a run may go on after a server-side tool ran, and a forced call
//! on every request would never let it answer. A named function is the only tool offered
//! for the whole run, and later requests are `"none"`: the model answers from its result.
//!
//! Earlier turns of the conversation (assistant messages, tool results) are given to the
//! model as a transcript in the run's one user message, so they are in the ledger too;
//! system and developer messages are added to the deployment's system prompt.

use std::sync::Arc;

use cairn_agent::{Agent, AvailableTool, CLIENT_PLUGIN, RunOutcome, RunSettings, StartRun};
use cairn_audit::{Actor, ClientTool, ForcedTool, Ledger, RunId, StepKind, TenantId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::runs::{PendingApproval, drive, pending_of};
use crate::{App, AppError, AppResult, Principal};

/// An OpenAI chat completions request. Fields OpenAI clients commonly send that Cairn
/// does not use (`user`, `top_p`, `seed`, `stream_options`, …) are accepted and ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// Echoed back; runs use the deployment's configured model.
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation: `system`, `developer`, `user`, `assistant` and `tool` messages.
    pub messages: Vec<InputMessage>,
    /// Tools the client runs itself (`{"type": "function", "function": {…}}`).
    #[serde(default)]
    pub tools: Vec<InputTool>,
    /// `"auto"` (default), `"none"` (no tool offered), `"required"` (the run's first model
    /// request must call a tool), or `{"type": "function", "function": {"name"}}` naming a
    /// client tool or a server-side tool: it alone is offered and the first request must
    /// call it. Both providers honour the forced call (the embedded model by its grammar).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub tool_choice: Option<Value>,
    /// Answer as server-sent `chat.completion.chunk` events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Cap on generated tokens per model request.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Newer spelling of `max_tokens`.
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature, 0..=2.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Number of choices: only 1 is supported.
    #[serde(default)]
    pub n: Option<u32>,
    /// The end user, as the client names them (ignored: the token says who calls).
    #[serde(default)]
    pub user: Option<String>,
}

/// One input message.
#[derive(Debug, Deserialize, ToSchema)]
pub struct InputMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: InputRole,
    /// Text, or an array of `{"type": "text", "text": …}` parts; may be null for an
    /// assistant message that only calls tools.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub content: Option<Value>,
    /// An assistant message's tool calls.
    #[serde(default)]
    pub tool_calls: Vec<OutputToolCall>,
    /// A tool message's call id.
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputRole {
    /// Instructions.
    System,
    /// Instructions (OpenAI's newer name for system).
    Developer,
    /// The person.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
}

/// A client tool.
#[derive(Debug, Deserialize, ToSchema)]
pub struct InputTool {
    /// Must be `function`.
    #[serde(rename = "type")]
    pub tool_type: String,
    /// The function.
    pub function: InputFunction,
}

/// A client tool's function.
#[derive(Debug, Deserialize, ToSchema)]
pub struct InputFunction {
    /// Its name, by OpenAI's rule `^[a-zA-Z0-9_-]{1,64}$`. Cairn offers and records it
    /// in its own tool-name form (`getWeather` as `get_weather`) and answers tool calls
    /// with the client's name.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: Option<String>,
    /// JSON Schema of its arguments (an object schema).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
}

/// A tool call, in OpenAI's shape.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutputToolCall {
    /// The call id; a `tool` message answering it names it.
    pub id: String,
    /// `function`.
    #[serde(rename = "type", default = "function_type")]
    pub call_type: String,
    /// The function called.
    pub function: OutputFunction,
}

fn function_type() -> String {
    "function".into()
}

/// The function of a tool call.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutputFunction {
    /// The tool.
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

/// The answer, in OpenAI's `chat.completion` shape plus Cairn's run fields.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletion {
    /// `chatcmpl-<run id>`.
    pub id: String,
    /// `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: i64,
    /// The model that answered.
    pub model: String,
    /// Exactly one choice.
    pub choices: Vec<Choice>,
    /// Tokens over every model request of the run.
    pub usage: ChatUsage,
    /// The run that recorded this answer (`GET /v1/runs/{id}`, `GET /v1/audit/runs/{id}`).
    pub cairn_run_id: String,
    /// `completed`, `awaiting_approval`, or `cancelled` (client tool calls returned).
    pub cairn_status: String,
    /// The server-side calls waiting for approval, when `awaiting_approval`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cairn_pending_approvals: Vec<PendingApproval>,
}

/// The one choice.
#[derive(Debug, Serialize, ToSchema)]
pub struct Choice {
    /// 0.
    pub index: u32,
    /// The assistant message.
    pub message: OutputMessage,
    /// `stop` or `tool_calls`.
    pub finish_reason: &'static str,
}

/// The assistant's message.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutputMessage {
    /// `assistant`.
    pub role: &'static str,
    /// The answer text (null when it only calls the client's tools).
    pub content: Option<String>,
    /// Calls of the client's tools.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<OutputToolCall>,
}

/// Token usage.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatUsage {
    /// Input tokens.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
}

fn bad(field: impl Into<String>, message: impl std::fmt::Display) -> AppError {
    AppError::invalid_body(field, message)
}

/// The text of a message's `content`.
fn content_text(content: &Option<Value>, field: &str) -> AppResult<Option<String>> {
    match content {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                match (part["type"].as_str(), part["text"].as_str()) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    _ => {
                        return Err(bad(
                            format!("{field}[{j}]"),
                            "only text parts ({\"type\": \"text\", \"text\": …}) are supported",
                        ));
                    }
                }
            }
            Ok(Some(text))
        }
        Some(_) => Err(bad(field, "must be a string or an array of text parts")),
    }
}

/// What the loop is asked: one user message, extra system instructions.
fn conversation(messages: &[InputMessage]) -> AppResult<(String, Option<String>)> {
    if messages.is_empty() {
        return Err(bad("messages", "must not be empty"));
    }
    let mut system = Vec::new();
    let mut turns = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let field = format!("messages[{i}].content");
        let text = content_text(&m.content, &field)?;
        match m.role {
            InputRole::System | InputRole::Developer => system.extend(text),
            InputRole::User => {
                let text = text.ok_or_else(|| bad(&field, "a user message needs content"))?;
                turns.push((InputRole::User, text));
            }
            InputRole::Assistant => {
                if let Some(t) = text.filter(|t| !t.is_empty()) {
                    turns.push((InputRole::Assistant, format!("assistant: {t}")));
                }
                for call in &m.tool_calls {
                    turns.push((
                        InputRole::Assistant,
                        format!(
                            "assistant called the tool {} with {} (call {})",
                            call.function.name, call.function.arguments, call.id
                        ),
                    ));
                }
            }
            InputRole::Tool => {
                let id = m.tool_call_id.as_deref().ok_or_else(|| {
                    bad(
                        format!("messages[{i}].tool_call_id"),
                        "a tool message names the call it answers",
                    )
                })?;
                let text = text.unwrap_or_default();
                turns.push((InputRole::Tool, format!("result of call {id}: {text}")));
            }
        }
    }
    if !turns
        .iter()
        .any(|(r, _)| matches!(r, InputRole::User | InputRole::Tool))
    {
        return Err(bad("messages", "needs at least one user message"));
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    let message = match turns.as_slice() {
        [(InputRole::User, text)] => text.clone(),
        _ => {
            let mut out = String::from("The conversation so far, oldest first:\n");
            for (role, text) in &turns {
                match role {
                    InputRole::User => out.push_str(&format!("user: {text}\n")),
                    _ => out.push_str(&format!("{text}\n")),
                }
            }
            out.push_str("\nContinue the conversation as the assistant: answer the last message.");
            out
        }
    };
    Ok((message, system))
}

/// The client's tools, checked one by one (the run records them; the loop offers them).
fn client_tools(tools: &[InputTool], server: &[AvailableTool]) -> AppResult<Vec<ClientTool>> {
    let mut out: Vec<ClientTool> = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if tool.tool_type != "function" {
            return Err(bad(
                format!("tools[{i}].type"),
                format!("{:?} is not supported; use \"function\"", tool.tool_type),
            ));
        }
        let name_field = format!("tools[{i}].function.name");
        let f = &tool.function;
        if !openai_function_name(&f.name) {
            return Err(bad(
                name_field,
                format!(
                    "{:?} is not a function name: use 1 to 64 characters from a-z, A-Z, 0-9, '_' and '-'",
                    f.name
                ),
            ));
        }
        if out.iter().any(|t| t.name == f.name) {
            return Err(bad(name_field, format!("{:?} is given twice", f.name)));
        }
        let parameters = f
            .parameters
            .clone()
            .unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
        if !parameters.is_object() {
            return Err(bad(
                format!("tools[{i}].function.parameters"),
                "must be a JSON Schema object",
            ));
        }
        let tool = ClientTool {
            name: f.name.clone(),
            description: f.description.clone().unwrap_or_default(),
            parameters,
        };
        // The loop parses each into a tool declaration; refuse here what it would not take.
        RunSettings {
            client_tools: vec![tool.clone()],
            ..RunSettings::default()
        }
        .client_available_tools()
        .map_err(|e| bad(name_field, e))?;
        out.push(tool);
    }
    // Each is offered under its Cairn name, which must not be a server-side tool's.
    let settings = RunSettings {
        client_tools: out,
        ..RunSettings::default()
    };
    for (i, offered) in settings.client_tool_names().iter().enumerate() {
        if server.iter().any(|t| t.spec.name.as_str() == offered) {
            let name = &settings.client_tools[i].name;
            let also = if name == offered {
                String::new()
            } else {
                format!(" (as Cairn names it, {offered:?})")
            };
            return Err(bad(
                format!("tools[{i}].function.name"),
                format!("{name:?}{also} is already a server-side tool of this tenant; rename it"),
            ));
        }
    }
    Ok(settings.client_tools)
}

/// OpenAI's rule for a function's name: `^[a-zA-Z0-9_-]{1,64}$`.
fn openai_function_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// The run's tools as a client may name them in `tool_choice`, each with the name the
/// model is offered it under: a server-side tool by that name, a client tool by its own.
fn offered_names(
    server: &[AvailableTool],
    client: &[ClientTool],
) -> AppResult<Vec<(String, String)>> {
    let settings = RunSettings {
        client_tools: client.to_vec(),
        ..RunSettings::default()
    };
    let client_available = settings
        .client_available_tools()
        .map_err(|e| bad("tools", e))?;
    let all: Vec<AvailableTool> = server.iter().cloned().chain(client_available).collect();
    let offered = cairn_agent::model_names(&all);
    let spelled = offered
        .iter()
        .enumerate()
        .map(|(i, model)| match i.checked_sub(server.len()) {
            Some(j) => client[j].name.clone(),
            None => model.clone(),
        });
    Ok(spelled.zip(offered.iter().cloned()).collect())
}

/// What the client's `tool_choice` asks of the run.
#[derive(Debug, PartialEq)]
enum ToolChoice {
    Auto,
    None,
    Forced(ForcedTool),
}

/// Parses `tool_choice`: `"auto"` (default), `"none"`, `"required"`, or
/// `{"type": "function", "function": {"name"}}` naming one of the tools offered to the run
/// (`offered`: the names the model sees, server-side and client tools alike).
fn tool_choice(tool_choice: &Option<Value>, offered: &[(String, String)]) -> AppResult<ToolChoice> {
    let choice = match tool_choice {
        None | Some(Value::Null) => return Ok(ToolChoice::Auto),
        Some(Value::String(s)) if s == "auto" => return Ok(ToolChoice::Auto),
        Some(Value::String(s)) if s == "none" => return Ok(ToolChoice::None),
        Some(Value::String(s)) if s == "required" => ForcedTool::Required,
        Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    bad(
                        "tool_choice.function.name",
                        "a named tool choice is {\"type\": \"function\", \"function\": {\"name\": …}}",
                    )
                })?;
            let Some((_, model_name)) = offered.iter().find(|(spelled, _)| spelled == name) else {
                return Err(bad(
                    "tool_choice.function.name",
                    format!(
                        "{name:?} is not a tool of this request or a server-side tool of this tenant"
                    ),
                ));
            };
            ForcedTool::Function {
                name: model_name.clone(),
            }
        }
        Some(other) => {
            return Err(bad(
                "tool_choice",
                format!(
                    "{other} is not supported; use \"auto\", \"none\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": …}}}}"
                ),
            ));
        }
    };
    if offered.is_empty() {
        return Err(bad(
            "tool_choice",
            "\"required\" needs a tool to call, and this request offers none",
        ));
    }
    Ok(ToolChoice::Forced(choice))
}

/// One model a deployment serves, in OpenAI's `model` shape.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelObject {
    /// The name to send as `model` (the deployment's configured model).
    pub id: String,
    /// `model`.
    pub object: &'static str,
    /// Unix seconds: when this server started serving it.
    pub created: i64,
    /// `cairn`.
    pub owned_by: &'static str,
}

/// `GET /v1/models`: OpenAI's `list` of [`ModelObject`]s.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// `list`.
    pub object: &'static str,
    /// The models served.
    pub data: Vec<ModelObject>,
}

impl App {
    /// The models this deployment serves: the one model every run uses. Clients list
    /// them at start-up to check the name they were configured with.
    pub fn models(&self) -> ModelList {
        ModelList {
            object: "list",
            data: vec![self.model_object()],
        }
    }

    /// One served model by its id; `NotFound` for any other.
    pub fn model(&self, id: &str) -> AppResult<ModelObject> {
        if id == self.model_name() {
            Ok(self.model_object())
        } else {
            Err(AppError::NotFound(format!(
                "the model {id:?} does not exist; this deployment serves {:?}",
                self.model_name()
            )))
        }
    }

    fn model_object(&self) -> ModelObject {
        ModelObject {
            id: self.model_name().to_owned(),
            object: "model",
            created: self.started_at(),
            owned_by: "cairn",
        }
    }
}

/// The run's answer, in terms of a chat completion.
struct Answer {
    tenant: TenantId,
    run: RunId,
    content: Option<String>,
    tool_calls: Vec<OutputToolCall>,
    finish_reason: &'static str,
    status: &'static str,
    pending: Vec<PendingApproval>,
}

/// A chat request checked and translated, ready to run: see [`App::prepare_chat`].
pub struct PreparedChat {
    agent: Arc<Agent>,
    ledger: Arc<dyn Ledger>,
    model: String,
    stream: bool,
    request: StartRun,
}

/// How a chat request's run ended, as a chat completion: see [`PreparedChat::run`].
pub struct ChatAnswer {
    answer: Answer,
    model: String,
    usage: ChatUsage,
}

impl App {
    /// Checks a chat completions request and translates it into a run (nothing is
    /// recorded yet): a malformed request is refused here, naming the field, before a
    /// streamed answer would start.
    pub async fn prepare_chat(
        &self,
        who: &Principal,
        body: ChatCompletionRequest,
    ) -> AppResult<PreparedChat> {
        if body.n.is_some_and(|n| n != 1) {
            return Err(bad("n", "only n = 1 is supported"));
        }
        if let Some(t) = body.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(bad("temperature", "must be between 0 and 2"));
        }
        let (message, system) = conversation(&body.messages)?;
        let server_tools = self
            .server_tools(&who.tenant)
            .await
            .map_err(|e| AppError::Internal(anyhow::anyhow!("listing tools: {e}")))?;
        let client_tools = client_tools(&body.tools, &server_tools)?;
        let offered = offered_names(&server_tools, &client_tools)?;
        let (no_tools, forced_tool) = match tool_choice(&body.tool_choice, &offered)? {
            ToolChoice::Auto => (false, None),
            ToolChoice::None => (true, None),
            ToolChoice::Forced(forced) => (false, Some(forced)),
        };
        self.refresh_policy(&who.tenant).await?;
        Ok(PreparedChat {
            agent: Arc::clone(&self.agent),
            ledger: Arc::clone(&self.ledger),
            model: self.model_name().to_owned(),
            stream: body.stream == Some(true),
            request: StartRun {
                tenant: who.tenant.clone(),
                user: who.user.clone(),
                conversation_id: None,
                message,
                settings: RunSettings {
                    system,
                    client_tools,
                    no_tools,
                    forced_tool,
                    max_tokens: body.max_completion_tokens.or(body.max_tokens),
                    temperature: body.temperature,
                    ..RunSettings::default()
                },
            },
        })
    }
}

impl PreparedChat {
    /// Whether the client asked for `chat.completion.chunk`s.
    pub fn streamed(&self) -> bool {
        self.stream
    }

    /// Runs it (on its own task) and translates how the run ended. A run that failed is
    /// [`AppError::Failed`] (it is in the ledger), one cancelled meanwhile a conflict.
    pub async fn run(self) -> AppResult<ChatAnswer> {
        let Self {
            agent,
            ledger,
            model,
            request,
            ..
        } = self;
        let tenant = request.tenant.clone();
        let settings = request.settings.clone();
        let outcome = drive({
            let agent = Arc::clone(&agent);
            async move { agent.start(request).await }
        })
        .await?;
        let mut answer = answer_of(&agent, &tenant, outcome).await?;
        // The client sees its own names for its tools, whatever Cairn offered them as.
        for call in &mut answer.tool_calls {
            if let Some(name) = settings.client_name_of(&call.function.name) {
                call.function.name = name.to_owned();
            }
        }
        let usage = usage(ledger.as_ref(), &answer).await;
        Ok(ChatAnswer {
            answer,
            model,
            usage,
        })
    }
}

impl ChatAnswer {
    /// The run that recorded the answer.
    pub fn run_id(&self) -> RunId {
        self.answer.run
    }

    /// The answer as one `chat.completion`.
    pub fn completion(self) -> ChatCompletion {
        let answer = self.answer;
        let run_id = answer.run.to_string();
        ChatCompletion {
            id: format!("chatcmpl-{run_id}"),
            object: "chat.completion",
            created: chrono::Utc::now().timestamp(),
            model: self.model,
            choices: vec![Choice {
                index: 0,
                message: OutputMessage {
                    role: "assistant",
                    content: answer.content,
                    tool_calls: answer.tool_calls,
                },
                finish_reason: answer.finish_reason,
            }],
            usage: self.usage,
            cairn_run_id: run_id,
            cairn_status: answer.status.to_owned(),
            cairn_pending_approvals: answer.pending,
        }
    }

    /// The answer as the data of `chat.completion.chunk` events (JSON text each), in
    /// order; the transport adds its own end marker (`[DONE]`).
    pub fn chunks(&self) -> Vec<String> {
        chunks(&self.answer, &self.model, &self.usage)
    }
}

/// Maps how the run ended onto a chat completion; client tool calls end the run.
async fn answer_of(
    agent: &cairn_agent::Agent,
    tenant: &TenantId,
    outcome: RunOutcome,
) -> AppResult<Answer> {
    let pending = pending_of(&outcome);
    match outcome {
        RunOutcome::Completed { run_id, answer } => Ok(Answer {
            tenant: tenant.clone(),
            run: run_id,
            content: Some(answer),
            tool_calls: Vec::new(),
            finish_reason: "stop",
            status: "completed",
            pending,
        }),
        RunOutcome::AwaitingApproval { run_id, .. }
            if pending
                .iter()
                .all(|p| p.plugin.as_deref() == Some(CLIENT_PLUGIN)) =>
        {
            let by = Actor::parse("system:chat-completions")
                .map_err(|e| AppError::Internal(e.into()))?;
            agent
                .cancel(
                    tenant,
                    run_id,
                    &cairn_agent::Caller::Host(by),
                    Some("the tool calls were returned to the client, which runs them".into()),
                )
                .await?;
            Ok(Answer {
                tenant: tenant.clone(),
                run: run_id,
                content: None,
                tool_calls: pending
                    .iter()
                    .map(|p| OutputToolCall {
                        id: p.call_id.clone(),
                        call_type: function_type(),
                        function: OutputFunction {
                            name: p.tool.clone(),
                            arguments: p.arguments.to_string(),
                        },
                    })
                    .collect(),
                finish_reason: "tool_calls",
                status: "cancelled",
                pending: Vec::new(),
            })
        }
        RunOutcome::AwaitingApproval { run_id, .. } => {
            let mut text = String::from("Before I go on, this needs your approval:\n");
            for p in &pending {
                let tool = match &p.plugin {
                    Some(plugin) => format!("{plugin}.{}", p.tool),
                    None => p.tool.clone(),
                };
                text.push_str(&format!("- {tool} with {} ({})\n", p.arguments, p.reason));
            }
            text.push_str(&format!(
                "\nApprove or deny with POST /v1/runs/{run_id}/approvals; the answer will then be at GET /v1/runs/{run_id}."
            ));
            Ok(Answer {
                tenant: tenant.clone(),
                run: run_id,
                content: Some(text),
                tool_calls: Vec::new(),
                finish_reason: "stop",
                status: "awaiting_approval",
                pending,
            })
        }
        RunOutcome::Failed {
            run_id,
            error_type,
            message,
        } => Err(AppError::Failed {
            code: "run_failed",
            message: format!("run {run_id} failed ({error_type}): {message}"),
        }),
        RunOutcome::Cancelled { run_id } => Err(AppError::Conflict {
            code: "run_cancelled",
            message: format!("run {run_id} was cancelled"),
        }),
    }
}

/// Tokens over the run's model responses (zero if the trail cannot be read: the answer
/// matters more than its accounting).
async fn usage(ledger: &dyn cairn_audit::Ledger, answer: &Answer) -> ChatUsage {
    let (mut input, mut output) = (0, 0);
    let trail = ledger
        .trail(&answer.tenant, answer.run)
        .await
        .unwrap_or_default();
    for step in &trail {
        if let StepKind::ModelResponse {
            input_tokens,
            output_tokens,
            ..
        } = &step.step
        {
            input += input_tokens;
            output += output_tokens;
        }
    }
    ChatUsage {
        prompt_tokens: input,
        completion_tokens: output,
        total_tokens: input + output,
    }
}

/// The answer as the data of `chat.completion.chunk` events.
fn chunks(answer: &Answer, model: &str, usage: &ChatUsage) -> Vec<String> {
    let run_id = answer.run.to_string();
    let created = chrono::Utc::now().timestamp();
    let chunk = |delta: Value, finish: Option<&str>, usage: Option<&ChatUsage>| {
        let mut value = json!({
            "id": format!("chatcmpl-{run_id}"),
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
            "cairn_run_id": run_id,
            "cairn_status": answer.status,
        });
        if let Some(u) = usage {
            value["usage"] = json!(u);
        }
        if !answer.pending.is_empty() && finish.is_some() {
            value["cairn_pending_approvals"] = json!(answer.pending);
        }
        value.to_string()
    };
    let mut events = vec![chunk(
        json!({ "role": "assistant", "content": "" }),
        None,
        None,
    )];
    if let Some(text) = &answer.content {
        events.push(chunk(json!({ "content": text }), None, None));
    }
    if !answer.tool_calls.is_empty() {
        let calls: Vec<Value> = answer
            .tool_calls
            .iter()
            .enumerate()
            .map(|(i, c)| json!({ "index": i, "id": c.id, "type": "function", "function": c.function }))
            .collect();
        events.push(chunk(json!({ "tool_calls": calls }), None, None));
    }
    events.push(chunk(json!({}), Some(answer.finish_reason), Some(usage)));
    events
}
