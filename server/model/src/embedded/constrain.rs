//! Constrained decoding with llguidance: the reply is either a plain-text answer or one
//! call `{"tool": NAME, "arguments": ARGS}` naming an offered tool with arguments valid
//! under its schema, so every call the provider returns parses and names a real tool.
//!
//! SmolLM2-135M cannot be trusted to produce a parsable call on its own (0 of 12 in the
//! notes' zero-shot trial); under the grammar every finished call is valid.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::{Value, json};
use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenizerEnv};

use super::tokenizer::{TokenId, Tokenizer};
use crate::grounding::{Grounding, ground_schema};
use crate::{ModelError, ToolChoice, ToolDefinition};

/// Longest string the grammar lets the model write inside arguments when the schema sets
/// no `maxLength`; a tiny model can otherwise loop inside a string until the token cap.
const DEFAULT_MAX_STRING: u64 = 128;

/// Likewise for arrays without `maxItems`.
const DEFAULT_MAX_ITEMS: u64 = 8;

/// llguidance's view of our tokenizer: the token trie plus our BPE for re-tokenizing.
struct TokenizerEnvImpl {
    tokenizer: Arc<Tokenizer>,
    trie: TokTrie,
}

impl TokenizerEnv for TokenizerEnvImpl {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie
            .tokenize_with_greedy_fallback(s, |s| self.tokenizer.encode(s))
    }
}

/// Compiles reply grammars for one tokenizer; built once per loaded model (it costs a
/// few hundred milliseconds), shared by every request.
pub struct Constrainer {
    factory: ParserFactory,
}

impl std::fmt::Debug for Constrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constrainer").finish_non_exhaustive()
    }
}

/// What a reply may be.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyShape {
    /// Anything (no tools offered): no grammar at all.
    Free,
    /// Plain text only (tools offered but `ToolChoice::None`).
    AnswerOnly,
    /// A call to one of these tools, or plain text (`ToolChoice::Auto`).
    CallOrAnswer(Vec<ToolDefinition>),
    /// A call to one of these tools (`Required`, or the one named by `Tool(name)`).
    CallOnly(Vec<ToolDefinition>),
}

impl ReplyShape {
    /// The shape a request's tools and tool choice allow; a `Tool(name)` naming no offered
    /// tool, or `Required` with no tools, is the caller's mistake.
    pub fn for_request(tools: &[ToolDefinition], choice: &ToolChoice) -> Result<Self, ModelError> {
        match choice {
            _ if tools.is_empty() => match choice {
                ToolChoice::Required | ToolChoice::Tool(_) => Err(ModelError::Embedded(
                    "tool_choice requires a tool call but no tools were offered".into(),
                )),
                _ => Ok(Self::Free),
            },
            ToolChoice::Auto => Ok(Self::CallOrAnswer(tools.to_vec())),
            ToolChoice::None => Ok(Self::AnswerOnly),
            ToolChoice::Required => Ok(Self::CallOnly(tools.to_vec())),
            ToolChoice::Tool(name) => {
                let tool = tools.iter().find(|t| &t.name == name).ok_or_else(|| {
                    ModelError::Embedded(format!(
                        "tool_choice names `{name}`, which is not offered"
                    ))
                })?;
                Ok(Self::CallOnly(vec![tool.clone()]))
            }
        }
    }
}

impl Constrainer {
    /// Builds the token trie and parser factory. `eos` ends a reply (`<|im_end|>`).
    pub fn new(tokenizer: Arc<Tokenizer>, eos: TokenId) -> Result<Self, ModelError> {
        let mut words: Vec<Vec<u8>> = tokenizer.token_bytes().to_vec();
        for (id, w) in words.iter_mut().enumerate() {
            if tokenizer.is_special(id as TokenId) {
                w.insert(0, TokTrie::SPECIAL_TOKEN_MARKER);
            }
        }
        let mut info = TokRxInfo::new(words.len() as u32, eos);
        info.tok_end_of_turn = Some(eos);
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(TokenizerEnvImpl { tokenizer, trie });
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| ModelError::Embedded(format!("llguidance: {e}")))?;
        factory.quiet();
        Ok(Self { factory })
    }

    /// A matcher for one reply, or `None` when the reply is unconstrained. With
    /// `grounding`, a call's arguments are narrowed to what the conversation supplies
    /// ([`crate::grounding::ground_schema`]).
    pub fn matcher(
        &self,
        shape: &ReplyShape,
        grounding: Option<&Grounding>,
    ) -> Result<Option<Matcher>, ModelError> {
        let Some(lark) = lark_grammar(shape, grounding) else {
            return Ok(None);
        };
        let parser = self
            .factory
            .create_parser(TopLevelGrammar::from_lark(lark))
            .map_err(|e| {
                ModelError::Embedded(format!("a tool schema llguidance cannot compile: {e}"))
            })?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(ModelError::Embedded(format!("llguidance: {e}")));
        }
        Ok(Some(matcher))
    }
}

