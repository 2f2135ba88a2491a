//! The plugin registry: which packages each tenant installed, whether they are enabled,
//! and their settings — kept in the ledger's database ([`cairn_store::Installations`]),
//! so every host over that database serves the same plugins.
//!
//! - **Installations, not components.** A package is stored under a digest over its
//!   manifest *and* its component; each installation keeps the manifest it was installed
//!   with. Nothing one installation does (install, upgrade, settings) can change another's
//!   tools, annotations, permissions or settings, in its tenant or any other.
//! - **No global lock across slow work.** Loading a plugin (a Cranelift compile on a
//!   cache miss, then its `describe()`) happens in a per-installation cell, so other
//!   tenants' listings, calls and runs go on meanwhile. Loaded plugins and parsed
//!   manifests are cached per (installation, revision): a change made through any host
//!   bumps the revision, so every host reloads on its next use.
//! - **One kept catalog per tenant.** The list of a tenant's enabled plugins that every
//!   run starts from is read once and kept, not queried per run. Every admin action
//!   announces the change ([`RunNotifier::catalog_changed`]: at once on this host, by
//!   `NOTIFY` on the others), which drops the kept list; a list is also re-read after
//!   [`CATALOG_MAX_AGE`] in case an announcement was lost. Calling a tool never trusts
//!   the kept list: it reads the installation (enabled, revision) itself.
//! - **Admin actions are audited.** Install, enable, disable, settings, upgrade and
//!   uninstall are each a run in the ledger: an `admin_action` step (who, what, before and
//!   after) recorded *before* the change is applied, then the outcome — through
//!   [`cairn_app::admin::audited`], the one path every admin action (the approval policy's
//!   too) is recorded by.
//!
//! Why it is still here and not in `cairn-app`: installing and upgrading read the package
//! format ([`crate::package`]), which is leaving this crate for one of its own (issue #9
//! point 8); once it has, the registry moves into the application layer unchanged. Until
//! then the application sees it through [`cairn_app::Installations`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_app::AppError;
use cairn_app::admin::{AdminAction, audited};
use cairn_audit::{Ledger, TenantId, UserId};
use cairn_manifest::Manifest;
use cairn_runtime::{Plugin, Runtime, RuntimeError};
use cairn_store::{
    CatalogVersion, InstallationChange, InstallationRow, Installations, RunNotifier, SecretBox,
    StoreError,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::package::{Package, PackageError};

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
    /// The pinned package digest, `sha256:<hex>` over the manifest and the component.
    pub digest: String,
    /// Whether its tools may be called.
    pub enabled: bool,
    /// The administrator's settings (the manifest's defaults fill the rest), secret ones
    /// left out.
    pub config: BTreeMap<String, String>,
    /// The secret settings that have a value (their values are never shown).
    #[serde(default)]
    pub secrets_set: Vec<String>,
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
    #[error("plugin `{0}` is already installed in this tenant; upgrade or uninstall it")]
    AlreadyInstalled(String),
    /// The plugin is disabled.
    #[error("plugin `{0}` is disabled; enable it first")]
    Disabled(String),
    /// An upgrade's package is of another plugin.
    #[error("the package is plugin `{package}`, not `{installed}`; an upgrade keeps the plugin id")]
    OtherPlugin {
        /// The installed plugin id.
        installed: String,
        /// The package's plugin id.
        package: String,
    },
    /// The package is not acceptable.
    #[error("invalid package: {0}")]
    Package(#[from] PackageError),
    /// A setting is not declared by the manifest.
    #[error("setting `{0}` is not declared in the plugin's manifest")]
    UnknownSetting(String),
    /// The runtime refused to load the plugin (settings, component).
    #[error("the plugin cannot be loaded: {0}")]
    Load(#[from] RuntimeError),
    /// Another request changed the installation meanwhile (on this host or another).
    #[error("the plugin was changed by another request meanwhile; read it again and retry")]
    Stale,
    /// The ledger could not record the action, so it was not applied.
    #[error("the audit ledger could not record the action, so it was not applied: {0}")]
    Ledger(#[from] cairn_audit::LedgerError),
    /// A secret setting does not open with this host's keys.
    #[error("secret setting `{setting}`: {source}")]
    Secret {
        /// The setting.
        setting: String,
        /// Why.
        #[source]
        source: cairn_store::SecretError,
    },
    /// A manifest entry is outside the operator's egress ceiling.
    #[error("the manifest is outside the operator's egress ceiling: {0}")]
    EgressCeiling(cairn_runtime::CeilingViolation),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] anyhow::Error),
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => RegistryError::NotFound,
            StoreError::Stale => RegistryError::Stale,
            e => RegistryError::Storage(anyhow::Error::new(e)),
        }
    }
}

