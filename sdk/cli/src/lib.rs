//! `cairn-plugin`: a plugin author's loop, with no model, server or database involved.
//!
//! [`scaffold`] writes a new plugin (`new`); the commands build its component and check
//! it against the manifest (`build`), run one tool in the real sandbox (`test`, through
//! [`sandbox`]) and show what a package declares (`inspect`). Packages are written and
//! read by `cairn-package`, the same crate the server installs them with.
//!
//! It depends on the runtime (wasmtime), because testing a plugin means running it, but
//! not on the server, its database or the models, so `cargo install --path sdk/cli` stays
//! small.
#![warn(missing_docs)]

mod commands;
pub mod sandbox;
pub mod scaffold;

use std::process::ExitCode;

use clap::Parser;

pub use commands::Command;

/// cairn-plugin: write, build, test and inspect Cairn plugins.
#[derive(Debug, Parser)]
#[command(name = "cairn-plugin", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Runs the command line and turns the outcome into an exit code: 0 on success, 1 when
/// the command ran and failed (a build error, a tool error), 2 for usage errors.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,cairn_runtime=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
