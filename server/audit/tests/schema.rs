//! `schemas/audit-step.schema.json` is generated from the types; this test fails when the
//! committed copy drifts. Regenerate with `CAIRN_BLESS=1 cargo test -p cairn-audit --test schema`.

use std::path::PathBuf;

#[test]
fn committed_step_schema_matches_the_types() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas/audit-step.schema.json");
    let mut generated = serde_json::to_string_pretty(&cairn_audit::step_schema()).unwrap();
    generated.push('\n');
    if std::env::var_os("CAIRN_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date; regenerate with CAIRN_BLESS=1 cargo test -p cairn-audit --test schema",
        path.display()
    );
}

#[test]
fn schema_uses_opentelemetry_names() {
    let s = serde_json::to_string(&cairn_audit::step_schema()).unwrap();
    for name in [
        "gen_ai.operation.name",
        "gen_ai.request.model",
        "gen_ai.tool.name",
        "gen_ai.tool.call.id",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "cairn.plugin.id",
    ] {
        assert!(s.contains(name), "{name} missing from the schema");
    }
}
