//! A scripted OpenAI-compatible chat completions server, for tests.
//!
//! Tests of the OpenAI-compatible provider and of the reasoning loop need a model that
//! says exactly what the test wants, in exactly the shape a real server would, including
//! its failures: rate limits, outages, slowness, broken JSON. [`ScriptedServer`] serves
//! `POST /v1/chat/completions` on `127.0.0.1:0` from a queue of [`Step`]s, one per
//! request, and records every request body so the test can check what the model was
//! sent (tools, tool results, replayed reasoning).
//!
//! An answer step is rendered as a complete JSON answer, or as server-sent events in
//! OpenAI's delta format when the request says `"stream": true`, so one script serves
//! both code paths. When the script runs out, the server answers 500 with a message
//! naming the unexpected request, which fails the test loudly rather than hanging it.
//!
//! ```
//! use cairn_scripted_model::{ReasoningShape, ScriptedServer, Step};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let server = ScriptedServer::start([
//!     Step::status(429).retry_after(1),
//!     Step::tool_call("add_task", json!({ "title": "milk" }))
//!         .with_reasoning(ReasoningShape::ThinkTags, "The user wants a task."),
//!     Step::text("Added.").usage(120, 4),
//! ])
//! .await;
//! let base_url = server.url(); // http://127.0.0.1:PORT/v1, for the provider's config
//! # assert!(base_url.ends_with("/v1"));
//! // ... run the code under test against base_url ...
//! assert!(server.requests().is_empty());
//! # }
//! ```
#![warn(missing_docs)]

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

/// Where an answer's reasoning goes, as different servers put it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningShape {
    /// A `reasoning_content` field beside `content` (DeepSeek, vLLM, llama.cpp).
    ReasoningContent,
    /// A `reasoning` field (OpenRouter, Ollama).
    Reasoning,
    /// `<think>…</think>` at the start of `content` (raw model output).
    ThinkTags,
}

/// A tool call in an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedCall {
    /// Its id; `None` numbers it `call_{request}_{position}` (both from 1), unique in
    /// the conversation.
    pub id: Option<String>,
    /// The tool's name.
    pub name: String,
    /// The arguments as sent on the wire: usually JSON text, but a test may send
    /// anything, invalid JSON included.
    pub arguments: String,
}

impl ScriptedCall {
    /// A call with JSON arguments.
    pub fn new(name: impl Into<String>, arguments: Value) -> Self {
        Self {
            id: None,
            name: name.into(),
            arguments: arguments.to_string(),
        }
    }

    /// A call whose arguments are this exact text (for invalid-argument tests).
    pub fn raw(name: impl Into<String>, arguments: impl Into<String>) -> Self {
        Self {
            id: None,
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    /// Sets its id.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
}

impl<N: Into<String>> From<(N, Value)> for ScriptedCall {
    fn from((name, arguments): (N, Value)) -> Self {
        Self::new(name, arguments)
    }
}

#[derive(Debug, Clone, Default)]
struct Answer {
    content: Option<String>,
    reasoning: Option<(ReasoningShape, String)>,
    calls: Vec<ScriptedCall>,
    usage: Option<(u32, u32)>,
    finish_reason: Option<String>,
}

type Responder = Arc<dyn Fn(&Value) -> Step + Send + Sync>;

#[derive(Clone)]
enum Kind {
    Answer(Answer),
    Error {
        status: u16,
        retry_after: Option<String>,
        body: String,
    },
    Raw {
        status: u16,
        content_type: String,
        body: String,
    },
    Sse(Vec<String>),
    Respond(Responder),
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Answer(answer) => f.debug_tuple("Answer").field(answer).finish(),
            Self::Error { status, .. } => write!(f, "Error({status})"),
            Self::Raw { status, .. } => write!(f, "Raw({status})"),
            Self::Sse(events) => write!(f, "Sse({} events)", events.len()),
            Self::Respond(_) => f.write_str("Respond(..)"),
        }
    }
}

