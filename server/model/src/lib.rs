//! Model providers for Cairn.
//!
//! [`ChatModel`] is the one interface the reasoning loop talks to. Providers: an
//! OpenAI-compatible server (vLLM, llama.cpp's server, Ollama, a cloud endpoint) and the
//! embedded GGUF model run in-process; tool retrieval ranks installed tools against a
//! request so only the best few are offered.
#![warn(missing_docs)]

mod chat;
pub mod embedded;
mod error;
pub mod grounding;
mod openai;
pub mod reasoning;
pub mod retrieval;

pub use chat::{
    ChatDelta, ChatMessage, ChatModel, ChatRequest, ChatResponse, ChatStream,
    FORCED_CALL_MIN_TOKENS, FinishReason, Role, RunClock, ToolCall, ToolChoice, ToolDefinition,
    Usage, forced_call_token_budget,
};
pub use embedded::{EmbeddedConfig, EmbeddedModel};
pub use error::ModelError;
pub use openai::{ApiKey, OpenAiCompatible, OpenAiConfig, OpenAiConfigError, collect_stream};
