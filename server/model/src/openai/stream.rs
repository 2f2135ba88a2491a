//! Streamed answers: server-sent events in, [`ChatDelta`]s out, and back into a whole
//! [`ChatResponse`] for callers that want one.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use super::wire;
use crate::reasoning::{Piece, ThinkTagSplitter};
use crate::{
    ChatDelta, ChatMessage, ChatResponse, ChatStream, FinishReason, ModelError, Role, ToolCall,
    Usage,
};

/// Splits a byte stream into server-sent events' `data` payloads.
///
/// Bytes are buffered until a whole line arrives, so a chunk boundary inside a line or
/// inside a UTF-8 character does no harm. Comment lines (`: keep-alive`) and fields other
/// than `data` are ignored; several `data` lines of one event are joined with `\n`, as
/// the SSE specification says.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buffer: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// Takes the next bytes and returns the events they completed.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                events.extend(self.data.take());
            } else if let Some(value) = line.strip_prefix("data:") {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                }
            }
        }
        events
    }

    /// The end of the byte stream: an event without its closing blank line still counts.
    pub(crate) fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buffer);
        if !rest.is_empty() {
            let mut tail = self.push(&rest);
            tail.extend(self.push(b"\n\n"));
            return tail.pop();
        }
        self.data.take()
    }
}

#[derive(Debug, Default)]
struct PendingCall {
    started: bool,
    id: Option<String>,
    name: Option<String>,
    arguments: String,
}

/// Turns OpenAI `chat.completion.chunk` payloads into [`ChatDelta`]s.
///
/// Tool calls arrive as fragments keyed by `index`: the first usually carries the id and
/// name, later ones pieces of the arguments. A call is announced
/// ([`ChatDelta::ToolCallStart`]) once its name is known; arguments that came earlier
/// are held until then. Reasoning comes from `reasoning_content` / `reasoning` deltas
/// or from a `<think>` block at the start of the content, found by a
/// [`ThinkTagSplitter`] however the tags are split.
#[derive(Debug, Default)]
pub(crate) struct DeltaAssembler {
    splitter: ThinkTagSplitter,
    calls: BTreeMap<u32, PendingCall>,
    finish_reason: Option<FinishReason>,
    usage: Option<Usage>,
    done: bool,
}