impl From<RegistryError> for AppError {
    /// One mapping of registry failures for every transport.
    fn from(error: RegistryError) -> Self {
        match error {
            RegistryError::NotFound => AppError::NotFound("plugin not found".into()),
            RegistryError::AlreadyInstalled(_) => AppError::Conflict {
                code: "already_installed",
                message: error.to_string(),
            },
            RegistryError::Disabled(_) => AppError::Conflict {
                code: "plugin_disabled",
                message: error.to_string(),
            },
            RegistryError::Stale => AppError::Conflict {
                code: "changed_meanwhile",
                message: error.to_string(),
            },
            RegistryError::OtherPlugin { .. } => {
                AppError::unprocessable("other_plugin", error.to_string(), None)
            }
            RegistryError::Ledger(ref e) if e.is_unavailable() => {
                AppError::Unavailable("the audit ledger is unavailable; nothing was changed".into())
            }
            RegistryError::Ledger(e) => AppError::Internal(e.into()),
            RegistryError::Package(_) => {
                AppError::unprocessable("invalid_package", error.to_string(), None)
            }
            RegistryError::UnknownSetting(ref key) => AppError::unprocessable(
                "unknown_setting",
                error.to_string(),
                Some(format!("config.{key}")),
            ),
            RegistryError::Load(RuntimeError::Config(_)) => {
                AppError::unprocessable("invalid_config", error.to_string(), Some("config".into()))
            }
            RegistryError::Load(_) => {
                AppError::unprocessable("plugin_load_failed", error.to_string(), None)
            }
            RegistryError::Secret { ref setting, .. } => AppError::unprocessable(
                "secret_unreadable",
                error.to_string(),
                Some(format!("config.{setting}")),
            ),
            RegistryError::EgressCeiling(ref violation) => {
                let field = Some(violation.field.clone());
                AppError::unprocessable("egress_ceiling", error.to_string(), field)
            }
            RegistryError::Storage(e) => AppError::Internal(e),
        }
    }
}

#[async_trait::async_trait]
impl cairn_app::Installations for Registry {
    async fn enabled_plugin_id(
        &self,
        tenant: &TenantId,
        installation: Uuid,
    ) -> cairn_app::AppResult<String> {
        let c = self.current(tenant, installation).await?;
        if !c.row.enabled {
            return Err(RegistryError::Disabled(c.row.plugin_id).into());
        }
        Ok(c.row.plugin_id)
    }
}

/// A plugin loaded (or being loaded) for one revision of an installation.
struct Loaded {
    revision: i64,
    plugin: OnceCell<Plugin>,
}

/// The registry of every tenant's plugins.
pub struct Registry {
    store: Installations,
    runtime: Runtime,
    ledger: Arc<dyn Ledger>,
    /// Seals and opens secret settings.
    secrets: Arc<SecretBox>,
    /// Parsed manifests by (installation, revision).
    manifests: Mutex<HashMap<(Uuid, i64), Arc<Manifest>>>,
    /// Loaded plugins by installation; the lock is held only to find or insert a cell.
    loaded: Mutex<HashMap<Uuid, Arc<Loaded>>>,
    /// Announces installation changes and says whether a kept catalog is current.
    notifier: RunNotifier,
    /// Each tenant's enabled plugins, as last read.
    catalogs: Mutex<HashMap<String, KeptCatalog>>,
}

