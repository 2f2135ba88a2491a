//! Consequence gating: which tool calls run at once, which wait for a person, which never
//! run. Policy is data (an [`ApprovalPolicy`] read from configuration), and the one
//! function that applies it, [`ApprovalPolicy::decide`], is pure.

use std::collections::BTreeMap;

use cairn_manifest::Annotations;
use serde::{Deserialize, Serialize};

/// How calls to one tool are gated.
///
/// On disk: `"always_ask"`, `"ask_unless_read_only"`, `"deny"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalMode {
    /// Every call waits for the user's approval, read-only or not.
    AlwaysAsk,
    /// Calls to tools whose manifest marks them `read_only` run at once; every other call
    /// waits for approval. The default, and the safe one: a tool's annotations default to
    /// not read-only.
    #[default]
    AskUnlessReadOnly,
    /// Calls are refused without running, and the model is told so it can answer
    /// without the tool.
    Deny,
}

/// The approval policy of one tenant: a default and per-tool overrides.
///
/// On disk: `{ "default": "always_ask", "tools": { "tasks.delete_task": "deny" } }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantApprovalPolicy {
    /// `default`: the tenant's mode for tools not listed; absent means the global
    /// policy's tool entry or default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<ApprovalMode>,
    /// `tools`: modes by `"<plugin id>.<tool name>"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tools: BTreeMap<String, ApprovalMode>,
}

/// Which calls need a person's approval, per tenant and per tool.
///
/// On disk:
/// ```json
/// {
///   "default": "ask_unless_read_only",
///   "tools": { "crm.add_note": "always_ask" },
///   "tenants": { "acme": { "default": "always_ask", "tools": { "tasks.delete_task": "deny" } } }
/// }
/// ```
/// Lookup order, most specific first: the tenant's tool entry, the tenant's default, the
/// global tool entry, the global default.
///
/// Who may decide: a run's calls are approved or denied, and the run cancelled, by the
/// user who started it, or by someone holding one of `approver_roles` in the run's tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPolicy {
    /// `default`: the mode for everything not listed (default `ask_unless_read_only`).
    #[serde(default)]
    pub default: ApprovalMode,
    /// `tools`: modes by `"<plugin id>.<tool name>"`, for every tenant.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tools: BTreeMap<String, ApprovalMode>,
    /// `tenants`: per-tenant policies by tenant id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tenants: BTreeMap<String, TenantApprovalPolicy>,
    /// `approver_roles`: roles (as the identity provider names them) whose holders may
    /// approve, deny and cancel other users' runs in their own tenant (default
    /// `["approver"]`; `[]` leaves every run to its owner alone).
    #[serde(default = "default_approver_roles")]
    pub approver_roles: Vec<String>,
}

fn default_approver_roles() -> Vec<String> {
    vec!["approver".to_owned()]
}

impl Default for ApprovalPolicy {
    /// Approval unless read-only; owners and `approver`s decide.
    fn default() -> Self {
        Self {
            default: ApprovalMode::default(),
            tools: BTreeMap::new(),
            tenants: BTreeMap::new(),
            approver_roles: default_approver_roles(),
        }
    }
}

/// What the policy decided for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Run it now.
    Run,
    /// Pause the run until someone approves or denies it.
    Ask {
        /// The rule that decided, for the ledger.
        rule: String,
        /// Why, in words an auditor (and the approver) can read.
        reason: String,
    },
    /// Refuse it without running.
    Deny {
        /// The rule that decided, for the ledger.
        rule: String,
        /// Why.
        reason: String,
    },
}

impl ApprovalPolicy {
    /// Parses a policy from JSON, refusing unknown fields and malformed tool keys.
    pub fn from_json_str(s: &str) -> Result<Self, String> {
        let policy: ApprovalPolicy = serde_json::from_str(s).map_err(|e| e.to_string())?;
        policy.check()?;
        Ok(policy)
    }

    /// Checks that every tool key has the form `<plugin id>.<tool name>`.
    pub fn check(&self) -> Result<(), String> {
        let keys = self.tools.keys().map(|k| (None, k)).chain(
            self.tenants
                .iter()
                .flat_map(|(t, p)| p.tools.keys().map(move |k| (Some(t), k))),
        );
        for (tenant, key) in keys {
            let ok = key
                .split_once('.')
                .is_some_and(|(p, t)| !p.is_empty() && !t.is_empty() && !t.contains('.'));
            if !ok {
                let place = tenant.map_or("tools".to_string(), |t| format!("tenants.{t}.tools"));
                return Err(format!(
                    "{place}: key {key:?} must be \"<plugin id>.<tool name>\""
                ));
            }
        }
        Ok(())
    }

