//! Builds the guest plugins for `wasm32-wasip2` with a nested cargo and writes their paths
//! into `$OUT_DIR/artifacts.rs`.
//!
//! Why a build script: test plugins are built from source in every test build, never
//! committed as binaries, so a test always runs the code next to it.
//!
//! The nested cargo uses its own target directory: running it on the outer build's target
//! dir would wait forever for the lock the outer build holds. Environment that leaks from
//! the outer build (`RUSTFLAGS` for the host, clippy's `RUSTC_WORKSPACE_WRAPPER`, the
//! build-script variables) is cleared so the guests build the same way as from a shell.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The hostile test plugin, required: the runtime's tests cannot run without it.
const HOSTILE: &str = "cairn-test-plugin-hostile";

/// Example plugins: (package, directory under `plugins/`). Optional while they are being
/// written; a failed build leaves them out with a warning.
const EXAMPLES: &[(&str, &str)] = &[
    ("cairn-plugin-table", "table"),
    ("cairn-plugin-doctext", "doctext"),
    ("cairn-plugin-tasks", "tasks"),
    ("cairn-plugin-crm", "crm"),
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.join("../../../..").canonicalize().unwrap();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    // One guest target dir shared by every outer profile (test, bench, clippy) so the
    // guests are built once; cargo's own lock serialises concurrent users.
    let guest_target = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("guests"),
        None => out_dir.join("guests"),
    };

    for path in [
        "server/runtime/test-plugins/hostile",
        "sdk/wit",
        "sdk/rust",
        "plugins",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }

    let wasm_dir = guest_target.join("wasm32-wasip2").join("plugin");
    let file_name = |package: &str| format!("{}.wasm", package.replace('-', "_"));
    // The tests read copies in OUT_DIR, not the files cargo leaves in the guest target
    // dir: that dir is shared by every clone or worktree building with the same
    // CARGO_TARGET_DIR, and the file at one path is whichever clone built last (a test
    // would run another branch's plugin). OUT_DIR is this build's own.
    let wasm = |package: &str| out_dir.join(file_name(package));

    // One cargo invocation for every guest: they share most of their dependencies.
    let mut packages = vec![HOSTILE];
    packages.extend(EXAMPLES.iter().map(|(package, _)| *package));
    std::fs::create_dir_all(&guest_target).unwrap();
    // Held across the build and the copy, so another clone's build script (of this
    // version) cannot replace the files in between.
    let lock = std::fs::File::create(guest_target.join(".cairn-guests.lock")).unwrap();
    lock.lock().unwrap();
    assert!(
        cargo_build(&root, &guest_target, &packages),
        "building the test and example plugins for wasm32-wasip2 failed; see the output above"
    );
    for package in &packages {
        let built = wasm_dir.join(file_name(package));
        if built.exists() {
            std::fs::copy(&built, wasm(package)).unwrap();
        }
    }
    drop(lock);
    let mut code = String::new();
    writeln!(
        code,
        "/// The hostile test plugin's component (`{HOSTILE}`).\npub const HOSTILE: &str = {:?};",
        wasm(HOSTILE)
    )
    .unwrap();
    code.push_str(
        "/// The example plugins under `plugins/`, with their manifests.\n\
         pub const EXAMPLE_PLUGINS: &[ExamplePlugin] = &[\n",
    );
    for (package, dir) in EXAMPLES {
        let component = wasm(package);
        let manifest = root.join("plugins").join(dir).join("cairn-plugin.json");
        assert!(
            component.exists(),
            "{package} built no component at {}: is it a cdylib?",
            component.display()
        );
        assert!(manifest.exists(), "plugins/{dir} has no cairn-plugin.json");
        writeln!(
            code,
            "    ExamplePlugin {{ name: {dir:?}, component: {component:?}, manifest: {manifest:?} }},"
        )
        .unwrap();
    }
    code.push_str("];\n");
    std::fs::write(out_dir.join("artifacts.rs"), code).unwrap();
}

/// Runs one `cargo build --target wasm32-wasip2 --profile plugin` for `packages`.
fn cargo_build(root: &Path, target_dir: &Path, packages: &[&str]) -> bool {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--target", "wasm32-wasip2", "--profile", "plugin"])
        .arg("--target-dir")
        .arg(target_dir);
    for package in packages {
        cmd.args(["-p", package]);
    }
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let leaks = (key.starts_with("CARGO_")
            && !matches!(key, "CARGO_HOME" | "CARGO_MAKEFLAGS" | "CARGO_NET_OFFLINE"))
            || matches!(
                key,
                "RUSTFLAGS"
                    | "RUSTDOCFLAGS"
                    | "RUSTC"
                    | "RUSTDOC"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTC_LINKER"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "OPT_LEVEL"
                    | "PROFILE"
                    | "DEBUG"
                    | "NUM_JOBS"
            );
        if leaks {
            cmd.env_remove(key);
        }
    }
    eprintln!("running: {cmd:?}");
    cmd.status().map(|s| s.success()).unwrap_or(false)
}
