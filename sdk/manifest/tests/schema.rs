//! The committed `schemas/plugin-manifest.schema.json` is generated from the types.
//!
//! `CAIRN_BLESS=1 cargo test -p cairn-manifest --test schema` regenerates it.

use std::fs;
use std::path::{Path, PathBuf};

use cairn_manifest::manifest_json_schema;
use serde_json::Value;

fn schema_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/plugin-manifest.schema.json")
}

fn generated() -> String {
    serde_json::to_string_pretty(&manifest_json_schema()).unwrap() + "\n"
}

#[test]
fn committed_schema_is_up_to_date() {
    let path = schema_file();
    let fresh = generated();
    if std::env::var_os("CAIRN_BLESS").is_some_and(|v| v == "1") {
        fs::write(&path, &fresh).unwrap();
        return;
    }
    let committed = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} is stale; regenerate it with CAIRN_BLESS=1 cargo test -p cairn-manifest --test schema",
        path.display()
    );
}

#[test]
fn schema_is_valid_draft_2020_12() {
    let schema = manifest_json_schema();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    jsonschema::draft202012::meta::validate(&schema).unwrap();
}

fn committed_validator() -> jsonschema::Validator {
    let text = fs::read_to_string(schema_file()).expect("schemas/plugin-manifest.schema.json");
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::draft202012::new(&schema).unwrap()
}

fn golden(kind: &str, suffix: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(kind);
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.to_str().unwrap();
            name.ends_with(suffix) && (suffix != ".json" || !name.ends_with(".expected.json"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn valid_golden_manifests_validate_against_the_committed_schema() {
    let validator = committed_validator();
    let files = [golden("valid", ".json"), golden("valid", ".expected.json")].concat();
    assert!(!files.is_empty());
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        let value: Value = serde_json::from_str(text.trim_start_matches('\u{feff}')).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{}:\n{}",
            file.display(),
            errors.join("\n")
        );
    }
}

/// The schema catches the shape errors an editor can flag while the author types.
#[test]
fn schema_rejects_shape_errors() {
    let validator = committed_validator();
    for name in [
        "unknown_top_level_field.json",
        "unknown_tool_field.json",
        "unknown_permission_field.json",
        "wrong_type.json",
        "bad_plugin_id.json",
        "bad_tool_name.json",
        "bad_version.json",
        "no_tools.json",
        "memory_out_of_range.json",
        "input_schema_not_object.json",
        "host_with_path.json",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/invalid")
            .join(name);
        let value: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert!(!validator.is_valid(&value), "{name} passes the schema");
    }
}