impl DeltaAssembler {
    /// Whether `[DONE]` was seen.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Takes one event's data.
    pub(crate) fn push(&mut self, data: &str) -> Result<Vec<ChatDelta>, ModelError> {
        if data.trim() == "[DONE]" {
            return self.finish();
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| {
            ModelError::Malformed(format!(
                "a stream chunk is not JSON ({e}): {}",
                wire::shorten(data)
            ))
        })?;
        if let Some(error) = chunk.get("error") {
            // Some servers (vLLM, OpenRouter) report a failure mid-stream this way.
            let status = error
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|code| u16::try_from(code).ok())
                .filter(|code| (400..600).contains(code))
                .unwrap_or(500);
            return Err(ModelError::Server {
                status,
                message: wire::error_message(data.as_bytes()),
            });
        }
        if let Some(usage) = wire::usage_from_wire(chunk.get("usage")) {
            self.usage = Some(usage);
        }
        let mut out = Vec::new();
        let Some(choice) = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            // The usage-only chunk after `include_usage` has no choices.
            return Ok(out);
        };
        if let Some(delta) = choice.get("delta") {
            for field in ["reasoning_content", "reasoning"] {
                if let Some(text) = delta.get(field).and_then(Value::as_str)
                    && !text.is_empty()
                {
                    out.push(ChatDelta::Reasoning {
                        text: text.to_owned(),
                    });
                }
            }
            if let Some(text) = wire::text_of(delta.get("content")) {
                let pieces = self.splitter.push(&text);
                out.extend(pieces.into_iter().map(piece_delta));
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for (position, call) in calls.iter().enumerate() {
                    self.push_call(position, call, &mut out);
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(wire::finish_reason_from_wire(reason));
        }
        Ok(out)
    }

    fn push_call(&mut self, position: usize, call: &Value, out: &mut Vec<ChatDelta>) {
        let index = call
            .get("index")
            .and_then(Value::as_u64)
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or_else(|| u32::try_from(position).unwrap_or(u32::MAX));
        let pending = self.calls.entry(index).or_default();
        if let Some(id) = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            pending.id.get_or_insert_with(|| id.to_owned());
        }
        let function = call.get("function");
        if let Some(name) = function
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            pending.name.get_or_insert_with(|| name.to_owned());
        }
        let fragment = wire::arguments_text(function.and_then(|f| f.get("arguments")));
        pending.arguments.push_str(&fragment);
        if !pending.started
            && let Some(name) = pending.name.clone()
        {
            pending.started = true;
            out.push(ChatDelta::ToolCallStart {
                index,
                id: pending
                    .id
                    .clone()
                    .unwrap_or_else(|| wire::fallback_call_id(index as usize)),
                name,
            });
        }
        if pending.started && !pending.arguments.is_empty() {
            out.push(ChatDelta::ToolCallArguments {
                index,
                fragment: std::mem::take(&mut pending.arguments),
            });
        }
    }

    /// The end of the answer (`[DONE]`, or the body ended after a finish reason).
    pub(crate) fn finish(&mut self) -> Result<Vec<ChatDelta>, ModelError> {
        if self.done {
            return Ok(Vec::new());
        }
        self.done = true;
        let mut out: Vec<ChatDelta> = self
            .splitter
            .finish()
            .into_iter()
            .map(piece_delta)
            .collect();
        if let Some((index, _)) = self.calls.iter().find(|(_, call)| !call.started) {
            return Err(ModelError::Malformed(format!(
                "streamed tool call {index} never named its function"
            )));
        }
        let reason = match self.finish_reason.take() {
            Some(reason) => reason,
            None if !self.calls.is_empty() => FinishReason::ToolCalls,
            None => FinishReason::Stop,
        };
        out.push(ChatDelta::Finished {
            reason,
            usage: self.usage,
        });
        Ok(out)
    }

    /// The body ended without `[DONE]`: fine after a finish reason (some servers skip
    /// `[DONE]`), a broken stream otherwise.
    pub(crate) fn end_of_body(&mut self) -> Result<Vec<ChatDelta>, ModelError> {
        if self.done {
            return Ok(Vec::new());
        }
        if self.finish_reason.is_none() {
            return Err(ModelError::Malformed(
                "the stream ended before the answer finished".into(),
            ));
        }
        self.finish()
    }
}

fn piece_delta(piece: Piece) -> ChatDelta {
    match piece {
        Piece::Content(text) => ChatDelta::Text { text },
        Piece::Reasoning(text) => ChatDelta::Reasoning { text },
    }
}

struct StreamState {
    response: reqwest::Response,
    parser: SseParser,
    assembler: DeltaAssembler,
    pending: VecDeque<Result<ChatDelta, ModelError>>,
    idle_timeout: Duration,
    ended: bool,
}

impl StreamState {
    /// Reads until there is something to hand out, or the stream ends.
    async fn fill(&mut self) {
        while self.pending.is_empty() && !self.ended {
            let chunk = tokio::time::timeout(self.idle_timeout, self.response.chunk()).await;
            let events = match chunk {
                Err(_) => {
                    self.fail(ModelError::Timeout(self.idle_timeout));
                    return;
                }
                Ok(Err(error)) => {
                    self.fail(ModelError::Malformed(format!(
                        "the stream broke: {}",
                        super::error_chain(&error)
                    )));
                    return;
                }
                Ok(Ok(Some(bytes))) => self.parser.push(&bytes),
                Ok(Ok(None)) => {
                    let last: Vec<String> = self.parser.finish().into_iter().collect();
                    self.take_events(last);
                    if !self.ended {
                        let end = self.assembler.end_of_body();
                        self.take(end);
                    }
                    self.ended = true;
                    return;
                }
            };
            self.take_events(events);
        }
    }

    fn take_events(&mut self, events: Vec<String>) {
        for event in events {
            if self.ended || self.assembler.is_done() {
                break;
            }
            let deltas = self.assembler.push(&event);
            self.take(deltas);
        }
        if self.assembler.is_done() {
            self.ended = true;
        }
    }

    fn take(&mut self, deltas: Result<Vec<ChatDelta>, ModelError>) {
        match deltas {
            Ok(deltas) => self.pending.extend(deltas.into_iter().map(Ok)),
            Err(error) => self.fail(error),
        }
    }

