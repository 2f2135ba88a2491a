//! [`Runtime`]: the engine, linker, cache and host capabilities shared by every plugin.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_manifest::{Manifest, ToolDescriptor};
use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

use crate::bindings::{self, PluginPre};
use crate::cache::ComponentCache;
use crate::egress::{EgressAuthorizer, EgressCeiling, EgressPolicy, NoCredentials};
use crate::engine::{EpochTicker, build_engine};
use crate::error::{Result, RuntimeError, chain};
use crate::kv::{KvStore, MemoryKv};
use crate::limits::{EffectiveLimits, HostCeilings};
use crate::plugin::{CallContext, Plugin, PluginInner};
use crate::slots::CallSlots;
use crate::state::CallState;

/// How to build a [`Runtime`].
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Where precompiled components are cached. Must be owned by the host and not
    /// writable by anyone less trusted: its files are loaded as machine code.
    pub cache_dir: PathBuf,
    /// Host-wide maxima that clamp every manifest's limits.
    pub ceilings: HostCeilings,
    /// The epoch tick: the granularity of CPU deadlines and of yielding to other tasks.
    pub epoch_tick: Duration,
    /// Calls that may run at once; sizes the pooling allocator. More calls wait.
    pub max_concurrent_calls: u32,
    /// Of those, how many one tenant may hold at once (see the `slots` module).
    pub max_concurrent_calls_per_tenant: u32,
    /// How long a call waits for a slot before it fails with
    /// [`CallError::Busy`](crate::CallError::Busy).
    pub call_wait: Duration,
    /// The key-value store behind `cairn:plugin/kv`.
    pub kv: Arc<dyn KvStore>,
    /// Adds host-held credentials to allowed outbound requests.
    pub authorizer: Arc<dyn EgressAuthorizer>,
    /// The operator's egress ceiling, over every plugin's `outbound_hosts`.
    pub egress_ceiling: Arc<EgressCeiling>,
}

impl RuntimeConfig {
    /// Defaults: [`HostCeilings::default`], a 10 ms tick, 64 concurrent calls (no
    /// per-tenant share below that), a 30 s wait for a slot, an
    /// in-memory key-value store, no credentials and no egress ceiling beyond the
    /// per-plugin policy ([`EgressCeiling::unrestricted`]: the server sets its own from
    /// `[egress]`, whose default denies internal ranges).
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            ceilings: HostCeilings::default(),
            epoch_tick: Duration::from_millis(10),
            max_concurrent_calls: 64,
            max_concurrent_calls_per_tenant: 64,
            call_wait: Duration::from_secs(30),
            kv: Arc::new(MemoryKv::new()),
            authorizer: Arc::new(NoCredentials),
            egress_ceiling: Arc::new(EgressCeiling::unrestricted()),
        }
    }
}