    /// The mode for `plugin.tool` in `tenant`, and the rule that chose it.
    pub fn mode_for(&self, tenant: &str, plugin: &str, tool: &str) -> (ApprovalMode, String) {
        let key = format!("{plugin}.{tool}");
        if let Some(t) = self.tenants.get(tenant) {
            if let Some(m) = t.tools.get(&key) {
                return (*m, format!("approval.tenants.{tenant}.tools.{key}"));
            }
            if let Some(m) = t.default {
                return (m, format!("approval.tenants.{tenant}.default"));
            }
        }
        if let Some(m) = self.tools.get(&key) {
            return (*m, format!("approval.tools.{key}"));
        }
        (self.default, "approval.default".to_string())
    }

    /// Whether a holder of `roles` may decide and cancel runs other users started.
    pub fn may_act_for_others<S: AsRef<str>>(&self, roles: &[S]) -> bool {
        roles
            .iter()
            .any(|r| self.approver_roles.iter().any(|a| a == r.as_ref()))
    }

    /// Decides one call to `plugin.tool` with the given manifest annotations.
    pub fn decide(
        &self,
        tenant: &str,
        plugin: &str,
        tool: &str,
        annotations: &Annotations,
    ) -> Gate {
        let (mode, rule) = self.mode_for(tenant, plugin, tool);
        match mode {
            ApprovalMode::Deny => Gate::Deny {
                reason: format!("the approval policy denies calls to {plugin}.{tool}"),
                rule,
            },
            ApprovalMode::AlwaysAsk => Gate::Ask {
                reason: format!("the approval policy asks before every call to {plugin}.{tool}"),
                rule,
            },
            ApprovalMode::AskUnlessReadOnly if annotations.requires_approval() => Gate::Ask {
                reason: format!(
                    "{plugin}.{tool} is not read-only, so it needs the user's approval"
                ),
                rule,
            },
            ApprovalMode::AskUnlessReadOnly => Gate::Run,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ro(read_only: bool) -> Annotations {
        Annotations {
            read_only,
            ..Annotations::default()
        }
    }

    #[test]
    fn default_asks_unless_read_only() {
        let p = ApprovalPolicy::default();
        assert_eq!(
            p.decide("acme", "tasks", "list_tasks", &ro(true)),
            Gate::Run
        );
        assert!(matches!(
            p.decide("acme", "tasks", "add_task", &ro(false)),
            Gate::Ask { .. }
        ));
    }

    #[test]
    fn most_specific_entry_wins() {
        let p = ApprovalPolicy::from_json_str(
            r#"{
                "default": "ask_unless_read_only",
                "tools": { "tasks.list_tasks": "always_ask" },
                "tenants": {
                    "acme": { "default": "deny", "tools": { "tasks.add_task": "ask_unless_read_only" } },
                    "globex": { "tools": { "tasks.add_task": "deny" } }
                }
            }"#,
        )
        .unwrap();
        // acme: tool entry, then tenant default.
        assert!(matches!(
            p.decide("acme", "tasks", "add_task", &ro(false)),
            Gate::Ask { .. }
        ));
        let Gate::Deny { rule, .. } = p.decide("acme", "tasks", "list_tasks", &ro(true)) else {
            panic!("acme's default denies")
        };
        assert_eq!(rule, "approval.tenants.acme.default");
        // globex: its own tool entry, else the global tool entry, else the global default.
        assert!(matches!(
            p.decide("globex", "tasks", "add_task", &ro(false)),
            Gate::Deny { .. }
        ));
        assert!(matches!(
            p.decide("globex", "tasks", "list_tasks", &ro(true)),
            Gate::Ask { .. }
        ));
        assert_eq!(
            p.decide("globex", "table", "sort_rows", &ro(true)),
            Gate::Run
        );
    }

    #[test]
    fn approver_roles_default_to_approver_and_can_be_emptied() {
        let p = ApprovalPolicy::default();
        assert!(p.may_act_for_others(&["user", "approver"]));
        assert!(!p.may_act_for_others(&["user", "admin"]));
        let p = ApprovalPolicy::from_json_str(r#"{ "default": "always_ask" }"#).unwrap();
        assert_eq!(p.approver_roles, ["approver"]);
        let p = ApprovalPolicy::from_json_str(r#"{ "approver_roles": [] }"#).unwrap();
        assert!(!p.may_act_for_others(&["approver"]));
    }

    #[test]
    fn unknown_fields_and_bad_keys_are_refused() {
        assert!(ApprovalPolicy::from_json_str(r#"{ "defualt": "deny" }"#).is_err());
        assert!(ApprovalPolicy::from_json_str(r#"{ "default": "sometimes" }"#).is_err());
        let e =
            ApprovalPolicy::from_json_str(r#"{ "tools": { "add_task": "deny" } }"#).unwrap_err();
        assert!(e.contains("\"add_task\""), "{e}");
        let e = ApprovalPolicy::from_json_str(
            r#"{ "tenants": { "acme": { "tools": { "a.b.c": "deny" } } } }"#,
        )
        .unwrap_err();
        assert!(e.starts_with("tenants.acme.tools"), "{e}");
    }
}
