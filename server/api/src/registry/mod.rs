//! The plugin registry: which packages each tenant installed, whether they are enabled,
//! and their settings.
//!
//! Packages are stored once under `<data_dir>/packages/<sha256 hex>.cairnpkg` (content
//! addressed: two tenants installing the same package share the file); the registry
//! itself is `<data_dir>/plugins.json`, rewritten atomically (temp file and rename) on
//! every change. An installation pins the component's digest: a package file that no
//! longer hashes to it is refused when loaded. Loaded plugins are cached per
//! installation and dropped when their settings change.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use cairn_manifest::Manifest;
use cairn_runtime::{Plugin, Runtime, RuntimeError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::package::{ComponentDigest, Package, PackageError};

/// An installed plugin, as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Installation {
    /// The installation's id (UUID v7); what `/v1/plugins/{id}` takes.
    pub id: Uuid,
    /// The tenant it belongs to.
    pub tenant: String,
    /// The manifest's plugin id, e.g. `tasks`.
    pub plugin_id: String,
    /// The manifest's version.
    pub version: String,
    /// The manifest's publisher.
    pub publisher: String,
    /// The manifest's description.
    pub description: String,
    /// The pinned component digest, `sha256:<hex>`.
    pub digest: String,
    /// Whether its tools may be called.
    pub enabled: bool,
    /// The administrator's settings (the manifest's defaults fill the rest).
    pub config: BTreeMap<String, String>,
    /// When it was installed.
    pub installed_at: DateTime<Utc>,
    /// Who installed it.
    pub installed_by: String,
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No such installation in this tenant.
    #[error("plugin installation not found")]
    NotFound,
    /// The tenant already has a plugin with this id.
    #[error("plugin `{0}` is already installed in this tenant; uninstall it first")]
    AlreadyInstalled(String),
    /// The plugin is disabled.
    #[error("plugin `{0}` is disabled; enable it first")]
    Disabled(String),
    /// The package is not acceptable.
    #[error("invalid package: {0}")]
    Package(#[from] PackageError),
    /// A setting is not declared by the manifest.
    #[error("setting `{0}` is not declared in the plugin's manifest")]
    UnknownSetting(String),
    /// The runtime refused to load the plugin (settings, component).
    #[error("the plugin cannot be loaded: {0}")]
    Load(#[from] RuntimeError),
    /// A manifest entry is outside the operator's egress ceiling.
    #[error("the manifest is outside the operator's egress ceiling: {0}")]
    EgressCeiling(cairn_runtime::CeilingViolation),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] anyhow::Error),
}

/// The registry of every tenant's plugins.
pub struct Registry {
    dir: PathBuf,
    runtime: Runtime,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    installations: Vec<Installation>,
    manifests: HashMap<String, Arc<Manifest>>,
    loaded: HashMap<Uuid, Plugin>,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    installations: Vec<Installation>,
}

impl Registry {
    /// Opens (or creates) the registry under `data_dir`, reading every installed
    /// package's manifest.
    pub async fn open(data_dir: &Path, runtime: Runtime) -> anyhow::Result<Self> {
        let dir = data_dir.to_owned();
        tokio::fs::create_dir_all(dir.join("packages"))
            .await
            .with_context(|| format!("creating {}", dir.join("packages").display()))?;
        let path = dir.join("plugins.json");
        let file: RegistryFile = match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("reading the plugin registry {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RegistryFile::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let registry = Self {
            dir,
            runtime,
            state: Mutex::new(State {
                installations: file.installations,
                ..State::default()
            }),
        };
        {
            let mut state = registry.state.lock().await;
            let digests: Vec<String> = state
                .installations
                .iter()
                .map(|i| i.digest.clone())
                .collect();
            for digest in digests {
                if let std::collections::hash_map::Entry::Vacant(slot) =
                    state.manifests.entry(digest)
                {
                    let package = registry.read_package(slot.key()).await?;
                    slot.insert(Arc::new(package.manifest().clone()));
                }
            }
        }
        Ok(registry)
    }

