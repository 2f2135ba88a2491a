//! One generation: the prompt, the reused prefix KV cache, the decode loop under the
//! grammar, and the reply parsed into text or a tool call as tokens arrive.
//!
//! `ModelWeights` is `Clone` with shared weights, so a clone taken right after the fixed
//! prefix (system prompt plus tool definitions) is a snapshot of its KV cache: later
//! requests with the same prefix clone it and only run their own tokens.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::{MAX_SEQ_LEN, ModelWeights};

use super::constrain::{Constrainer, ReplyShape, apply_mask};
use super::template::{ChatTemplate, fixed_prefix, template_messages};
use super::tokenizer::{TokenId, Tokenizer, Utf8Stream};
use crate::grounding::Grounding;
use crate::{
    ChatDelta, ChatMessage, ChatRequest, ChatResponse, FinishReason, ModelError, Role, ToolCall,
    Usage,
};

/// Prompt tokens run through the model per forward pass: bounds the attention matrix.
const PREFILL_CHUNK: usize = 256;

/// Everything one loaded model needs to answer, shared by all requests.
pub struct Engine {
    /// The weights with an empty KV cache; every request starts from a clone.
    pub base: ModelWeights,
    /// The GGUF's tokenizer.
    pub tokenizer: Arc<Tokenizer>,
    /// The GGUF's chat template.
    pub template: ChatTemplate,
    /// Grammar compiler for constrained replies.
    pub constrainer: Constrainer,
    /// Tokens that end a reply (`<|im_end|>`, `<|endoftext|>`).
    pub stop_tokens: Vec<TokenId>,
    /// Default cap on generated tokens.
    pub max_tokens: u32,
    /// The model's name for responses.
    pub name: String,
    /// Snapshots after recently seen fixed prefixes.
    pub prefixes: Mutex<PrefixCache>,
}

/// A KV-cache snapshot after a prefix's tokens.
pub struct PrefixEntry {
    /// The prefix's tokens.
    pub tokens: Vec<TokenId>,
    /// The model right after them.
    pub weights: ModelWeights,
}

/// A small LRU of prefix snapshots keyed by the prefix's text (each costs about
/// 2 × layers × tokens × kv-width floats, ~0.3 MB per 100 tokens for SmolLM2-135M).
pub struct PrefixCache {
    capacity: usize,
    entries: Vec<(String, Arc<PrefixEntry>)>,
    /// Lookups answered from the cache, for tests and metrics.
    pub hits: u64,
    /// Lookups that had to run the prefix.
    pub misses: u64,
}

impl PrefixCache {
    /// An empty cache holding at most `capacity` prefixes (0 disables it).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Vec::new(),
            hits: 0,
            misses: 0,
        }
    }

    fn get(&mut self, key: &str) -> Option<Arc<PrefixEntry>> {
        let pos = self.entries.iter().position(|(k, _)| k == key)?;
        let entry = self.entries.remove(pos);
        let value = entry.1.clone();
        self.entries.insert(0, entry);
        Some(value)
    }

    fn put(&mut self, key: String, value: Arc<PrefixEntry>) {
        if self.capacity == 0 {
            return;
        }
        self.entries.retain(|(k, _)| *k != key);
        self.entries.insert(0, (key, value));
        self.entries.truncate(self.capacity);
    }
}

/// Timings of one generation, for benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Prompt tokens actually run (those after a cached prefix).
    pub prompt_tokens_run: usize,
    /// Seconds spent on them.
    pub prompt_secs: f64,
    /// Seconds from the start to the first generated token.
    pub first_token_secs: f64,
    /// Tokens generated.
    pub generated: usize,
    /// Seconds spent generating after the first token.
    pub decode_secs: f64,
}

fn candle_err(e: candle_core::Error) -> ModelError {
    ModelError::Embedded(format!("inference: {e}"))
}

