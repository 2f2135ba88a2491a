//! Which of a tenant's tools the model is offered for a request.
//!
//! Without a selector the loop offers every enabled tool. With one
//! ([`Agent::with_tool_selector`](crate::Agent::with_tool_selector)) it offers only what
//! the selector picks for the user's request, best first: the embedded SmolLM2-135M
//! cannot choose among many tools (its choice follows list position), and any model's
//! prompt grows with every installed tool. [`RetrievalSelector`] is the production one:
//! all-MiniLM-L6-v2 similarity between the request's instruction (pasted tables, quoted
//! passages and values left out) and each tool's description and manifest `examples`,
//! plus BM25 evidence from the same texts ([`IndexOptions`]; DESIGN.md, "Models").
//!
//! A model may call only what it was offered in the run; a call to any other tool goes
//! back to it as `unknown_tool`. Calls already recorded (a run paused for approval) are
//! still found by their recorded plugin and tool, whatever is offered on resume.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cairn_model::retrieval::{IndexOptions, SentenceEmbedder, ToolCandidate, ToolIndex};

use crate::tools::{AvailableTool, ToolFailure};

/// What a selector picked for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolSelection {
    /// Indices into the tools the selector was given, in the order to offer them (best
    /// first). Empty: offer no tool, the model answers in text.
    pub offered: Vec<usize>,
    /// The selector decided the plan: the run's first model request must call the first
    /// offered tool (`tool_choice` names it), and later requests may call none
    /// (`tool_choice: none`), so the model answers from the call's result. For a model that fills arguments well
    /// but cannot choose, or stop calling (the embedded SmolLM2-135M repeats a call it
    /// was just shown until the step budget runs out).
    pub require_first: bool,
}

/// Picks the tools offered to the model for a request. Called once per `start` (with the
/// user's message) and once per `resume` (with the run's latest user message), after the
/// tenant's tools are listed.
#[async_trait]
pub trait ToolSelector: Send + Sync {
    /// The tools to offer for `request`, out of `tools` (the tenant's enabled tools).
    /// An error is logged and the run offers every tool: a broken ranker must not stop
    /// the copilot.
    async fn select(
        &self,
        request: &str,
        tools: &[AvailableTool],
    ) -> Result<ToolSelection, ToolFailure>;
}

/// How [`RetrievalSelector`] picks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrievalConfig {
    /// How many of the best-ranked tools are offered (default 3: the right tool is in
    /// the top 3 on 97.8% of the evaluation set and all of the held-out one,
    /// BENCHMARKS.md "Tool selection").
    pub k: usize,
    /// When the best tool's score is below this, offer no tool at all (the request is
    /// probably small talk or general knowledge). `None` (the default) always offers
    /// `k`; the embedded model wants
    /// [`DEFAULT_NO_TOOL_THRESHOLD`](cairn_model::retrieval::DEFAULT_NO_TOOL_THRESHOLD),
    /// since it tends to call whatever it is offered.
    pub no_tool_threshold: Option<f32>,
    /// When the best tool's score leads the second's by at least this much, offer only
    /// the best, require the first model request to call it and no call after
    /// ([`ToolSelection::require_first`]); otherwise offer `k` and let the model choose.
    /// `None` (the default) always lets the model choose; `Some(0.0)` always decides
    /// (retrieval's top 1, the way the embedded model works best).
    pub decide_margin: Option<f32>,
    /// How the index scores tools (its threshold is ignored; see `no_tool_threshold`).
    pub index: IndexOptions,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        Self {
            k: 3,
            no_tool_threshold: None,
            decide_margin: None,
            index: IndexOptions::default(),
        }
    }
}

/// Tool indexes kept, one per distinct set of tools (tenants with the same plugins
/// share one).
const CACHED_INDEXES: usize = 16;

/// Ranks a tenant's tools against the request with a sentence-embedding model and offers
/// the top k.
///
/// Each distinct set of tools is embedded once and kept (up to 16 sets); a set that
/// differs from a kept one (a plugin enabled, a manifest edited) embeds only its new
/// texts. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct RetrievalSelector {
    inner: Arc<Inner>,
}

