//! Checking what a component says about its tools against its manifest.
//!
//! The WIT `describe` export returns each tool's name and the schemas generated from its
//! Rust types. The manifest is what administrators review and what the host enforces,
//! so the two must agree exactly; `cairn-plugin build` and the host's install both run
//! [`Manifest::check_descriptors`].

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ManifestError, Result, SchemaKind};
use crate::manifest::Manifest;

/// What a component says about one of its tools (WIT `tool-descriptor`), with the
/// schemas parsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolDescriptor {
    /// `name`: the tool's name.
    pub name: String,
    /// `input_schema`: JSON Schema of the arguments.
    pub input_schema: Value,
    /// `output_schema`: JSON Schema of the result.
    pub output_schema: Value,
}

impl ToolDescriptor {
    /// Builds a descriptor from the strings the WIT `describe` export returns.
    pub fn from_wit(name: String, input_schema: &str, output_schema: &str) -> Result<Self> {
        let parse = |text: &str, which| {
            serde_json::from_str(text).map_err(|source| ManifestError::DescriptorJson {
                tool: name.clone(),
                which,
                source,
            })
        };
        let input_schema = parse(input_schema, SchemaKind::Input)?;
        let output_schema = parse(output_schema, SchemaKind::Output)?;
        Ok(ToolDescriptor {
            name,
            input_schema,
            output_schema,
        })
    }
}

impl Manifest {
    /// Checks what the component says about its tools (WIT `describe`) against the
    /// manifest.
    ///
    /// Each side must name the same tools, and each tool's `input_schema` and
    /// `output_schema` must be equal as JSON after dropping the top-level `$schema` and
    /// `title` (schema generators add those; they do not change what validates). Numbers
    /// compare by value, so `1` equals `1.0`. The error names the first difference.
    pub fn check_descriptors(&self, code: &[ToolDescriptor]) -> Result<()> {
        let mut by_name: BTreeMap<&str, &ToolDescriptor> = BTreeMap::new();
        for d in code {
            if by_name.insert(d.name.as_str(), d).is_some() {
                return Err(ManifestError::DuplicateDescriptor {
                    tool: d.name.clone(),
                });
            }
        }
        let declared: BTreeSet<&str> = self.tools.iter().map(|t| t.name.as_str()).collect();
        let only_in_manifest: Vec<String> = declared
            .iter()
            .filter(|n| !by_name.contains_key(*n))
            .map(|n| n.to_string())
            .collect();
        let only_in_code: Vec<String> = by_name
            .keys()
            .filter(|n| !declared.contains(*n))
            .map(|n| n.to_string())
            .collect();
        if !only_in_manifest.is_empty() || !only_in_code.is_empty() {
            return Err(ManifestError::ToolsDiffer {
                only_in_manifest,
                only_in_code,
            });
        }
        for (index, tool) in self.tools.iter().enumerate() {
            let d = by_name[tool.name.as_str()];
            for (which, ours, theirs) in [
                (SchemaKind::Input, &tool.input_schema, &d.input_schema),
                (SchemaKind::Output, &tool.output_schema, &d.output_schema),
            ] {
                if let Some(diff) = first_difference(&normalise(ours), &normalise(theirs)) {
                    return Err(ManifestError::SchemaMismatch {
                        index,
                        tool: tool.name.to_string(),
                        which,
                        pointer: diff.pointer,
                        manifest: diff.left,
                        code: diff.right,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The schema without its top-level `$schema` and `title`.
fn normalise(schema: &Value) -> Value {
    let mut schema = schema.clone();
    if let Value::Object(map) = &mut schema {
        map.remove("$schema");
        map.remove("title");
    }
    schema
}

struct Difference {
    pointer: String,
    left: String,
    right: String,
}

/// The first place where `a` and `b` differ, walking object keys in sorted order.
fn first_difference(a: &Value, b: &Value) -> Option<Difference> {
    let mut pointer = String::new();
    walk(Some(a), Some(b), &mut pointer)
}

fn walk(a: Option<&Value>, b: Option<&Value>, pointer: &mut String) -> Option<Difference> {
    let differ = |pointer: &str| {
        Some(Difference {
            pointer: pointer.to_owned(),
            left: short(a),
            right: short(b),
        })
    };
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                if let Some(d) = walk(x.get(key), y.get(key), pointer) {
                    return Some(d);
                }
                pointer.truncate(len);
            }
            None
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            for i in 0..x.len().max(y.len()) {
                let len = pointer.len();
                pointer.push_str(&format!("/{i}"));
                if let Some(d) = walk(x.get(i), y.get(i), pointer) {
                    return Some(d);
                }
                pointer.truncate(len);
            }
            None
        }
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            let same = match (x.as_i128(), y.as_i128()) {
                (Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            };
            if same { None } else { differ(pointer) }
        }
        (x, y) if x == y => None,
        _ => differ(pointer),
    }
}

/// A value as compact JSON, cut short for an error message.
fn short(v: Option<&Value>) -> String {
    const MAX: usize = 80;
    let Some(v) = v else { return "nothing".into() };
    let text = v.to_string();
    if text.chars().count() <= MAX {
        text
    } else {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest() -> Manifest {
        Manifest::from_json_str(
            &json!({
                "id": "t", "version": "1.0.0", "publisher": "p", "description": "d",
                "tools": [
                    { "name": "a", "description": "A", "output_schema": {"type": "string"},
                      "input_schema": { "type": "object", "properties": {"x": {"type": "integer", "minimum": 1}}, "required": ["x"] } },
                    { "name": "b", "description": "B", "input_schema": {"type": "object"}, "output_schema": true }
                ]
            })
            .to_string(),
        )
        .unwrap()
    }

    fn code() -> Vec<ToolDescriptor> {
        vec![
            ToolDescriptor {
                name: "b".into(),
                input_schema: json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "BArgs", "type": "object"}),
                output_schema: json!(true),
            },
            ToolDescriptor {
                name: "a".into(),
                input_schema: json!({ "type": "object", "properties": {"x": {"type": "integer", "minimum": 1.0}}, "required": ["x"] }),
                output_schema: json!({"type": "string", "title": "Out"}),
            },
        ]
    }

    #[test]
    fn matching_descriptors_pass_in_any_order() {
        manifest().check_descriptors(&code()).unwrap();
    }

    #[test]
    fn missing_and_extra_tools_are_named() {
        let mut c = code();
        c[1].name = "c".into();
        let e = manifest().check_descriptors(&c).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tools: the manifest and the component disagree on tools: declared in the \
             manifest but not described by the component: \"a\"; described by the component \
             but not declared in the manifest: \"c\""
        );
        let e = manifest().check_descriptors(&c[..1]).unwrap_err();
        assert!(
            matches!(e, ManifestError::ToolsDiffer { ref only_in_code, .. } if only_in_code.is_empty())
        );
    }

    #[test]
    fn duplicate_descriptor() {
        let mut c = code();
        c.push(c[0].clone());
        let e = manifest().check_descriptors(&c).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tools: the component describes tool \"b\" more than once"
        );
    }

    #[test]
    fn schema_difference_names_tool_schema_and_pointer() {
        let mut c = code();
        c[1].input_schema["properties"]["x"]["type"] = json!("string");
        let e = manifest().check_descriptors(&c).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tools[0].input_schema: the manifest's input_schema for tool \"a\" differs from the \
             component's at JSON pointer \"/properties/x/type\": manifest has \"integer\", \
             component has \"string\""
        );
        assert_eq!(e.path().as_deref(), Some("tools[0].input_schema"));

        let mut c = code();
        c[0].output_schema = json!({"type": "object"});
        let e = manifest().check_descriptors(&c).unwrap_err();
        assert!(matches!(
            e,
            ManifestError::SchemaMismatch { index: 1, which: SchemaKind::Output, ref pointer, .. } if pointer.is_empty()
        ));

        // A title below the top level is part of the schema.
        let mut c = code();
        c[1].input_schema["properties"]["x"]["title"] = json!("X");
        let e = manifest().check_descriptors(&c).unwrap_err();
        assert!(
            e.to_string()
                .contains("\"/properties/x/title\": manifest has nothing, component has \"X\""),
            "{e}"
        );

        let mut c = code();
        c[1].input_schema["required"] = json!(["x", "y"]);
        let e = manifest().check_descriptors(&c).unwrap_err();
        assert!(
            e.to_string()
                .contains("\"/required/1\": manifest has nothing, component has \"y\""),
            "{e}"
        );
    }