impl Engine {
    /// Answers one request, calling `emit` with each delta as it is decoded; `emit`
    /// returning `false` (the stream was dropped) stops generation early.
    pub fn generate(
        &self,
        request: &ChatRequest,
        emit: &mut dyn FnMut(ChatDelta) -> bool,
    ) -> Result<(ChatResponse, Timings), ModelError> {
        let start = Instant::now();
        let mut timings = Timings::default();
        let shape = ReplyShape::for_request(&request.tools, &request.tool_choice)?;
        // A call's arguments come from the conversation, not from the tool's prompt.
        let grounding = Grounding::new(&request.messages, request.clock.as_ref());
        let mut matcher = self.constrainer.matcher(&shape, Some(&grounding))?;

        let messages = template_messages(&request.messages, &request.tools);
        let prompt = self.template.render(&messages, true)?;
        let tokens = self.tokenizer.encode_with_specials(&prompt);
        let max_new = request.max_tokens.unwrap_or(self.max_tokens) as usize;
        if tokens.len() + 1 >= MAX_SEQ_LEN {
            return Err(ModelError::Embedded(format!(
                "the prompt has {} tokens; the model's context holds {MAX_SEQ_LEN}",
                tokens.len()
            )));
        }
        let max_new = max_new.min(MAX_SEQ_LEN - tokens.len() - 1);

        // Start from the snapshot after the fixed prefix when there is one.
        let (mut model, mut pos) = match fixed_prefix(&self.template, &messages)? {
            Some(prefix) if prompt.starts_with(&prefix) => {
                let entry = self.prefix_entry(prefix)?;
                if tokens.starts_with(&entry.tokens) && entry.tokens.len() < tokens.len() {
                    (entry.weights.clone(), entry.tokens.len())
                } else {
                    (self.base.clone(), 0)
                }
            }
            _ => (self.base.clone(), 0),
        };
        let prefill_start = Instant::now();
        let mut logits = self.prefill(&mut model, &tokens[pos..], pos)?;
        timings.prompt_tokens_run = tokens.len() - pos;
        timings.prompt_secs = prefill_start.elapsed().as_secs_f64();
        pos = tokens.len();

        let mut reply = ReplyParser::new(&shape);
        let mut utf8 = Utf8Stream::default();
        let mut generated = 0usize;
        let mut finish = FinishReason::Length;
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let mut decode_start = Instant::now();
        let mut open = true;
        while generated < max_new && open {
            if let Some(m) = matcher.as_mut() {
                apply_mask(m, &mut logits)?;
            }
            let token = pick(&logits, request.temperature, &mut rng);
            if generated == 0 {
                timings.first_token_secs = start.elapsed().as_secs_f64();
                decode_start = Instant::now();
            }
            if self.stop_tokens.contains(&token) || logits[token as usize] == f32::NEG_INFINITY {
                finish = reply.finish_reason();
                break;
            }
            generated += 1;
            if let Some(m) = matcher.as_mut() {
                m.consume_token(token)
                    .map_err(|e| ModelError::Embedded(format!("llguidance: {e}")))?;
            }
            if !self.tokenizer.is_special(token) {
                let text = utf8.push(self.tokenizer.token_to_bytes(token));
                for d in reply.push(&text) {
                    open &= emit(d);
                }
            }
            if matcher.as_ref().is_some_and(|m| m.is_stopped()) {
                finish = reply.finish_reason();
                break;
            }
            if generated < max_new {
                logits = self.step(&mut model, token, pos)?;
                pos += 1;
            }
        }
        timings.generated = generated;
        timings.decode_secs = decode_start.elapsed().as_secs_f64();
        let tail = utf8.finish();
        for d in reply.push(&tail) {
            open &= emit(d);
        }
        let (message, deltas) = reply.finish(finish == FinishReason::Length);
        for d in deltas {
            open &= emit(d);
        }
        let usage = Usage {
            input_tokens: tokens.len() as u32,
            output_tokens: generated as u32,
        };
        let finish = if finish == FinishReason::Length {
            FinishReason::Length
        } else if message.tool_calls.is_empty() {
            FinishReason::Stop
        } else {
            FinishReason::ToolCalls
        };
        let _ = open
            && emit(ChatDelta::Finished {
                reason: finish.clone(),
                usage: Some(usage),
            });
        Ok((
            ChatResponse {
                message,
                finish_reason: finish,
                usage: Some(usage),
                model: self.name.clone(),
            },
            timings,
        ))
    }

    /// The snapshot after `prefix`, computing and caching it on a miss.
    fn prefix_entry(&self, prefix: String) -> Result<Arc<PrefixEntry>, ModelError> {
        {
            let mut cache = self.lock_prefixes();
            if let Some(hit) = cache.get(&prefix) {
                cache.hits += 1;
                return Ok(hit);
            }
        }
        let tokens = self.tokenizer.encode_with_specials(&prefix);
        let mut weights = self.base.clone();
        // The logits are not needed: only the KV cache matters.
        self.prefill(&mut weights, &tokens, 0)?;
        let entry = Arc::new(PrefixEntry { tokens, weights });
        let mut cache = self.lock_prefixes();
        cache.misses += 1;
        cache.put(prefix, entry.clone());
        Ok(entry)
    }

