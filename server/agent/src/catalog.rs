//! The tools offered in a run, under the names the model sees, with their compiled
//! schema validators.
//!
//! Validators are compiled once per tool and kept in a [`SchemaCache`] shared by every
//! run; a plugin upgraded with a different schema is recompiled on its first use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cairn_audit::{PluginId as LedgerPluginId, ToolCallName};
use cairn_manifest::{PluginId, ToolSpec};
use cairn_model::ToolDefinition;
use jsonschema::Validator;
use serde_json::Value;

use crate::tools::AvailableTool;

/// Most schema violations listed in one error message to the model.
const MAX_LISTED_VIOLATIONS: usize = 5;

/// A tool's two validators (or why one did not compile).
pub(crate) struct CompiledSchemas {
    input_schema: Value,
    output_schema: Value,
    input: Result<Validator, String>,
    output: Result<Validator, String>,
}

impl CompiledSchemas {
    fn compile(spec: &ToolSpec) -> Self {
        let compile = |s: &Value| jsonschema::draft202012::new(s).map_err(|e| e.to_string());
        Self {
            input: compile(&spec.input_schema),
            output: compile(&spec.output_schema),
            input_schema: spec.input_schema.clone(),
            output_schema: spec.output_schema.clone(),
        }
    }

    /// Checks arguments; the error lists the violations by JSON pointer.
    pub(crate) fn check_input(&self, value: &Value) -> Result<(), String> {
        check(&self.input, value, "input_schema")
    }

    /// Checks a result.
    pub(crate) fn check_output(&self, value: &Value) -> Result<(), String> {
        check(&self.output, value, "output_schema")
    }

    /// The first thing wrong with `arguments`, as (field, message): the field is a path
    /// below `arguments` (`arguments.priority`), naming the member for a missing or
    /// unexpected property, so a caller's 4xx can point at it.
    pub(crate) fn first_input_violation(&self, arguments: &Value) -> Option<(String, String)> {
        use jsonschema::error::ValidationErrorKind;
        let validator = match &self.input {
            Ok(v) => v,
            Err(e) => {
                return Some((
                    "arguments".into(),
                    format!("the tool's input_schema does not compile: {e}"),
                ));
            }
        };
        let error = validator.iter_errors(arguments).next()?;
        let mut field = String::from("arguments");
        for segment in error.instance_path().as_str().split('/').skip(1) {
            field.push('.');
            field.push_str(&segment.replace("~1", "/").replace("~0", "~"));
        }
        // `required` and `additionalProperties` fail at the parent object; name the member.
        let member = match error.kind() {
            ValidationErrorKind::Required { property } => property.as_str().map(str::to_owned),
            ValidationErrorKind::AdditionalProperties { unexpected } => unexpected.first().cloned(),
            _ => None,
        };
        if let Some(name) = member {
            field.push('.');
            field.push_str(&name);
        }
        Some((field, error.to_string()))
    }
}

fn check(validator: &Result<Validator, String>, value: &Value, which: &str) -> Result<(), String> {
    let validator = validator
        .as_ref()
        .map_err(|e| format!("the tool's {which} does not compile: {e}"))?;
    if validator.is_valid(value) {
        return Ok(());
    }
    let violations: Vec<String> = validator
        .iter_errors(value)
        .take(MAX_LISTED_VIOLATIONS)
        .map(|e| {
            let path = e.instance_path().to_string();
            let at = if path.is_empty() {
                "/".to_string()
            } else {
                path
            };
            format!("at {at}: {e}")
        })
        .collect();
    Err(violations.join("; "))
}

/// How many schema versions of one (plugin, tool) stay compiled: tenants may run
/// different versions of the same plugin at once, and each must keep its validators
/// instead of recompiling them on every run that alternates with another tenant's.
const VERSIONS_KEPT: usize = 4;

/// Validators by (plugin, tool) and schema, shared by all runs (and tenants) of an
/// [`Agent`](crate::Agent): compiled on a tool's first use, reused by every later run
/// with the same schemas, and compiled anew when an upgrade changes them.
#[derive(Default)]
pub(crate) struct SchemaCache {
    map: Mutex<HashMap<(String, String), Versions>>,
}

/// The compiled versions of one tool's schemas, oldest first.
type Versions = Vec<Arc<CompiledSchemas>>;

