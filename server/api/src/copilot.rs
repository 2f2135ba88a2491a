//! What the server gives the application layer (`cairn_app::App`) to run the loop over:
//! the configured chat model, tool retrieval, and the tenant's enabled plugins as the
//! loop's tools.
//!
//! - [`LazyEmbedded`] loads the embedded GGUF model on the first model request, on the
//!   blocking pool: start-up stays instant, and a server whose runs never reach the model
//!   (or that talks to another provider) never reads the weights.
//! - [`RegistryTools`] offers each tenant the tools of the plugins *it* enabled, with *its*
//!   settings, straight from the [`Registry`] (so enabling or disabling a plugin takes
//!   effect at the next run); one call is run through [`RuntimeTools`], so the mapping
//!   of sandbox failures and egress decisions onto the ledger is the agent crate's.
//! - [`LazyRetrieval`] narrows the tools offered to a run to the best-ranked few
//!   (all-MiniLM-L6-v2, loaded on the first run that needs it); on by default for the
//!   embedded model, see [`build_selector`].
//! - [`app_config`] turns the `[agent]` settings into the application layer's
//!   [`AppConfig`] (reading the approval policy file, so a bad one stops start-up); the
//!   loop itself, and everything a request does with it, is `cairn_app::App`'s.
//!
//! This module knows nothing of HTTP: tool-call metrics reach the server's `/metrics`
//! through [`ToolCallMetrics`], which the HTTP layer implements (the dependency points
//! from `http` to here, never back).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use cairn_agent::{
    ApprovalPolicy, AvailableTool, RetrievalConfig, RetrievalSelector, RuntimeTools, ToolExecution,
    ToolExecutor, ToolFailure, ToolInvocation, ToolSelection, ToolSelector,
};
use cairn_app::AppConfig;
use cairn_audit::TenantId;
use cairn_model::retrieval::{DEFAULT_NO_TOOL_THRESHOLD, MINILM_DIR_NAME, SentenceEmbedder};
use cairn_model::{
    ChatModel, ChatRequest, ChatResponse, ChatStream, EmbeddedConfig, EmbeddedModel, ModelError,
    OpenAiCompatible, OpenAiConfig,
};
use tokio::sync::OnceCell;

use crate::config::{AgentSettings, ModelConfig};
use crate::registry::Registry;

/// Where tool-call metrics go (the server's `/metrics`).
pub trait ToolCallMetrics: Send + Sync {
    /// Counts one call of `plugin.tool` and how long it took.
    fn record_tool_call(&self, plugin: &str, tool: &str, ok: bool, elapsed: Duration);
}

/// Builds the configured chat model. The embedded one is not loaded here.
pub fn build_model(config: &ModelConfig) -> anyhow::Result<Arc<dyn ChatModel>> {
    Ok(match config {
        ModelConfig::Embedded(e) => Arc::new(LazyEmbedded::new(EmbeddedConfig {
            gguf_path: e.model_dir.join(&e.gguf),
            ..EmbeddedConfig::default()
        })),
        ModelConfig::OpenAi(o) => {
            let model = OpenAiCompatible::new(OpenAiConfig {
                api_key: o.api_key.clone().map(cairn_model::ApiKey::new),
                request_timeout: Duration::from_secs(o.timeout_seconds),
                ..OpenAiConfig::new(o.base_url.clone(), o.model.clone())
            })
            .context("setting up the OpenAI-compatible model provider")?;
            Arc::new(model)
        }
    })
}

/// The embedded model, loaded on first use.
pub struct LazyEmbedded {
    config: EmbeddedConfig,
    name: String,
    model: OnceCell<EmbeddedModel>,
}

impl LazyEmbedded {
    /// A model that will be loaded from `config` when first asked.
    pub fn new(config: EmbeddedConfig) -> Self {
        let name = config
            .gguf_path
            .file_stem()
            .map_or_else(|| "embedded".into(), |s| s.to_string_lossy().into_owned());
        Self {
            config,
            name,
            model: OnceCell::new(),
        }
    }

    async fn get(&self) -> Result<&EmbeddedModel, ModelError> {
        self.model
            .get_or_try_init(|| async {
                let config = self.config.clone();
                tracing::info!(path = %config.gguf_path.display(), "loading the embedded model");
                tokio::task::spawn_blocking(move || EmbeddedModel::load(config))
                    .await
                    .map_err(|e| ModelError::Embedded(format!("loading the model: {e}")))?
            })
            .await
    }
}

