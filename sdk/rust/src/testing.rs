//! Helpers for a plugin's native unit tests (not compiled for `wasm32`).
//!
//! - [`check_manifest`]: the manifest's tools and schemas must equal the code's, the rule
//!   the host enforces at load. With `CAIRN_BLESS=1` it writes the code's schemas into the
//!   manifest instead, keeping every other field.
//! - [`set_config`], [`clear_kv`], [`set_kv_quota`], [`mock_http`]: shape the host
//!   capabilities a tool sees. State is per thread, and `cargo test` runs each test on a
//!   thread of its own, so tests do not see each other's data.
//!
//! ```
//! use cairn_sdk::http::{self, Response};
//! cairn_sdk::testing::set_config("base_url", "https://crm.example.com");
//! cairn_sdk::testing::mock_http(|req| {
//!     assert_eq!(req.url, "https://crm.example.com/ping");
//!     Ok(Response::new(200, "pong"))
//! });
//! let url = format!("{}/ping", cairn_sdk::config::get("base_url").unwrap());
//! assert_eq!(http::get(&url).unwrap().text(), "pong");
//! ```

use crate::ToolDescriptor;
use crate::http::{HttpError, Request, Response};
use serde_json::Value;
use std::path::Path;

/// Sets (or replaces) a plugin setting that [`crate::config::get`] returns.
pub fn set_config(key: &str, value: &str) {
    crate::config::imp::set(key, Some(value));
}

/// Removes one plugin setting.
pub fn unset_config(key: &str) {
    crate::config::imp::set(key, None);
}

/// Removes all plugin settings.
pub fn clear_config() {
    crate::config::imp::clear();
}

/// Empties the in-memory key-value store.
pub fn clear_kv() {
    crate::kv::imp::clear();
}

/// Caps the in-memory store's size (keys plus values, in bytes), like the manifest's
/// `kv_quota_bytes`; `None` removes the cap.
pub fn set_kv_quota(bytes: Option<usize>) {
    crate::kv::imp::set_quota(bytes);
}

/// Answers every outgoing request (every redirect hop, with its absolute URL) with
/// `handler` instead of the network.
pub fn mock_http(handler: impl FnMut(&Request) -> Result<Response, HttpError> + 'static) {
    crate::http::imp::set_mock(Some(Box::new(handler)));
}

/// Removes the HTTP mock: requests then fail.
pub fn clear_http_mock() {
    crate::http::imp::set_mock(None);
}

/// Checks the manifest at `manifest_path` against the code's `descriptors`:
/// the manifest's tool set must equal the code's, and each tool's `input_schema` and
/// `output_schema` must equal the code's schema as JSON values once the top-level
/// `$schema` and `title` are removed from both sides (the rule the host applies at load,
/// through `cairn-manifest`), and each `input_schema` must have `"type": "object"`.
/// Validate the rest of the manifest with `cairn_manifest::Manifest::from_path`.
///
/// The error names the tool, the schema and the first differing JSON pointer.
///
/// With the environment variable `CAIRN_BLESS=1`, the manifest is rewritten instead:
/// schemas of listed tools are replaced by the code's, tools missing from the manifest
/// are added with placeholder descriptions to fill in, and every other field is kept.
/// Tools that exist only in the manifest are still an error.
pub fn check_manifest(
    manifest_path: impl AsRef<Path>,
    descriptors: &[ToolDescriptor],
) -> Result<(), String> {
    let path = manifest_path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut manifest: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    if std::env::var("CAIRN_BLESS").is_ok_and(|v| v == "1") {
        bless(&mut manifest, descriptors)?;
        let out = to_pretty(&manifest);
        if out != text {
            std::fs::write(path, out)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!(
                "cairn-sdk: wrote the code's schemas into {}",
                path.display()
            );
        }
    }
    compare(&manifest, descriptors).map_err(|e| {
        format!(
            "{}: {e}\n(run the test with CAIRN_BLESS=1 to write the code's schemas into the manifest)",
            path.display()
        )
    })
}

/// The code's schemas, pretty-printed as manifest `tools` entries, for pasting.
pub fn print_schemas(descriptors: &[ToolDescriptor]) {
    for d in descriptors {
        let entry = serde_json::json!({
            "name": d.name,
            "input_schema": normalise(&d.input_schema),
            "output_schema": normalise(&d.output_schema),
        });
        println!("{}", to_pretty(&entry));
    }
}

/// The schema as the manifest should hold it: without top-level `$schema` and `title`.
pub fn normalise(schema: &Value) -> Value {
    let mut schema = schema.clone();
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("$schema");
        obj.remove("title");
    }
    schema
}

fn manifest_tools(manifest: &Value) -> Result<&Vec<Value>, String> {
    manifest
        .get("tools")
        .and_then(Value::as_array)
        .ok_or_else(|| "the manifest has no `tools` array".to_owned())
}

