//! The `cairn-plugin` binary, end to end: a plugin author's loop from `new` to a tested
//! package, and the build refusing a bad manifest or code that drifted from it.

use std::path::Path;
use std::process::{Command, Output};

fn cairn_plugin(args: &[&str]) -> Output {
    let cache = std::env::temp_dir().join("cairn-plugin-cli-tests-compiled");
    Command::new(env!("CARGO_BIN_EXE_cairn-plugin"))
        .args(args)
        .env("CAIRN_CACHE_DIR", cache)
        .output()
        .expect("run cairn-plugin")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
}

fn cargo_test(dir: &Path) -> Output {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .output()
        .expect("run cargo test")
}

/// One test for the whole loop: each step needs the previous one, and builds are slow.
#[test]
fn a_new_plugin_builds_passes_its_tests_and_runs_in_the_sandbox() {
    let folder = tempfile::tempdir().unwrap();
    let dir = folder.path().join("greeter");
    let dir_arg = dir.to_str().unwrap();

    assert_success(&cairn_plugin(&[
        "new",
        "greeter",
        "--dir",
        folder.path().to_str().unwrap(),
    ]));
    assert_success(&cargo_test(&dir));

    let build = cairn_plugin(&["build", "--dir", dir_arg]);
    assert_success(&build);
    let package = dir.join("dist/greeter-0.1.0.cairnpkg");
    assert!(text(&build.stdout).contains("greeter-0.1.0.cairnpkg"));
    assert!(text(&build.stdout).contains("sha256:"));

    let package_arg = package.to_str().unwrap();
    let call = cairn_plugin(&[
        "test",
        "greet",
        "--package",
        package_arg,
        "--input",
        r#"{"name": "Ada"}"#,
    ]);
    assert_success(&call);
    let result: serde_json::Value = serde_json::from_slice(&call.stdout).unwrap();
    assert_eq!(result, serde_json::json!({"greeting": "Hello, Ada!"}));

    // A tool error is reported, with a failing exit code.
    let refused = cairn_plugin(&[
        "test",
        "greet",
        "--package",
        package_arg,
        "--input",
        r#"{"name": ""}"#,
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("invalid_input"),
        "{}",
        text(&refused.stderr)
    );
    // Arguments that are not JSON are refused before anything runs.
    let bad_json = cairn_plugin(&[
        "test",
        "greet",
        "--package",
        package_arg,
        "--input",
        "{name",
    ]);
    assert_eq!(bad_json.status.code(), Some(1));
    assert!(text(&bad_json.stderr).contains("--input is not valid JSON"));

    let inspect = cairn_plugin(&["inspect", package_arg]);
    assert_success(&inspect);
    let shown = text(&inspect.stdout);
    assert!(shown.contains("greeter 0.1.0"), "{shown}");
    assert!(shown.contains("greet [read-only, idempotent]"), "{shown}");
    assert!(shown.contains("outbound hosts: none"), "{shown}");

    // A package whose component was swapped after packaging is refused.
    let mut bytes = std::fs::read(&package).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    let tampered = folder.path().join("tampered.cairnpkg");
    std::fs::write(&tampered, bytes).unwrap();
    let inspect = cairn_plugin(&["inspect", tampered.to_str().unwrap()]);
    assert_eq!(inspect.status.code(), Some(1));
    assert!(
        text(&inspect.stderr).contains("digest mismatch"),
        "{}",
        text(&inspect.stderr)
    );

    // Code that drifts from the manifest fails the build, naming the tool and the spot.
    let lib = dir.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(
        &lib,
        source
            .replace(
                "pub greeting: String,",
                "pub greeting: String,\n    /// Added.\n    pub shout: bool,",
            )
            .replace(
                "greeting: format!(\"Hello, {name}!\"),",
                "greeting: format!(\"Hello, {name}!\"),\n        shout: false,",
            ),
    )
    .unwrap();
    let build = cairn_plugin(&["build", "--dir", dir_arg]);
    assert_eq!(build.status.code(), Some(1), "{}", text(&build.stderr));
    let stderr = text(&build.stderr);
    assert!(stderr.contains("does not match its manifest"), "{stderr}");
    assert!(stderr.contains("output_schema"), "{stderr}");
    assert!(stderr.contains("greet"), "{stderr}");
}

#[test]
fn a_bad_manifest_fails_the_build_before_compiling() {
    let folder = tempfile::tempdir().unwrap();
    assert_success(&cairn_plugin(&[
        "new",
        "broken",
        "--dir",
        folder.path().to_str().unwrap(),
    ]));
    let manifest = folder.path().join("broken/cairn-plugin.json");
    let json = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, json.replace("\"publisher\"", "\"publsher\"")).unwrap();
    let build = cairn_plugin(&[
        "build",
        "--dir",
        folder.path().join("broken").to_str().unwrap(),
    ]);
    assert_eq!(build.status.code(), Some(1));
    let stderr = text(&build.stderr);
    assert!(stderr.contains("publsher"), "{stderr}");
    assert!(
        !stderr.contains("Compiling"),
        "compiled before checking the manifest: {stderr}"
    );
}
