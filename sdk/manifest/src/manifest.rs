//! The manifest types (`cairn-plugin.json`) and their validation.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use cairn_ids::{PluginId, ToolName};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ManifestError, Result, SchemaKind};
use crate::host::HostPattern;
use crate::ids::Version;

/// Longest description (manifest, tool, setting), in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Longest publisher name, in characters.
pub const MAX_PUBLISHER_CHARS: usize = 256;
/// Most `examples` per tool.
pub const MAX_EXAMPLES: usize = 20;
/// Longest example request, in characters.
pub const MAX_EXAMPLE_CHARS: usize = 200;
/// Longest config setting name.
pub const MAX_CONFIG_KEY_LEN: usize = 64;
/// The `$schema` a tool schema may declare (the only dialect accepted).
pub const JSON_SCHEMA_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// A plugin manifest: the file `cairn-plugin.json` beside the plugin's `Cargo.toml`.
///
/// It declares what the plugin is, the tools it offers and what it may do. The host
/// grants the plugin nothing the manifest does not ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Cairn plugin manifest")]
pub struct Manifest {
    /// `id`: the plugin's id, unique within an installation, e.g. `"tasks"`.
    pub id: PluginId,
    /// `version`: the plugin's semantic version, e.g. `"0.1.0"`.
    pub version: Version,
    /// `publisher`: who publishes the plugin, shown to administrators.
    #[schemars(length(min = 1, max = 256))]
    pub publisher: String,
    /// `description`: what the plugin is for, shown to administrators and users.
    #[schemars(length(min = 1, max = 1024))]
    pub description: String,
    /// `tools`: the tools the plugin offers; at least one, names unique.
    #[schemars(length(min = 1))]
    pub tools: Vec<ToolSpec>,
    /// `permissions`: what the plugin may do; absent means the defaults (no outbound
    /// hosts, no OAuth, default limits).
    #[serde(default)]
    pub permissions: Permissions,
    /// `config`: settings an administrator provides at install, by name
    /// (`[a-z][a-z0-9_]*`, at most 64 characters). The plugin reads them through the WIT
    /// `config` interface.
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "pattern": "^[a-z][a-z0-9_]{0,63}$" }))]
    pub config: BTreeMap<String, ConfigSetting>,
}

/// One tool: an entry of `tools`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// `name`: the tool's name, unique within the plugin, e.g. `"add_task"`.
    pub name: ToolName,
    /// `description`: what the tool does, for the model and for tool retrieval.
    #[schemars(length(min = 1, max = 1024))]
    pub description: String,
    /// `input_schema`: JSON Schema (2020-12) of the arguments; `"type": "object"` at the
    /// top, since arguments are always a JSON object.
    #[schemars(schema_with = "input_schema_schema")]
    pub input_schema: Value,
    /// `output_schema`: JSON Schema (2020-12) of the result.
    #[schemars(schema_with = "output_schema_schema")]
    pub output_schema: Value,
    /// `annotations`: hints about the tool's behaviour, in MCP's terms; absent means all
    /// false.
    #[serde(default)]
    pub annotations: Annotations,
    /// `examples`: up to 20 example requests (1 to 200 characters each) that tool
    /// retrieval matches against the user's request.
    #[serde(default)]
    #[schemars(length(max = 20), inner(length(min = 1, max = 200)))]
    pub examples: Vec<String>,
}

/// Hints about a tool's behaviour (`annotations`), named as in MCP.
///
/// Every flag defaults to `false`. For `read_only` that is the safe side: a tool not
/// marked read-only is treated as having side effects, so the host asks the user for
/// approval before it runs. (MCP defaults `destructive` and `open_world` to true when
/// absent; here they are informational and absent means false, while approval hinges on
/// `read_only` alone.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Annotations {
    /// `read_only`: the tool does not change anything. Only read-only tools run without
    /// the user's approval.
    pub read_only: bool,
    /// `destructive`: the tool may delete or overwrite data (meaningful when not
    /// read-only).
    pub destructive: bool,
    /// `idempotent`: calling the tool again with the same arguments has no further
    /// effect.
    pub idempotent: bool,
    /// `open_world`: the tool reaches systems outside the plugin's own data (the web, a
    /// third-party API).
    pub open_world: bool,
}