/// How long a tenant's kept catalog is used without re-reading it: the bound on staleness
/// should another host's announcement of a change be lost.
pub const CATALOG_MAX_AGE: Duration = Duration::from_secs(5);

/// A tenant's enabled plugins as read at `version`.
struct KeptCatalog {
    version: CatalogVersion,
    read_at: Instant,
    manifests: Arc<[Arc<Manifest>]>,
}

/// An installation row with its parsed manifest.
struct Current {
    row: InstallationRow,
    manifest: Arc<Manifest>,
}

/// The settings a listing or an admin record may show: secret ones (sealed) left out,
/// and the names of those that are set.
fn shown_config(config: &BTreeMap<String, String>) -> (BTreeMap<String, String>, Vec<String>) {
    let (secret, plain): (BTreeMap<_, _>, BTreeMap<_, _>) = config
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(_, v)| SecretBox::is_sealed(v));
    (plain, secret.into_keys().collect())
}

fn view(row: &InstallationRow, manifest: &Manifest) -> Installation {
    let (config, secrets_set) = shown_config(&row.config);
    Installation {
        id: row.id,
        tenant: row.tenant.clone(),
        plugin_id: row.plugin_id.clone(),
        version: row.version.clone(),
        publisher: manifest.publisher.clone(),
        description: manifest.description.clone(),
        digest: row.digest.clone(),
        enabled: row.enabled,
        config,
        secrets_set,
        installed_at: row.installed_at,
        installed_by: row.installed_by.clone(),
    }
}

/// What an admin record says of an installation: enough to see what changed, never a
/// package's bytes.
fn state_of(row: &InstallationRow) -> Value {
    let (config, secrets_set) = shown_config(&row.config);
    json!({
        "plugin_id": row.plugin_id,
        "version": row.version,
        "digest": row.digest,
        "enabled": row.enabled,
        "config": config,
        "secrets_set": secrets_set,
    })
}

/// Where a secret setting belongs: the associated data it is sealed with, so a sealed
/// value moved to another setting, installation or tenant does not open.
fn secret_place(row: &InstallationRow, setting: &str) -> String {
    format!("{}/{}/{setting}", row.tenant, row.id)
}

impl Registry {
    /// The registry over `ledger`'s database, loading plugins into `runtime`, recording
    /// admin actions in `ledger` and announcing them through `notifier`.
    pub fn new(
        ledger: Arc<dyn Ledger>,
        runtime: Runtime,
        secrets: Arc<SecretBox>,
        notifier: RunNotifier,
    ) -> Self {
        Self {
            store: Installations::new(ledger.database()),
            runtime,
            ledger,
            secrets,
            manifests: Mutex::new(HashMap::new()),
            loaded: Mutex::new(HashMap::new()),
            notifier,
            catalogs: Mutex::new(HashMap::new()),
        }
    }

