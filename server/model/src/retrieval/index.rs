//! The tool index: every enabled tool's description and examples, embedded once, ranked
//! against a request by cosine similarity.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::SentenceEmbedder;
use crate::ModelError;

/// One tool that may be offered to the model, as its plugin's manifest describes it. The
/// model crate knows nothing of manifests (DESIGN.md's crate rules): the caller copies
/// these four fields out of each enabled plugin's tools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCandidate {
    /// The plugin's id; with the name it identifies the tool.
    pub plugin: String,
    /// The tool's name.
    pub name: String,
    /// What the tool does; embedded with the name spelled as words.
    pub description: String,
    /// Example requests from the manifest: the texts users' requests resemble most.
    pub examples: Vec<String>,
}

/// A tool and how well it matches a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedTool {
    /// The tool's name.
    pub name: String,
    /// Its plugin's id.
    pub plugin: String,
    /// Cosine similarity to the request under the index's [`Scoring`], in [-1, 1].
    pub score: f32,
}

/// How a tool's texts' similarities to a request combine into its score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Scoring {
    /// The best single text: one close example is enough evidence.
    Max,
    /// `max_weight * max + (1 - max_weight) * mean` over the tool's texts: damps a tool
    /// that matches only by one stray example.
    Blend {
        /// Weight of the maximum, in [0, 1].
        max_weight: f32,
    },
}

/// Tunable parts of the index, calibrated on `server/model/eval/requests.jsonl` (see
/// BENCHMARKS.md, "Tool selection").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IndexOptions {
    /// How texts' similarities combine.
    pub scoring: Scoring,
    /// Below this best score the request probably needs no tool (small talk, general
    /// knowledge), so the caller may offer none.
    pub no_tool_threshold: f32,
}

impl Default for IndexOptions {
    /// The best measured on the evaluation set.
    fn default() -> Self {
        Self {
            scoring: DEFAULT_SCORING,
            no_tool_threshold: DEFAULT_NO_TOOL_THRESHOLD,
        }
    }
}

/// The default [`Scoring`]: an even blend of max and mean was the best top-1 on the
/// evaluation set (73.9% vs 67.4% for max alone; BENCHMARKS.md, "Tool selection").
pub const DEFAULT_SCORING: Scoring = Scoring::Blend { max_weight: 0.5 };

/// The default no-tool threshold under [`DEFAULT_SCORING`], calibrated on the evaluation
/// set: the value that maximised right-tool-or-rightly-none when retrieval decides alone.
pub const DEFAULT_NO_TOOL_THRESHOLD: f32 = 0.26;

/// What the last build or rebuild cost, so callers (and tests) can see that unchanged
/// tools were not embedded again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildStats {
    /// Texts sent through the model.
    pub embedded: usize,
    /// Texts whose embedding came from the previous index.
    pub reused: usize,
}

type TextKey = [u8; 32];
type Embedding = Arc<[f32]>;

struct IndexedTool {
    plugin: String,
    name: String,
    /// The description first, then each example.
    texts: Vec<Embedding>,
}

struct Inner {
    embedder: Arc<SentenceEmbedder>,
    tools: Vec<IndexedTool>,
    /// Embeddings by SHA-256 of their text, for rebuilds.
    cache: HashMap<TextKey, Embedding>,
    options: IndexOptions,
    stats: BuildStats,
}

/// The enabled tools, embedded, ready to rank requests against.
///
/// Immutable and cheap to clone (shared inside), so a server can hand the current index to
/// every request and swap in a [`ToolIndex::rebuild`] when a plugin is installed or
/// enabled; the rebuild embeds only texts it has not seen.
#[derive(Clone)]
pub struct ToolIndex {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ToolIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolIndex")
            .field("tools", &self.inner.tools.len())
            .field("options", &self.inner.options)
            .field("stats", &self.inner.stats)
            .finish()
    }
}

impl ToolIndex {
    /// Embeds every candidate's description and examples, with default options.
    pub fn build(
        embedder: Arc<SentenceEmbedder>,
        candidates: &[ToolCandidate],
    ) -> Result<Self, ModelError> {
        Self::build_with(embedder, candidates, IndexOptions::default())
    }

    /// Like [`ToolIndex::build`] with chosen options.
    pub fn build_with(
        embedder: Arc<SentenceEmbedder>,
        candidates: &[ToolCandidate],
        options: IndexOptions,
    ) -> Result<Self, ModelError> {
        Self::assemble(embedder, &HashMap::new(), candidates, options)
    }

    /// A new index over `candidates` (the full, current set of enabled tools) that reuses
    /// this one's embeddings for every text that has not changed; only new or edited
    /// descriptions and examples go through the model. Embeddings of texts no longer used
    /// are dropped.
    pub fn rebuild(&self, candidates: &[ToolCandidate]) -> Result<Self, ModelError> {
        Self::assemble(
            self.inner.embedder.clone(),
            &self.inner.cache,
            candidates,
            self.inner.options,
        )
    }