/// What the plugin may do (`permissions`). Every field is optional with a conservative
/// default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    /// `outbound_hosts`: where the plugin may send HTTP requests, as
    /// `scheme://host[:port]` patterns, e.g. `"https://api.example.com"`,
    /// `"https://*.example.com:8443"`. Default: none.
    #[serde(default)]
    pub outbound_hosts: Vec<HostPattern>,
    /// `oauth`: the OAuth provider whose access token the host injects into outbound
    /// requests, and the scopes the plugin needs. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthPermission>,
    /// `kv_quota_bytes`: key-value storage per (tenant, plugin, user), in bytes.
    /// Default: 1048576 (1 MiB).
    #[serde(default = "defaults::kv_quota_bytes")]
    #[schemars(range(min = 1))]
    pub kv_quota_bytes: u64,
    /// `memory_mib`: the instance's memory cap, in MiB, 1 to 4096. Default: 64.
    #[serde(default = "defaults::memory_mib")]
    #[schemars(range(min = 1, max = 4096))]
    pub memory_mib: u32,
    /// `cpu_ms_per_call`: the deadline of one call, in milliseconds, 1 to 600000.
    /// Default: 1000.
    #[serde(default = "defaults::cpu_ms_per_call")]
    #[schemars(range(min = 1, max = 600000))]
    pub cpu_ms_per_call: u32,
    /// `max_output_bytes`: the largest result a call may return, in bytes.
    /// Default: 1048576 (1 MiB).
    #[serde(default = "defaults::max_output_bytes")]
    #[schemars(range(min = 1))]
    pub max_output_bytes: u64,
    /// `max_http_response_bytes`: the largest outbound HTTP response body, in bytes.
    /// Default: 4194304 (4 MiB).
    #[serde(default = "defaults::max_http_response_bytes")]
    #[schemars(range(min = 1))]
    pub max_http_response_bytes: u64,
    /// `max_outbound_requests`: the most outbound HTTP requests in one call (redirects
    /// count), 0 to 1000. Default: 16.
    #[serde(default = "defaults::max_outbound_requests")]
    #[schemars(range(max = 1000))]
    pub max_outbound_requests: u32,
}

impl Annotations {
    /// Whether the host must ask the user before running the tool: every tool not
    /// marked `read_only`.
    pub fn requires_approval(&self) -> bool {
        !self.read_only
    }
}

impl Permissions {
    /// Whether any of `outbound_hosts` allows a request to `scheme://host:port`
    /// (see [`HostPattern::matches`]).
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.outbound_hosts
            .iter()
            .any(|p| p.matches(scheme, host, port))
    }
}

/// Default permission values, named so serde, schemars and `Default` agree.
mod defaults {
    pub fn kv_quota_bytes() -> u64 {
        1024 * 1024
    }
    pub fn memory_mib() -> u32 {
        64
    }
    pub fn cpu_ms_per_call() -> u32 {
        1000
    }
    pub fn max_output_bytes() -> u64 {
        1024 * 1024
    }
    pub fn max_http_response_bytes() -> u64 {
        4 * 1024 * 1024
    }
    pub fn max_outbound_requests() -> u32 {
        16
    }
}

impl Default for Permissions {
    fn default() -> Self {
        Permissions {
            outbound_hosts: Vec::new(),
            oauth: None,
            kv_quota_bytes: defaults::kv_quota_bytes(),
            memory_mib: defaults::memory_mib(),
            cpu_ms_per_call: defaults::cpu_ms_per_call(),
            max_output_bytes: defaults::max_output_bytes(),
            max_http_response_bytes: defaults::max_http_response_bytes(),
            max_outbound_requests: defaults::max_outbound_requests(),
        }
    }
}

/// The OAuth access the plugin needs (`permissions.oauth`). The host holds the tokens
/// and adds them at egress; the plugin never sees one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthPermission {
    /// `provider`: the OAuth provider as configured on the server, e.g. `"microsoft"`.
    #[schemars(length(min = 1))]
    pub provider: String,
    /// `scopes`: the scopes to request, e.g. `["Calendars.Read"]`; each non-empty,
    /// without spaces, no duplicates.
    #[serde(default)]
    #[schemars(inner(length(min = 1)))]
    pub scopes: Vec<String>,
}

/// One setting of `config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigSetting {
    /// `description`: what the setting is, shown to the administrator.
    #[schemars(length(min = 1, max = 1024))]
    pub description: String,
    /// `required`: whether the plugin cannot be enabled without a value. Default: false.
    /// A required setting cannot have a `default`.
    #[serde(default)]
    pub required: bool,
    /// `default`: the value used when the administrator sets none. A secret setting
    /// cannot have one (the manifest is public).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// `secret`: the value is a credential (an API key, a password). The host keeps it
    /// write-only: listings say whether it is set, never what it is, and it stays out of
    /// the audit ledger and the logs. Default: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
}