    fn manifest_of(&self, row: &InstallationRow) -> Result<Arc<Manifest>, RegistryError> {
        let key = (row.id, row.revision);
        if let Some(m) = self
            .manifests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(Arc::clone(m));
        }
        let manifest = Arc::new(
            Manifest::from_json_str(&row.manifest)
                .with_context(|| format!("the stored manifest of installation {}", row.id))?,
        );
        let mut cache = self.manifests.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|(id, _), _| *id != row.id);
        cache.insert(key, Arc::clone(&manifest));
        Ok(manifest)
    }

    async fn current(&self, tenant: &TenantId, id: Uuid) -> Result<Current, RegistryError> {
        let row = self
            .store
            .get(tenant.as_str(), id)
            .await?
            .ok_or(RegistryError::NotFound)?;
        let manifest = self.manifest_of(&row)?;
        Ok(Current { row, manifest })
    }

    /// Records an admin action, applies it, and records how it went. Nothing is applied
    /// when the record cannot be written.
    async fn audited<T>(
        &self,
        tenant: &TenantId,
        user: &UserId,
        (action, target, plugin): (&str, String, &str),
        (before, after): (Value, Value),
        apply: impl Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        let action = AdminAction {
            action,
            target,
            plugin: Some(plugin),
            before,
            after,
        };
        let outcome = audited(self.ledger.as_ref(), tenant, user, action, apply).await;
        // Announced whatever the outcome: a failure may have come after the change.
        self.notifier.catalog_changed(tenant.as_str()).await;
        outcome
    }

    /// Installs a package for a tenant (disabled until enabled).
    #[tracing::instrument(skip(self, bytes), fields(tenant = %tenant, bytes = bytes.len()))]
    pub async fn install(
        &self,
        tenant: &TenantId,
        user: &UserId,
        bytes: &[u8],
    ) -> Result<Installation, RegistryError> {
        let package = Package::read_from(bytes)?;
        let manifest = package.manifest().clone();
        // The operator's egress ceiling, before anything is stored.
        self.runtime
            .egress_ceiling()
            .check_manifest(&manifest)
            .map_err(RegistryError::EgressCeiling)?;
        let plugin_id = manifest.id.to_string();
        if self
            .store
            .get_by_plugin(tenant.as_str(), &plugin_id)
            .await?
            .is_some()
        {
            return Err(RegistryError::AlreadyInstalled(plugin_id));
        }
        let row = InstallationRow {
            id: Uuid::now_v7(),
            tenant: tenant.to_string(),
            plugin_id: plugin_id.clone(),
            version: manifest.version.to_string(),
            digest: package.package_digest().to_string(),
            manifest: package.manifest_json().to_owned(),
            enabled: false,
            config: BTreeMap::new(),
            installed_at: Utc::now(),
            installed_by: user.to_string(),
            revision: 1,
        };
        let target = ("plugin.install", row.id.to_string(), plugin_id.as_str());
        self.audited(tenant, user, target, (Value::Null, state_of(&row)), async {
            self.store
                .put_package(&row.digest, package.manifest_json(), package.component())
                .await?;
            self.store.insert(&row).await.map_err(|e| match e {
                StoreError::Conflict(_) => RegistryError::AlreadyInstalled(plugin_id.clone()),
                e => e.into(),
            })
        })
        .await?;
        Ok(view(&row, &manifest))
    }

    /// A tenant's installations, oldest first.
    pub async fn list(&self, tenant: &TenantId) -> Result<Vec<Installation>, RegistryError> {
        self.store
            .list(tenant.as_str())
            .await?
            .iter()
            .map(|row| Ok(view(row, self.manifest_of(row)?.as_ref())))
            .collect()
    }

    /// One installation of the tenant, with its manifest. Another tenant's id is
    /// [`RegistryError::NotFound`], exactly like an id that does not exist.
    pub async fn get(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<(Installation, Arc<Manifest>), RegistryError> {
        let c = self.current(tenant, id).await?;
        Ok((view(&c.row, &c.manifest), c.manifest))
    }

    /// Enables or disables an installation. Enabling loads the plugin first, so a missing
    /// required setting or a component that no longer loads is reported now.
    pub async fn set_enabled(
        &self,
        tenant: &TenantId,
        user: &UserId,
        id: Uuid,
        enabled: bool,
    ) -> Result<Installation, RegistryError> {
        let c = self.current(tenant, id).await?;
        if enabled {
            self.load(&c.row, c.manifest.as_ref().clone(), c.row.config.clone())
                .await?;
        }
        let change = InstallationChange {
            enabled: Some(enabled),
            ..InstallationChange::default()
        };
        let action = if enabled {
            "plugin.enable"
        } else {
            "plugin.disable"
        };
        self.change(tenant, user, action, &c, change).await
    }

    /// Replaces an installation's settings. Unknown settings are refused; an enabled
    /// plugin is loaded with the new settings before they are saved. Secret settings are
    /// write-only: a value given is sealed before it is stored, an empty one clears it,
    /// and one left out keeps its value.
    pub async fn set_config(
        &self,
        tenant: &TenantId,
        user: &UserId,
        id: Uuid,
        given: BTreeMap<String, String>,
    ) -> Result<Installation, RegistryError> {
        let c = self.current(tenant, id).await?;
        if let Some(unknown) = given.keys().find(|k| !c.manifest.config.contains_key(*k)) {
            return Err(RegistryError::UnknownSetting(unknown.clone()));
        }
        let is_secret = |k: &str| c.manifest.config.get(k).is_some_and(|s| s.secret);
        let mut config: BTreeMap<String, String> = c
            .row
            .config
            .iter()
            .filter(|(k, _)| is_secret(k) && !given.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in given {
            if !is_secret(&k) {
                config.insert(k, v);
            } else if !v.is_empty() {
                let sealed = self.secrets.seal(&secret_place(&c.row, &k), &v);
                config.insert(k, sealed);
            }
        }
        if c.row.enabled {
            self.load(&c.row, c.manifest.as_ref().clone(), config.clone())
                .await?;
        }
        let change = InstallationChange {
            config: Some(config),
            ..InstallationChange::default()
        };
        self.change(tenant, user, "plugin.config", &c, change).await
    }

    /// Upgrades (or downgrades) an installation to another package of the same plugin id.
    /// Settings the new manifest still declares are kept, the others dropped (the admin
    /// record shows both); an enabled plugin is loaded from the new package before the
    /// change is saved, so a package that does not load leaves the old one in place.
    pub async fn upgrade(
        &self,
        tenant: &TenantId,
        user: &UserId,
        id: Uuid,
        bytes: &[u8],
    ) -> Result<Installation, RegistryError> {
        let package = Package::read_from(bytes)?;
        let c = self.current(tenant, id).await?;
        let manifest = package.manifest().clone();
        if manifest.id.as_str() != c.row.plugin_id {
            return Err(RegistryError::OtherPlugin {
                installed: c.row.plugin_id.clone(),
                package: manifest.id.to_string(),
            });
        }
        // A new version may ask for other origins: the same ceiling as an install.
        self.runtime
            .egress_ceiling()
            .check_manifest(&manifest)
            .map_err(RegistryError::EgressCeiling)?;
        // Kept: settings the new manifest still declares, as secret as they were.
        let config: BTreeMap<String, String> = c
            .row
            .config
            .iter()
            .filter(|(k, v)| {
                manifest
                    .config
                    .get(*k)
                    .is_some_and(|s| s.secret == SecretBox::is_sealed(v))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let digest = package.package_digest().to_string();
        if c.row.enabled {
            let opened = self.open_secrets(&c.row, config.clone())?;
            let plugin = self
                .runtime
                .load(package.component(), manifest.clone(), opened)
                .await?;
            drop(plugin);
        }
        self.store
            .put_package(&digest, package.manifest_json(), package.component())
            .await?;
        let change = InstallationChange {
            config: Some(config),
            package: Some((
                manifest.version.to_string(),
                digest,
                package.manifest_json().to_owned(),
            )),
            ..InstallationChange::default()
        };
        self.change(tenant, user, "plugin.upgrade", &c, change)
            .await
    }

    /// Removes an installation. A run waiting for approval of one of its tools is not
    /// blocked: when it is approved, the call is not run and the model is told the tool is
    /// no longer available (the loop's rule for any tool that went away).
    pub async fn uninstall(
        &self,
        tenant: &TenantId,
        user: &UserId,
        id: Uuid,
    ) -> Result<(), RegistryError> {
        let c = self.current(tenant, id).await?;
        let target = ("plugin.uninstall", id.to_string(), c.row.plugin_id.as_str());
        self.audited(
            tenant,
            user,
            target,
            (state_of(&c.row), Value::Null),
            async {
                Ok(self
                    .store
                    .delete(tenant.as_str(), id, c.row.revision)
                    .await?)
            },
        )
        .await?;
        self.forget(id);
        Ok(())
    }

    async fn change(
        &self,
        tenant: &TenantId,
        user: &UserId,
        action: &str,
        c: &Current,
        change: InstallationChange,
    ) -> Result<Installation, RegistryError> {
        let mut after = c.row.clone();
        if let Some(e) = change.enabled {
            after.enabled = e;
        }
        if let Some(config) = &change.config {
            after.config = config.clone();
        }
        if let Some((version, digest, _)) = &change.package {
            after.version = version.clone();
            after.digest = digest.clone();
        }
        let target = (action, c.row.id.to_string(), c.row.plugin_id.as_str());
        let row = self
            .audited(
                tenant,
                user,
                target,
                (state_of(&c.row), state_of(&after)),
                async {
                    Ok(self
                        .store
                        .update(tenant.as_str(), c.row.id, c.row.revision, &change)
                        .await?)
                },
            )
            .await?;
        self.forget(row.id);
        let manifest = self.manifest_of(&row)?;
        Ok(view(&row, &manifest))
    }

    fn forget(&self, id: Uuid) {
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// The loaded plugin of an enabled installation.
    pub async fn plugin(
        &self,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<(Installation, Arc<Manifest>, Plugin), RegistryError> {
        let c = self.current(tenant, id).await?;
        if !c.row.enabled {
            return Err(RegistryError::Disabled(c.row.plugin_id));
        }
        let plugin = self.loaded_plugin(&c).await?;
        Ok((view(&c.row, &c.manifest), c.manifest, plugin))
    }

    /// The plugin for this revision, loading it once: callers for the same installation
    /// wait for one load; nobody else waits at all.
    async fn loaded_plugin(&self, c: &Current) -> Result<Plugin, RegistryError> {
        let cell = {
            let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            let entry = loaded.entry(c.row.id).or_insert_with(|| {
                Arc::new(Loaded {
                    revision: c.row.revision,
                    plugin: OnceCell::new(),
                })
            });
            if entry.revision != c.row.revision {
                *entry = Arc::new(Loaded {
                    revision: c.row.revision,
                    plugin: OnceCell::new(),
                });
            }
            Arc::clone(entry)
        };
        let plugin = cell
            .plugin
            .get_or_try_init(|| {
                self.load(&c.row, c.manifest.as_ref().clone(), c.row.config.clone())
            })
            .await?;
        Ok(plugin.clone())
    }

    /// The manifests of a tenant's enabled plugins: the tools its runs may use. Kept per
    /// tenant until a change is announced or [`CATALOG_MAX_AGE`] passes.
    pub async fn enabled_manifests(
        &self,
        tenant: &TenantId,
    ) -> Result<Arc<[Arc<Manifest>]>, RegistryError> {
        // Read before the installations: a change announced during the read leaves the
        // kept copy older than the next version compared with it.
        let version = self.notifier.catalog_version(tenant.as_str());
        if let Some(kept) = self
            .catalogs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant.as_str())
            .filter(|k| k.version == version && k.read_at.elapsed() < CATALOG_MAX_AGE)
        {
            return Ok(Arc::clone(&kept.manifests));
        }
        let read_at = Instant::now();
        let manifests: Arc<[Arc<Manifest>]> = self
            .store
            .list(tenant.as_str())
            .await?
            .iter()
            .filter(|r| r.enabled)
            .map(|r| self.manifest_of(r))
            .collect::<Result<_, _>>()?;
        self.catalogs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                tenant.to_string(),
                KeptCatalog {
                    version,
                    read_at,
                    manifests: Arc::clone(&manifests),
                },
            );
        Ok(manifests)
    }

    /// The loaded plugin the tenant enabled under the manifest id `plugin_id` (what the
    /// reasoning loop records and calls a tool by).
    pub async fn enabled_plugin(
        &self,
        tenant: &TenantId,
        plugin_id: &str,
    ) -> Result<(Installation, Plugin), RegistryError> {
        let row = self
            .store
            .get_by_plugin(tenant.as_str(), plugin_id)
            .await?
            .ok_or(RegistryError::NotFound)?;
        if !row.enabled {
            return Err(RegistryError::Disabled(row.plugin_id));
        }
        let manifest = self.manifest_of(&row)?;
        let c = Current { row, manifest };
        let plugin = self.loaded_plugin(&c).await?;
        Ok((view(&c.row, &c.manifest), plugin))
    }

    /// `config` with its sealed secret settings opened, for the plugin (and nothing else).
    fn open_secrets(
        &self,
        row: &InstallationRow,
        mut config: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, RegistryError> {
        for (setting, value) in config.iter_mut() {
            if SecretBox::is_sealed(value) {
                *value = self
                    .secrets
                    .open(&secret_place(row, setting), value)
                    .map_err(|source| RegistryError::Secret {
                        setting: setting.clone(),
                        source,
                    })?;
            }
        }
        Ok(config)
    }

    async fn load(
        &self,
        row: &InstallationRow,
        manifest: Manifest,
        config: BTreeMap<String, String>,
    ) -> Result<Plugin, RegistryError> {
        let config = self.open_secrets(row, config)?;
        let (_, component) = self.store.package(&row.digest).await?.with_context(|| {
            format!(
                "the package {} of installation {} is missing",
                row.digest, row.id
            )
        })?;
        Ok(self.runtime.load(&component, manifest, config).await?)
    }

    /// Imports a data dir written by an earlier Cairn (`plugins.json` and
    /// `packages/<component digest>.cairnpkg`) into the database, once: installations
    /// keep their ids, tenants, settings and enabled state; the file is then renamed to
    /// `plugins.json.imported`. Installations the database already has are left alone.
    pub async fn import_data_dir(&self, data_dir: &Path) -> anyhow::Result<usize> {
        #[derive(Deserialize)]
        struct RegistryFile {
            installations: Vec<Installation>,
        }
        let path = data_dir.join("plugins.json");
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let file: RegistryFile = serde_json::from_slice(&bytes)
            .with_context(|| format!("reading the plugin registry {}", path.display()))?;
        let mut imported = 0;
        for old in file.installations {
            let hex = old.digest.strip_prefix("sha256:").unwrap_or(&old.digest);
            let package_path = data_dir.join("packages").join(format!("{hex}.cairnpkg"));
            let bytes = tokio::fs::read(&package_path)
                .await
                .with_context(|| format!("reading {}", package_path.display()))?;
            let package = Package::read_from(bytes.as_slice())
                .with_context(|| format!("package {}", package_path.display()))?;
            anyhow::ensure!(
                package.digest().to_string() == old.digest,
                "{} no longer matches its pinned digest {}",
                package_path.display(),
                old.digest
            );
            let row = InstallationRow {
                id: old.id,
                tenant: old.tenant,
                plugin_id: old.plugin_id,
                version: old.version,
                digest: package.package_digest().to_string(),
                manifest: package.manifest_json().to_owned(),
                enabled: old.enabled,
                config: old.config,
                installed_at: old.installed_at,
                installed_by: old.installed_by,
                revision: 1,
            };
            self.store
                .put_package(&row.digest, package.manifest_json(), package.component())
                .await?;
            match self.store.insert(&row).await {
                Ok(()) => imported += 1,
                Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let done = data_dir.join("plugins.json.imported");
        tokio::fs::rename(&path, &done)
            .await
            .with_context(|| format!("renaming {} after importing it", path.display()))?;
        tracing::info!(imported, from = %path.display(), "imported the plugin registry into the database");
        Ok(imported)
    }
}
