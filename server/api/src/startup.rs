//! Building and running the server: [`Application::build`] opens the ledger, the plugin
//! runtime and registry, sets up the model and the application layer over the reasoning
//! loop (the embedded model is only loaded when a run first needs it), binds the listener (port 0 picks a free one,
//! which tests use to run in parallel) and returns before serving, so the caller knows
//! the port.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use cairn_runtime::{Runtime, RuntimeConfig};
use cairn_store::{NotifyingLedger, RunNotifier, SqlKv};
use tokio::net::TcpListener;

use crate::config::{AuthConfig, Config};
use crate::copilot::{RegistryTools, app_config, build_model, build_selector, effective_settings};
use crate::http::auth::Authenticator;
use crate::http::auth::oidc::OidcVerifier;
use crate::http::browser::BrowserPolicy;
use crate::http::metrics::Metrics;
use crate::http::{AppState, Limits, router};
use crate::registry::Registry;

/// A bound, not yet serving, server.
pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    state: AppState,
}

impl Application {
    /// Checks the config, opens everything the server needs and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating the data dir {}", config.data_dir.display()))?;
        let url = config.ledger_url();
        let ledger_options = cairn_audit::LedgerOptions {
            migrate: config.audit.migrate,
            ..cairn_audit::LedgerOptions::default()
        };
        let ledger = cairn_audit::open(&url, ledger_options)
            .await
            .context("opening the audit ledger")?;
        // Host state lives in the ledger's database; appends wake this host's event
        // streams (and, on PostgreSQL, every host's, by a NOTIFY sent after each commit),
        // and installation changes reach every host's kept catalogs the same way.
        let db = ledger.database();
        let notifier = RunNotifier::start(&db)
            .await
            .context("listening for run notifications")?;
        let ledger: Arc<dyn cairn_audit::Ledger> =
            Arc::new(NotifyingLedger::new(ledger, notifier.clone()));

        // Bound first, so the egress ceiling knows Cairn's own address (port 0 included).
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let address = listener.local_addr().context("reading the bound address")?;

        let mut runtime_config = RuntimeConfig::new(&config.cache_dir);
        runtime_config.max_concurrent_calls = config.max_concurrent_calls;
        runtime_config.max_concurrent_calls_per_tenant = config.max_concurrent_calls_per_tenant;
        runtime_config.call_wait = std::time::Duration::from_millis(config.call_wait_ms);
        runtime_config.egress_ceiling = Arc::new(config.egress.ceiling(address));
        let kv_path = config.data_dir.join("plugin-kv.json");
        cairn_store::import_json_kv(&db, &kv_path)
            .await
            .context("importing the plugin key-value file into the database")?;
        runtime_config.kv = Arc::new(SqlKv::new(db));
        let runtime = Runtime::new(runtime_config).context("starting the plugin runtime")?;
        let secrets = Arc::new(secret_box(&config)?);
        let registry = Registry::new(Arc::clone(&ledger), runtime, secrets, notifier.clone());
        registry
            .import_data_dir(&config.data_dir)
            .await
            .context("importing the data dir's plugin registry into the database")?;