fn input_schema_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "A JSON Schema (2020-12) object with \"type\": \"object\" at the top.",
        "type": "object",
        "properties": { "type": { "const": "object" } },
        "required": ["type"]
    })
}

fn output_schema_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "A JSON Schema (2020-12).",
        "type": ["object", "boolean"]
    })
}

impl Manifest {
    /// Parses a manifest from JSON and validates all of it, including that each tool's
    /// schemas are valid JSON Schema 2020-12.
    pub fn from_json_str(s: &str) -> Result<Manifest> {
        // serde's derived structs also accept a JSON array of the field values in order;
        // a manifest must spell out its field names, so objects are checked first.
        if let Ok(value) = serde_json::from_str::<Value>(s) {
            check_objects(&value)?;
        }
        let mut de = serde_json::Deserializer::from_str(s);
        let manifest: Manifest = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = display_path(e.path());
            json_error(path, e.into_inner())
        })?;
        de.end().map_err(|source| json_error(ROOT.into(), source))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Reads and parses a manifest file (usually `cairn-plugin.json`). A UTF-8 byte
    /// order mark, as some editors write, is ignored.
    pub fn from_path(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
            file: path.to_owned(),
            source,
        })?;
        Manifest::from_json_str(text.strip_prefix('\u{feff}').unwrap_or(&text))
    }

    /// The tool called `name`, if the manifest declares it.
    pub fn tool(&self, name: &str) -> Option<&ToolSpec> {
        self.tools.iter().find(|t| t.name.as_str() == name)
    }

    /// Checks every rule that the types alone do not: non-empty descriptions, valid
    /// tool schemas, unique names and hosts, numbers in range, config settings.
    /// [`Manifest::from_json_str`] calls it; call it on a manifest built in code.
    pub fn validate(&self) -> Result<()> {
        text_field("publisher", &self.publisher, MAX_PUBLISHER_CHARS)?;
        text_field("description", &self.description, MAX_DESCRIPTION_CHARS)?;
        if self.tools.is_empty() {
            return Err(ManifestError::invalid(
                "tools",
                "a plugin must declare at least one tool",
            ));
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, tool) in self.tools.iter().enumerate() {
            if let Some(first) = seen.insert(tool.name.as_str(), i) {
                return Err(ManifestError::invalid(
                    format!("tools[{i}].name"),
                    format!(
                        "duplicate tool name \"{}\" (already used by tools[{first}])",
                        tool.name
                    ),
                ));
            }
            tool.validate(&format!("tools[{i}]"))?;
        }
        self.permissions.validate("permissions")?;
        for (key, setting) in &self.config {
            let path = key_path("config", key);
            if !is_config_key(key) {
                return Err(ManifestError::invalid(
                    path,
                    format!(
                        "invalid setting name \"{}\": use 1 to {MAX_CONFIG_KEY_LEN} characters: a \
                         lowercase letter first, then lowercase letters, digits or '_'",
                        key.escape_debug()
                    ),
                ));
            }
            setting.validate(&path)?;
        }
        Ok(())
    }
}

impl ToolSpec {
    fn validate(&self, path: &str) -> Result<()> {
        text_field(
            &format!("{path}.description"),
            &self.description,
            MAX_DESCRIPTION_CHARS,
        )?;
        check_schema(
            &format!("{path}.input_schema"),
            &self.input_schema,
            SchemaKind::Input,
        )?;
        check_schema(
            &format!("{path}.output_schema"),
            &self.output_schema,
            SchemaKind::Output,
        )?;
        if self.examples.len() > MAX_EXAMPLES {
            return Err(ManifestError::invalid(
                format!("{path}.examples"),
                format!(
                    "{} examples given; at most {MAX_EXAMPLES} are allowed",
                    self.examples.len()
                ),
            ));
        }
        for (i, example) in self.examples.iter().enumerate() {
            text_field(&format!("{path}.examples[{i}]"), example, MAX_EXAMPLE_CHARS)?;
        }
        Ok(())
    }
}

