//! The embedded provider: a small GGUF chat model (SmolLM2-135M-Instruct) run in-process
//! on the CPU with candle, so Cairn answers with zero configuration.
//!
//! - [`tokenizer`]: byte-level BPE from the GGUF's vocabulary (candle's helper
//!   mis-tokenizes SmolLM2).
//! - [`template`]: the GGUF's chat template; tools described in the system message.
//! - [`constrain`]: llguidance grammars so a reply is plain text or one valid tool call.
//! - [`session`]: the decode loop and the KV cache snapshots of fixed prompt prefixes.
//! - this module: loading, configuration and the [`ChatModel`] implementation, which runs
//!   inference on Tokio's blocking pool so the async executor never stalls.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cairn_model::ModelError> {
//! use cairn_model::{ChatMessage, ChatModel, ChatRequest, EmbeddedConfig, EmbeddedModel};
//! let model = EmbeddedModel::load(EmbeddedConfig::default())?;
//! let request = ChatRequest { messages: vec![ChatMessage::user("Hi!")], ..Default::default() };
//! let answer = model.chat(&request).await?;
//! # Ok(()) }
//! ```

mod constrain;
mod session;
mod template;
mod tokenizer;
mod weights;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once};

use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc};

pub use session::{RawTimings, Timings};
pub use tokenizer::Tokenizer;
pub use weights::WeightFormat;

use crate::{ChatDelta, ChatModel, ChatRequest, ChatResponse, ChatStream, ModelError};
use constrain::Constrainer;
use session::{Engine, PrefixCache};
use template::ChatTemplate;
use weights::GgufFile;

/// The GGUF file the provider loads by default, inside [`default_model_dir`].
pub const DEFAULT_GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where models live: `$CAIRN_MODEL_DIR`, else `$HOME/.cache/cairn/models` (where
/// `scripts/fetch-models` puts them).
pub fn default_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CAIRN_MODEL_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/cairn/models")
}

/// How to load and run the embedded model.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedConfig {
    /// The GGUF file (default: [`DEFAULT_GGUF`] in [`default_model_dir`]).
    pub gguf_path: PathBuf,
    /// CPU threads candle uses inside one matrix product. Process-wide: candle reads it
    /// from `CANDLE_NUM_THREADS`/`RAYON_NUM_THREADS`, which the first load sets unless
    /// the environment already does. Default 1: candle's pool busy-waits, and on a
    /// 2-core machine shared with a server more threads make things slower, not faster.
    pub threads: usize,
    /// Default cap on generated tokens when a request sets none.
    pub max_tokens: u32,
    /// How many generations run at once; more wait their turn (default 2). Each one
    /// takes `threads` cores while it runs.
    pub max_concurrent: usize,
    /// How many fixed prefixes (system prompt plus tools) keep a KV-cache snapshot.
    pub prefix_cache: usize,
    /// How the weights are held in memory (default: re-quantized to Q8_0 for speed).
    pub weight_format: WeightFormat,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            gguf_path: default_model_dir().join(DEFAULT_GGUF),
            threads: 1,
            max_tokens: 256,
            max_concurrent: 2,
            prefix_cache: 8,
            weight_format: WeightFormat::default(),
        }
    }
}

/// The embedded GGUF chat model; cheap to share (`Arc` inside), one copy of the weights
/// however many requests run.
#[derive(Clone)]
pub struct EmbeddedModel {
    engine: Arc<Engine>,
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for EmbeddedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedModel")
            .field("name", &self.engine.name)
            .finish_non_exhaustive()
    }
}