/// The plugin host: one wasmtime engine (pooling allocator, epoch interruption), one
/// linker with WASI p2 (sandboxed), `wasi:http` (policed) and Cairn's imports, and the
/// precompiled-component cache. Cheap to clone; the epoch ticker thread stops when the
/// runtime and every [`Plugin`] loaded from it are dropped.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) engine: Engine,
    linker: Linker<CallState>,
    cache: ComponentCache,
    pub(crate) ceilings: HostCeilings,
    pub(crate) epoch_tick: Duration,
    pub(crate) kv: Arc<dyn KvStore>,
    pub(crate) authorizer: Arc<dyn EgressAuthorizer>,
    pub(crate) egress_ceiling: Arc<EgressCeiling>,
    pub(crate) slots: CallSlots,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Builds the engine, the linker and the cache directory, and starts the epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Runtime> {
        let engine = build_engine(&config.ceilings, config.max_concurrent_calls)?;
        let linker = build_linker(&engine)?;
        let cache = ComponentCache::new(config.cache_dir, &engine)?;
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick)
            .map_err(|e| RuntimeError::Engine(format!("starting the epoch ticker: {e}")))?;
        Ok(Runtime {
            shared: Arc::new(Shared {
                engine,
                linker,
                cache,
                ceilings: config.ceilings,
                epoch_tick: config.epoch_tick,
                kv: config.kv,
                authorizer: config.authorizer,
                egress_ceiling: config.egress_ceiling,
                slots: CallSlots::new(
                    config.max_concurrent_calls,
                    config.max_concurrent_calls_per_tenant,
                    config.call_wait,
                ),
                _ticker: ticker,
            }),
        })
    }

    /// Loads a plugin: compiles the component (or loads it from the cache), links it,
    /// calls its `describe()` export and refuses it if that disagrees with `manifest`.
    ///
    /// `config` is what the administrator set; the manifest's defaults fill the rest, and
    /// a missing required setting or an undeclared one is an error.
    #[tracing::instrument(skip_all, fields(plugin = %manifest.id))]
    pub async fn load(
        &self,
        component_bytes: &[u8],
        manifest: Manifest,
        config: BTreeMap<String, String>,
    ) -> Result<Plugin> {
        let config = resolve_config(&manifest, config)?;
        let shared = Arc::clone(&self.shared);
        let bytes = component_bytes.to_vec();
        // Compiling takes a second of CPU: keep it off the async worker threads.
        let (component, source) = tokio::task::spawn_blocking(move || {
            shared.cache.load_or_compile(&shared.engine, &bytes)
        })
        .await
        .map_err(|e| RuntimeError::Compile(format!("compile task failed: {e}")))??;
        tracing::info!(?source, "component ready");

        let pre = self
            .shared
            .linker
            .instantiate_pre(&component)
            .map_err(|e| RuntimeError::Incompatible(chain(&e)))?;
        let pre = PluginPre::new(pre).map_err(|e| RuntimeError::Incompatible(chain(&e)))?;

        let permissions = &manifest.permissions;
        let limits = EffectiveLimits::clamp(permissions, &self.shared.ceilings);
        let secrets = manifest
            .config
            .iter()
            .filter(|(_, setting)| setting.secret)
            .filter_map(|(key, _)| config.get(key).cloned())
            .collect();
        let egress = Arc::new(
            EgressPolicy::new(
                permissions.outbound_hosts.clone(),
                Arc::clone(&self.shared.egress_ceiling),
                limits.max_outbound_requests,
                limits.max_http_response_bytes,
                limits.max_http_request_bytes,
            )
            .with_secrets(secrets),
        );
        let mut inner = PluginInner {
            runtime: Arc::clone(&self.shared),
            id: manifest.id.to_string(),
            manifest,
            descriptors: Vec::new(),
            pre,
            config: Arc::new(config),
            limits,
            egress,
            source,
        };
        let described = inner
            .describe_component(&CallContext::new("", ""))
            .await
            .map_err(|e| RuntimeError::Describe(e.to_string()))?;
        let descriptors = described
            .into_iter()
            .map(|d| ToolDescriptor::from_wit(d.name, &d.input_schema, &d.output_schema))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| RuntimeError::ManifestMismatch(e.to_string()))?;
        inner
            .manifest
            .check_descriptors(&descriptors)
            .map_err(|e| RuntimeError::ManifestMismatch(e.to_string()))?;
        inner.descriptors = descriptors;
        Ok(Plugin {
            inner: Arc::new(inner),
        })
    }

    /// The operator's egress ceiling. An installer checks manifests against it with
    /// [`EgressCeiling::check_manifest`]; every request is checked against it again.
    pub fn egress_ceiling(&self) -> &EgressCeiling {
        &self.shared.egress_ceiling
    }

    /// The wasmtime engine, for callers that precompile out of band.
    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }
}

fn build_linker(engine: &Engine) -> Result<Linker<CallState>> {
    let err = |e: wasmtime::Error| RuntimeError::Linker(chain(&e));
    let mut linker = Linker::<CallState>::new(engine);
    // All of WASI p2, because Rust's std imports cli, filesystem and sockets; each is
    // closed off by the `WasiCtx` (no preopens, env, args or network).
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(err)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(err)?;
    bindings::logging::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)
        .map_err(err)?;
    bindings::kv::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)
        .map_err(err)?;
    bindings::config::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)
        .map_err(err)?;
    Ok(linker)
}

fn resolve_config(
    manifest: &Manifest,
    mut given: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    let mismatch = RuntimeError::Config;
    if let Some(unknown) = given.keys().find(|k| !manifest.config.contains_key(*k)) {
        return Err(mismatch(format!(
            "config setting {unknown:?} is not declared in the manifest's config"
        )));
    }
    for (key, setting) in &manifest.config {
        if given.contains_key(key) {
            continue;
        }
        match &setting.default {
            Some(default) => {
                given.insert(key.clone(), default.clone());
            }
            None if setting.required => {
                return Err(mismatch(format!(
                    "config setting {key:?} is required and has no value"
                )));
            }
            None => {}
        }
    }
    Ok(given)
}