impl Permissions {
    fn validate(&self, path: &str) -> Result<()> {
        let mut seen: HashMap<&HostPattern, usize> = HashMap::new();
        for (i, host) in self.outbound_hosts.iter().enumerate() {
            if let Some(first) = seen.insert(host, i) {
                return Err(ManifestError::invalid(
                    format!("{path}.outbound_hosts[{i}]"),
                    format!("duplicate host pattern \"{host}\" (same as outbound_hosts[{first}])"),
                ));
            }
        }
        if let Some(oauth) = &self.oauth {
            oauth.validate(&format!("{path}.oauth"))?;
        }
        let field = |name: &str| format!("{path}.{name}");
        range(
            &field("kv_quota_bytes"),
            self.kv_quota_bytes,
            1,
            u64::MAX,
            "bytes",
        )?;
        range(&field("memory_mib"), self.memory_mib.into(), 1, 4096, "MiB")?;
        range(
            &field("cpu_ms_per_call"),
            self.cpu_ms_per_call.into(),
            1,
            600_000,
            "ms",
        )?;
        range(
            &field("max_output_bytes"),
            self.max_output_bytes,
            1,
            u64::MAX,
            "bytes",
        )?;
        range(
            &field("max_http_response_bytes"),
            self.max_http_response_bytes,
            1,
            u64::MAX,
            "bytes",
        )?;
        range(
            &field("max_outbound_requests"),
            self.max_outbound_requests.into(),
            0,
            1000,
            "requests",
        )?;
        Ok(())
    }
}

impl OAuthPermission {
    fn validate(&self, path: &str) -> Result<()> {
        if self.provider.trim().is_empty() {
            return Err(ManifestError::invalid(
                format!("{path}.provider"),
                "must not be empty",
            ));
        }
        if self.provider.chars().any(char::is_whitespace) {
            return Err(ManifestError::invalid(
                format!("{path}.provider"),
                "must not contain whitespace",
            ));
        }
        for (i, scope) in self.scopes.iter().enumerate() {
            let at = format!("{path}.scopes[{i}]");
            if scope.is_empty() {
                return Err(ManifestError::invalid(at, "a scope must not be empty"));
            }
            if scope
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
            {
                return Err(ManifestError::invalid(
                    at,
                    format!(
                        "scope \"{}\" contains whitespace, a quote or a backslash; list each \
                         scope as its own string",
                        scope.escape_debug()
                    ),
                ));
            }
            if self.scopes[..i].contains(scope) {
                return Err(ManifestError::invalid(
                    at,
                    format!("duplicate scope \"{scope}\""),
                ));
            }
        }
        Ok(())
    }
}

impl ConfigSetting {
    fn validate(&self, path: &str) -> Result<()> {
        text_field(
            &format!("{path}.description"),
            &self.description,
            MAX_DESCRIPTION_CHARS,
        )?;
        if self.required && self.default.is_some() {
            return Err(ManifestError::invalid(
                path,
                "a required setting cannot have a default; remove \"default\" or set \
                 \"required\": false",
            ));
        }
        if self.secret && self.default.is_some() {
            return Err(ManifestError::invalid(
                path,
                "a secret setting cannot have a default: the manifest is public, so the \
                 value would not be secret; remove \"default\"",
            ));
        }
        Ok(())
    }
}

/// How the whole document is named in error paths.
pub(crate) const ROOT: &str = "manifest";

fn display_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => out = key_path(&out, key),
            Segment::Enum { variant } => out = key_path(&out, variant),
            // A key the parser could not read (malformed JSON): the parent is the place.
            Segment::Unknown => {}
        }
    }
    if out.is_empty() { ROOT.into() } else { out }
}

fn json_error(path: String, source: serde_json::Error) -> ManifestError {
    use serde_json::error::Category;
    match source.classify() {
        Category::Syntax | Category::Eof => ManifestError::Syntax { path, source },
        Category::Data | Category::Io => ManifestError::Json { path, source },
    }
}

/// Requires a JSON object wherever the manifest has a struct: the document, each tool,
/// `annotations`, `permissions`, `oauth` and each config setting.
fn check_objects(root: &Value) -> Result<()> {
    fn object<'a>(path: &str, v: &'a Value) -> Result<&'a serde_json::Map<String, Value>> {
        v.as_object().ok_or_else(|| {
            let found = match v {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                Value::Array(_) => "an array",
                Value::Object(_) => "an object",
            };
            ManifestError::invalid(path, format!("expected a JSON object, found {found}"))
        })
    }
    let root = object(ROOT, root)?;
    if let Some(Value::Array(tools)) = root.get("tools") {
        for (i, tool) in tools.iter().enumerate() {
            let path = format!("tools[{i}]");
            if let Some(annotations) = object(&path, tool)?.get("annotations") {
                object(&format!("{path}.annotations"), annotations)?;
            }
        }
    }
    if let Some(permissions) = root.get("permissions") {
        let permissions = object("permissions", permissions)?;
        if let Some(oauth) = permissions.get("oauth").filter(|v| !v.is_null()) {
            object("permissions.oauth", oauth)?;
        }
    }
    if let Some(config) = root.get("config") {
        for (key, setting) in object("config", config)? {
            object(&key_path("config", key), setting)?;
        }
    }
    Ok(())
}