        let browser = match &config.auth {
            AuthConfig::Dev => BrowserPolicy::Dev {
                port: address.port(),
            },
            AuthConfig::Oidc(_) => BrowserPolicy::Open {
                cors_origins: config.cors.allowed_origins.clone(),
            },
        };
        let auth = match &config.auth {
            AuthConfig::Dev => {
                tracing::warn!(
                    "development identity: every request acts as user `dev` (loopback only)"
                );
                Authenticator::Dev
            }
            AuthConfig::Oidc(oidc) => {
                Authenticator::Oidc(Arc::new(OidcVerifier::new(oidc.clone())?))
            }
        };
        let registry = Arc::new(registry);
        let metrics = Arc::new(Metrics::default());
        let model = build_model(&config.model)?;
        let tools = Arc::new(RegistryTools::new(
            Arc::clone(&registry),
            Arc::clone(&metrics) as Arc<dyn crate::copilot::ToolCallMetrics>,
        ));
        let selector = build_selector(&config.model, &config.agent);
        let settings = effective_settings(&config.model, &config.agent);
        let app = cairn_app::App::new(
            app_config(&settings).context("setting up the reasoning loop")?,
            cairn_app::AppDeps {
                model,
                ledger: Arc::clone(&ledger),
                notifier,
                tools,
                selector,
                installations: Arc::clone(&registry) as Arc<dyn cairn_app::Installations>,
            },
        );
        let (transparency, retention) = build_audit(&config.audit, &ledger).await?;
        let state = AppState {
            transparency,
            retention,
            ledger,
            registry,
            app: Arc::new(app),
            auth,
            metrics,
            limits: Limits {
                max_body_bytes: config.max_body_bytes,
                max_package_bytes: config.max_package_bytes,
            },
            browser,
        };
        Ok(Self {
            listener,
            address,
            state,
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The address actually bound.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until SIGINT or SIGTERM, then finishes in-flight requests.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        tracing::info!(address = %self.address, "serving");
        axum::serve(self.listener, router(self.state))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving")
    }
}

/// The keys that seal secret settings: the configured ones, or on the embedded defaults a
/// key generated once into `<data_dir>/secret.key` (readable by the service only).
fn secret_box(config: &Config) -> anyhow::Result<cairn_store::SecretBox> {
    use cairn_store::parse_key;
    let current = match &config.secrets.key {
        Some(k) => parse_key(k).context("[secrets] key / CAIRN_SECRET_KEY")?,
        None => {
            let path = config.data_dir.join("secret.key");
            if !path.exists() {
                write_private(&path, &cairn_store::generate_key())?;
                tracing::warn!(path = %path.display(), "generated a key for secret plugin settings; hosts sharing a database must set CAIRN_SECRET_KEY to one key");
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            parse_key(&text).with_context(|| format!("the key in {}", path.display()))?
        }
    };
    let previous = config
        .secrets
        .previous_keys
        .iter()
        .map(|k| parse_key(k))
        .collect::<Result<Vec<_>, _>>()
        .context("[secrets] previous_keys / CAIRN_SECRET_PREVIOUS_KEYS")?;
    Ok(cairn_store::SecretBox::new(current, &previous))
}

fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

/// The checkpoint signer and its schedule, and the purge connection, from `[audit]`.
async fn build_audit(
    settings: &crate::config::AuditSettings,
    ledger: &Arc<dyn cairn_audit::Ledger>,
) -> anyhow::Result<(
    Arc<cairn_audit::transparency::Transparency>,
    crate::http::Retention,
)> {
    let signer = settings
        .signing_key()?
        .map(|k| cairn_audit::checkpoint::CheckpointSigner::from_key(&k))
        .transpose()
        .context(
            "the checkpoint signing key ([audit] checkpoint_key_file / CAIRN_CHECKPOINT_KEY)",
        )?;
    if signer.is_none() {
        tracing::warn!("no checkpoint signing key: no checkpoints will be published");
    }
    let scheduled = signer.is_some() && settings.checkpoint_interval_seconds > 0;
    let transparency = Arc::new(cairn_audit::transparency::Transparency::new(
        Arc::clone(ledger),
        signer,
    ));
    if scheduled {
        let t = Arc::clone(&transparency);
        let every = std::time::Duration::from_secs(settings.checkpoint_interval_seconds);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match t.publish_grown().await {
                    Ok(n) => tracing::debug!(published = n, "scheduled checkpoints"),
                    // Loud: a refusal here may mean the ledger was rewritten.
                    Err(error) => tracing::error!(%error, "scheduled checkpoint failed"),
                }
            }
        });
    }
    let purge_ledger = match &settings.retention_database_url {
        Some(url) => cairn_audit::open(
            url,
            cairn_audit::LedgerOptions {
                migrate: false,
                ..cairn_audit::LedgerOptions::default()
            },
        )
        .await
        .context("opening the retention connection ([audit] retention_database_url)")?,
        None => Arc::clone(ledger),
    };
    Ok((
        transparency,
        crate::http::Retention {
            ledger: purge_ledger,
            min_retention: chrono::Duration::days(settings.min_retention_days.into()),
        },
    ))
}
