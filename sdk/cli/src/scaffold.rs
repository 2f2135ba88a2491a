//! `cairn-plugin new`: writes a plugin that builds and passes its own tests.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cairn_manifest::PluginId;

/// The files of a new plugin: path inside the plugin folder, then the template.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../templates/plugin/Cargo.toml.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../templates/plugin/src/lib.rs.tmpl"),
    ),
    (
        "cairn-plugin.json",
        include_str!("../templates/plugin/cairn-plugin.json.tmpl"),
    ),
    (
        "README.md",
        include_str!("../templates/plugin/README.md.tmpl"),
    ),
    (
        ".gitignore",
        include_str!("../templates/plugin/gitignore.tmpl"),
    ),
];

/// The SDK this binary was built with: `sdk/rust` in the Cairn source tree (also after
/// `cargo install --path sdk/cli`, which builds from the tree).
pub fn default_sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rust")
}

/// Creates `<parent>/<name>/` holding a new plugin that depends on the SDK at `sdk`.
/// Refuses to touch an existing folder, so nothing of the author's is overwritten.
pub fn new_plugin(name: &str, parent: &Path, sdk: &Path) -> anyhow::Result<PathBuf> {
    let id = PluginId::try_from(name).with_context(|| format!("`{name}` cannot be a plugin id"))?;
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("the SDK is not at {}; pass --sdk-path", sdk.display()))?;
    if !sdk.join("Cargo.toml").is_file() {
        bail!("{} holds no Cargo.toml; pass --sdk-path", sdk.display());
    }
    let root = parent.join(id.as_str());
    if root.exists() {
        bail!(
            "{} already exists; choose another name or folder",
            root.display()
        );
    }
    for (relative, template) in TEMPLATES {
        let path = root.join(relative);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)
                .with_context(|| format!("cannot create {}", folder.display()))?;
        }
        let text = render(template, id.as_str(), &sdk);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(root)
}

fn render(template: &str, id: &str, sdk: &Path) -> String {
    // TOML and JSON both take a path with forward slashes and escaped quotes.
    let sdk = sdk
        .display()
        .to_string()
        .replace('\\', "/")
        .replace('"', "\\\"");
    template.replace("{{id}}", id).replace("{{sdk_path}}", &sdk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled() {
        let folder = tempfile::tempdir().unwrap();
        let root = new_plugin("weather-notes", folder.path(), &default_sdk_path()).unwrap();
        for (relative, _) in TEMPLATES {
            let text = std::fs::read_to_string(root.join(relative)).unwrap();
            assert!(!text.contains("{{"), "{relative} still has a placeholder");
        }
        let manifest = cairn_manifest::Manifest::from_path(&root.join("cairn-plugin.json"));
        assert!(manifest.is_ok(), "{manifest:?}");
    }

    #[test]
    fn a_bad_name_or_an_existing_folder_is_refused() {
        let folder = tempfile::tempdir().unwrap();
        let error = new_plugin("Bad Name", folder.path(), &default_sdk_path()).unwrap_err();
        assert!(
            format!("{error:#}").contains("`Bad Name` cannot be a plugin id"),
            "{error:#}"
        );
        new_plugin("twice", folder.path(), &default_sdk_path()).unwrap();
        let error = new_plugin("twice", folder.path(), &default_sdk_path()).unwrap_err();
        assert!(error.to_string().contains("already exists"), "{error}");
    }
}