    fn fail(&mut self, error: ModelError) {
        self.pending.push_back(Err(error));
        self.ended = true;
    }
}

/// The deltas of a streamed response body. Each read waits at most `idle_timeout`: a
/// long answer may stream for minutes, but a silent server is a dead one. The stream
/// ends after the first error.
pub(crate) fn deltas(response: reqwest::Response, idle_timeout: Duration) -> ChatStream {
    let state = StreamState {
        response,
        parser: SseParser::default(),
        assembler: DeltaAssembler::default(),
        pending: VecDeque::new(),
        idle_timeout,
        ended: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        state.fill().await;
        let next = state.pending.pop_front()?;
        Some((next, state))
    })
    .boxed()
}

/// Collects a stream of deltas into the whole answer, as [`ChatModel::chat`] would
/// have returned it: text and reasoning concatenated, tool-call fragments reassembled
/// by index. Useful to callers that stream to a user and record the result, and to
/// tests. Fails with the stream's first error, or [`ModelError::Malformed`] when it
/// ends without [`ChatDelta::Finished`].
///
/// [`ChatModel::chat`]: crate::ChatModel::chat
pub async fn collect_stream(
    mut stream: ChatStream,
    model: &str,
) -> Result<ChatResponse, ModelError> {
    let mut content = String::new();
    let mut reasoning = String::new();
    let mut calls: BTreeMap<u32, ToolCall> = BTreeMap::new();
    while let Some(delta) = stream.next().await {
        match delta? {
            ChatDelta::Text { text } => content.push_str(&text),
            ChatDelta::Reasoning { text } => reasoning.push_str(&text),
            ChatDelta::ToolCallStart { index, id, name } => {
                calls.insert(
                    index,
                    ToolCall {
                        id,
                        name,
                        arguments: String::new(),
                    },
                );
            }
            ChatDelta::ToolCallArguments { index, fragment } => {
                let call = calls.get_mut(&index).ok_or_else(|| {
                    ModelError::Malformed(format!(
                        "arguments for tool call {index} before its start"
                    ))
                })?;
                call.arguments.push_str(&fragment);
            }
            ChatDelta::Finished { reason, usage } => {
                let non_empty = |s: String| (!s.is_empty()).then_some(s);
                return Ok(ChatResponse {
                    message: ChatMessage {
                        role: Role::Assistant,
                        content: non_empty(content),
                        reasoning: non_empty(reasoning),
                        tool_calls: calls.into_values().collect(),
                        tool_call_id: None,
                    },
                    finish_reason: reason,
                    usage,
                    model: model.to_owned(),
                });
            }
        }
    }
    Err(ModelError::Malformed(
        "the stream ended without a finish".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_lines_split_anywhere_are_reassembled() {
        let raw =
            "data: {\"a\":\"é\"}\r\n\r\n: keep-alive\n\ndata: one\ndata: two\n\ndata: [DONE]\n\n";
        for cut in 0..raw.len() {
            let bytes = raw.as_bytes();
            let mut parser = SseParser::default();
            let mut events = parser.push(&bytes[..cut]);
            events.extend(parser.push(&bytes[cut..]));
            events.extend(parser.finish());
            assert_eq!(
                events,
                ["{\"a\":\"é\"}", "one\ntwo", "[DONE]"],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_last_event_without_blank_line_counts() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"data: last").is_empty());
        assert_eq!(parser.finish().as_deref(), Some("last"));
    }

    #[test]
    fn arguments_before_the_name_wait_for_it() {
        let mut assembler = DeltaAssembler::default();
        let first = assembler
            .push(r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\""}}]}}]}"#)
            .expect("parses");
        assert!(first.is_empty());
        let second = assembler
            .push(r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"x","function":{"name":"f","arguments":":1}"}}]}}]}"#)
            .expect("parses");
        assert_eq!(
            second,
            vec![
                ChatDelta::ToolCallStart {
                    index: 0,
                    id: "x".into(),
                    name: "f".into()
                },
                ChatDelta::ToolCallArguments {
                    index: 0,
                    fragment: "{\"a\":1}".into()
                },
            ]
        );
    }
}
