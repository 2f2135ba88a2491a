//! Admin actions in the ledger: the one way an administrator's change (installing,
//! enabling, configuring, upgrading or uninstalling a plugin, changing the approval
//! policy) is recorded, so every kind is queryable and verified like run steps.
//!
//! Each action is a run of its own: an `admin_action` step (who, what, before and after)
//! recorded *before* the change is applied, then how it went (`final_answer` or
//! `run_failed`). Nothing is applied when the record cannot be written.

use std::fmt::Display;
use std::future::Future;

use cairn_audit::{
    Actor, Ledger, LedgerError, NewRun, NewStep, PluginId, StepKind, TenantId, UserId,
};
use serde_json::Value;

/// What an admin action changes.
#[derive(Debug, Clone)]
pub struct AdminAction<'a> {
    /// The action, e.g. `plugin.enable`, `policy.update`.
    pub action: &'a str,
    /// What it acts on (an installation id, `approval_policy`).
    pub target: String,
    /// The plugin it concerns, if any.
    pub plugin: Option<&'a str>,
    /// The state before (`null` when it did not exist). Never a secret's value.
    pub before: Value,
    /// The state after (`null` when it no longer exists). Never a secret's value.
    pub after: Value,
}

/// Records `action` by `user` in `tenant`, applies it, and records how it went. `apply`
/// is not run when the record cannot be written.
pub async fn audited<T, E>(
    ledger: &dyn Ledger,
    tenant: &TenantId,
    user: &UserId,
    action: AdminAction<'_>,
    apply: impl Future<Output = Result<T, E>>,
) -> Result<T, E>
where
    E: From<LedgerError> + From<anyhow::Error> + Display,
{
    let actor = Actor::parse(format!("user:{user}")).map_err(|e| E::from(anyhow::Error::new(e)))?;
    let run = ledger
        .start_run(NewRun {
            tenant: tenant.clone(),
            user: user.clone(),
            conversation_id: None,
            model: "admin".into(),
        })
        .await?;
    let step = |step| NewStep {
        actor: actor.clone(),
        step,
    };
    let name = action.action.to_owned();
    ledger
        .append(
            tenant,
            run.id,
            step(StepKind::AdminAction {
                action: action.action.to_owned(),
                target: action.target,
                plugin_id: action.plugin.and_then(|p| PluginId::parse(p).ok()),
                before: action.before,
                after: action.after,
            }),
        )
        .await?;
    let result = apply.await;
    let end = match &result {
        Ok(_) => StepKind::FinalAnswer {
            text: format!("{name} applied"),
        },
        Err(e) => StepKind::RunFailed {
            error_type: "admin_action_failed".into(),
            message: e.to_string(),
        },
    };
    if let Err(e) = ledger.append(tenant, run.id, step(end)).await {
        tracing::error!(error = %e, action = %name, "could not record how an admin action ended");
    }
    result
}