/// What the server does for one request. Build one with the constructors, then adjust
/// it with the methods (`Step::text("hi").usage(10, 2).delayed(ms(50))`).
#[derive(Debug, Clone)]
pub struct Step {
    kind: Kind,
    delay: Duration,
    chunk_size: usize,
    chunk_delay: Duration,
}

impl Step {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            delay: Duration::ZERO,
            chunk_size: 4,
            chunk_delay: Duration::ZERO,
        }
    }

    fn answer(answer: Answer) -> Self {
        Self::new(Kind::Answer(answer))
    }

    /// An answer with this text and `finish_reason: "stop"`.
    pub fn text(text: impl Into<String>) -> Self {
        Self::answer(Answer {
            content: Some(text.into()),
            ..Answer::default()
        })
    }

    /// An answer calling one tool, `finish_reason: "tool_calls"`.
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Self {
        Self::tool_calls([ScriptedCall::new(name, arguments)])
    }

    /// An answer calling several tools at once (parallel tool calls), in order:
    /// `Step::tool_calls([("a", json!({})), ("b", json!({}))])`.
    pub fn tool_calls<C: Into<ScriptedCall>>(calls: impl IntoIterator<Item = C>) -> Self {
        Self::answer(Answer {
            calls: calls.into_iter().map(Into::into).collect(),
            ..Answer::default()
        })
    }

    /// An HTTP error with OpenAI's error body (`{"error":{"message",…}}`); chain
    /// [`retry_after`](Self::retry_after) or [`body`](Self::body) to adjust it.
    pub fn status(status: u16) -> Self {
        let message = format!("scripted HTTP {status}");
        Self::new(Kind::Error {
            status,
            retry_after: None,
            body: json!({ "error": { "message": message, "type": "scripted", "code": status } })
                .to_string(),
        })
    }

    /// Waits this long, then answers `"(delayed answer)"`: for client timeouts. Any
    /// other step can be delayed with [`delayed`](Self::delayed).
    pub fn delay(delay: Duration) -> Self {
        Self::text("(delayed answer)").delayed(delay)
    }

    /// A 200 response with this body as `application/json`, verbatim: for malformed
    /// answers.
    pub fn raw(body: impl Into<String>) -> Self {
        Self::new(Kind::Raw {
            status: 200,
            content_type: "application/json".into(),
            body: body.into(),
        })
    }

    /// A 200 `text/event-stream` response with these events, each sent as
    /// `data: {event}\n\n`, verbatim (no `[DONE]` added): for exact chunking and broken
    /// streams.
    pub fn sse<S: Into<String>>(events: impl IntoIterator<Item = S>) -> Self {
        Self::new(Kind::Sse(events.into_iter().map(Into::into).collect()))
    }

    /// Decides the step when the request arrives, from its body: for tests that react
    /// to what was sent (echo a tool result, fail when a tool is missing).
    pub fn respond_with(respond: impl Fn(&Value) -> Step + Send + Sync + 'static) -> Self {
        Self::new(Kind::Respond(Arc::new(respond)))
    }

    /// Adds reasoning to an answer, in the shape a given server uses.
    pub fn with_reasoning(mut self, shape: ReasoningShape, text: impl Into<String>) -> Self {
        if let Kind::Answer(answer) = &mut self.kind {
            answer.reasoning = Some((shape, text.into()));
        }
        self
    }

    /// Adds text to an answer (for an answer with both text and tool calls).
    pub fn content(mut self, text: impl Into<String>) -> Self {
        if let Kind::Answer(answer) = &mut self.kind {
            answer.content = Some(text.into());
        }
        self
    }

    /// Reports token usage (`prompt_tokens`, `completion_tokens`); streamed, it comes
    /// in a last chunk with no choices, as OpenAI sends it for `include_usage`.
    pub fn usage(mut self, prompt_tokens: u32, completion_tokens: u32) -> Self {
        if let Kind::Answer(answer) = &mut self.kind {
            answer.usage = Some((prompt_tokens, completion_tokens));
        }
        self
    }

    /// Overrides the finish reason (`"length"`, `"content_filter"`, …).
    pub fn finish_reason(mut self, reason: impl Into<String>) -> Self {
        if let Kind::Answer(answer) = &mut self.kind {
            answer.finish_reason = Some(reason.into());
        }
        self
    }

    /// Sends `Retry-After: {seconds}` with an error.
    pub fn retry_after(self, seconds: u64) -> Self {
        self.retry_after_header(seconds.to_string())
    }

    /// Sends `Retry-After` as an HTTP date this far in the future.
    pub fn retry_after_date(self, wait: Duration) -> Self {
        self.retry_after_header(httpdate::fmt_http_date(SystemTime::now() + wait))
    }

    fn retry_after_header(mut self, value: String) -> Self {
        if let Kind::Error { retry_after, .. } = &mut self.kind {
            *retry_after = Some(value);
        }
        self
    }

    /// Replaces an error's body.
    pub fn body(mut self, text: impl Into<String>) -> Self {
        if let Kind::Error { body, .. } = &mut self.kind {
            *body = text.into();
        }
        self
    }

    /// Waits this long before answering.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// When streamed, text and arguments go in pieces of this many characters
    /// (default 4, so tags and JSON are split mid-token as real servers do).
    pub fn chunk_size(mut self, chars: usize) -> Self {
        self.chunk_size = chars.max(1);
        self
    }

    /// When streamed, waits this long before each event.
    pub fn chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = delay;
        self
    }
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The JSON body (`Value::Null` if it was not JSON).
    pub body: Value,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// When it arrived.
    pub at: Instant,
}

