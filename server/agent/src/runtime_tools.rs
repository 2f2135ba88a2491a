//! [`RuntimeTools`]: the production [`ToolExecutor`] over plugins loaded in the wasmtime
//! runtime (feature `runtime`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;

use async_trait::async_trait;
use cairn_audit::{PolicyOutcome, TenantId};
use cairn_runtime::{CallContext, CallError, EgressRecord, EgressVerdict, Plugin};
use serde_json::Value;

use crate::tools::{
    AvailableTool, PolicyRecord, ToolExecution, ToolExecutor, ToolFailure, ToolInvocation,
};

/// Which tenants may use which plugins.
#[derive(Debug, Clone)]
enum Access {
    /// Every loaded plugin for every tenant: the single-tenant default.
    Everyone,
    /// Only the plugins listed for each tenant; a tenant not listed gets none.
    PerTenant(HashMap<TenantId, BTreeSet<String>>),
}

/// Loaded plugins by id, and which tenant may use which.
///
/// Cheap to share (`Arc<RuntimeTools>`); plugins can be added and removed while runs are
/// in flight (a run lists its tools when it starts or resumes).
#[derive(Debug)]
pub struct RuntimeTools {
    plugins: RwLock<BTreeMap<String, Plugin>>,
    access: RwLock<Access>,
}

impl RuntimeTools {
    /// Every plugin in `plugins` offered to every tenant (a single-tenant deployment or
    /// the zero-config default).
    pub fn new(plugins: impl IntoIterator<Item = Plugin>) -> Self {
        Self {
            plugins: RwLock::new(
                plugins
                    .into_iter()
                    .map(|p| (p.id().to_string(), p))
                    .collect(),
            ),
            access: RwLock::new(Access::Everyone),
        }
    }

    /// `plugins`, each offered only to the tenants that enabled it (deny by default).
    pub fn per_tenant(
        plugins: impl IntoIterator<Item = Plugin>,
        enabled: HashMap<TenantId, BTreeSet<String>>,
    ) -> Self {
        let tools = Self::new(plugins);
        *tools.access.write().unwrap_or_else(|p| p.into_inner()) = Access::PerTenant(enabled);
        tools
    }

    /// Adds (or replaces) a loaded plugin.
    pub fn insert(&self, plugin: Plugin) {
        self.plugins
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(plugin.id().to_string(), plugin);
    }

    /// Removes a plugin; runs stop seeing it at their next start or resume.
    pub fn remove(&self, id: &str) -> Option<Plugin> {
        self.plugins
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    fn allowed(&self, tenant: &TenantId, plugin: &str) -> bool {
        match &*self.access.read().unwrap_or_else(|p| p.into_inner()) {
            Access::Everyone => true,
            Access::PerTenant(map) => map.get(tenant).is_some_and(|s| s.contains(plugin)),
        }
    }

    fn plugin(&self, id: &str) -> Option<Plugin> {
        self.plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }
}

#[async_trait]
impl ToolExecutor for RuntimeTools {
    async fn tools(&self, tenant: &TenantId) -> Result<Vec<AvailableTool>, ToolFailure> {
        let plugins = self.plugins.read().unwrap_or_else(|p| p.into_inner());
        Ok(plugins
            .values()
            .filter(|p| self.allowed(tenant, p.id()))
            .flat_map(|p| {
                let manifest = p.manifest();
                manifest.tools.iter().map(|spec| AvailableTool {
                    plugin: manifest.id.clone(),
                    spec: spec.clone(),
                })
            })
            .collect())
    }

    async fn execute(&self, call: ToolInvocation) -> ToolExecution {
        let id = call.plugin.as_str();
        let plugin = match self.plugin(id) {
            Some(p) if self.allowed(&call.tenant, id) => p,
            _ => {
                return ToolExecution {
                    outcome: Err(ToolFailure::new(
                        "unknown_tool",
                        format!("the plugin {id} is not available"),
                    )),
                    records: Vec::new(),
                };
            }
        };
        let ctx = CallContext::new(call.tenant.as_str(), call.user.as_str());
        match plugin
            .call(&ctx, &call.tool, &call.arguments.to_string())
            .await
        {
            Ok(outcome) => ToolExecution {
                records: outcome.egress.iter().map(egress_record).collect(),
                outcome: serde_json::from_str::<Value>(&outcome.output).map_err(|e| {
                    ToolFailure::new(
                        "invalid_output",
                        format!("the plugin returned invalid JSON: {e}"),
                    )
                }),
            },
            Err(failure) => ToolExecution {
                records: failure.egress.iter().map(egress_record).collect(),
                outcome: Err(ToolFailure::new(
                    error_type(&failure.error),
                    failure.error.to_string(),
                )),
            },
        }
    }
}

/// `error.type` of a failed plugin call.
fn error_type(e: &CallError) -> &'static str {
    match e {
        CallError::Tool { .. } => "tool_error",
        CallError::UnknownTool { .. } => "unknown_tool",
        CallError::Timeout { .. } => "timeout",
        CallError::MemoryLimit { .. } => "memory_limit",
        CallError::OutputTooLarge { .. } => "output_too_large",
        CallError::InvalidOutput { .. } => "invalid_output",
        CallError::EgressDenied(_) => "egress_denied",
        CallError::HttpResponseTooLarge { .. } => "http_response_too_large",
        CallError::Trap { .. } => "trap",
        CallError::Busy { .. } => "busy",
        _ => "host_error",
    }
}

/// One outbound request's verdict as a ledger policy decision.
fn egress_record(r: &EgressRecord) -> PolicyRecord {
    let subject = format!("egress {} {}", r.method, r.url);
    match &r.verdict {
        EgressVerdict::Allowed { rule, address } => PolicyRecord {
            subject,
            decision: PolicyOutcome::Allowed,
            rule: "manifest.permissions.outbound_hosts".into(),
            reason: format!("{rule} allows it; connected to {address}"),
        },
        EgressVerdict::Denied { denial } => PolicyRecord {
            subject,
            decision: PolicyOutcome::Refused,
            rule: "manifest.permissions.outbound_hosts".into(),
            reason: denial.to_string(),
        },
        EgressVerdict::ResponseTooLarge { limit } => PolicyRecord {
            subject,
            decision: PolicyOutcome::Refused,
            rule: "manifest.permissions.max_http_response_bytes".into(),
            reason: format!("the response passed {limit} bytes and was cut off"),
        },
    }
}