#[async_trait]
impl ChatModel for LazyEmbedded {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        self.get().await?.chat(request).await
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, ModelError> {
        self.get().await?.chat_stream(request).await
    }
}

/// The tools of each tenant's enabled plugins, from the registry.
pub struct RegistryTools {
    registry: Arc<Registry>,
    metrics: Arc<dyn ToolCallMetrics>,
}

impl RegistryTools {
    /// Tools over `registry`, recording call metrics in `metrics`.
    pub fn new(registry: Arc<Registry>, metrics: Arc<dyn ToolCallMetrics>) -> Self {
        Self { registry, metrics }
    }
}

#[async_trait]
impl ToolExecutor for RegistryTools {
    async fn tools(&self, tenant: &TenantId) -> Result<Vec<AvailableTool>, ToolFailure> {
        Ok(self
            .registry
            .enabled_manifests(tenant)
            .await
            .map_err(|e| ToolFailure::new("host", format!("listing the tenant's plugins: {e}")))?
            .iter()
            .flat_map(|m| {
                m.tools.iter().map(|spec| AvailableTool {
                    plugin: m.id.clone(),
                    spec: spec.clone(),
                })
            })
            .collect())
    }

    async fn execute(&self, call: ToolInvocation) -> ToolExecution {
        let (plugin_id, tool) = (call.plugin.to_string(), call.tool.clone());
        let plugin = match self.registry.enabled_plugin(&call.tenant, &plugin_id).await {
            Ok((_, plugin)) => plugin,
            Err(e) => {
                return ToolExecution {
                    outcome: Err(ToolFailure::new(
                        "unknown_tool",
                        format!("the plugin {plugin_id} is not available: {e}"),
                    )),
                    records: Vec::new(),
                };
            }
        };
        let started = Instant::now();
        let execution = RuntimeTools::new([plugin]).execute(call).await;
        self.metrics.record_tool_call(
            &plugin_id,
            &tool,
            execution.outcome.is_ok(),
            started.elapsed(),
        );
        execution
    }
}

/// The system prompt runs on the embedded model get when none is configured. Without one
/// SmolLM2-135M tends to recite a system prompt from its training data instead of
/// answering from the tool's result.
pub const EMBEDDED_SYSTEM_PROMPT: &str = "You are Cairn, a helpful office assistant. \
Answer the user's question briefly, using the results of the tools you called.";

/// The cap on generated tokens per request on the embedded model when none is
/// configured: a small model left alone repeats itself until the context is full.
pub const EMBEDDED_MAX_TOKENS: u32 = 160;

/// The deployment's loop settings with the embedded model's defaults filled in where
/// the operator set nothing ([`EMBEDDED_SYSTEM_PROMPT`], [`EMBEDDED_MAX_TOKENS`]).
pub fn effective_settings(model: &ModelConfig, settings: &AgentSettings) -> AgentSettings {
    let mut settings = settings.clone();
    if matches!(model, ModelConfig::Embedded(_)) {
        settings
            .system_prompt
            .get_or_insert_with(|| EMBEDDED_SYSTEM_PROMPT.to_owned());
        settings.max_tokens.get_or_insert(EMBEDDED_MAX_TOKENS);
    }
    settings
}

/// The tool selector the deployment's settings ask for, if any: retrieval is on by
/// default for the embedded model and off for an OpenAI-compatible one
/// (`retrieval_top_k`, 0 = off).
pub fn build_selector(
    model: &ModelConfig,
    settings: &AgentSettings,
) -> Option<Arc<dyn ToolSelector>> {
    let (dir, embedded) = match model {
        ModelConfig::Embedded(e) => (e.model_dir.join(MINILM_DIR_NAME), true),
        ModelConfig::OpenAi(_) => (SentenceEmbedder::default_dir(), false),
    };
    let k = settings
        .retrieval_top_k
        .unwrap_or(if embedded { 3 } else { 0 });
    if k == 0 {
        return None;
    }
    let config = if embedded {
        // The embedded model calls whatever it is offered and cannot choose: retrieval
        // decides (its top tool, or none below the no-tool threshold) and the model fills
        // in the arguments, then answers from the result.
        RetrievalConfig {
            k,
            no_tool_threshold: Some(DEFAULT_NO_TOOL_THRESHOLD),
            decide_margin: Some(0.0),
            ..RetrievalConfig::default()
        }
    } else {
        RetrievalConfig {
            k,
            ..RetrievalConfig::default()
        }
    };
    Some(Arc::new(LazyRetrieval::new(dir, config)))
}

