//! The tool index: every enabled tool's description and examples, embedded once, ranked
//! against a request by cosine similarity plus lexical (BM25) evidence.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::SentenceEmbedder;
use super::instruction::instruction_text;
use super::lexical::LexicalIndex;
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
    /// What ranks it: `semantic + lexical_weight * lexical` ([`IndexOptions`]).
    pub score: f32,
    /// Cosine similarity to the request under the index's [`Scoring`], in [-1, 1].
    pub semantic: f32,
    /// BM25 of the request's words against the tool's texts, normalised to [0, 1].
    pub lexical: f32,
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

/// Tunable parts of the index, calibrated on `server/model/eval/requests.jsonl` and
/// checked on `eval/heldout.jsonl` (see BENCHMARKS.md, "Tool selection").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IndexOptions {
    /// How texts' similarities combine.
    pub scoring: Scoring,
    /// Below this best score the request probably needs no tool (small talk, general
    /// knowledge), so the caller may offer none.
    pub no_tool_threshold: f32,
    /// How much the lexical score (BM25 over the tool's texts, in [0, 1]) adds to the
    /// semantic one; 0 ranks on embeddings alone.
    pub lexical_weight: f32,
    /// Rank on the request's instruction only, without pasted tables, code, long quoted
    /// passages and values ([`instruction_text`](super::instruction_text)).
    pub instruction_only: bool,
}

impl Default for IndexOptions {
    /// The best measured on the evaluation set (86.2% selection by retrieval alone, and
    /// 78.9% on the held-out set; BENCHMARKS.md, "Tool selection").
    fn default() -> Self {
        Self {
            scoring: DEFAULT_SCORING,
            no_tool_threshold: DEFAULT_NO_TOOL_THRESHOLD,
            lexical_weight: DEFAULT_LEXICAL_WEIGHT,
            instruction_only: true,
        }
    }
}

impl IndexOptions {
    /// The scoring before lexical evidence and instruction extraction (embeddings of the
    /// whole request only, threshold 0.26), kept to compare against.
    pub const SEMANTIC_ONLY: Self = Self {
        scoring: DEFAULT_SCORING,
        no_tool_threshold: 0.26,
        lexical_weight: 0.0,
        instruction_only: false,
    };
}

/// The default [`IndexOptions::lexical_weight`]: on the evaluation set 0.4 and 0.5 tie for
/// the best selection, and top-1 falls off below 0.3 and above 0.5.
pub const DEFAULT_LEXICAL_WEIGHT: f32 = 0.4;

/// A request made ready to rank: its instruction embedded once, so it can be ranked
/// under several options (see [`ToolIndex::prepare`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedQuery {
    /// The text that was embedded and matched lexically.
    pub text: String,
    /// Its embedding.
    pub embedding: Vec<f32>,
}

/// The default [`Scoring`]: an even blend of max and mean was the best top-1 on the
/// evaluation set, with embeddings alone (73.9% vs 67.4% for max alone) and with lexical
/// evidence (89.1% vs 76.1%; BENCHMARKS.md, "Tool selection").
pub const DEFAULT_SCORING: Scoring = Scoring::Blend { max_weight: 0.5 };