struct Shared {
    script: Mutex<VecDeque<Step>>,
    received: Mutex<Vec<Received>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide the script from the others.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running scripted server; it shuts down when dropped.
pub struct ScriptedServer {
    address: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for ScriptedServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedServer")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl ScriptedServer {
    /// Binds `127.0.0.1:0` and serves `script`, one step per request, in order.
    ///
    /// # Panics
    /// If no local port can be bound: a test environment problem, not a test result.
    pub async fn start(script: impl IntoIterator<Item = Step>) -> Self {
        let shared = Arc::new(Shared {
            script: Mutex::new(script.into_iter().collect()),
            received: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port for the scripted model");
        let address = listener.local_addr().expect("the bound address");
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(shared.clone());
        let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = signal.await;
            });
            if let Err(error) = server.await {
                eprintln!("scripted model server failed: {error}");
            }
        });
        Self {
            address,
            shared,
            shutdown: Some(shutdown),
            task,
        }
    }

    /// The API base, `http://127.0.0.1:{port}/v1`, as an OpenAI client expects it.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    /// The bodies of all requests received so far, in order.
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.shared.received)
            .iter()
            .map(|r| r.body.clone())
            .collect()
    }

    /// All requests received so far, with their headers of interest and arrival times.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    /// Appends steps to the script.
    pub fn push(&self, steps: impl IntoIterator<Item = Step>) {
        lock(&self.shared.script).extend(steps);
    }

    /// How many steps are still unused: a test can assert the model was asked as
    /// often as it expected.
    pub fn remaining(&self) -> usize {
        lock(&self.shared.script).len()
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        // Connections held open by a delayed step must not keep the server alive.
        self.task.abort();
    }
}