fn tool_name(tool: &Value) -> Result<&str, String> {
    tool.get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| "a manifest tool has no `name`".to_owned())
}

fn compare(manifest: &Value, descriptors: &[ToolDescriptor]) -> Result<(), String> {
    let tools = manifest_tools(manifest)?;
    let mut names = Vec::new();
    for tool in tools {
        let name = tool_name(tool)?;
        if names.contains(&name) {
            return Err(format!("the manifest lists tool `{name}` twice"));
        }
        names.push(name);
    }
    for d in descriptors {
        if !names.contains(&d.name.as_str()) {
            return Err(format!(
                "tool `{}` is in the code but not in the manifest",
                d.name
            ));
        }
    }
    for name in &names {
        if !descriptors.iter().any(|d| d.name == *name) {
            return Err(format!(
                "tool `{name}` is in the manifest but not in the code"
            ));
        }
    }
    for tool in tools {
        let name = tool_name(tool)?;
        let d = descriptors
            .iter()
            .find(|d| d.name == name)
            .expect("checked above");
        for (field, code) in [
            ("input_schema", &d.input_schema),
            ("output_schema", &d.output_schema),
        ] {
            let in_manifest = tool
                .get(field)
                .ok_or_else(|| format!("tool `{name}` has no `{field}`"))?;
            let (a, b) = (normalise(in_manifest), normalise(code));
            if let Some(pointer) = first_difference(&a, &b, String::new()) {
                return Err(format!(
                    "tool `{name}`: `{field}` differs from the code's at JSON pointer `{pointer}` \
                     (manifest: {}, code: {})",
                    short(a.pointer(&pointer)),
                    short(b.pointer(&pointer)),
                ));
            }
        }
        if tool["input_schema"].get("type") != Some(&Value::from("object")) {
            return Err(format!(
                "tool `{name}`: `input_schema` must have \"type\": \"object\""
            ));
        }
    }
    Ok(())
}

fn short(v: Option<&Value>) -> String {
    let s = match v {
        Some(v) => v.to_string(),
        None => "absent".to_owned(),
    };
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The JSON pointer of the first place where `a` and `b` differ, if any.
fn first_difference(a: &Value, b: &Value, at: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let p = format!("{at}/{}", escape_pointer(k));
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => first_difference(u, v, p),
                    _ => Some(p),
                }
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            let common = x
                .iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (u, v))| first_difference(u, v, format!("{at}/{i}")));
            common
                .or_else(|| (x.len() != y.len()).then(|| format!("{at}/{}", x.len().min(y.len()))))
        }
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        _ if a == b => None,
        _ => Some(at),
    }
}

fn bless(manifest: &mut Value, descriptors: &[ToolDescriptor]) -> Result<(), String> {
    let tools = manifest
        .get_mut("tools")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| "the manifest has no `tools` array".to_owned())?;
    for d in descriptors {
        let existing = tools
            .iter_mut()
            .find(|t| t.get("name").and_then(Value::as_str) == Some(d.name.as_str()));
        match existing.and_then(Value::as_object_mut) {
            Some(tool) => {
                tool.insert("input_schema".into(), normalise(&d.input_schema));
                tool.insert("output_schema".into(), normalise(&d.output_schema));
            }
            None => tools.push(serde_json::json!({
                "name": d.name,
                "description": "TODO: what the tool does, for the model",
                "input_schema": normalise(&d.input_schema),
                "output_schema": normalise(&d.output_schema),
                "annotations": {
                    "read_only": false, "destructive": false,
                    "idempotent": false, "open_world": false
                },
                "examples": ["TODO: a request as a user would phrase it"]
            })),
        }
    }
    Ok(())
}

/// Pretty JSON with manifest keys in their documented order (serde_json sorts keys
/// otherwise), two-space indent, and a trailing newline.
fn to_pretty(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, 0, &mut out);
    out.push('\n');
    out
}

const KEY_ORDER: &[&str] = &[
    // manifest
    "id",
    "version",
    "publisher",
    "name",
    "description",
    "tools",
    // tool
    "input_schema",
    "output_schema",
    "annotations",
    "examples",
    "permissions",
    "config",
    // JSON Schema
    "$schema",
    "title",
    "type",
    "properties",
    "required",
];

fn write_value(value: &Value, indent: usize, out: &mut String) {
    let pad = |n: usize| "  ".repeat(n);
    match value {
        Value::Object(map) if !map.is_empty() => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|k| {
                (
                    KEY_ORDER
                        .iter()
                        .position(|o| o == k)
                        .unwrap_or(KEY_ORDER.len()),
                    (*k).clone(),
                )
            });
            out.push_str("{\n");
            for (i, k) in keys.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push_str(": ");
                write_value(&map[*k], indent + 1, out);
                if i + 1 < keys.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            out.push_str(&pad(indent));
            out.push('}');
        }
        Value::Array(items) if !items.is_empty() && !items.iter().all(is_scalar) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                write_value(item, indent + 1, out);
                if i + 1 < items.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            out.push_str(&pad(indent));
            out.push(']');
        }
        Value::Array(items) if items.len() > 3 || items.iter().any(|v| !is_short(v)) => {
            // Lists of strings (examples, hosts) one per line.
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                out.push_str(&item.to_string());
                if i + 1 < items.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            out.push_str(&pad(indent));
            out.push(']');
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(Value::to_string).collect();
            out.push('[');
            out.push_str(&parts.join(", "));
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Object(_) | Value::Array(_))
}