/// The Lark grammar for a reply shape. Text may not start with `{` or whitespace, so
/// "call or text" is decided by the first token.
pub fn lark_grammar(shape: &ReplyShape, grounding: Option<&Grounding>) -> Option<String> {
    const TEXT: &str = "answer: TEXT\nTEXT: /[^{\\s](?s:.)*/\n";
    match shape {
        ReplyShape::Free => None,
        ReplyShape::AnswerOnly => Some(format!("start: answer\n{TEXT}")),
        ReplyShape::CallOrAnswer(tools) => Some(format!(
            "start: call | answer\ncall: %json {}\n{TEXT}",
            call_schema(tools, grounding)
        )),
        ReplyShape::CallOnly(tools) => Some(format!(
            "start: call\ncall: %json {}\n",
            call_schema(tools, grounding)
        )),
    }
}

/// `anyOf` one `{"tool": const, "arguments": schema}` per tool (llguidance handles `anyOf`
/// better than `oneOf`), with fixed separators matching the prompt's example.
///
/// Each tool's schema is nested under `arguments`, so its local definitions (`$defs`,
/// `definitions`, as schemars writes them for enums) are hoisted to the root under a
/// per-tool prefix and its `#/$defs/...` references rewritten: references resolve
/// against the document root, where they would otherwise point at nothing.
///
/// With `grounding`, each tool's arguments are then narrowed to the conversation's spans,
/// dates and numbers (after free values become scalars, so those are grounded too).
pub fn call_schema(tools: &[ToolDefinition], grounding: Option<&Grounding>) -> Value {
    let mut defs = serde_json::Map::new();
    let options: Vec<Value> = tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut args = t.parameters.clone();
            narrow_free_values(&mut args);
            if let Some(g) = grounding {
                args = ground_schema(&args, &t.name, g);
            }
            cap_strings(&mut args);
            hoist_definitions(&mut args, &format!("t{i}_"), &mut defs);
            json!({
                "type": "object",
                "properties": { "tool": { "const": t.name }, "arguments": args },
                "required": ["tool", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    let mut schema = json!({
        "anyOf": options,
        "x-guidance": {
            "whitespace_flexible": false,
            "key_separator": ": ",
            "item_separator": ", ",
        },
    });
    if !defs.is_empty() {
        schema["$defs"] = Value::Object(defs);
    }
    schema
}

/// Moves `schema`'s top-level `$defs` and `definitions` into `defs` as `<prefix><name>`
/// and rewrites every reference to them inside `schema` (the moved definitions included).
fn hoist_definitions(schema: &mut Value, prefix: &str, defs: &mut serde_json::Map<String, Value>) {
    let Value::Object(map) = schema else {
        return;
    };
    let mut local = Vec::new();
    for key in ["$defs", "definitions"] {
        if let Some(Value::Object(d)) = map.remove(key) {
            local.extend(d);
        }
    }
    if local.is_empty() {
        return;
    }
    rewrite_refs(schema, prefix);
    for (name, mut def) in local {
        rewrite_refs(&mut def, prefix);
        defs.insert(format!("{prefix}{name}"), def);
    }
}

fn rewrite_refs(schema: &mut Value, prefix: &str) {
    match schema {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(r) if key == "$ref" => {
                        for from in ["#/$defs/", "#/definitions/"] {
                            if let Some(name) = r.strip_prefix(from) {
                                *r = format!("#/$defs/{prefix}{name}");
                                break;
                            }
                        }
                    }
                    _ if key == "enum" || key == "const" || key == "default" => {}
                    _ => rewrite_refs(v, prefix),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(v, prefix)),
        _ => {}
    }
}

/// The schema of a value the grammar lets a tool's schema leave free: a scalar.
fn scalar_schema() -> Value {
    json!({ "type": ["string", "number", "boolean", "null"] })
}

/// Narrows what a schema leaves free, for the grammar only: a value that may be any JSON
/// (`true`, `{}`) becomes a scalar; an object's unlisted keys, when allowed
/// (`additionalProperties: true`, or unset), get scalar values if the object lists no
/// properties and are refused if it does. A small model given free rein nests objects
/// until its token budget runs out (seen: a table's rows, objects with
/// `additionalProperties: true`, written as ever deeper copies of JSON Schema), and no
/// call comes out. Every reply the narrowed schema allows is still valid under the
/// tool's own schema, which the loop checks the call against.
fn narrow_free_values(schema: &mut Value) {
    let Value::Object(map) = schema else {
        return;
    };
    let is_object = map.get("type").is_some_and(|t| match t {
        Value::String(t) => t == "object",
        Value::Array(ts) => ts.iter().any(|t| t == "object"),
        _ => false,
    }) || map.contains_key("properties");
    if is_object {
        let lists_properties = map
            .get("properties")
            .is_some_and(|p| p.as_object().is_some_and(|p| !p.is_empty()));
        let free = match map.get("additionalProperties") {
            None | Some(Value::Bool(true)) => true,
            Some(v) => is_any(v),
        };
        if free {
            let unlisted = if lists_properties {
                Value::Bool(false)
            } else {
                scalar_schema()
            };
            map.insert("additionalProperties".into(), unlisted);
        }
    }
    for (key, v) in map.iter_mut() {
        match key.as_str() {
            "properties" | "$defs" | "definitions" | "patternProperties" => {
                if let Value::Object(children) = v {
                    for child in children.values_mut() {
                        narrow_value(child);
                    }
                }
            }
            "items" | "additionalProperties" | "additionalItems" => narrow_value(v),
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => {
                if let Value::Array(options) = v {
                    options.iter_mut().for_each(narrow_value);
                }
            }
            _ => {}
        }
    }
}

/// A schema in a value position: any JSON becomes a scalar, anything else is narrowed.
fn narrow_value(v: &mut Value) {
    if is_any(v) {
        *v = scalar_schema();
    } else {
        narrow_free_values(v);
    }
}

/// Whether a schema allows any JSON value: `true`, or an object without a keyword that
/// constrains (only annotations such as `description`).
fn is_any(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Object(m) => m
            .keys()
            .all(|k| matches!(k.as_str(), "description" | "title" | "examples" | "default")),
        _ => false,
    }
}

/// Adds `maxLength` to every string schema that has none (and no `enum`/`const`) and
/// `maxItems` to every array schema without one, which only narrows what is valid.
fn cap_strings(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let is_string = match map.get("type") {
                Some(Value::String(t)) => t == "string",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
                _ => false,
            };
            // A grounded string's pattern already bounds it (spans of at most
            // `MAX_SPAN_CHARS`); a length cap on top would make llguidance intersect them.
            if is_string
                && !map.contains_key("maxLength")
                && !map.contains_key("enum")
                && !map.contains_key("const")
                && !map.contains_key("pattern")
            {
                map.insert("maxLength".into(), DEFAULT_MAX_STRING.into());
            }
            let is_array = match map.get("type") {
                Some(Value::String(t)) => t == "array",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "array"),
                _ => false,
            };
            if is_array && !map.contains_key("maxItems") {
                map.insert("maxItems".into(), DEFAULT_MAX_ITEMS.into());
            }
            for (key, v) in map.iter_mut() {
                // Don't treat the names of properties as schemas.
                if key == "properties"
                    || key == "$defs"
                    || key == "definitions"
                    || key == "patternProperties"
                {
                    if let Value::Object(props) = v {
                        props.values_mut().for_each(cap_strings);
                    }
                } else if key != "enum" && key != "const" && key != "default" && key != "examples" {
                    cap_strings(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(cap_strings),
        _ => {}
    }
}

/// Disallows every token the matcher rejects by setting its logit to minus infinity.
pub fn apply_mask(matcher: &mut Matcher, logits: &mut [f32]) -> Result<(), ModelError> {
    let mask = matcher
        .compute_mask()
        .map_err(|e| ModelError::Embedded(format!("llguidance: {e}")))?;
    for (i, l) in logits.iter_mut().enumerate() {
        if !mask.is_allowed(i as TokenId) {
            *l = f32::NEG_INFINITY;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_values_become_scalars_and_listed_objects_close() {
        let mut rows = json!({
            "type": "object",
            "properties": {
                "rows": {
                    "type": ["array", "null"],
                    "items": { "type": "object", "additionalProperties": true }
                },
                "extra": {},
                "meta": { "description": "anything" },
                "nested": { "type": "object", "properties": { "a": { "type": "string" } } },
                "choice": { "anyOf": [{ "type": "object" }, { "type": "integer" }] }
            }
        });
        narrow_free_values(&mut rows);
        let scalar = scalar_schema();
        assert_eq!(rows["additionalProperties"], json!(false));
        assert_eq!(
            rows["properties"]["rows"]["items"]["additionalProperties"],
            scalar
        );
        assert_eq!(rows["properties"]["extra"], scalar);
        assert_eq!(rows["properties"]["meta"], scalar);
        assert_eq!(
            rows["properties"]["nested"]["additionalProperties"],
            json!(false)
        );
        assert_eq!(
            rows["properties"]["choice"]["anyOf"][0]["additionalProperties"],
            scalar
        );
        // What is already constrained stays as it was.
        assert_eq!(
            rows["properties"]["choice"]["anyOf"][1],
            json!({ "type": "integer" })
        );
        let mut closed = json!({
            "type": "object",
            "additionalProperties": { "type": "integer" }
        });
        let before = closed.clone();
        narrow_free_values(&mut closed);
        assert_eq!(closed, before);
    }

    #[test]
    fn a_narrowed_reply_is_valid_under_the_original_schema() {
        let original = json!({
            "type": "object",
            "properties": {
                "rows": { "type": "array", "items": { "type": "object", "additionalProperties": true } }
            }
        });
        let mut narrowed = original.clone();
        narrow_free_values(&mut narrowed);
        let reply = json!({ "rows": [{ "month": "Jan", "amount": 100 }] });
        for schema in [&original, &narrowed] {
            assert!(jsonschema::is_valid(schema, &reply));
        }
        // The degenerate reply the model wrote without narrowing is refused by it.
        let nested = json!({ "rows": [{ "row": { "type": "object" } }] });
        assert!(jsonschema::is_valid(&original, &nested));
        assert!(!jsonschema::is_valid(&narrowed, &nested));
    }
}
