//! The tool-selection evaluation sets (`eval/requests.jsonl`, and `eval/heldout.jsonl`,
//! written before retrieval was tuned and never tuned on, and `eval/arguments.jsonl`,
//! written before argument grounding was tuned) stay usable: they parse, they are
//! big enough, they name only real tools, they do not quote the manifests' own examples
//! (which retrieval ranks on, so copying them would inflate every figure), and they share
//! no request.

use std::collections::HashSet;
use std::path::Path;

fn normalise(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
        .trim_end_matches(['.', '?', '!'])
        .to_owned()
}

/// Checks one set and returns its normalised requests.
fn check_set(file: &str, min_with_tool: usize, min_without_tool: usize) -> HashSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut tools = HashSet::new();
    let mut examples = HashSet::new();
    for plugin in ["table", "doctext", "tasks", "crm"] {
        let path = root
            .join("../../plugins")
            .join(plugin)
            .join("cairn-plugin.json");
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("manifest"))
                .expect("manifest JSON");
        for tool in manifest["tools"].as_array().expect("tools") {
            tools.insert(tool["name"].as_str().expect("name").to_owned());
            for e in tool["examples"].as_array().into_iter().flatten() {
                examples.insert(normalise(e.as_str().expect("example")));
            }
        }
    }

    let text = std::fs::read_to_string(root.join("eval").join(file)).expect("eval set");
    let (mut with_tool, mut without_tool) = (0, 0);
    let mut covered = HashSet::new();
    let mut seen = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{file} line {line_no} is not JSON: {e}"));
        let object = entry.as_object().expect("an object per line");
        for key in object.keys() {
            assert!(
                [
                    "request",
                    "expected_tool",
                    "expected_arguments",
                    "notes",
                    "now"
                ]
                .contains(&key.as_str()),
                "{file} line {line_no}: unknown field {key}"
            );
        }
        let request = entry["request"].as_str().expect("request");
        assert!(
            !request.trim().is_empty(),
            "{file} line {line_no}: empty request"
        );
        assert!(
            !examples.contains(&normalise(request)),
            "{file} line {line_no} copies a manifest example: {request:?}"
        );
        assert!(
            seen.insert(normalise(request)),
            "{file} line {line_no} is a duplicate"
        );
        assert!(
            entry["expected_arguments"].is_object() || entry["expected_arguments"].is_null(),
            "{file} line {line_no}: expected_arguments must be an object"
        );
        if let Some(now) = entry.get("now") {
            let now = now.as_str().expect("now is a string");
            assert!(
                cairn_model::RunClock::fixed(now).is_ok(),
                "{file} line {line_no}: now {now:?} is not RFC 3339"
            );
        }
        match &entry["expected_tool"] {
            serde_json::Value::Null => without_tool += 1,
            serde_json::Value::String(tool) => {
                assert!(
                    tools.contains(tool),
                    "{file} line {line_no}: no tool named {tool}"
                );
                covered.insert(tool.clone());
                with_tool += 1;
            }
            other => panic!("{file} line {line_no}: expected_tool is {other}"),
        }
    }
    assert!(
        with_tool >= min_with_tool,
        "{file}: only {with_tool} requests that need a tool"
    );
    assert!(
        without_tool >= min_without_tool,
        "{file}: only {without_tool} requests that need none"
    );
    let missing: Vec<_> = tools.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "{file}: tools without a request: {missing:?}"
    );
    seen
}

#[test]
fn the_eval_set_is_well_formed_and_independent_of_the_manifests() {
    check_set("requests.jsonl", 40, 8);
}

#[test]
fn the_heldout_set_is_well_formed_and_shares_nothing_with_the_eval_set() {
    let heldout = check_set("heldout.jsonl", 28, 6);
    let eval = check_set("requests.jsonl", 40, 8);
    let shared: Vec<_> = heldout.intersection(&eval).collect();
    assert!(shared.is_empty(), "requests in both sets: {shared:?}");
}

#[test]
fn the_arguments_set_is_well_formed_and_shares_nothing_with_the_other_sets() {
    let arguments = check_set("arguments.jsonl", 40, 0);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("eval/arguments.jsonl")).expect("set");
    let with_arguments = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .filter(|e| {
            e["expected_arguments"]
                .as_object()
                .is_some_and(|a| !a.is_empty())
        })
        .count();
    assert!(with_arguments >= 40, "only {with_arguments} list arguments");
    for other in ["requests.jsonl", "heldout.jsonl"] {
        let other = check_set(other, 0, 0);
        let shared: Vec<_> = arguments.intersection(&other).collect();
        assert!(shared.is_empty(), "requests in both sets: {shared:?}");
    }
}