fn is_short(v: &Value) -> bool {
    v.to_string().len() <= 24
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn descriptor() -> ToolDescriptor {
        ToolDescriptor {
            name: "add".into(),
            input_schema: json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "title": "Add", "type": "object",
                "properties": { "a": { "type": "integer" } }, "required": ["a"]
            }),
            output_schema: json!({ "title": "Sum", "type": "integer" }),
        }
    }

    fn manifest(input: Value) -> Value {
        json!({
            "id": "calc", "version": "0.1.0", "publisher": "p", "description": "d",
            "tools": [{
                "name": "add", "description": "adds",
                "input_schema": input,
                "output_schema": { "type": "integer" },
                "annotations": { "read_only": true },
                "examples": ["add 1", "sum 2", "plus 3"]
            }],
            "permissions": {}
        })
    }

    fn check(m: &Value) -> Result<(), String> {
        compare(m, &[descriptor()])
    }

    #[test]
    fn equal_schemas_pass_ignoring_schema_and_title() {
        let m = manifest(json!({
            "title": "Other", "type": "object",
            "properties": { "a": { "type": "integer" } }, "required": ["a"]
        }));
        check(&m).unwrap();
    }

    #[test]
    fn reports_first_differing_pointer() {
        let m = manifest(json!({
            "type": "object",
            "properties": { "a": { "type": "string" } }, "required": ["a"]
        }));
        let e = check(&m).unwrap_err();
        assert!(e.contains("tool `add`"), "{e}");
        assert!(e.contains("`input_schema`"), "{e}");
        assert!(e.contains("`/properties/a/type`"), "{e}");
    }

    #[test]
    fn reports_missing_key_and_array_length() {
        let m = manifest(json!({
            "type": "object", "properties": { "a": { "type": "integer" } }
        }));
        assert!(check(&m).unwrap_err().contains("`/required`"));
        let m = manifest(json!({
            "type": "object",
            "properties": { "a": { "type": "integer" } }, "required": ["a", "b"]
        }));
        assert!(check(&m).unwrap_err().contains("`/required/1`"));
    }

    #[test]
    fn tool_sets_must_match() {
        let mut m = manifest(descriptor().input_schema);
        m["tools"][0]["name"] = json!("sub");
        let e = check(&m).unwrap_err();
        assert!(
            e.contains("`add` is in the code but not in the manifest"),
            "{e}"
        );
        let two = [
            descriptor(),
            ToolDescriptor {
                name: "mul".into(),
                ..descriptor()
            },
        ];
        let m = manifest(descriptor().input_schema);
        assert!(compare(&m, &two).unwrap_err().contains("`mul`"));
    }

    #[test]
    fn pointer_escapes_keys() {
        let d = first_difference(&json!({"a/b": 1}), &json!({"a/b": 2}), String::new());
        assert_eq!(d.as_deref(), Some("/a~1b"));
        assert_eq!(
            first_difference(&json!(1.0), &json!(1), String::new()),
            None
        );
    }

    #[test]
    fn bless_rewrites_schemas_and_keeps_the_rest() {
        let mut m = manifest(json!({ "type": "object" }));
        let extra = ToolDescriptor {
            name: "mul".into(),
            ..descriptor()
        };
        bless(&mut m, &[descriptor(), extra]).unwrap();
        assert_eq!(m["tools"][0]["description"], "adds");
        assert_eq!(
            m["tools"][0]["input_schema"],
            normalise(&descriptor().input_schema)
        );
        assert_eq!(m["tools"][1]["name"], "mul");
        // Round-trips through the pretty printer with the documented key order.
        let text = to_pretty(&m);
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m);
        assert!(text.find("\"id\"").unwrap() < text.find("\"tools\"").unwrap());
        assert!(text.find("\"tools\"").unwrap() < text.find("\"permissions\"").unwrap());
    }

    #[test]
    fn blesses_a_file_in_place() {
        let dir = std::env::temp_dir().join(format!("cairn-sdk-bless-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cairn-plugin.json");
        std::fs::write(&path, manifest(json!({"type": "object"})).to_string()).unwrap();
        assert!(check_manifest(&path, &[descriptor()]).is_err());
        let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        bless(&mut m, &[descriptor()]).unwrap();
        std::fs::write(&path, to_pretty(&m)).unwrap();
        check_manifest(&path, &[descriptor()]).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