    /// What a plugin built with the SDK describes: schemars output, with `$schema` and
    /// `title`, checked against the same schema pasted into a manifest without them.
    #[test]
    fn schemars_output_matches_its_manifest_copy() {
        #[derive(schemars::JsonSchema)]
        #[allow(dead_code)]
        struct AddTask {
            /// The task's title.
            title: String,
            due: Option<String>,
        }
        let generated = schemars::schema_for!(AddTask).to_value();
        assert_eq!(generated["title"], "AddTask");
        let mut in_manifest = generated.clone();
        in_manifest.as_object_mut().unwrap().remove("$schema");
        in_manifest.as_object_mut().unwrap().remove("title");
        let m = Manifest::from_json_str(
            &json!({
                "id": "t", "version": "1.0.0", "publisher": "p", "description": "d",
                "tools": [{ "name": "add_task", "description": "Adds.", "input_schema": in_manifest, "output_schema": true }]
            })
            .to_string(),
        )
        .unwrap();
        let code = [ToolDescriptor {
            name: "add_task".into(),
            input_schema: generated,
            output_schema: json!(true),
        }];
        m.check_descriptors(&code).unwrap();
    }

    #[test]
    fn pointer_escapes_keys() {
        let d = first_difference(&json!({"a/b": {"c~d": 1}}), &json!({"a/b": {"c~d": 2}})).unwrap();
        assert_eq!(d.pointer, "/a~1b/c~0d");
        assert!(first_difference(&json!([1, 2.0]), &json!([1.0, 2])).is_none());
        assert!(first_difference(&json!(1), &json!(2)).is_some());
    }

    #[test]
    fn from_wit_parses_schemas() {
        let d = ToolDescriptor::from_wit("a".into(), "{\"type\":\"object\"}", "true").unwrap();
        assert_eq!(d.output_schema, json!(true));
        let e = ToolDescriptor::from_wit("a".into(), "{", "true").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("the component's input_schema for tool \"a\" is not valid JSON"),
            "{e}"
        );
    }
}
