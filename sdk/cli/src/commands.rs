//! `cairn-plugin new | build | test | inspect`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use anyhow::{Context, bail, ensure};
use cairn_manifest::{MANIFEST_FILE_NAME, Manifest};
use cairn_package::Package;
use clap::Subcommand;

use crate::{sandbox, scaffold};

/// The subcommands of `cairn-plugin`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scaffold a new plugin that builds and passes its own test.
    New {
        /// The plugin's id: lowercase letters, digits and `-`, starting with a letter.
        name: String,
        /// Folder to create the plugin in (a subfolder named after the plugin).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Path to the `cairn-sdk` crate (defaults to the SDK this binary was built with).
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
    /// Build the component, check it against the manifest, and write a package.
    Build {
        /// The plugin's folder (holding Cargo.toml and cairn-plugin.json).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Where to write the package (default `<dir>/dist`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run one tool in the real sandbox, without a model, and print its result.
    Test {
        /// The tool to call.
        tool: String,
        /// The tool's arguments as a JSON object.
        #[arg(long)]
        input: String,
        /// The plugin's folder; it is built first.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Run a built package instead of building the folder.
        #[arg(long, conflicts_with = "dir")]
        package: Option<PathBuf>,
        /// A plugin setting, `key=value`; repeat for several.
        #[arg(long = "config", value_parser = parse_setting)]
        config: Vec<(String, String)>,
        /// The tenant the call runs for (scopes the key-value store).
        #[arg(long, default_value = "dev")]
        tenant: String,
        /// The user the call runs for (scopes the key-value store).
        #[arg(long, default_value = "dev")]
        user: String,
        /// Keep the key-value store in this JSON file, so state carries over between
        /// calls (default: in memory, empty on every call).
        #[arg(long)]
        kv_file: Option<PathBuf>,
    },
    /// Show a package's tools, schemas and permissions.
    Inspect {
        /// The `.cairnpkg` file.
        package: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not key=value"))?;
    Ok((key.to_owned(), value.to_owned()))
}

/// Runs one `cairn-plugin` command.
pub(crate) async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::New {
            name,
            dir,
            sdk_path,
        } => {
            let sdk = sdk_path.unwrap_or_else(scaffold::default_sdk_path);
            let created = scaffold::new_plugin(&name, &dir, &sdk)?;
            println!("Created plugin `{name}` in {}", created.display());
            println!(
                "Next: cd {} && cargo test && cairn-plugin build",
                created.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Build { dir, out } => {
            let package = build(&dir).await?;
            let out = out.unwrap_or_else(|| dir.join("dist"));
            let path = write_package(&package, &out)?;
            println!("{}", path.display());
            println!("{}", package.digest());
            Ok(ExitCode::SUCCESS)
        }
        Command::Test {
            tool,
            input,
            dir,
            package,
            config,
            tenant,
            user,
            kv_file,
        } => {
            let package = match package {
                Some(path) => read_package(&path)?,
                None => build(&dir).await?,
            };
            let config: BTreeMap<String, String> = config.into_iter().collect();
            let arguments: serde_json::Value = serde_json::from_str(&input)
                .with_context(|| format!("--input is not valid JSON: {input}"))?;
            let runtime = sandbox::open_runtime(kv_file.as_deref())?;
            let plugin = sandbox::load(&runtime, &package, config).await?;
            match sandbox::call(&plugin, &tenant, &user, &tool, &arguments).await {
                Ok(result) => {
                    println!("{}", serde_json::to_string_pretty(&result)?);
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Inspect { package, json } => {
            let package = read_package(&package)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&inspect_json(&package))?);
            } else {
                print!("{}", inspect_text(&package));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Builds the plugin in `dir`, checks the component against its manifest in the real
/// sandbox, and returns the package.
async fn build(dir: &Path) -> anyhow::Result<Package> {
    let manifest_path = dir.join(MANIFEST_FILE_NAME);
    let manifest_json = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    // Fail on a bad manifest before spending a minute compiling.
    Manifest::from_json_str(&manifest_json)
        .with_context(|| format!("{} is not a valid manifest", manifest_path.display()))?;
    let wasm = cargo_build_component(dir)?;
    let component =
        std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let package = Package::new(manifest_json, component)?;
    // Loading runs `describe()` and checks it against the manifest. Required settings
    // are only known at install; describing reads none, so stand-ins do.
    let stand_ins = package
        .manifest()
        .config
        .iter()
        .filter(|(_, setting)| setting.required)
        .map(|(key, _)| (key.clone(), "(set at install)".to_owned()))
        .collect();
    let runtime = sandbox::open_runtime(None)?;
    sandbox::load(&runtime, &package, stand_ins)
        .await
        .context("the component does not match its manifest")?;
    Ok(package)
}

/// Runs `cargo build` for wasm32-wasip2 and returns the component it produced, found in
/// cargo's machine-readable output rather than guessed from folder names.
fn cargo_build_component(dir: &Path) -> anyhow::Result<PathBuf> {
    let cargo_toml = dir
        .join("Cargo.toml")
        .canonicalize()
        .with_context(|| format!("no Cargo.toml in {}", dir.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["build", "--target", "wasm32-wasip2", "--profile", "plugin"])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&cargo_toml)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    ensure!(
        output.status.success(),
        "cargo build failed for {}",
        cargo_toml.display()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut found = None;
    for line in stdout.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(manifest_path) = message["manifest_path"].as_str() else {
            continue;
        };
        if Path::new(manifest_path) != cargo_toml {
            continue;
        }
        let wasm = message["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|name| name.as_str())
            .find(|name| name.ends_with(".wasm"));
        if let Some(wasm) = wasm {
            found = Some(PathBuf::from(wasm));
        }
    }
    match found {
        Some(path) => Ok(path),
        None => bail!(
            "cargo built no .wasm for {}: is the crate-type \"cdylib\"?",
            cargo_toml.display()
        ),
    }
}

fn write_package(package: &Package, out: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let path = out.join(package.file_name());
    let temp = out.join(format!(".{}.partial", package.file_name()));
    let file = std::fs::File::create(&temp)
        .with_context(|| format!("cannot create {}", temp.display()))?;
    package.write_to(std::io::BufWriter::new(file))?;
    std::fs::rename(&temp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn read_package(path: &Path) -> anyhow::Result<Package> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Package::read_from(std::io::BufReader::new(file))
        .with_context(|| format!("{} is not a valid package", path.display()))
}

fn inspect_json(package: &Package) -> serde_json::Value {
    serde_json::json!({
        "digest": package.digest().to_string(),
        "component_bytes": package.component().len(),
        "manifest": package.manifest(),
    })
}

fn inspect_text(package: &Package) -> String {
    use std::fmt::Write as _;
    let manifest = package.manifest();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} by {}\n  {}\n  component: {} ({} bytes)",
        manifest.id,
        manifest.version,
        manifest.publisher,
        manifest.description,
        package.digest(),
        package.component().len()
    );
    let _ = writeln!(out, "tools:");
    for tool in &manifest.tools {
        let a = &tool.annotations;
        let mut flags = vec![if a.read_only {
            "read-only"
        } else {
            "writes (asks for approval)"
        }];
        if a.destructive {
            flags.push("destructive");
        }
        if a.idempotent {
            flags.push("idempotent");
        }
        if a.open_world {
            flags.push("open-world");
        }
        let _ = writeln!(
            out,
            "  {} [{}]\n    {}",
            tool.name,
            flags.join(", "),
            tool.description
        );
        let _ = writeln!(out, "    input:  {}", tool.input_schema);
        let _ = writeln!(out, "    output: {}", tool.output_schema);
        for example in &tool.examples {
            let _ = writeln!(out, "    e.g. \"{example}\"");
        }
    }
    let p = &manifest.permissions;
    let hosts = if p.outbound_hosts.is_empty() {
        "none".to_owned()
    } else {
        p.outbound_hosts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let oauth = p.oauth.as_ref().map_or_else(
        || "none".to_owned(),
        |o| format!("{} ({})", o.provider, o.scopes.join(" ")),
    );
    let _ = writeln!(
        out,
        "permissions:\n  outbound hosts: {hosts}\n  oauth: {oauth}"
    );
    let _ = writeln!(
        out,
        "  key-value quota: {} bytes\n  memory: {} MiB\n  cpu per call: {} ms\n  output: {} bytes\n  http response: {} bytes\n  outbound requests per call: {}",
        p.kv_quota_bytes,
        p.memory_mib,
        p.cpu_ms_per_call,
        p.max_output_bytes,
        p.max_http_response_bytes,
        p.max_outbound_requests
    );
    if !manifest.config.is_empty() {
        let _ = writeln!(out, "config:");
        for (key, setting) in &manifest.config {
            let _ = writeln!(
                out,
                "  {key}{}: {}",
                if setting.required { " (required)" } else { "" },
                setting.description
            );
        }
    }
    out
}