struct Inner {
    embedder: Arc<SentenceEmbedder>,
    config: RetrievalConfig,
    /// Indexes with the candidates they were built from, most recently used first.
    indexes: Mutex<Vec<(Vec<ToolCandidate>, ToolIndex)>>,
}

impl std::fmt::Debug for RetrievalSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetrievalSelector")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl RetrievalSelector {
    /// A selector over a loaded embedding model.
    pub fn new(embedder: Arc<SentenceEmbedder>, config: RetrievalConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                embedder,
                config,
                indexes: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> RetrievalConfig {
        self.inner.config
    }

    /// The index of `candidates`, built (or rebuilt from the most recent one) if needed.
    /// Blocking: may run the embedding model.
    fn index(&self, candidates: &[ToolCandidate]) -> Result<ToolIndex, ToolFailure> {
        let inner = &self.inner;
        let previous = {
            let mut indexes = inner.indexes.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(pos) = indexes.iter().position(|(k, _)| k == candidates) {
                let entry = indexes.remove(pos);
                let index = entry.1.clone();
                indexes.insert(0, entry);
                return Ok(index);
            }
            indexes.first().map(|(_, i)| i.clone())
        };
        // Embed outside the lock; two runs racing on a new set both build it, once.
        let options = IndexOptions {
            no_tool_threshold: inner
                .config
                .no_tool_threshold
                .unwrap_or(inner.config.index.no_tool_threshold),
            ..inner.config.index
        };
        let index = match previous {
            Some(p) => p.with_options(options).rebuild(candidates),
            None => ToolIndex::build_with(Arc::clone(&inner.embedder), candidates, options),
        }
        .map_err(|e| ToolFailure::new("retrieval_error", e.to_string()))?;
        let mut indexes = inner.indexes.lock().unwrap_or_else(|p| p.into_inner());
        indexes.retain(|(k, _)| k != candidates);
        indexes.insert(0, (candidates.to_vec(), index.clone()));
        indexes.truncate(CACHED_INDEXES);
        Ok(index)
    }

    /// Blocking selection; [`ToolSelector::select`] runs it off the executor.
    pub fn select_blocking(
        &self,
        request: &str,
        tools: &[AvailableTool],
    ) -> Result<ToolSelection, ToolFailure> {
        if tools.is_empty() {
            return Ok(ToolSelection::default());
        }
        let candidates: Vec<ToolCandidate> = tools.iter().map(candidate).collect();
        let index = self.index(&candidates)?;
        let config = self.inner.config;
        let mut ranked = index
            .rank(request, config.k.max(2))
            .map_err(|e| ToolFailure::new("retrieval_error", e.to_string()))?;
        if config.no_tool_threshold.is_some() && index.probably_no_tool(&ranked) {
            return Ok(ToolSelection::default());
        }
        let decided = match (config.decide_margin, ranked.as_slice()) {
            (Some(margin), [first, second, ..]) => first.score - second.score >= margin,
            (Some(_), [_]) => true,
            _ => false,
        };
        ranked.truncate(if decided { 1 } else { config.k });
        let offered = ranked
            .iter()
            .filter_map(|r| {
                tools
                    .iter()
                    .position(|t| t.plugin.as_str() == r.plugin && t.spec.name.as_str() == r.name)
            })
            .collect();
        Ok(ToolSelection {
            offered,
            require_first: decided,
        })
    }
}

#[async_trait]
impl ToolSelector for RetrievalSelector {
    /// Ranks on Tokio's blocking pool: the embedding model is CPU-bound.
    async fn select(
        &self,
        request: &str,
        tools: &[AvailableTool],
    ) -> Result<ToolSelection, ToolFailure> {
        let this = self.clone();
        let request = request.to_owned();
        let tools = tools.to_vec();
        tokio::task::spawn_blocking(move || this.select_blocking(&request, &tools))
            .await
            .map_err(|e| ToolFailure::new("retrieval_error", format!("ranking task failed: {e}")))?
    }
}

fn candidate(t: &AvailableTool) -> ToolCandidate {
    ToolCandidate {
        plugin: t.plugin.as_str().to_owned(),
        name: t.spec.name.as_str().to_owned(),
        description: t.spec.description.clone(),
        examples: t.spec.examples.clone(),
    }
}
