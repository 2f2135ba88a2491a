//! Our chat types to and from OpenAI's chat completions wire format, as plain JSON.
//!
//! JSON values rather than typed structs on purpose: servers add fields the typed
//! clients drop (`reasoning_content`, `reasoning`), send `arguments` as an object instead
//! of a string, or leave out fields OpenAI always sends; reading the JSON by hand keeps
//! all of it and lets us say exactly what was missing.

use serde_json::{Map, Value, json};

use crate::reasoning::{self, ReasoningReplay};
use crate::{
    ChatMessage, ChatRequest, ChatResponse, FinishReason, ModelError, Role, ToolCall, ToolChoice,
    Usage,
};

/// The request body for `POST {base}/chat/completions`.
pub(crate) fn request_body(
    model: &str,
    request: &ChatRequest,
    replay: &ReasoningReplay,
    stream: bool,
) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert(
        "messages".into(),
        Value::Array(
            request
                .messages
                .iter()
                .map(|m| message_to_wire(m, replay))
                .collect(),
        ),
    );
    // OpenAI refuses `tool_choice` and `parallel_tool_calls` without `tools`.
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    }
                })
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        body.insert(
            "tool_choice".into(),
            tool_choice_to_wire(&request.tool_choice),
        );
        body.insert(
            "parallel_tool_calls".into(),
            json!(request.parallel_tool_calls),
        );
    }
    if let Some(max_tokens) = request.max_tokens {
        body.insert("max_tokens".into(), json!(max_tokens));
    }
    if let Some(temperature) = request.temperature {
        body.insert("temperature".into(), json!(temperature));
    }
    body.insert("stream".into(), json!(stream));
    if stream {
        // Without it, streamed answers carry no token usage.
        body.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    Value::Object(body)
}

fn tool_choice_to_wire(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Tool(name) => json!({ "type": "function", "function": { "name": name } }),
    }
}

fn role_to_wire(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

fn message_to_wire(message: &ChatMessage, replay: &ReasoningReplay) -> Value {
    let mut wire = Map::new();
    wire.insert("role".into(), json!(role_to_wire(message.role)));
    let mut content = message.content.clone();
    if message.role == Role::Assistant
        && let Some(reasoning) = message.reasoning.as_deref()
    {
        match replay {
            ReasoningReplay::None => {}
            ReasoningReplay::Field(field) => {
                wire.insert(field.clone(), json!(reasoning));
            }
            ReasoningReplay::ThinkTags => {
                content = Some(reasoning::join_think_tags(reasoning, content.as_deref()));
            }
        }
    }
    if message.role == Role::Assistant && !message.tool_calls.is_empty() {
        let calls = message
            .tool_calls
            .iter()
            .map(|call| {
                json!({
                    "id": call.id,
                    "type": "function",
                    "function": { "name": call.name, "arguments": call.arguments },
                })
            })
            .collect();
        wire.insert("tool_calls".into(), Value::Array(calls));
        // OpenAI's shape for a message that only calls tools.
        wire.insert("content".into(), content.map_or(Value::Null, Value::String));
    } else {
        wire.insert("content".into(), json!(content.unwrap_or_default()));
    }
    if let Some(id) = &message.tool_call_id {
        wire.insert("tool_call_id".into(), json!(id));
    }
    Value::Object(wire)
}

/// Reads a complete (non-streamed) answer.
pub(crate) fn response_from_wire(body: &Value, model: &str) -> Result<ChatResponse, ModelError> {
    let choice = body
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|choices| choices.first())
        .ok_or_else(|| malformed("no `choices[0]` in the answer", body))?;
    let message = choice
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| malformed("no `choices[0].message` in the answer", body))?;

    let content = text_of(message.get("content"));
    let (reasoning, content) = reasoning::normalise(
        &[
            message.get("reasoning_content").and_then(Value::as_str),
            message.get("reasoning").and_then(Value::as_str),
        ],
        content.as_deref(),
    );

    let tool_calls = match message.get("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(calls)) => calls
            .iter()
            .enumerate()
            .map(|(index, call)| tool_call_from_wire(index, call))
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(malformed("`tool_calls` is not an array", other)),
    };

    let finish_reason = match choice.get("finish_reason").and_then(Value::as_str) {
        Some(reason) => finish_reason_from_wire(reason),
        // Some servers leave it out; infer it rather than fail a good answer.
        None if !tool_calls.is_empty() => FinishReason::ToolCalls,
        None => FinishReason::Stop,
    };

    Ok(ChatResponse {
        message: ChatMessage {
            role: Role::Assistant,
            content,
            reasoning,
            tool_calls,
            tool_call_id: None,
        },
        finish_reason,
        usage: usage_from_wire(body.get("usage")),
        model: body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(model)
            .to_owned(),
    })
}

fn tool_call_from_wire(index: usize, call: &Value) -> Result<ToolCall, ModelError> {
    let function = call
        .get("function")
        .ok_or_else(|| malformed("a tool call has no `function`", call))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| malformed("a tool call has no function name", call))?;
    Ok(ToolCall {
        id: call
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map_or_else(|| fallback_call_id(index), str::to_owned),
        name: name.to_owned(),
        arguments: arguments_text(function.get("arguments")),
    })
}