impl SchemaCache {
    /// The compiled schemas of `spec`, compiling them on first use or after a change.
    pub(crate) fn get(&self, plugin: &PluginId, spec: &ToolSpec) -> Arc<CompiledSchemas> {
        let key = (plugin.to_string(), spec.name.to_string());
        let same = |c: &Arc<CompiledSchemas>| {
            c.input_schema == spec.input_schema && c.output_schema == spec.output_schema
        };
        {
            let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = map.get(&key).and_then(|v| v.iter().find(|c| same(c))) {
                return Arc::clone(c);
            }
        }
        // Compile outside the lock: other runs keep validating meanwhile.
        let compiled = Arc::new(CompiledSchemas::compile(spec));
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let versions = map.entry(key).or_default();
        versions.retain(|c| !same(c));
        if versions.len() >= VERSIONS_KEPT {
            versions.remove(0);
        }
        versions.push(Arc::clone(&compiled));
        compiled
    }
}

/// One offered tool.
pub(crate) struct Entry {
    /// The name the model sees: the tool's own name, or `<plugin>__<tool>` when two
    /// enabled plugins offer a tool of the same name.
    pub model_name: String,
    /// The plugin, as the manifest names it.
    pub plugin: PluginId,
    /// The plugin id as the ledger records it.
    pub ledger_plugin: LedgerPluginId,
    /// The tool name as the ledger records it (the manifest's name, not the model's).
    pub ledger_tool: ToolCallName,
    /// The declaration.
    pub spec: ToolSpec,
    /// Its validators.
    pub schemas: Arc<CompiledSchemas>,
}

/// The tools of one run (or resume): every enabled tool, for finding recorded calls, and
/// the ones offered to the model, which are all of them unless a
/// [`ToolSelector`](crate::ToolSelector) narrowed them.
pub(crate) struct Catalog {
    entries: Vec<Arc<Entry>>,
    /// Offered tools by the name the model sees: the only ones it may call.
    by_model_name: HashMap<String, usize>,
    by_plugin_tool: HashMap<(String, String), usize>,
    definitions: Vec<ToolDefinition>,
    offered: Vec<ToolCallName>,
    /// The tool the run's first model request must call, when the selector decided.
    required_first: Option<String>,
}

/// The names `tools` are offered to the model under, in order: a tool's own name, or
/// `plugin__tool` when two plugins offer the same name.
pub fn model_names(tools: &[AvailableTool]) -> Vec<String> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in tools {
        *counts.entry(t.spec.name.as_str()).or_default() += 1;
    }
    tools
        .iter()
        .map(|t| {
            let name = t.spec.name.as_str();
            if counts.get(name).copied().unwrap_or(0) > 1 {
                format!("{}__{}", t.plugin, name)
            } else {
                name.to_string()
            }
        })
        .collect()
}

