//! The manifest `cairn-plugin.json` must describe the code: same tools, same schemas.
//! Run with `CAIRN_BLESS=1` to write the code's schemas into the manifest.

use cairn_manifest::{Manifest, ToolDescriptor};

const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/cairn-plugin.json");

#[test]
fn manifest_matches_code() {
    let code = cairn_plugin_doctext::descriptors();
    cairn_sdk::testing::check_manifest(MANIFEST, &code).unwrap();

    // The host's own parse and check, as at install and load.
    let manifest = Manifest::from_path(MANIFEST.as_ref()).unwrap();
    let described: Vec<ToolDescriptor> = code
        .iter()
        .map(|d| {
            ToolDescriptor::from_wit(
                d.name.clone(),
                &d.input_schema.to_string(),
                &d.output_schema.to_string(),
            )
            .unwrap()
        })
        .collect();
    manifest.check_descriptors(&described).unwrap();
    assert_eq!(manifest.id.as_str(), "doctext");
    for tool in &manifest.tools {
        assert!(
            (3..=6).contains(&tool.examples.len()),
            "{}: give 3 to 6 examples",
            tool.name.as_str()
        );
    }
}