    fn lock_prefixes(&self) -> std::sync::MutexGuard<'_, PrefixCache> {
        // A panic while holding the lock leaves a consistent cache (only whole entries
        // are inserted), so a poisoned lock is still usable.
        self.prefixes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs prompt tokens in chunks; returns the logits after the last one.
    fn prefill(
        &self,
        model: &mut ModelWeights,
        tokens: &[TokenId],
        start: usize,
    ) -> Result<Vec<f32>, ModelError> {
        let mut logits = None;
        let mut pos = start;
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            let input = Tensor::new(chunk, &Device::Cpu)
                .and_then(|t| t.unsqueeze(0))
                .map_err(candle_err)?;
            logits = Some(model.forward(&input, pos).map_err(candle_err)?);
            pos += chunk.len();
        }
        let logits = logits.ok_or_else(|| ModelError::Embedded("an empty prompt".into()))?;
        logits
            .squeeze(0)
            .and_then(|l| l.to_vec1::<f32>())
            .map_err(candle_err)
    }

    fn step(
        &self,
        model: &mut ModelWeights,
        token: TokenId,
        pos: usize,
    ) -> Result<Vec<f32>, ModelError> {
        let input = Tensor::new(&[token], &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .map_err(candle_err)?;
        model
            .forward(&input, pos)
            .and_then(|l| l.squeeze(0))
            .and_then(|l| l.to_vec1::<f32>())
            .map_err(candle_err)
    }

    /// Raw speed, as llama.cpp's reference measures it: `prompt` (chat-template text)
    /// in one go from an empty cache, then `new_tokens` greedy tokens, end-of-turn ignored.
    pub fn measure_raw(&self, prompt: &str, new_tokens: usize) -> Result<RawTimings, ModelError> {
        let tokens = self.tokenizer.encode_with_specials(prompt);
        let mut model = self.base.clone();
        let start = Instant::now();
        let mut logits = self.prefill(&mut model, &tokens, 0)?;
        let prompt_secs = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut rng = fastrand::Rng::with_seed(0);
        for i in 0..new_tokens {
            let token = pick(&logits, None, &mut rng);
            logits = self.step(&mut model, token, tokens.len() + i)?;
        }
        Ok(RawTimings {
            prompt_tokens: tokens.len(),
            prompt_secs,
            new_tokens,
            decode_secs: start.elapsed().as_secs_f64(),
        })
    }

    /// Prefix cache hits and misses so far.
    pub fn prefix_stats(&self) -> (u64, u64) {
        let c = self.lock_prefixes();
        (c.hits, c.misses)
    }
}

/// What [`crate::EmbeddedModel::measure_raw`] measured.
#[derive(Debug, Clone, Copy)]
pub struct RawTimings {
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Seconds to run the prompt.
    pub prompt_secs: f64,
    /// Tokens generated.
    pub new_tokens: usize,
    /// Seconds to generate them.
    pub decode_secs: f64,
}

/// Greedy by default; with a positive temperature, samples from the softmax.
fn pick(logits: &[f32], temperature: Option<f32>, rng: &mut fastrand::Rng) -> TokenId {
    let argmax = logits
        .iter()
        .enumerate()
        .fold((0usize, f32::NEG_INFINITY), |best, (i, &l)| {
            if l > best.1 { (i, l) } else { best }
        })
        .0;
    let Some(t) = temperature.filter(|t| *t > 0.0) else {
        return argmax as TokenId;
    };
    let max = logits[argmax];
    let weights: Vec<f32> = logits.iter().map(|l| ((l - max) / t).exp()).collect();
    let total: f32 = weights.iter().sum();
    let mut r = rng.f32() * total;
    for (i, w) in weights.iter().enumerate() {
        r -= w;
        if r <= 0.0 && *w > 0.0 {
            return i as TokenId;
        }
    }
    argmax as TokenId
}

