//! The approval policy per tenant: stored in the ledger's database
//! (`approval_policies`), changed only through [`App::set_policy`] — an admin action
//! recorded in the ledger with who, when, before and after — and read by every host
//! before it decides a call.
//!
//! The deployment's policy file (`[agent] approval_policy`), if any, stays the default:
//! its global rules (`default`, `tools`, `approver_roles`) apply to every tenant, and its
//! `tenants.<id>` entry is a tenant's policy until an admin stores the tenant's own, which
//! then replaces that entry (and only that entry) for the tenant. Nothing is imported: a
//! file changed and reloaded at the next start still governs the tenants that never
//! stored a policy.
//!
//! Every host asks the database for the tenant's row (one primary-key read) before it
//! starts, resumes or invokes, and rebuilds its policy only when the row's revision
//! changed, so a change made through one host governs the next decision on every host.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use cairn_agent::{ApprovalMode, ApprovalPolicy, TenantApprovalPolicy};
use cairn_audit::{Database, TenantId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use crate::admin::{AdminAction, audited};
use crate::{App, AppError, AppResult, Principal};

/// One tenant's approval policy, as `GET`/`PUT /v1/policy` show and take it.
///
/// `{"default": "always_ask", "tools": {"tasks.delete_task": "deny"}}`. Modes:
/// `always_ask`, `ask_unless_read_only`, `deny`. Lookup, most specific first: this
/// policy's tool entry, its default, the deployment's tool entry, the deployment's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPolicy {
    /// `default`: the mode for tools not listed; absent means the deployment's rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = "^(always_ask|ask_unless_read_only|deny)$")]
    pub default: Option<ApprovalMode>,
    /// `tools`: modes by `"<plugin id>.<tool name>"`.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub tools: BTreeMap<String, ApprovalMode>,
}

impl From<TenantApprovalPolicy> for TenantPolicy {
    fn from(p: TenantApprovalPolicy) -> Self {
        Self {
            default: p.default,
            tools: p.tools,
        }
    }
}

impl From<TenantPolicy> for TenantApprovalPolicy {
    fn from(p: TenantPolicy) -> Self {
        Self {
            default: p.default,
            tools: p.tools,
        }
    }
}

impl TenantPolicy {
    /// Refuses a tool key that is not `<plugin id>.<tool name>`, naming it.
    pub fn check(&self) -> AppResult<()> {
        for key in self.tools.keys() {
            let ok = key.split_once('.').is_some_and(|(p, t)| {
                !t.contains('.')
                    && cairn_audit::PluginId::parse(p).is_ok()
                    && cairn_audit::ToolCallName::parse(t).is_ok()
            });
            if !ok {
                return Err(AppError::unprocessable(
                    "invalid_policy",
                    format!("tools: key {key:?} must be \"<plugin id>.<tool name>\""),
                    Some(format!("tools.{key}")),
                ));
            }
        }
        Ok(())
    }
}

/// A tenant's approval policy and where it comes from.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    /// The tenant's policy.
    pub policy: TenantPolicy,
    /// `stored` (set through `PUT /v1/policy`) or `deployment` (the policy file's entry
    /// for the tenant, or none).
    pub source: &'static str,
    /// Bumped by every change; 0 while none was stored.
    pub revision: i64,
    /// When it was last changed, once stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Who last changed it, once stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

/// A stored row.
#[derive(Debug, Clone)]
struct Stored {
    policy: TenantApprovalPolicy,
    revision: i64,
    updated_at: DateTime<Utc>,
    updated_by: String,
}

/// The stored policies this host has seen, over the deployment's.
pub(crate) struct Policies {
    db: Database,
    base: ApprovalPolicy,
    seen: Mutex<HashMap<String, Stored>>,
}

fn corrupt(tenant: &str, e: impl std::fmt::Display) -> AppError {
    AppError::Internal(anyhow::anyhow!(
        "the stored approval policy of tenant {tenant}: {e}"
    ))
}

fn store_error(e: sqlx::Error) -> AppError {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            AppError::Unavailable("the database is unavailable; nothing was changed".into())
        }
        e => AppError::Internal(anyhow::Error::new(e).context("approval policies")),
    }
}

impl Policies {
    pub(crate) fn new(db: Database, base: ApprovalPolicy) -> Self {
        Self {
            db,
            base,
            seen: Mutex::new(HashMap::new()),
        }
    }

    async fn load(&self, tenant: &str) -> AppResult<Option<Stored>> {
        const SQL: &str = "SELECT policy, revision, updated_at, updated_by FROM approval_policies WHERE tenant = ";
        let row = match &self.db {
            Database::Postgres(pool) => {
                let Some(r) = sqlx::query(&format!("{SQL}$1"))
                    .bind(tenant)
                    .fetch_optional(pool)
                    .await
                    .map_err(store_error)?
                else {
                    return Ok(None);
                };
                let text: String = r.try_get("policy").map_err(store_error)?;
                (
                    text,
                    r.try_get("revision").map_err(store_error)?,
                    r.try_get("updated_at").map_err(store_error)?,
                    r.try_get("updated_by").map_err(store_error)?,
                )
            }
            Database::Sqlite(pool) => {
                let Some(r) = sqlx::query(&format!("{SQL}?1"))
                    .bind(tenant)
                    .fetch_optional(pool)
                    .await
                    .map_err(store_error)?
                else {
                    return Ok(None);
                };
                let micros: i64 = r.try_get("updated_at").map_err(store_error)?;
                (
                    r.try_get("policy").map_err(store_error)?,
                    r.try_get("revision").map_err(store_error)?,
                    DateTime::from_timestamp_micros(micros)
                        .ok_or_else(|| corrupt(tenant, format!("updated_at {micros}")))?,
                    r.try_get("updated_by").map_err(store_error)?,
                )
            }
        };
        let (text, revision, updated_at, updated_by) = row;
        let policy = serde_json::from_str(&text).map_err(|e| corrupt(tenant, e))?;
        Ok(Some(Stored {
            policy,
            revision,
            updated_at,
            updated_by,
        }))
    }

