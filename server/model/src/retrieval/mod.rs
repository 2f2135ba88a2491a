//! Tool retrieval: rank the enabled tools against a request with a small
//! sentence-embedding model (all-MiniLM-L6-v2), helped by lexical (BM25) evidence, so only
//! the best few are offered to the chat model.
//!
//! Why: the embedded SmolLM2-135M cannot be trusted to choose among many tools (its
//! choice follows list position), and any model's prompt grows with every installed tool.
//! Retrieval chooses or narrows first; the chat model fills the arguments. A low best
//! score also says the request probably needs no tool at all.
//!
//! ```no_run
//! use std::sync::Arc;
//! use cairn_model::retrieval::{SentenceEmbedder, ToolCandidate, ToolIndex};
//!
//! # fn main() -> Result<(), cairn_model::ModelError> {
//! let embedder = Arc::new(SentenceEmbedder::load(&SentenceEmbedder::default_dir())?);
//! let tools = vec![ToolCandidate {
//!     plugin: "tasks".into(),
//!     name: "add_task".into(),
//!     description: "Adds a task to the user's to-do list.".into(),
//!     examples: vec!["remind me to call Anna tomorrow".into()],
//! }];
//! let index = ToolIndex::build(embedder, &tools)?;
//! let ranked = index.rank("put 'buy milk' on my list", 3)?;
//! if index.probably_no_tool(&ranked) {
//!     // answer without tools
//! }
//! # Ok(()) }
//! ```

mod embedder;
mod index;
mod instruction;
mod lexical;

pub use embedder::{EMBEDDING_DIM, MINILM_DIR_NAME, SentenceEmbedder};
pub use index::{
    BuildStats, DEFAULT_LEXICAL_WEIGHT, DEFAULT_NO_TOOL_THRESHOLD, DEFAULT_SCORING, IndexOptions,
    PreparedQuery, RankedTool, Scoring, ToolCandidate, ToolIndex,
};
pub use instruction::{MAX_CELL_WORDS, instruction_text};