impl Catalog {
    /// Builds the catalog of `tools`, compiling (or reusing) their validators.
    pub(crate) fn build(tools: Vec<AvailableTool>, cache: &SchemaCache) -> Result<Self, String> {
        let model_names = model_names(&tools);
        let mut entries = Vec::with_capacity(tools.len());
        for (t, model_name) in tools.iter().zip(model_names) {
            let name = t.spec.name.as_str();
            let ledger_plugin = LedgerPluginId::parse(t.plugin.as_str())
                .map_err(|e| format!("plugin {}: {e}", t.plugin))?;
            let ledger_tool = ToolCallName::parse(name).map_err(|e| format!("tool {name}: {e}"))?;
            entries.push(Arc::new(Entry {
                model_name,
                schemas: cache.get(&t.plugin, &t.spec),
                plugin: t.plugin.clone(),
                ledger_plugin,
                ledger_tool,
                spec: t.spec.clone(),
            }));
        }
        let mut by_model_name = HashMap::new();
        let mut by_plugin_tool = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            if by_model_name.insert(e.model_name.clone(), i).is_some() {
                return Err(format!(
                    "plugin {} offers tool {} twice",
                    e.plugin, e.spec.name
                ));
            }
            by_plugin_tool.insert((e.plugin.to_string(), e.spec.name.to_string()), i);
        }
        let definitions = entries
            .iter()
            .map(|e| ToolDefinition {
                name: e.model_name.clone(),
                description: e.spec.description.clone(),
                parameters: e.spec.input_schema.clone(),
            })
            .collect();
        let offered = entries
            .iter()
            .map(|e| ToolCallName::parse(e.model_name.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            entries,
            by_model_name,
            by_plugin_tool,
            definitions,
            offered,
            required_first: None,
        })
    }

    /// Offers only `keep` (indices into the tools the catalog was built from, in the order
    /// to offer them; out-of-range and repeated ones are ignored), and with
    /// `require_first` makes the first of them the run's first call.
    pub(crate) fn restrict(&mut self, keep: &[usize], require_first: bool) {
        let mut seen = std::collections::HashSet::new();
        let keep: Vec<usize> = keep
            .iter()
            .copied()
            .filter(|&i| i < self.entries.len() && seen.insert(i))
            .collect();
        self.by_model_name = keep
            .iter()
            .map(|&i| (self.entries[i].model_name.clone(), i))
            .collect();
        let definitions = keep.iter().map(|&i| self.definitions[i].clone()).collect();
        let offered = keep.iter().map(|&i| self.offered[i].clone()).collect();
        self.definitions = definitions;
        self.offered = offered;
        self.required_first = keep
            .first()
            .filter(|_| require_first)
            .map(|&i| self.entries[i].model_name.clone());
    }

    /// The index of the tool the model is offered as `name` (among every tool the catalog
    /// was built from), for [`Catalog::restrict`].
    pub(crate) fn index_of_model_name(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.model_name == name)
    }

    /// The tool the run's first model request must call, if the selector decided it.
    pub(crate) fn required_first(&self) -> Option<&str> {
        self.required_first.as_deref()
    }

    /// Any tool of the catalog, offered or not, by its plugin and manifest name (what a
    /// direct invocation names).
    pub(crate) fn by_plugin_tool(&self, plugin: &str, tool: &str) -> Option<&Arc<Entry>> {
        self.by_plugin_tool
            .get(&(plugin.to_owned(), tool.to_owned()))
            .map(|&i| &self.entries[i])
    }

    /// The offered tool the model called by `name`.
    pub(crate) fn by_model_name(&self, name: &str) -> Option<&Arc<Entry>> {
        self.by_model_name.get(name).map(|&i| &self.entries[i])
    }

    /// The tool recorded as `plugin`/`tool` in the ledger.
    pub(crate) fn by_recorded(
        &self,
        plugin: Option<&LedgerPluginId>,
        tool: &ToolCallName,
    ) -> Option<&Arc<Entry>> {
        let plugin = plugin?;
        self.by_plugin_tool
            .get(&(plugin.to_string(), tool.to_string()))
            .map(|&i| &self.entries[i])
    }

    /// The name a recorded call is shown to the model under (its recorded name when the
    /// tool is gone).
    pub(crate) fn model_name_of(
        &self,
        plugin: Option<&LedgerPluginId>,
        tool: &ToolCallName,
    ) -> String {
        self.by_recorded(plugin, tool)
            .map_or_else(|| tool.to_string(), |e| e.model_name.clone())
    }

    /// The definitions to offer the model.
    pub(crate) fn definitions(&self) -> &[ToolDefinition] {
        &self.definitions
    }

    /// The names offered, as the ledger records them.
    pub(crate) fn offered(&self) -> &[ToolCallName] {
        &self.offered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, max_length: u64) -> ToolSpec {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "description": "d",
            "input_schema": {"type": "object", "properties": {"t": {"type": "string", "maxLength": max_length}}},
            "output_schema": {"type": "object"},
        }))
        .unwrap()
    }

    #[test]
    fn validators_are_reused_per_schema_version_even_when_tenants_alternate() {
        let cache = SchemaCache::default();
        let plugin = PluginId::try_from("tasks").unwrap();
        let (v1, v2) = (spec("add_task", 10), spec("add_task", 20));
        let first = cache.get(&plugin, &v1);
        // Another tenant runs another version of the same plugin...
        let other = cache.get(&plugin, &v2);
        assert!(!Arc::ptr_eq(&first, &other));
        // ...and neither recompiles when runs alternate between them.
        assert!(Arc::ptr_eq(&first, &cache.get(&plugin, &v1)));
        assert!(Arc::ptr_eq(&other, &cache.get(&plugin, &v2)));
        assert!(
            first
                .check_input(&serde_json::json!({"t": "x".repeat(15)}))
                .is_err()
        );
        assert!(
            other
                .check_input(&serde_json::json!({"t": "x".repeat(15)}))
                .is_ok()
        );
    }
}
