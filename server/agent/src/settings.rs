//! What one run asks beyond the deployment's settings: a client's system instructions,
//! its own tools, its token cap and temperature, or a direct invocation instead of the
//! loop. Recorded as the run's `run_configured` step before anything else, and read back
//! from the trail on resume, so a paused run continues exactly as it was asked, in any
//! process.

use cairn_audit::{ClientTool, ForcedTool, RunMode, StepKind, StepRecord};
use cairn_manifest::{PluginId, ToolSpec};
use serde_json::json;

use crate::tools::AvailableTool;

/// The plugin id under which tools supplied by a client are offered and recorded. Calls to
/// them never run on the server: the run pauses and the calls are handed to the client.
pub const CLIENT_PLUGIN: &str = "client";

/// A run's own settings (all default for a plain run).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSettings {
    /// The loop, or one direct call.
    pub mode: RunMode,
    /// The client's system instructions, added after the deployment's system prompt.
    pub system: Option<String>,
    /// The client's tools.
    pub client_tools: Vec<ClientTool>,
    /// Offer no tools at all (`tool_choice: "none"`).
    pub no_tools: bool,
    /// A call the first model request must make (`tool_choice: "required"` or a named
    /// function; a named one is then the only tool offered).
    pub forced_tool: Option<ForcedTool>,
    /// A hard cap on generated tokens per model request, forced calls included.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
}

impl RunSettings {
    /// The step that records these settings, or `None` for a plain run (which records
    /// none, so its trail is what it always was).
    pub(crate) fn step(&self) -> Option<StepKind> {
        (self != &RunSettings::default()).then(|| StepKind::RunConfigured {
            mode: self.mode,
            system: self.system.clone(),
            client_tools: self.client_tools.clone(),
            no_tools: self.no_tools,
            forced_tool: self.forced_tool.clone(),
            max_tokens: self.max_tokens,
            temperature: self.temperature,
        })
    }

    /// The settings a stored trail recorded (default when it recorded none).
    pub(crate) fn from_trail(trail: &[StepRecord]) -> Self {
        trail
            .iter()
            .find_map(|r| match &r.step {
                StepKind::RunConfigured {
                    mode,
                    system,
                    client_tools,
                    no_tools,
                    forced_tool,
                    max_tokens,
                    temperature,
                } => Some(RunSettings {
                    mode: *mode,
                    system: system.clone(),
                    client_tools: client_tools.clone(),
                    no_tools: *no_tools,
                    forced_tool: forced_tool.clone(),
                    max_tokens: *max_tokens,
                    temperature: *temperature,
                }),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// The client's tools as the loop lists them, under [`CLIENT_PLUGIN`].
    pub fn client_available_tools(&self) -> Result<Vec<AvailableTool>, String> {
        let plugin = PluginId::try_from(CLIENT_PLUGIN).map_err(|e| e.to_string())?;
        self.client_tools
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let spec: ToolSpec = serde_json::from_value(json!({
                    "name": t.name,
                    "description": t.description,
                    "input_schema": t.parameters,
                    "output_schema": {},
                }))
                .map_err(|e| format!("client tool {i} ({:?}): {e}", t.name))?;
                Ok(AvailableTool {
                    plugin: plugin.clone(),
                    spec,
                })
            })
            .collect()
    }

    /// The system prompt a model request gets: the deployment's, then the client's.
    pub(crate) fn system_prompt(&self, deployment: Option<&str>) -> Option<String> {
        match (deployment, self.system.as_deref()) {
            (Some(base), Some(extra)) => Some(format!("{base}\n\n{extra}")),
            (Some(base), None) => Some(base.to_owned()),
            (None, extra) => extra.map(str::to_owned),
        }
    }
}