    /// Writes the tenant's policy if its revision is still `expected` (0: none stored
    /// yet), bumping it; returns the new revision. Another writer's change in between (on
    /// any host) is `409 changed_meanwhile`, so no change is lost and the `before` an
    /// admin record shows is the policy that was replaced.
    async fn store(
        &self,
        tenant: &str,
        policy: &TenantApprovalPolicy,
        by: &str,
        at: DateTime<Utc>,
        expected: i64,
    ) -> AppResult<i64> {
        let text = serde_json::to_string(policy).map_err(|e| corrupt(tenant, e))?;
        // The first store inserts (and finds the row taken if another got there first);
        // later ones update only the revision they were computed from.
        let sql = if expected == 0 {
            "INSERT INTO approval_policies (tenant, policy, revision, updated_at, updated_by) \
             VALUES ($1, $2, 1, $3, $4) ON CONFLICT (tenant) DO NOTHING RETURNING revision"
        } else {
            "UPDATE approval_policies SET policy = $2, revision = revision + 1, \
             updated_at = $3, updated_by = $4 WHERE tenant = $1 AND revision = $5 \
             RETURNING revision"
        };
        let revision: Option<i64> = match &self.db {
            Database::Postgres(pool) => {
                let query = sqlx::query_scalar(sql)
                    .bind(tenant)
                    .bind(text)
                    .bind(at)
                    .bind(by);
                let query = if expected == 0 {
                    query
                } else {
                    query.bind(expected)
                };
                query.fetch_optional(pool).await.map_err(store_error)?
            }
            Database::Sqlite(pool) => {
                let query = sqlx::query_scalar(sql)
                    .bind(tenant)
                    .bind(text)
                    .bind(at.timestamp_micros())
                    .bind(by);
                let query = if expected == 0 {
                    query
                } else {
                    query.bind(expected)
                };
                query.fetch_optional(pool).await.map_err(store_error)?
            }
        };
        revision.ok_or_else(|| AppError::Conflict {
            code: "changed_meanwhile",
            message: format!(
                "the approval policy was changed by another request since revision {expected}; \
                 read it again and retry"
            ),
        })
    }

    /// The tenant's policy as the deployment's file has it.
    fn deployment(&self, tenant: &str) -> TenantApprovalPolicy {
        self.base.tenants.get(tenant).cloned().unwrap_or_default()
    }

    /// Remembers `stored` (or its absence) for `tenant`; the whole policy, rebuilt, when
    /// that changed what this host had.
    fn note(&self, tenant: &str, stored: Option<Stored>) -> Option<ApprovalPolicy> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let had = seen.get(tenant).map(|s| s.revision);
        if had == stored.as_ref().map(|s| s.revision) {
            return None;
        }
        match stored {
            Some(s) => seen.insert(tenant.to_owned(), s),
            None => seen.remove(tenant),
        };
        let mut policy = self.base.clone();
        for (t, s) in seen.iter() {
            policy.tenants.insert(t.clone(), s.policy.clone());
        }
        Some(policy)
    }
}

impl App {
    /// Brings this host's approval policy for `tenant` up to date with the database.
    pub(crate) async fn refresh_policy(&self, tenant: &TenantId) -> AppResult<()> {
        let stored = self.policies.load(tenant.as_str()).await?;
        if let Some(policy) = self.policies.note(tenant.as_str(), stored) {
            self.agent.set_approval_policy(policy);
        }
        Ok(())
    }

    /// The tenant's approval policy and where it comes from.
    pub async fn policy(&self, tenant: &TenantId) -> AppResult<PolicyView> {
        Ok(match self.policies.load(tenant.as_str()).await? {
            Some(s) => PolicyView {
                policy: s.policy.into(),
                source: "stored",
                revision: s.revision,
                updated_at: Some(s.updated_at),
                updated_by: Some(s.updated_by),
            },
            None => PolicyView {
                policy: self.policies.deployment(tenant.as_str()).into(),
                source: "deployment",
                revision: 0,
                updated_at: None,
                updated_by: None,
            },
        })
    }

    /// Replaces the tenant's approval policy, as `who` (an admin: the transport checks).
    /// Recorded in the ledger as the admin action `policy.update` with the policy before
    /// and after, before it is stored; a policy with a malformed key changes nothing.
    /// Every host decides by it from its next run, resume or invocation on.
    #[tracing::instrument(skip_all, fields(tenant = %who.tenant))]
    pub async fn set_policy(&self, who: &Principal, policy: TenantPolicy) -> AppResult<PolicyView> {
        policy.check()?;
        let before = self.policy(&who.tenant).await?;
        let tenant = who.tenant.as_str();
        let new: TenantApprovalPolicy = policy.clone().into();
        let at = Utc::now();
        let action = AdminAction {
            action: "policy.update",
            target: "approval_policy".into(),
            plugin: None,
            before: serde_json::json!({ "source": before.source, "revision": before.revision, "policy": before.policy }),
            after: serde_json::json!({ "source": "stored", "policy": policy }),
        };
        let by = who.user.to_string();
        let revision = audited(
            self.ledger.as_ref(),
            &who.tenant,
            &who.user,
            action,
            self.policies.store(tenant, &new, &by, at, before.revision),
        )
        .await?;
        self.refresh_policy(&who.tenant).await?;
        Ok(PolicyView {
            policy,
            source: "stored",
            revision,
            updated_at: Some(at),
            updated_by: Some(by),
        })
    }
}