/// `prefix.key`, or `prefix["key"]` when the key is not a plain identifier.
fn key_path(prefix: &str, key: &str) -> String {
    let plain = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    match (prefix.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{prefix}.{key}"),
        (_, false) => format!("{prefix}[{}]", Value::String(key.to_owned())),
    }
}

fn is_config_key(key: &str) -> bool {
    let b = key.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_CONFIG_KEY_LEN
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

fn text_field(path: &str, text: &str, max_chars: usize) -> Result<()> {
    if text.trim().is_empty() {
        return Err(ManifestError::invalid(path, "must not be empty"));
    }
    let n = text.chars().count();
    if n > max_chars {
        return Err(ManifestError::invalid(
            path,
            format!("is {n} characters long; at most {max_chars} are allowed"),
        ));
    }
    Ok(())
}

fn range(path: &str, value: u64, min: u64, max: u64, unit: &str) -> Result<()> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    let allowed = if max == u64::MAX {
        format!("at least {min}")
    } else {
        format!("from {min} to {max}")
    };
    Err(ManifestError::invalid(
        path,
        format!("{value} is out of range; must be {allowed} ({unit})"),
    ))
}

/// Checks that `schema` is a JSON Schema 2020-12 that compiles without fetching
/// anything, and for input schemas that it describes an object.
fn check_schema(path: &str, schema: &Value, kind: SchemaKind) -> Result<()> {
    let invalid = |message: String| ManifestError::InvalidSchema {
        path: path.to_owned(),
        message,
    };
    if let Some(declared) = schema.get("$schema") {
        let ok = declared
            .as_str()
            .is_some_and(|s| s.trim_end_matches('#') == JSON_SCHEMA_2020_12);
        if !ok {
            return Err(invalid(format!(
                "\"$schema\" is {declared}; only \"{JSON_SCHEMA_2020_12}\" is accepted (or leave \
                 it out)"
            )));
        }
    }
    check_refs(schema, &mut String::new()).map_err(invalid)?;
    jsonschema::draft202012::meta::validate(schema).map_err(|e| {
        let at = e.instance_path().to_string();
        if at.is_empty() {
            invalid(e.to_string())
        } else {
            invalid(format!("at \"{at}\": {e}"))
        }
    })?;
    jsonschema::draft202012::new(schema).map_err(|e| invalid(e.to_string()))?;
    if kind == SchemaKind::Input && schema.get("type") != Some(&Value::from("object")) {
        return Err(ManifestError::invalid(
            path,
            "must have \"type\": \"object\" at the top level: a tool's arguments are always a \
             JSON object",
        ));
    }
    Ok(())
}