/// The default no-tool threshold under the default [`IndexOptions`], calibrated on the
/// evaluation set: right-tool-or-rightly-none when retrieval decides alone peaks on a
/// plateau at 0.29-0.30 (and at a lone 0.24, which the held-out set does not bear out); the
/// plateau's lower end keeps borderline plain requests ("remind me to …") their tool.
pub const DEFAULT_NO_TOOL_THRESHOLD: f32 = 0.29;

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
    /// The same tools' texts as bags of words, in the same order.
    lexical: Arc<LexicalIndex>,
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
                lexical: inner.lexical.clone(),
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
        let names: HashSet<&str> = candidates.iter().map(|c| c.name.as_str()).collect();
        let per_tool: Vec<Vec<(TextKey, String)>> = candidates
            .iter()
            .map(|c| {
                std::iter::once(description_text(c, &names))
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

        let tools: Vec<IndexedTool> = candidates
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
        let lexical = Arc::new(LexicalIndex::new(
            per_tool
                .iter()
                .map(|texts| texts.iter().map(|(_, t)| t.as_str()).collect()),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                embedder,
                tools,
                lexical,
                cache,
                options,
                stats,
            }),
        })
    }

    /// The `k` tools that best match `query`, best first. Blocking (one forward pass of
    /// the embedding model, a few milliseconds); see [`ToolIndex::rank_async`].
    pub fn rank(&self, query: &str, k: usize) -> Result<Vec<RankedTool>, ModelError> {
        Ok(self.rank_prepared(&self.prepare(query)?, k))
    }

    /// Embeds what this index ranks on: the request's instruction when
    /// [`IndexOptions::instruction_only`], else the whole request. Blocking.
    pub fn prepare(&self, query: &str) -> Result<PreparedQuery, ModelError> {
        let text = if self.inner.options.instruction_only {
            instruction_text(query)
        } else {
            query.to_owned()
        };
        let embedding = self.inner.embedder.embed(&text)?;
        Ok(PreparedQuery { text, embedding })
    }

    /// [`ToolIndex::rank`] on a blocking thread, so the async executor keeps serving
    /// while the model runs.
    pub async fn rank_async(&self, query: String, k: usize) -> Result<Vec<RankedTool>, ModelError> {
        let index = self.clone();
        tokio::task::spawn_blocking(move || index.rank(&query, k))
            .await
            .map_err(|e| ModelError::Retrieval(format!("ranking task failed: {e}")))?
    }

    /// Ranks an already prepared request (from [`ToolIndex::prepare`], possibly of an
    /// index with other options); for callers that rank one request several ways. Ties go
    /// to the earlier plugin and tool name, so the order is deterministic.
    pub fn rank_prepared(&self, query: &PreparedQuery, k: usize) -> Vec<RankedTool> {
        let IndexOptions {
            scoring,
            lexical_weight,
            ..
        } = self.inner.options;
        let lexical = if lexical_weight > 0.0 {
            self.inner.lexical.scores(&query.text)
        } else {
            vec![0.0; self.inner.tools.len()]
        };
        let mut ranked: Vec<RankedTool> = self
            .inner
            .tools
            .iter()
            .zip(lexical)
            .map(|(t, lexical)| {
                let semantic = score(scoring, &query.embedding, &t.texts);
                RankedTool {
                    name: t.name.clone(),
                    plugin: t.plugin.clone(),
                    score: semantic + lexical_weight * lexical,
                    semantic,
                    lexical,
                }
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

/// The tool's name as words, then its description without cross-references
/// ([`without_cross_references`]): names like `add_task` carry meaning that descriptions
/// sometimes leave implicit.
fn description_text(c: &ToolCandidate, names: &HashSet<&str>) -> String {
    let others = |word: &str| word != c.name && names.contains(word);
    format!(
        "{}: {}",
        c.name.replace(['_', '-'], " "),
        without_cross_references(&c.description, others)
    )
}

/// `description` without what it says about other tools: parenthesised remarks that name
/// one are removed, then sentences that still name one.
///
/// Why: "Use complete_task instead when the task was done" tells the chat model when
/// *not* to call `delete_task`, but to an embedding it is evidence that `delete_task` is
/// about finished tasks; "Find the id with search_contacts" pulls contact searches to
/// `get_account`. Retrieval should match a tool on what it does. The chat model still
/// gets the full description.
fn without_cross_references(description: &str, names_other_tool: impl Fn(&str) -> bool) -> String {
    let mentions = |text: &str| {
        text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
            .any(&names_other_tool)
    };
    // Parenthesised remarks first (not nested; an unclosed one is left alone).
    let mut text = String::with_capacity(description.len());
    let mut rest = description;
    while let Some(open) = rest.find('(') {
        let Some(close) = rest[open..].find(')').map(|c| open + c) else {
            break;
        };
        let remark = &rest[open..=close];
        if mentions(remark) {
            text.push_str(rest[..open].trim_end());
        } else {
            text.push_str(&rest[..=close]);
        }
        rest = &rest[close + 1..];
    }
    text.push_str(rest);
    // Then sentences: split after '.', '!' or '?' followed by whitespace.
    let mut kept: Vec<&str> = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let ends =
            matches!(b, b'.' | b'!' | b'?') && bytes.get(i + 1).is_none_or(u8::is_ascii_whitespace);
        if ends {
            kept.push(&text[start..=i]);
            start = i + 1;
        }
    }
    kept.push(&text[start..]);
    let kept: Vec<&str> = kept
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty() && !mentions(s))
        .collect();
    if kept.is_empty() {
        // Every sentence was about another tool; better the whole than nothing.
        description.to_owned()
    } else {
        kept.join(" ")
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(description: &str) -> String {
        without_cross_references(description, |w| {
            ["list_tasks", "complete_task"].contains(&w)
        })
    }

    #[test]
    fn sentences_naming_another_tool_are_dropped() {
        assert_eq!(
            strip("Deletes a task for good. Use complete_task instead when it was done."),
            "Deletes a task for good."
        );
    }

    #[test]
    fn remarks_naming_another_tool_are_dropped_and_the_sentence_kept() {
        assert_eq!(
            strip("Marks a task as done, by its id (from list_tasks). Done twice is fine."),
            "Marks a task as done, by its id. Done twice is fine."
        );
        assert_eq!(
            strip("Sorts rows (ascending by default)."),
            "Sorts rows (ascending by default)."
        );
    }

    #[test]
    fn a_name_inside_a_longer_word_is_not_a_mention() {
        assert_eq!(
            strip("Reads list_tasks_v2 output. Fine."),
            "Reads list_tasks_v2 output. Fine."
        );
    }

    #[test]
    fn a_description_only_about_other_tools_is_kept_whole() {
        assert_eq!(strip("Like list_tasks."), "Like list_tasks.");
    }

    #[test]
    fn the_tool_may_name_itself() {
        let names: HashSet<&str> = ["add_task", "list_tasks"].into();
        let c = ToolCandidate {
            plugin: "tasks".into(),
            name: "add_task".into(),
            description: "Adds a task; add_task returns its id. See list_tasks.".into(),
            examples: vec![],
        };
        assert_eq!(
            description_text(&c, &names),
            "add task: Adds a task; add_task returns its id."
        );
    }
}