/// An id for a call the server sent without one (some llama.cpp and Ollama versions),
/// so the tool result can still name it.
pub(crate) fn fallback_call_id(index: usize) -> String {
    format!("call_{index}")
}

/// Arguments as JSON text: OpenAI sends a string; some servers send the object itself.
pub(crate) fn arguments_text(arguments: Option<&Value>) -> String {
    match arguments {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// Content as text: a string, or an array of `{"type":"text","text":..}` parts.
pub(crate) fn text_of(content: Option<&Value>) -> Option<String> {
    match content {
        Some(Value::String(text)) => Some(text.clone()),
        Some(Value::Array(parts)) => Some(
            parts
                .iter()
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .collect(),
        ),
        _ => None,
    }
}

pub(crate) fn finish_reason_from_wire(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::Stop,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "length" => FinishReason::Length,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

pub(crate) fn usage_from_wire(usage: Option<&Value>) -> Option<Usage> {
    let usage = usage.filter(|u| u.is_object())?;
    let count = |field: &str| {
        usage
            .get(field)
            .and_then(Value::as_u64)
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    Some(Usage {
        input_tokens: count("prompt_tokens"),
        output_tokens: count("completion_tokens"),
    })
}

/// The server's own words from an error body: OpenAI's `{"error":{"message"}}`, the
/// `{"error":"..."}` of some servers, FastAPI's `{"detail"}`, or the raw text.
pub(crate) fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let from_json = serde_json::from_slice::<Value>(body).ok().and_then(|json| {
        let found = [
            json.pointer("/error/message"),
            json.get("error"),
            json.get("detail"),
            json.get("message"),
        ];
        found.into_iter().flatten().find_map(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other if !other.is_object() => Some(other.to_string()),
            _ => None,
        })
    });
    shorten(from_json.as_deref().unwrap_or(&text))
}

/// At most [`MESSAGE_LIMIT`] characters: errors go to logs and the ledger, not whole
/// echoed prompts.
pub(crate) fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MESSAGE_LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

const MESSAGE_LIMIT: usize = 300;

pub(crate) fn malformed(what: &str, near: &Value) -> ModelError {
    ModelError::Malformed(format!("{what}: {}", shorten(&near.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ToolDefinition;

    #[test]
    fn assistant_tool_calls_and_results_take_openais_shape() {
        let request = ChatRequest {
            messages: vec![
                ChatMessage::user("add milk"),
                ChatMessage {
                    role: Role::Assistant,
                    content: None,
                    reasoning: Some("use the tool".into()),
                    tool_calls: vec![ToolCall {
                        id: "c1".into(),
                        name: "add_task".into(),
                        arguments: r#"{"title":"milk"}"#.into(),
                    }],
                    tool_call_id: None,
                },
                ChatMessage::tool_result("c1", r#"{"ok":true}"#),
            ],
            tools: vec![ToolDefinition {
                name: "add_task".into(),
                description: "Adds a task".into(),
                parameters: json!({"type": "object"}),
            }],
            tool_choice: ToolChoice::Tool("add_task".into()),
            parallel_tool_calls: true,
            max_tokens: Some(5),
            temperature: None,
            clock: None,
        };
        let body = request_body("m", &request, &ReasoningReplay::None, false);
        assert_eq!(
            body["messages"][1],
            json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "add_task", "arguments": "{\"title\":\"milk\"}"}}],
            })
        );
        assert_eq!(
            body["messages"][2],
            json!({"role": "tool", "content": "{\"ok\":true}", "tool_call_id": "c1"})
        );
        assert_eq!(
            body["tool_choice"],
            json!({"type": "function", "function": {"name": "add_task"}})
        );
        assert_eq!(body["max_tokens"], json!(5));
        assert!(body.get("temperature").is_none());
    }

    #[test]
    fn no_tools_means_no_tool_fields() {
        let request = ChatRequest {
            messages: vec![ChatMessage::user("hi")],
            tool_choice: ToolChoice::Required,
            ..ChatRequest::default()
        };
        let body = request_body("m", &request, &ReasoningReplay::None, true);
        for field in ["tools", "tool_choice", "parallel_tool_calls"] {
            assert!(body.get(field).is_none(), "{field} sent without tools");
        }
        assert_eq!(body["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn error_messages_are_found_in_each_servers_shape() {
        assert_eq!(error_message(br#"{"error":{"message":"bad"}}"#), "bad");
        assert_eq!(error_message(br#"{"error":"bad too"}"#), "bad too");
        assert_eq!(error_message(br#"{"detail":"fastapi"}"#), "fastapi");
        assert_eq!(error_message(b"plain text\n"), "plain text");
        let long = "x".repeat(1000);
        assert_eq!(error_message(long.as_bytes()).chars().count(), 301);
    }

    #[test]
    fn object_arguments_become_json_text() {
        let call = json!({"function": {"name": "f", "arguments": {"a": 1}}});
        let parsed = tool_call_from_wire(2, &call).expect("parses");
        assert_eq!(parsed.arguments, r#"{"a":1}"#);
        assert_eq!(parsed.id, "call_2");
    }
}
