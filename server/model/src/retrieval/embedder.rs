//! all-MiniLM-L6-v2 sentence embeddings on candle's BERT.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::ModelError;

/// The width of an all-MiniLM-L6-v2 embedding.
pub const EMBEDDING_DIM: usize = 384;

/// The model's folder name under the model cache, as `scripts/fetch-models` lays it out.
pub const MINILM_DIR_NAME: &str = "all-MiniLM-L6-v2";

/// Tokens per text; sentence-transformers' `max_seq_length` for this model. Requests and
/// tool descriptions are far shorter; longer texts are cut, not rejected, because a
/// ranking on the first 256 tokens is still a good ranking.
const MAX_TOKENS: usize = 256;

/// Texts per forward pass: big enough to amortise the per-call overhead, small enough that
/// one long text does not pad a huge batch.
const BATCH: usize = 32;

/// A sentence-embedding model: text in, a unit-length 384-dimensional vector out, so that
/// the cosine similarity of two texts is a plain dot product.
///
/// Loading takes a few hundred milliseconds and ~90 MB; load once and share (it is
/// `Send + Sync`). Every call is CPU-bound and blocking: async callers should go through
/// [`crate::retrieval::ToolIndex::rank_async`] or `spawn_blocking`.
pub struct SentenceEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl std::fmt::Debug for SentenceEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEmbedder").finish_non_exhaustive()
    }
}

impl SentenceEmbedder {
    /// Where `scripts/fetch-models` puts the model: `$CAIRN_MODEL_DIR`, else
    /// `$CAIRN_CACHE/models`, else `$HOME/.cache/cairn/models`, then `all-MiniLM-L6-v2`.
    pub fn default_dir() -> PathBuf {
        let models = std::env::var_os("CAIRN_MODEL_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("CAIRN_CACHE").map(|c| PathBuf::from(c).join("models")))
            .unwrap_or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_default()
                    .join(".cache/cairn/models")
            });
        models.join(MINILM_DIR_NAME)
    }

    /// Loads `model.safetensors`, `tokenizer.json` and `config.json` from `dir`. A missing
    /// file is reported with the path and the command that fetches it. Unless the
    /// environment sets `CANDLE_NUM_THREADS`, candle then uses one thread per operation
    /// in this process (the embedded model's default), whichever model loads first.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        // candle sizes its CPU pool on first use, for the whole process: fix it before
        // the first forward pass, as the chat model's load would (see `set_threads`).
        crate::embedded::set_threads(crate::EmbeddedConfig::default().threads);
        let read = |name: &str| -> Result<Vec<u8>, ModelError> {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|e| {
                ModelError::Retrieval(format!(
                    "cannot read {}: {e} (run scripts/fetch-models)",
                    path.display()
                ))
            })
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| ModelError::Retrieval(format!("bad config.json: {e}")))?;
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| ModelError::Retrieval(format!("bad tokenizer.json: {e}")))?;
        // The shipped tokenizer pads every text to 128 tokens; pad to the batch's longest
        // instead (masked tokens do not change the mean), and cut where the model was trained.
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| ModelError::Retrieval(format!("tokenizer truncation: {e}")))?;
        let device = Device::Cpu;
        let weights =
            VarBuilder::from_buffered_safetensors(read("model.safetensors")?, DType::F32, &device)
                .map_err(candle_error)?;
        let model = BertModel::load(weights, &config).map_err(candle_error)?;
        if config.hidden_size != EMBEDDING_DIM {
            return Err(ModelError::Retrieval(format!(
                "expected all-MiniLM-L6-v2 (hidden size {EMBEDDING_DIM}), found hidden size {}",
                config.hidden_size
            )));
        }
        Ok(Self {
            model,
            tokenizer,
            device,
        })
    }

    /// Embeds one text.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, ModelError> {
        let mut out = self.embed_batch(&[text])?;
        out.pop()
            .ok_or_else(|| ModelError::Retrieval("no embedding returned".into()))
    }

    /// Embeds many texts, in order, in batches (one forward pass per batch is much cheaper
    /// than one per text). Each result has [`EMBEDDING_DIM`] values and norm 1.
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH) {
            out.extend(self.forward(chunk)?);
        }
        Ok(out)
    }

    /// Tokenize, run BERT, mean-pool over real tokens, L2-normalise: the pipeline
    /// sentence-transformers runs for this model (modules.json: Transformer, Pooling with
    /// mean tokens, Normalize).
    fn forward(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| ModelError::Retrieval(format!("tokenizing: {e}")))?;
        let rows = encodings.len();
        let len = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(rows * len);
        let mut mask = Vec::with_capacity(rows * len);
        for enc in &encodings {
            ids.extend_from_slice(enc.get_ids());
            mask.extend_from_slice(enc.get_attention_mask());
        }
        let ids = Tensor::from_vec(ids, (rows, len), &self.device).map_err(candle_error)?;
        let mask = Tensor::from_vec(mask, (rows, len), &self.device).map_err(candle_error)?;
        let type_ids = ids.zeros_like().map_err(candle_error)?;
        let hidden = self
            .model
            .forward(&ids, &type_ids, Some(&mask))
            .map_err(candle_error)?;
        pool_and_normalise(&hidden, &mask)
            .and_then(|t| t.to_vec2::<f32>())
            .map_err(candle_error)
    }
}

/// Mean of the token vectors where the mask is 1, then divided by its L2 norm.
fn pool_and_normalise(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
    let mean = summed.broadcast_div(&counts)?;
    let norm = mean
        .sqr()?
        .sum_keepdim(1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    mean.broadcast_div(&norm)
}

fn candle_error(e: candle_core::Error) -> ModelError {
    ModelError::Retrieval(format!("embedding model: {e}"))
}