async fn completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let number = {
        let mut received = lock(&shared.received);
        received.push(Received {
            body: body.clone(),
            authorization: headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            at: Instant::now(),
        });
        received.len()
    };
    let Some(mut step) = lock(&shared.script).pop_front() else {
        let message = format!(
            "the scripted model has no step left for request {number}: {}",
            summarise(&body)
        );
        return error_response(
            500,
            None,
            json!({ "error": { "message": message } }).to_string(),
        );
    };
    while let Kind::Respond(respond) = &step.kind {
        let next = respond(&body);
        step = next;
    }
    if !step.delay.is_zero() {
        tokio::time::sleep(step.delay).await;
    }
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("scripted")
        .to_owned();
    match step.kind {
        Kind::Answer(answer) if stream => {
            let events = stream_events(&answer, &model, number, step.chunk_size);
            sse_response(events, step.chunk_delay)
        }
        Kind::Answer(answer) => json_response(complete_answer(&answer, &model, number)),
        Kind::Error {
            status,
            retry_after,
            body,
        } => error_response(status, retry_after, body),
        Kind::Raw {
            status,
            content_type,
            body,
        } => Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Kind::Sse(events) => sse_response(events, step.chunk_delay),
        Kind::Respond(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The last message of a request, so "no step left" says which turn was unexpected.
fn summarise(body: &Value) -> String {
    let last = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .map_or_else(|| body.to_string(), Value::to_string);
    let mut text: String = last.chars().take(300).collect();
    if last.chars().count() > 300 {
        text.push('…');
    }
    format!("last message {text}")
}

fn error_response(status: u16, retry_after: Option<String>, body: String) -> Response {
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(value) = retry_after {
        builder = builder.header(header::RETRY_AFTER, value);
    }
    builder
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn json_response(value: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn sse_response(events: Vec<String>, chunk_delay: Duration) -> Response {
    let stream = futures::stream::iter(events).then(move |event| async move {
        if !chunk_delay.is_zero() {
            tokio::time::sleep(chunk_delay).await;
        }
        Ok::<_, std::convert::Infallible>(Bytes::from(format!("data: {event}\n\n")))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn call_id(call: &ScriptedCall, request: usize, position: usize) -> String {
    call.id
        .clone()
        .unwrap_or_else(|| format!("call_{request}_{}", position + 1))
}

fn finish_reason(answer: &Answer) -> String {
    answer.finish_reason.clone().unwrap_or_else(|| {
        if answer.calls.is_empty() {
            "stop".into()
        } else {
            "tool_calls".into()
        }
    })
}

fn usage_json(answer: &Answer) -> Value {
    answer.usage.map_or(Value::Null, |(prompt, completion)| {
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        })
    })
}

/// The content as sent: with a `<think>` block in front for that shape.
fn wire_content(answer: &Answer) -> Option<String> {
    match &answer.reasoning {
        Some((ReasoningShape::ThinkTags, reasoning)) => Some(format!(
            "<think>\n{reasoning}\n</think>\n\n{}",
            answer.content.as_deref().unwrap_or_default()
        )),
        _ => answer.content.clone(),
    }
}

fn complete_answer(answer: &Answer, model: &str, request: usize) -> Value {
    let mut message = json!({
        "role": "assistant",
        "content": wire_content(answer),
    });
    match &answer.reasoning {
        Some((ReasoningShape::ReasoningContent, text)) => {
            message["reasoning_content"] = json!(text);
        }
        Some((ReasoningShape::Reasoning, text)) => message["reasoning"] = json!(text),
        _ => {}
    }
    if !answer.calls.is_empty() {
        message["tool_calls"] = answer
            .calls
            .iter()
            .enumerate()
            .map(|(i, call)| {
                json!({
                    "id": call_id(call, request, i),
                    "type": "function",
                    "function": { "name": call.name, "arguments": call.arguments },
                })
            })
            .collect();
    }
    let mut body = json!({
        "id": format!("chatcmpl-scripted-{request}"),
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(answer),
        }],
    });
    let usage = usage_json(answer);
    if !usage.is_null() {
        body["usage"] = usage;
    }
    body
}

fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// The answer as OpenAI streams it: a role chunk, reasoning and content deltas,
/// tool calls (id and name first, then argument fragments, by index), a finish chunk,
/// a usage chunk with no choices, and `[DONE]`.
fn stream_events(answer: &Answer, model: &str, request: usize, size: usize) -> Vec<String> {
    let id = format!("chatcmpl-scripted-{request}");
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        })
        .to_string()
    };
    let mut events = vec![chunk(
        json!({ "role": "assistant", "content": "" }),
        Value::Null,
    )];
    let field = match &answer.reasoning {
        Some((ReasoningShape::ReasoningContent, text)) => Some(("reasoning_content", text)),
        Some((ReasoningShape::Reasoning, text)) => Some(("reasoning", text)),
        _ => None,
    };
    if let Some((field, text)) = field {
        for piece in pieces(text, size) {
            events.push(chunk(json!({ field: piece }), Value::Null));
        }
    }
    if let Some(content) = wire_content(answer) {
        for piece in pieces(&content, size) {
            events.push(chunk(json!({ "content": piece }), Value::Null));
        }
    }
    for (index, call) in answer.calls.iter().enumerate() {
        events.push(chunk(
            json!({ "tool_calls": [{
                "index": index,
                "id": call_id(call, request, index),
                "type": "function",
                "function": { "name": call.name, "arguments": "" },
            }] }),
            Value::Null,
        ));
        for piece in pieces(&call.arguments, size) {
            events.push(chunk(
                json!({ "tool_calls": [{ "index": index, "function": { "arguments": piece } }] }),
                Value::Null,
            ));
        }
    }
    events.push(chunk(json!({}), json!(finish_reason(answer))));
    let usage = usage_json(answer);
    if !usage.is_null() {
        events.push(
            json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [],
                "usage": usage,
            })
            .to_string(),
        );
    }
    events.push("[DONE]".into());
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(server: &ScriptedServer, body: Value) -> (u16, HeaderMap, String) {
        let address = server.address;
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let body = body.to_string();
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        let raw = String::from_utf8(raw).expect("utf-8");
        let (head, rest) = raw.split_once("\r\n\r\n").expect("a head");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status");
        let mut headers = HeaderMap::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(": ") {
                headers.insert(
                    header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                    value.parse().expect("value"),
                );
            }
        }
        (status, headers, rest.to_owned())
    }

    #[tokio::test]
    async fn answers_in_order_then_names_the_unexpected_request() {
        let server = ScriptedServer::start([
            Step::text("hello").usage(3, 1),
            Step::status(429).retry_after(7),
        ])
        .await;
        let (status, _, body) = post(&server, json!({"model": "m", "messages": []})).await;
        assert_eq!(status, 200);
        let body: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(body["choices"][0]["message"]["content"], "hello");
        assert_eq!(body["usage"]["prompt_tokens"], 3);

        let (status, headers, _) = post(&server, json!({"messages": []})).await;
        assert_eq!(status, 429);
        assert_eq!(
            headers.get(header::RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"7"[..])
        );

        let (status, _, body) = post(
            &server,
            json!({"messages": [{"role": "user", "content": "one more?"}]}),
        )
        .await;
        assert_eq!(status, 500);
        assert!(
            body.contains("request 3") && body.contains("one more?"),
            "{body}"
        );
        assert_eq!(server.requests().len(), 3);
        assert_eq!(server.remaining(), 0);
    }

    #[test]
    fn streamed_answers_carry_every_part_in_openai_order() {
        let answer = Answer {
            content: Some("Hi there".into()),
            reasoning: Some((ReasoningShape::ReasoningContent, "why".into())),
            calls: vec![ScriptedCall::new("f", json!({"a": 1}))],
            usage: Some((5, 2)),
            finish_reason: None,
        };
        let events = stream_events(&answer, "m", 1, 3);
        let parsed: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).expect("json"))
            .collect();
        let deltas: String = parsed
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(deltas, "Hi there");
        let reasoning: String = parsed
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
            .collect();
        assert_eq!(reasoning, "why");
        let arguments: String = parsed
            .iter()
            .filter_map(|c| {
                c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            })
            .collect();
        assert_eq!(arguments, r#"{"a":1}"#);
        assert_eq!(
            parsed[parsed.len() - 2]["choices"][0]["finish_reason"],
            "tool_calls"
        );
        assert_eq!(parsed[parsed.len() - 1]["usage"]["completion_tokens"], 2);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    }
}