    fn package_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join("packages").join(format!("{hex}.cairnpkg"))
    }

    /// Reads a stored package and checks it still hashes to the pinned digest.
    async fn read_package(&self, digest: &str) -> anyhow::Result<Package> {
        let path = self.package_path(digest);
        let bytes = tokio::fs::read(&path)
            .await
            .with_context(|| format!("reading the package {}", path.display()))?;
        let package = Package::read_from(bytes.as_slice())
            .with_context(|| format!("package {}", path.display()))?;
        let pinned = ComponentDigest::parse(digest).context("pinned digest")?;
        anyhow::ensure!(
            package.digest() == pinned,
            "package {} no longer matches its pinned digest {digest}",
            path.display()
        );
        Ok(package)
    }

    async fn persist(&self, state: &State) -> anyhow::Result<()> {
        let file = RegistryFile {
            installations: state.installations.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).context("serialising the registry")?;
        let path = self.dir.join("plugins.json");
        let tmp = self
            .dir
            .join(format!("plugins.json.{}.tmp", Uuid::new_v4()));
        tokio::fs::write(&tmp, &bytes)
            .await
            .with_context(|| format!("writing {}", tmp.display()))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .with_context(|| format!("replacing {}", path.display()))?;
        Ok(())
    }

    /// Installs a package for a tenant (disabled until enabled).
    #[tracing::instrument(skip(self, bytes), fields(bytes = bytes.len()))]
    pub async fn install(
        &self,
        tenant: &str,
        user: &str,
        bytes: &[u8],
    ) -> Result<Installation, RegistryError> {
        let package = Package::read_from(bytes)?;
        let manifest = package.manifest().clone();
        // The operator's egress ceiling, before anything is stored (issue 10).
        self.runtime
            .egress_ceiling()
            .check_manifest(&manifest)
            .map_err(RegistryError::EgressCeiling)?;
        let digest = package.digest().to_string();
        let mut state = self.state.lock().await;
        if state
            .installations
            .iter()
            .any(|i| i.tenant == tenant && i.plugin_id == manifest.id.as_str())
        {
            return Err(RegistryError::AlreadyInstalled(manifest.id.to_string()));
        }
        let path = self.package_path(&digest);
        if tokio::fs::metadata(&path).await.is_err() {
            let tmp = path.with_extension(format!("{}.tmp", Uuid::new_v4()));
            let mut out = Vec::with_capacity(bytes.len());
            package.write_to(&mut out)?;
            tokio::fs::write(&tmp, &out)
                .await
                .with_context(|| format!("writing {}", tmp.display()))?;
            tokio::fs::rename(&tmp, &path)
                .await
                .with_context(|| format!("storing {}", path.display()))?;
        }
        let installation = Installation {
            id: Uuid::now_v7(),
            tenant: tenant.to_owned(),
            plugin_id: manifest.id.to_string(),
            version: manifest.version.to_string(),
            publisher: manifest.publisher.clone(),
            description: manifest.description.clone(),
            digest: digest.clone(),
            enabled: false,
            config: BTreeMap::new(),
            installed_at: Utc::now(),
            installed_by: user.to_owned(),
        };
        state.installations.push(installation.clone());
        state.manifests.insert(digest, Arc::new(manifest));
        if let Err(e) = self.persist(&state).await {
            state.installations.pop();
            return Err(e.into());
        }
        Ok(installation)
    }

    /// A tenant's installations, oldest first.
    pub async fn list(&self, tenant: &str) -> Vec<Installation> {
        let state = self.state.lock().await;
        state
            .installations
            .iter()
            .filter(|i| i.tenant == tenant)
            .cloned()
            .collect()
    }

    /// One installation of the tenant, with its manifest. Another tenant's id is
    /// [`RegistryError::NotFound`], exactly like an id that does not exist.
    pub async fn get(
        &self,
        tenant: &str,
        id: Uuid,
    ) -> Result<(Installation, Arc<Manifest>), RegistryError> {
        let state = self.state.lock().await;
        let installation = find(&state, tenant, id)?.clone();
        let manifest = state
            .manifests
            .get(&installation.digest)
            .cloned()
            .context("manifest missing from the registry cache")?;
        Ok((installation, manifest))
    }

    /// Enables or disables an installation. Enabling loads the plugin, so a missing
    /// required setting or a component that no longer loads is reported now.
    pub async fn set_enabled(
        &self,
        tenant: &str,
        id: Uuid,
        enabled: bool,
    ) -> Result<Installation, RegistryError> {
        let mut state = self.state.lock().await;
        let installation = find(&state, tenant, id)?.clone();
        if enabled && !state.loaded.contains_key(&id) {
            let plugin = self
                .load(&installation, installation.config.clone())
                .await?;
            state.loaded.insert(id, plugin);
        }
        if !enabled {
            state.loaded.remove(&id);
        }
        set(&mut state, id, |i| i.enabled = enabled);
        self.persist(&state).await?;
        Ok(find(&state, tenant, id)?.clone())
    }

    /// Replaces an installation's settings. Unknown settings are refused; an enabled
    /// plugin is reloaded with the new settings before they are saved.
    pub async fn set_config(
        &self,
        tenant: &str,
        id: Uuid,
        config: BTreeMap<String, String>,
    ) -> Result<Installation, RegistryError> {
        let mut state = self.state.lock().await;
        let installation = find(&state, tenant, id)?.clone();
        let manifest = state
            .manifests
            .get(&installation.digest)
            .cloned()
            .context("manifest missing from the registry cache")?;
        if let Some(unknown) = config.keys().find(|k| !manifest.config.contains_key(*k)) {
            return Err(RegistryError::UnknownSetting(unknown.clone()));
        }
        if installation.enabled {
            let plugin = self.load(&installation, config.clone()).await?;
            state.loaded.insert(id, plugin);
        } else {
            state.loaded.remove(&id);
        }
        set(&mut state, id, |i| i.config = config);
        self.persist(&state).await?;
        Ok(find(&state, tenant, id)?.clone())
    }

    /// The loaded plugin of an enabled installation.
    pub async fn plugin(
        &self,
        tenant: &str,
        id: Uuid,
    ) -> Result<(Installation, Arc<Manifest>, Plugin), RegistryError> {
        let mut state = self.state.lock().await;
        let installation = find(&state, tenant, id)?.clone();
        if !installation.enabled {
            return Err(RegistryError::Disabled(installation.plugin_id));
        }
        let manifest = state
            .manifests
            .get(&installation.digest)
            .cloned()
            .context("manifest missing from the registry cache")?;
        if let Some(plugin) = state.loaded.get(&id) {
            return Ok((installation, manifest, plugin.clone()));
        }
        let plugin = self
            .load(&installation, installation.config.clone())
            .await?;
        state.loaded.insert(id, plugin.clone());
        Ok((installation, manifest, plugin))
    }

    /// The manifests of a tenant's enabled plugins: the tools its runs may use.
    pub async fn enabled_manifests(&self, tenant: &str) -> Vec<Arc<Manifest>> {
        let state = self.state.lock().await;
        state
            .installations
            .iter()
            .filter(|i| i.tenant == tenant && i.enabled)
            .filter_map(|i| state.manifests.get(&i.digest).cloned())
            .collect()
    }

    /// The loaded plugin the tenant enabled under the manifest id `plugin_id` (what the
    /// reasoning loop records and calls a tool by).
    pub async fn enabled_plugin(
        &self,
        tenant: &str,
        plugin_id: &str,
    ) -> Result<(Installation, Plugin), RegistryError> {
        let id = {
            let state = self.state.lock().await;
            state
                .installations
                .iter()
                .find(|i| i.tenant == tenant && i.plugin_id == plugin_id)
                .map(|i| i.id)
                .ok_or(RegistryError::NotFound)?
        };
        let (installation, _, plugin) = self.plugin(tenant, id).await?;
        Ok((installation, plugin))
    }

    async fn load(
        &self,
        installation: &Installation,
        config: BTreeMap<String, String>,
    ) -> Result<Plugin, RegistryError> {
        let package = self.read_package(&installation.digest).await?;
        let plugin = self
            .runtime
            .load(package.component(), package.manifest().clone(), config)
            .await?;
        Ok(plugin)
    }
}

fn find<'s>(state: &'s State, tenant: &str, id: Uuid) -> Result<&'s Installation, RegistryError> {
    state
        .installations
        .iter()
        .find(|i| i.id == id && i.tenant == tenant)
        .ok_or(RegistryError::NotFound)
}

fn set(state: &mut State, id: Uuid, change: impl FnOnce(&mut Installation)) {
    if let Some(i) = state.installations.iter_mut().find(|i| i.id == id) {
        change(i);
    }
}