    /// The same tools and embeddings under other options; nothing is embedded.
    pub fn with_options(&self, options: IndexOptions) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(Inner {
                embedder: inner.embedder.clone(),
                tools: inner
                    .tools
                    .iter()
                    .map(|t| IndexedTool {
                        plugin: t.plugin.clone(),
                        name: t.name.clone(),
                        texts: t.texts.clone(),
                    })
                    .collect(),
                cache: inner.cache.clone(),
                options,
                stats: BuildStats {
                    embedded: 0,
                    reused: inner.cache.len(),
                },
            }),
        }
    }

    fn assemble(
        embedder: Arc<SentenceEmbedder>,
        previous: &HashMap<TextKey, Embedding>,
        candidates: &[ToolCandidate],
        options: IndexOptions,
    ) -> Result<Self, ModelError> {
        let per_tool: Vec<Vec<(TextKey, String)>> = candidates
            .iter()
            .map(|c| {
                std::iter::once(description_text(c))
                    .chain(c.examples.iter().cloned())
                    .map(|t| (key(&t), t))
                    .collect()
            })
            .collect();

        let mut cache: HashMap<TextKey, Embedding> = HashMap::new();
        let mut missing: Vec<(TextKey, &str)> = Vec::new();
        let mut seen: HashSet<TextKey> = HashSet::new();
        let mut stats = BuildStats::default();
        for (k, text) in per_tool.iter().flatten() {
            if !seen.insert(*k) {
                continue;
            }
            match previous.get(k) {
                Some(e) => {
                    cache.insert(*k, e.clone());
                    stats.reused += 1;
                }
                None => missing.push((*k, text)),
            }
        }
        let texts: Vec<&str> = missing.iter().map(|(_, t)| *t).collect();
        let vectors = embedder.embed_batch(&texts)?;
        stats.embedded = vectors.len();
        for ((k, _), v) in missing.iter().zip(vectors) {
            cache.insert(*k, v.into());
        }

        let tools = candidates
            .iter()
            .zip(&per_tool)
            .map(|(c, texts)| IndexedTool {
                plugin: c.plugin.clone(),
                name: c.name.clone(),
                // Every key was inserted above; `filter_map` only to avoid a panic path.
                texts: texts
                    .iter()
                    .filter_map(|(k, _)| cache.get(k).cloned())
                    .collect(),
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                embedder,
                tools,
                cache,
                options,
                stats,
            }),
        })
    }

    /// The `k` tools that best match `query`, best first. Blocking (one forward pass of
    /// the embedding model, a few milliseconds); see [`ToolIndex::rank_async`].
    pub fn rank(&self, query: &str, k: usize) -> Result<Vec<RankedTool>, ModelError> {
        let q = self.inner.embedder.embed(query)?;
        Ok(self.rank_embedding(&q, k))
    }

    /// [`ToolIndex::rank`] on a blocking thread, so the async executor keeps serving
    /// while the model runs.
    pub async fn rank_async(&self, query: String, k: usize) -> Result<Vec<RankedTool>, ModelError> {
        let index = self.clone();
        tokio::task::spawn_blocking(move || index.rank(&query, k))
            .await
            .map_err(|e| ModelError::Retrieval(format!("ranking task failed: {e}")))?
    }

    /// Ranks against an already embedded request (from [`SentenceEmbedder::embed`]); for
    /// callers that rank one request under several options. Ties go to the earlier
    /// plugin and tool name, so the order is deterministic.
    pub fn rank_embedding(&self, query: &[f32], k: usize) -> Vec<RankedTool> {
        let scoring = self.inner.options.scoring;
        let mut ranked: Vec<RankedTool> = self
            .inner
            .tools
            .iter()
            .map(|t| RankedTool {
                name: t.name.clone(),
                plugin: t.plugin.clone(),
                score: score(scoring, query, &t.texts),
            })
            .collect();
        ranked.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.plugin.cmp(&b.plugin))
                .then_with(|| a.name.cmp(&b.name))
        });
        ranked.truncate(k);
        ranked
    }

    /// Whether a ranking suggests the request needs no tool at all: its best score is
    /// below the index's no-tool threshold (or nothing was ranked).
    pub fn probably_no_tool(&self, ranked: &[RankedTool]) -> bool {
        ranked
            .first()
            .is_none_or(|t| t.score < self.inner.options.no_tool_threshold)
    }

    /// The options this index ranks with.
    pub fn options(&self) -> IndexOptions {
        self.inner.options
    }

    /// What building this index cost.
    pub fn build_stats(&self) -> BuildStats {
        self.inner.stats
    }

    /// How many tools the index holds.
    pub fn len(&self) -> usize {
        self.inner.tools.len()
    }

    /// Whether the index holds no tools.
    pub fn is_empty(&self) -> bool {
        self.inner.tools.is_empty()
    }

    /// The model the index embeds with, to embed a request once and rank it several ways.
    pub fn embedder(&self) -> &SentenceEmbedder {
        &self.inner.embedder
    }
}

/// The tool's name as words, then its description: names like `add_task` carry meaning
/// that descriptions sometimes leave implicit.
fn description_text(c: &ToolCandidate) -> String {
    format!("{}: {}", c.name.replace(['_', '-'], " "), c.description)
}

fn key(text: &str) -> TextKey {
    Sha256::digest(text.as_bytes()).into()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Vectors are unit length, so the dot product is the cosine similarity.
fn score(scoring: Scoring, query: &[f32], texts: &[Embedding]) -> f32 {
    if texts.is_empty() {
        return -1.0;
    }
    let sims = texts.iter().map(|t| dot(query, t));
    match scoring {
        Scoring::Max => sims.fold(f32::MIN, f32::max),
        Scoring::Blend { max_weight } => {
            let (mut max, mut sum) = (f32::MIN, 0.0);
            for s in sims {
                max = max.max(s);
                sum += s;
            }
            let mean = sum / texts.len() as f32;
            max_weight * max + (1.0 - max_weight) * mean
        }
    }
}