/// Refuses `$ref`s that point outside the schema: the host never fetches a schema, so a
/// manifest must be complete in itself. (Compiling would fail too, but with a message
/// about the resolver rather than the manifest.)
fn check_refs(schema: &Value, pointer: &mut String) -> std::result::Result<(), String> {
    match schema {
        Value::Object(map) => {
            for (key, v) in map {
                // Keywords whose values are data, not schemas.
                if matches!(key.as_str(), "const" | "enum" | "default" | "examples") {
                    continue;
                }
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                if let Value::String(target) = v
                    && is_ref_keyword(key)
                    && !target.starts_with('#')
                {
                    return Err(format!(
                        "at \"{pointer}\": {key} \"{}\" points outside the schema; \
                         references must stay inside it (\"#/$defs/...\"), since schemas \
                         are never fetched",
                        target.escape_debug()
                    ));
                }
                check_refs(v, pointer)?;
                pointer.truncate(len);
            }
            Ok(())
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let len = pointer.len();
                pointer.push_str(&format!("/{i}"));
                check_refs(v, pointer)?;
                pointer.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn is_ref_keyword(key: &str) -> bool {
    matches!(key, "$ref" | "$dynamicRef")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "id": "t", "version": "1.0.0", "publisher": "p", "description": "d",
            "tools": [{ "name": "a", "description": "A", "input_schema": {"type": "object"}, "output_schema": true }]
        })
    }

    fn parse(v: &Value) -> Result<Manifest> {
        Manifest::from_json_str(&v.to_string())
    }

    fn with_input_schema(schema: Value) -> Result<Manifest> {
        let mut v = base();
        v["tools"][0]["input_schema"] = schema;
        parse(&v)
    }

    #[test]
    fn defaults_fill_in() {
        let m = parse(&base()).unwrap();
        assert_eq!(m.permissions, Permissions::default());
        assert_eq!(m.tools[0].annotations, Annotations::default());
        assert!(m.config.is_empty());
        assert_eq!(m.tool("a").map(|t| t.name.as_str()), Some("a"));
        assert!(m.tool("b").is_none());
        m.validate().unwrap();
    }

    #[test]
    fn schemas_with_local_refs_and_2020_12_dialect_pass() {
        with_input_schema(json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema#",
            "type": "object",
            "properties": { "d": { "$ref": "#/$defs/D" }, "const": { "const": { "$ref": "x" } } },
            "$defs": { "D": { "type": "string" } }
        }))
        .unwrap();
    }

    #[test]
    fn schemas_never_reach_outside() {
        for target in [
            "file:///etc/passwd",
            "other.json",
            "https://example.com/s.json#/x",
        ] {
            let e =
                with_input_schema(json!({"type": "object", "properties": {"a": {"$ref": target}}}))
                    .unwrap_err();
            assert!(matches!(e, ManifestError::InvalidSchema { .. }), "{e}");
            assert!(e.to_string().contains("points outside the schema"), "{e}");
        }
        let e =
            with_input_schema(json!({"type": "object", "$dynamicRef": "https://x/y"})).unwrap_err();
        assert!(e.to_string().contains("$dynamicRef"), "{e}");
    }

    #[test]
    fn boolean_input_schema_is_not_an_object_schema() {
        let e = with_input_schema(json!(true)).unwrap_err();
        assert_eq!(e.path().as_deref(), Some("tools[0].input_schema"));
        assert!(e.to_string().contains("\"type\": \"object\""), "{e}");
    }

    #[test]
    fn structs_must_be_objects() {
        let mut v = base();
        v["permissions"] = json!({"oauth": ["microsoft", []]});
        assert_eq!(
            parse(&v).unwrap_err().to_string(),
            "permissions.oauth: expected a JSON object, found an array"
        );
        let mut v = base();
        v["config"] = json!({"a b": "x"});
        assert_eq!(
            parse(&v).unwrap_err().to_string(),
            "config[\"a b\"]: expected a JSON object, found a string"
        );
        let mut v = base();
        v["permissions"] = json!({"oauth": null});
        assert!(parse(&v).unwrap().permissions.oauth.is_none());
    }

    #[test]
    fn helpers() {
        let mut v = base();
        v["permissions"] =
            json!({"outbound_hosts": ["https://*.example.com", "http://127.0.0.1:8080"]});
        v["tools"][0]["annotations"] = json!({"read_only": true});
        let m = parse(&v).unwrap();
        assert!(m.permissions.allows("https", "api.example.com", 443));
        assert!(m.permissions.allows("http", "127.0.0.1", 8080));
        assert!(!m.permissions.allows("https", "example.com", 443));
        assert!(!Permissions::default().allows("https", "api.example.com", 443));
        assert!(!m.tools[0].annotations.requires_approval());
        assert!(Annotations::default().requires_approval());
    }

    #[test]
    fn validate_catches_what_code_builds() {
        let mut m = parse(&base()).unwrap();
        m.permissions.memory_mib = 0;
        assert_eq!(
            m.validate().unwrap_err().to_string(),
            "permissions.memory_mib: 0 is out of range; must be from 1 to 4096 (MiB)"
        );
    }

    #[test]
    fn from_path_reports_the_file_and_skips_a_bom() {
        let dir = std::env::temp_dir().join(format!("cairn-manifest-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cairn-plugin.json");
        std::fs::write(&file, format!("\u{feff}{}", base())).unwrap();
        assert!(Manifest::from_path(&file).is_ok());
        let missing = dir.join("missing.json");
        let e = Manifest::from_path(&missing).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("cannot read {}", missing.display())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn paths_quote_unusual_keys() {
        assert_eq!(key_path("config", "base_url"), "config.base_url");
        assert_eq!(key_path("config", "a\"b"), "config[\"a\\\"b\"]");
        assert_eq!(key_path("", "id"), "id");
    }
}
