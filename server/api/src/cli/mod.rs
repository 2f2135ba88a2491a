//! The `cairn` command line: the server (`cairn serve`) and ledger checks (`cairn audit
//! ...`). Plugin authors have their own tool, `cairn-plugin` (sdk/cli).

mod audit;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Cairn: an enterprise copilot plugin platform.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the audit ledger.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Run the API server (settings: `--config FILE` and `CAIRN_*` variables; see
    /// docs/operators.md).
    Serve {
        /// A TOML config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Moved: plugin authoring is `cairn-plugin` (sdk/cli). Kept hidden so that an old
    /// `cairn plugin ...` says where it went instead of "unrecognized subcommand".
    #[command(hide = true)]
    Plugin {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
}

/// What `cairn plugin ...` answers since the author's tool has its own binary.
const PLUGIN_MOVED: &str = "`cairn plugin` moved to its own tool, `cairn-plugin` (new, build, \
     test, inspect); install it with `cargo install --path sdk/cli`, then run \
     `cairn-plugin --help`";

/// Where Cairn keeps its data on the embedded defaults (`CAIRN_DATA_DIR`, default
/// `~/.local/share/cairn`).
pub(crate) fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CAIRN_DATA_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local").join("share").join("cairn")
}

/// The embedded ledger: an SQLite file in [`data_dir`].
pub(crate) fn default_database_url() -> String {
    format!("sqlite:{}", data_dir().join("ledger.db").display())
}

/// `cairn serve`: loads the config, binds, serves until SIGINT/SIGTERM.
async fn serve(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = crate::config::Config::load(config.as_deref())?;
    let app = crate::startup::Application::build(config).await?;
    eprintln!("cairn: listening on http://{}", app.address());
    app.run_until_stopped().await?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the command line and turns the outcome into an exit code: 0 on success, 1 when
/// the command ran and failed (a broken ledger, a tool error), 2 for usage errors.
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
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Plugin { .. } => {
                eprintln!("error: {PLUGIN_MOVED}");
                Ok(ExitCode::from(2))
            }
            Command::Audit(command) => audit::run(command).await,
            Command::Serve { config } => serve(config).await,
        }
    });
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