impl EmbeddedModel {
    /// Loads the model (blocking: about a second; call it before serving, or from
    /// `spawn_blocking`). Fails with a clear message when the file is missing, is not a
    /// llama GGUF, or lacks its tokenizer or chat template.
    pub fn load(config: EmbeddedConfig) -> Result<Self, ModelError> {
        set_threads(config.threads.max(1));
        let file = GgufFile::open(&config.gguf_path)?;
        let tokenizer = Arc::new(Tokenizer::from_gguf(&file.content)?);
        let template_src = file
            .metadata_str("tokenizer.chat_template")
            .ok_or_else(|| {
                ModelError::Embedded(
                    "the GGUF has no chat template (`tokenizer.chat_template`)".into(),
                )
            })?;
        let template = ChatTemplate::new(template_src)?;
        let name = file
            .metadata_str("general.name")
            .map(str::to_owned)
            .or_else(|| {
                config
                    .gguf_path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "embedded".into());
        let eos = tokenizer.token_id("<|im_end|>").ok_or_else(|| {
            ModelError::Embedded(
                "the vocabulary has no `<|im_end|>` token (not a ChatML model)".into(),
            )
        })?;
        let mut stop_tokens = vec![eos];
        stop_tokens.extend(tokenizer.token_id("<|endoftext|>"));
        let constrainer = Constrainer::new(tokenizer.clone(), eos)?;
        let base = file.into_weights(config.weight_format)?;
        let engine = Engine {
            base,
            tokenizer,
            template,
            constrainer,
            stop_tokens,
            max_tokens: config.max_tokens,
            name,
            prefixes: Mutex::new(PrefixCache::new(config.prefix_cache)),
        };
        Ok(Self {
            engine: Arc::new(engine),
            slots: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
        })
    }

    /// The model's tokenizer (tests check it against known ids).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.engine.tokenizer
    }

    /// Prefix KV-cache hits and misses since load.
    pub fn prefix_cache_stats(&self) -> (u64, u64) {
        self.engine.prefix_stats()
    }

    /// Answers on the calling thread and reports timings: for benchmarks, which measure
    /// the engine without the async hand-off.
    pub fn chat_blocking(
        &self,
        request: &ChatRequest,
    ) -> Result<(ChatResponse, Timings), ModelError> {
        self.engine.generate(request, &mut |_| true)
    }

    /// Raw prompt and decode speed for benchmarks: `prompt` (already in chat-template
    /// form) from an empty KV cache, then `new_tokens` greedy tokens, end-of-turn ignored,
    /// the same measurement as the llama.cpp reference script.
    pub fn measure_raw(&self, prompt: &str, new_tokens: usize) -> Result<RawTimings, ModelError> {
        self.engine.measure_raw(prompt, new_tokens)
    }
}

/// Applies the thread count once per process, before candle first reads it. Whichever
/// model loads first decides: the retrieval embedder calls this with the embedded
/// model's default (1), because a candle pool sized to every core busy-waits and, on a
/// shared 2-core machine, made generation ~3× slower when the embedder loaded first.
pub(crate) fn set_threads(threads: usize) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for var in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
            if std::env::var_os(var).is_none() {
                // SAFETY: `set_var` races with concurrent reads of the environment from
                // other threads. It runs once, during model load and before any candle or
                // rayon code reads these variables; no other code in Cairn writes them.
                unsafe { std::env::set_var(var, threads.to_string()) };
            }
        }
    });
}

#[async_trait::async_trait]
impl ChatModel for EmbeddedModel {
    fn name(&self) -> &str {
        &self.engine.name
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ModelError::Embedded(e.to_string()))?;
        let engine = self.engine.clone();
        let request = request.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            engine.generate(&request, &mut |_| true).map(|(r, _)| r)
        })
        .await
        .map_err(|e| ModelError::Embedded(format!("the inference task failed: {e}")))?
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, ModelError> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ModelError::Embedded(e.to_string()))?;
        let engine = self.engine.clone();
        let request = request.clone();
        let (tx, rx) = mpsc::channel::<Result<ChatDelta, ModelError>>(64);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let result = engine.generate(&request, &mut |d| tx.blocking_send(Ok(d)).is_ok());
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(e));
            }
        });
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|d| (d, rx)) });
        Ok(stream.boxed())
    }
}