/// Turns decoded text into deltas: plain text as it comes, or one tool call whose
/// arguments stream once its name is known. The grammar fixes the call's shape to
/// `{"tool": "NAME", "arguments": ARGS}`.
struct ReplyParser {
    mode: Mode,
    buffer: String,
    call_id: String,
    call_name: Option<String>,
    args_start: usize,
    args_sent: usize,
}

#[derive(PartialEq)]
enum Mode {
    Undecided,
    Text,
    Call,
}

const CALL_HEAD: &str = "{\"tool\": \"";
const ARGS_HEAD: &str = "\", \"arguments\": ";

impl ReplyParser {
    /// With no tool on offer (or `tool_choice: none`) the reply is text whatever it
    /// looks like: a model shown earlier calls may write one as text, which must not
    /// become a call to a tool it was not offered.
    fn new(shape: &ReplyShape) -> Self {
        Self {
            mode: match shape {
                ReplyShape::CallOnly(_) => Mode::Call,
                ReplyShape::CallOrAnswer(_) => Mode::Undecided,
                ReplyShape::Free | ReplyShape::AnswerOnly => Mode::Text,
            },
            buffer: String::new(),
            call_id: format!("call_{}", uuid::Uuid::new_v4().simple()),
            call_name: None,
            args_start: 0,
            args_sent: 0,
        }
    }

    fn finish_reason(&self) -> FinishReason {
        if self.mode == Mode::Call {
            FinishReason::ToolCalls
        } else {
            FinishReason::Stop
        }
    }

    fn push(&mut self, text: &str) -> Vec<ChatDelta> {
        if text.is_empty() {
            return Vec::new();
        }
        if self.mode == Mode::Undecided {
            // The grammar lets text start with neither `{` nor whitespace.
            self.mode = if text.starts_with('{') {
                Mode::Call
            } else {
                Mode::Text
            };
        }
        if self.mode == Mode::Text {
            self.buffer.push_str(text);
            return vec![ChatDelta::Text {
                text: text.to_owned(),
            }];
        }
        self.buffer.push_str(text);
        let mut out = Vec::new();
        if self.call_name.is_none()
            && let Some(rest) = self.buffer.strip_prefix(CALL_HEAD)
            && let Some(end) = rest.find(ARGS_HEAD)
        {
            let name = rest[..end].to_owned();
            self.args_start = CALL_HEAD.len() + end + ARGS_HEAD.len();
            self.args_sent = self.args_start;
            out.push(ChatDelta::ToolCallStart {
                index: 0,
                id: self.call_id.clone(),
                name: name.clone(),
            });
            self.call_name = Some(name);
        }
        // Hold back the last character: it may be the call object's closing brace.
        if self.call_name.is_some() {
            let mut upto = self.buffer.len();
            if let Some(c) = self.buffer.chars().last() {
                upto -= c.len_utf8();
            }
            if upto > self.args_sent {
                out.push(ChatDelta::ToolCallArguments {
                    index: 0,
                    fragment: self.buffer[self.args_sent..upto].to_owned(),
                });
                self.args_sent = upto;
            }
        }
        out
    }

    /// The final message, and any deltas still owed. `truncated`: the token cap cut the
    /// reply; an unfinished call is dropped (finish reason `length`), so every call a
    /// response carries is complete and valid. A stream has already shown its start.
    fn finish(self, truncated: bool) -> (ChatMessage, Vec<ChatDelta>) {
        let mut message = ChatMessage::assistant(String::new());
        message.content = None;
        let mut out = Vec::new();
        match self.mode {
            Mode::Undecided => message.content = Some(String::new()),
            Mode::Text => message.content = Some(self.buffer),
            Mode::Call => {
                let complete = !truncated && self.buffer.ends_with('}');
                let end = if complete {
                    self.buffer.len() - 1
                } else {
                    self.buffer.len()
                };
                match self.call_name {
                    Some(_) if !complete => {}
                    Some(name) => {
                        if end > self.args_sent {
                            out.push(ChatDelta::ToolCallArguments {
                                index: 0,
                                fragment: self.buffer[self.args_sent..end].to_owned(),
                            });
                        }
                        message.tool_calls.push(ToolCall {
                            id: self.call_id,
                            name,
                            arguments: self.buffer[self.args_start..end].to_owned(),
                        });
                    }
                    // Cut off before the name was complete: nothing callable.
                    None => message.content = Some(self.buffer),
                }
            }
        }
        message.role = Role::Assistant;
        (message, out)
    }
}
