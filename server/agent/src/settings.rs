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

    /// The client's tools as the loop lists them, under [`CLIENT_PLUGIN`], each by its
    /// [offered name](RunSettings::client_tool_names).
    pub fn client_available_tools(&self) -> Result<Vec<AvailableTool>, String> {
        let plugin = PluginId::try_from(CLIENT_PLUGIN).map_err(|e| e.to_string())?;
        let names = self.client_tool_names();
        self.client_tools
            .iter()
            .zip(names)
            .enumerate()
            .map(|(i, (t, name))| {
                let spec: ToolSpec = serde_json::from_value(json!({
                    "name": name,
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

    /// The name each client tool is offered, called and recorded under, in order. OpenAI
    /// lets a function be named `^[a-zA-Z0-9_-]{1,64}$` (`getWeather`, `get-weather`);
    /// Cairn's tool names are `^[a-z][a-z0-9_]{0,63}$`. A name already in Cairn's form is
    /// kept; another is mapped (`getWeather` → `get_weather`, `get-weather` →
    /// `get_weather`, `2fa` → `f_2fa`), with a `_2`, `_3`… suffix if that name is taken,
    /// and mapped back by [`RunSettings::client_name_of`]. The mapping depends only on
    /// the client's list, which the run records, so a resumed run maps the same way.
    pub fn client_tool_names(&self) -> Vec<String> {
        let kept = |n: &str| cairn_manifest::ToolName::parse(n).is_ok();
        let mut used: std::collections::HashSet<String> = self
            .client_tools
            .iter()
            .filter(|t| kept(&t.name))
            .map(|t| t.name.clone())
            .collect();
        self.client_tools
            .iter()
            .map(|t| {
                if kept(&t.name) {
                    return t.name.clone();
                }
                let base = cairn_name(&t.name);
                let mut name = base.clone();
                let mut n = 2;
                while used.contains(&name) {
                    let suffix = format!("_{n}");
                    let mut stem = base.clone();
                    stem.truncate(64 - suffix.len());
                    name = format!("{stem}{suffix}");
                    n += 1;
                }
                used.insert(name.clone());
                name
            })
            .collect()
    }

    /// The client's own name for the client tool offered as `offered`, if it is one.
    pub fn client_name_of(&self, offered: &str) -> Option<&str> {
        self.client_tool_names()
            .iter()
            .position(|n| n == offered)
            .map(|i| self.client_tools[i].name.as_str())
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

/// `name` in Cairn's tool-name form: camelCase humps and dashes become `_`, letters
/// lowercase, `f_` before a name that does not start with a letter, at most 64
/// characters. Characters outside OpenAI's rule become `_` too (the caller refuses them).
fn cairn_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let mut previous: Option<char> = None;
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            if previous.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit()) {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else {
            out.push('_');
        }
        previous = Some(c);
    }
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert_str(0, "f_");
    }
    out.truncate(64);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(client: &[&str]) -> Vec<String> {
        RunSettings {
            client_tools: client
                .iter()
                .map(|n| ClientTool {
                    name: (*n).to_owned(),
                    description: String::new(),
                    parameters: json!({ "type": "object" }),
                })
                .collect(),
            ..RunSettings::default()
        }
        .client_tool_names()
    }

    #[test]
    fn openai_function_names_map_to_cairn_tool_names_and_back() {
        assert_eq!(
            names(&[
                "getWeather",
                "get-time",
                "HTTPFetch",
                "2fa",
                "_x",
                "ok_name"
            ]),
            [
                "get_weather",
                "get_time",
                "httpfetch",
                "f_2fa",
                "f__x",
                "ok_name"
            ]
        );
        // A mapped name never takes one already in use, whatever the order.
        assert_eq!(
            names(&["getWeather", "get_weather", "get-weather"]),
            ["get_weather_2", "get_weather", "get_weather_3"]
        );
        let long = format!("a{}", "B".repeat(63));
        let mapped = names(&[&long, &long.to_lowercase()]);
        assert!(
            mapped
                .iter()
                .all(|n| cairn_manifest::ToolName::parse(n).is_ok()),
            "{mapped:?}"
        );
        assert_ne!(mapped[0], mapped[1]);

        let settings = RunSettings {
            client_tools: vec![ClientTool {
                name: "getWeather".into(),
                description: String::new(),
                parameters: json!({ "type": "object" }),
            }],
            ..RunSettings::default()
        };
        assert_eq!(settings.client_name_of("get_weather"), Some("getWeather"));
        assert_eq!(settings.client_name_of("list_tasks"), None);
        let offered = settings.client_available_tools().unwrap();
        assert_eq!(offered[0].spec.name.as_str(), "get_weather");
    }
}
