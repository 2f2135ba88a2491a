//! The one chat interface every provider implements: messages, tools with JSON Schemas,
//! tool choice, streaming deltas of text, reasoning and tool calls, and token usage.
//!
//! The shapes follow OpenAI's chat completions (the lingua franca of tool-calling
//! servers) with one addition: reasoning is a first-class part of an assistant message,
//! whatever shape the provider returned it in (see [`crate::reasoning`]).

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions from the host.
    System,
    /// The person asking.
    User,
    /// The model.
    Assistant,
    /// A tool's result, answering one tool call.
    Tool,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// The visible text, if any (an assistant message that only calls tools has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The model's reasoning, normalised from whatever shape the provider used. Sent
    /// back on later turns to providers that require it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// Tool calls the assistant made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For [`Role::Tool`]: the id of the call this message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A system message.
    pub fn system(text: impl Into<String>) -> Self {
        Self::text(Role::System, text)
    }

    /// A user message.
    pub fn user(text: impl Into<String>) -> Self {
        Self::text(Role::User, text)
    }

    /// An assistant message with text only.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::text(Role::Assistant, text)
    }

    /// A tool result answering the call `call_id`.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(call_id.into()),
            ..Self::text(Role::Tool, content)
        }
    }

    fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(text.into()),
            reasoning: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A call the model asks the host to make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id, unique within the turn; the tool result names it.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments exactly as the model wrote them: JSON text that may be invalid,
    /// which the caller validates and, if need be, returns to the model as an error.
    pub arguments: String,
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// The tool's name (`^[a-zA-Z0-9_-]{1,64}$`).
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments (an object).
    pub parameters: serde_json::Value,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    #[default]
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call.
    Required,
    /// This tool.
    Tool(String),
}

/// The least token budget a request that forces a tool call gets, whatever the usual
/// cap: the cap is there to stop a small model's text answers from rambling, but a forced
/// reply is constrained to one JSON call, and its arguments legitimately run long (a
/// pasted table restated as row objects repeats every column name per row). A quarter of
/// the embedded model's 2,048-token context.
pub const FORCED_CALL_MIN_TOKENS: u32 = 512;

/// The token budget for a request that forces a tool call, given the usual `cap`: at least
/// [`FORCED_CALL_MIN_TOKENS`], plus room to copy the request's own text into the
/// arguments (about one token per two characters). The engine still stops at the
/// context's end, and the grammar ends the reply as soon as the call's JSON closes.
pub fn forced_call_token_budget(cap: u32, request_text: &str) -> u32 {
    let room = u32::try_from(request_text.chars().count() / 2).unwrap_or(u32::MAX);
    cap.max(FORCED_CALL_MIN_TOKENS).saturating_add(room)
}

/// The run's date and time, in its time zone, as the host knows them: relative dates in
/// a request ("tomorrow", "next Friday") resolve against it. Without one, providers use
/// the current UTC date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunClock {
    /// The current time with the run's UTC offset (RFC 3339).
    pub now: chrono::DateTime<chrono::FixedOffset>,
    /// The zone's name when the host knows it (`Europe/Berlin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

impl RunClock {
    /// The current time at `offset` from UTC.
    pub fn now_at(offset: chrono::FixedOffset) -> Self {
        Self {
            now: chrono::Utc::now().with_timezone(&offset),
            time_zone: None,
        }
    }

    /// A fixed time given as RFC 3339 (`2027-03-10T09:00:00+01:00`), for evaluations and
    /// tests.
    pub fn fixed(rfc3339: &str) -> Result<Self, chrono::ParseError> {
        Ok(Self {
            now: chrono::DateTime::parse_from_rfc3339(rfc3339)?,
            time_zone: None,
        })
    }

    /// The run's local date.
    pub fn today(&self) -> chrono::NaiveDate {
        self.now.date_naive()
    }
}

/// One request to a model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDefinition>,
    /// Whether it must.
    #[serde(default)]
    pub tool_choice: ToolChoice,
    /// Whether it may call several tools in one turn.
    #[serde(default)]
    pub parallel_tool_calls: bool,
    /// Cap on generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature; `None` leaves the provider's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// The run's date and time zone, for grounding dates in tool arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<RunClock>,
}

/// Tokens used by one request (OpenTelemetry `gen_ai.usage.*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// `gen_ai.usage.input_tokens`.
    pub input_tokens: u32,
    /// `gen_ai.usage.output_tokens`.
    pub output_tokens: u32,
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A natural end of the answer.
    Stop,
    /// It called tools and waits for their results.
    ToolCalls,
    /// It hit the token cap.
    Length,
    /// The provider filtered the output.
    ContentFilter,
    /// Anything else the provider said.
    Other(String),
}

/// A model's complete answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The assistant message (text, reasoning and tool calls).
    pub message: ChatMessage,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Token usage, when the provider reports it.
    pub usage: Option<Usage>,
    /// The model that answered, as the provider names it.
    pub model: String,
}

/// One piece of a streamed answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatDelta {
    /// More visible text.
    Text {
        /// The text.
        text: String,
    },
    /// More reasoning.
    Reasoning {
        /// The text.
        text: String,
    },
    /// A tool call begins.
    ToolCallStart {
        /// Its position in the turn.
        index: u32,
        /// Its id.
        id: String,
        /// The tool's name.
        name: String,
    },
    /// More of a tool call's arguments.
    ToolCallArguments {
        /// Which call.
        index: u32,
        /// The next fragment of JSON text.
        fragment: String,
    },
    /// The end of the answer.
    Finished {
        /// Why it stopped.
        reason: FinishReason,
        /// Token usage, when known.
        usage: Option<Usage>,
    },
}

/// A stream of deltas.
pub type ChatStream = BoxStream<'static, Result<ChatDelta, ModelError>>;

/// A chat model: an OpenAI-compatible server, the embedded model, or a test double.
#[async_trait::async_trait]
pub trait ChatModel: Send + Sync {
    /// The model's name, as recorded in the ledger (`gen_ai.request.model`).
    fn name(&self) -> &str;

    /// Sends one request and waits for the whole answer.
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError>;

    /// Sends one request and streams the answer as it is generated.
    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, ModelError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forced_call_budget_has_a_floor_and_grows_with_the_request() {
        assert_eq!(forced_call_token_budget(160, ""), FORCED_CALL_MIN_TOKENS);
        assert_eq!(forced_call_token_budget(1000, ""), 1000);
        let table = "a,b\n".repeat(100);
        assert_eq!(
            forced_call_token_budget(160, &table),
            FORCED_CALL_MIN_TOKENS + 200
        );
        assert_eq!(forced_call_token_budget(u32::MAX, &table), u32::MAX);
    }
}
