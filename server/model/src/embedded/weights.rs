//! Reading the GGUF: checking it is a llama model, optionally re-quantizing its weights to
//! a type candle has SIMD kernels for, and building candle's `ModelWeights`.
//!
//! candle 0.11.1 multiplies Q4_1 blocks with a scalar loop; Q8_0 and Q4_0 have AVX2 (and
//! here AVX-512 VNNI) kernels. Re-quantizing Q4_1 to Q8_0 at load is close to lossless
//! (Q8_0 has 256 levels per block where Q4_1 had 16) and makes prompts markedly faster.

use std::fs::File;
use std::io::{BufReader, Cursor};
use std::path::Path;

use candle_core::Device;
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_transformers::models::quantized_llama::ModelWeights;

use crate::ModelError;

/// How the weights are held in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WeightFormat {
    /// As stored in the file (SmolLM2's file: Q4_1, which candle runs without SIMD).
    AsStored,
    /// Q4_1/Q4_0/Q5_x tensors re-quantized to Q8_0 at load: the fastest here, and the
    /// closest to the stored values.
    #[default]
    Q8_0,
    /// Q4_1/Q5_x tensors re-quantized to Q4_0: about the speed of Q8_0 with less memory,
    /// but a coarser approximation.
    Q4_0,
}

/// A parsed GGUF file: its metadata (tokenizer, template) and open tensor reader.
pub struct GgufFile {
    /// Header and metadata.
    pub content: gguf_file::Content,
    reader: BufReader<File>,
}

impl GgufFile {
    /// Opens and parses the header; the error says how to get the model when it is missing,
    /// and rejects architectures other than llama.
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let file = File::open(path).map_err(|e| {
            ModelError::Embedded(format!(
                "cannot open the model file {}: {e}. Run scripts/fetch-models (or set \
                 CAIRN_MODEL_DIR to the folder holding it).",
                path.display()
            ))
        })?;
        let mut reader = BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| {
            ModelError::Embedded(format!(
                "{} is not a readable GGUF file: {e}",
                path.display()
            ))
        })?;
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "llama" {
            return Err(ModelError::Embedded(format!(
                "{} is a `{arch}` model; the embedded provider runs llama-architecture GGUF \
                 models only",
                path.display()
            )));
        }
        Ok(Self { content, reader })
    }

    /// A metadata string, if present.
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.content
            .metadata
            .get(key)
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
    }

    /// Builds the model on the CPU, re-quantizing as `format` asks.
    pub fn into_weights(mut self, format: WeightFormat) -> Result<ModelWeights, ModelError> {
        let device = Device::Cpu;
        let err = |e: candle_core::Error| ModelError::Embedded(format!("loading the weights: {e}"));
        let target = match format {
            WeightFormat::AsStored => {
                return ModelWeights::from_gguf(self.content, &mut self.reader, &device)
                    .map_err(err);
            }
            WeightFormat::Q8_0 => GgmlDType::Q8_0,
            WeightFormat::Q4_0 => GgmlDType::Q4_0,
        };
        // Re-quantize tensor by tensor into an in-memory GGUF, then load that: candle's
        // loader only reads GGUF, and this keeps its tensor naming and layout logic.
        let mut names: Vec<String> = self.content.tensor_infos.keys().cloned().collect();
        names.sort();
        let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
        for name in names {
            let t = self
                .content
                .tensor(&mut self.reader, &name, &device)
                .map_err(err)?;
            let convert = matches!(
                t.dtype(),
                GgmlDType::Q4_1 | GgmlDType::Q4_0 | GgmlDType::Q5_0 | GgmlDType::Q5_1
            ) && t.dtype() != target
                && t.shape()
                    .dims()
                    .last()
                    .is_some_and(|d| d % target.block_size() == 0);
            let t = if convert {
                let f = t.dequantize(&device).map_err(err)?;
                QTensor::quantize(&f, target).map_err(err)?
            } else {
                t
            };
            tensors.push((name, t));
        }
        let metadata: Vec<(&str, &gguf_file::Value)> = self
            .content
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let tensor_refs: Vec<(&str, &QTensor)> =
            tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut buf = Cursor::new(Vec::new());
        gguf_file::write(&mut buf, &metadata, &tensor_refs).map_err(err)?;
        drop(tensors);
        buf.set_position(0);
        let content = gguf_file::Content::read(&mut buf).map_err(err)?;
        ModelWeights::from_gguf(content, &mut buf, &device).map_err(err)
    }
}