/// A [`RetrievalSelector`] whose embedding model is loaded on the first selection (on the
/// blocking pool), so start-up stays instant and a server that never starts a run never
/// reads it. A load failure fails that selection, which the loop logs before offering
/// every tool; the next selection tries again.
pub struct LazyRetrieval {
    dir: std::path::PathBuf,
    config: RetrievalConfig,
    selector: OnceCell<RetrievalSelector>,
}

impl LazyRetrieval {
    /// A selector that will load all-MiniLM-L6-v2 from `dir` when first asked.
    pub fn new(dir: std::path::PathBuf, config: RetrievalConfig) -> Self {
        Self {
            dir,
            config,
            selector: OnceCell::new(),
        }
    }
}

#[async_trait]
impl ToolSelector for LazyRetrieval {
    async fn select(
        &self,
        request: &str,
        tools: &[AvailableTool],
    ) -> Result<ToolSelection, ToolFailure> {
        let selector = self
            .selector
            .get_or_try_init(|| async {
                let dir = self.dir.clone();
                let embedder = tokio::task::spawn_blocking(move || SentenceEmbedder::load(&dir))
                    .await
                    .map_err(|e| ToolFailure::new("retrieval_error", e.to_string()))?
                    .map_err(|e| ToolFailure::new("retrieval_error", e.to_string()))?;
                Ok::<_, ToolFailure>(RetrievalSelector::new(Arc::new(embedder), self.config))
            })
            .await?;
        selector.select(request, tools).await
    }
}

/// The application layer's settings from `[agent]`: the loop's budgets and prompt, and
/// the deployment's approval policy read from its file (a bad one stops start-up, naming
/// the file and the problem).
pub fn app_config(settings: &AgentSettings) -> anyhow::Result<AppConfig> {
    let approval = match &settings.approval_policy {
        None => ApprovalPolicy::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the approval policy {}", path.display()))?;
            ApprovalPolicy::from_json_str(&text)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("approval policy {}", path.display()))?
        }
    };
    Ok(AppConfig {
        system_prompt: settings.system_prompt.clone(),
        max_model_calls: settings.max_model_calls,
        deadline: Duration::from_secs(settings.deadline_seconds),
        max_tokens: settings.max_tokens,
        approval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, EmbeddedSettings, OpenAiSettings};

    fn openai() -> ModelConfig {
        ModelConfig::OpenAi(OpenAiSettings {
            base_url: "http://127.0.0.1:1/v1".into(),
            model: "m".into(),
            api_key: None,
            timeout_seconds: 1,
        })
    }

    #[test]
    fn retrieval_is_on_for_the_embedded_model_and_off_for_others_unless_set() {
        let embedded = ModelConfig::Embedded(EmbeddedSettings::default());
        let defaults = AgentSettings::default();
        assert!(build_selector(&embedded, &defaults).is_some());
        assert!(build_selector(&openai(), &defaults).is_none());
        let k = |k| AgentSettings {
            retrieval_top_k: Some(k),
            ..AgentSettings::default()
        };
        assert!(build_selector(&embedded, &k(0)).is_none());
        assert!(build_selector(&openai(), &k(5)).is_some());

        let mut config = Config::default();
        config
            .apply_env(|name| (name == "CAIRN_RETRIEVAL_TOP_K").then(|| "4".into()))
            .unwrap();
        assert_eq!(config.agent.retrieval_top_k, Some(4));
        let error = Config::default()
            .apply_env(|name| (name == "CAIRN_RETRIEVAL_TOP_K").then(|| "many".into()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("CAIRN_RETRIEVAL_TOP_K"), "{error}");
    }

    #[test]
    fn the_embedded_model_gets_a_prompt_and_a_token_cap_only_where_none_is_set() {
        let embedded = ModelConfig::Embedded(EmbeddedSettings::default());
        let defaults = AgentSettings::default();
        let filled = effective_settings(&embedded, &defaults);
        assert_eq!(
            filled.system_prompt.as_deref(),
            Some(EMBEDDED_SYSTEM_PROMPT)
        );
        assert_eq!(filled.max_tokens, Some(EMBEDDED_MAX_TOKENS));
        let own = AgentSettings {
            system_prompt: Some("Be terse.".into()),
            max_tokens: Some(9),
            ..AgentSettings::default()
        };
        assert_eq!(effective_settings(&embedded, &own), own);
        assert_eq!(effective_settings(&openai(), &defaults), defaults);
    }
}
