//! Runs, steps and seals as callers see them.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::canonical::Hash;
use crate::ids::{Actor, ConversationId, RunId, TenantId, UserId};
use crate::step::{RunStatus, StepKind};

/// What is needed to start a run.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRun {
    /// The tenant the run belongs to.
    pub tenant: TenantId,
    /// The user it acts for.
    pub user: UserId,
    /// The client's conversation, if any.
    pub conversation_id: Option<ConversationId>,
    /// The model configured for the run (`gen_ai.request.model`).
    pub model: String,
}

/// A run: its immutable header (hashed into the chain) and its derived state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Run {
    /// Run id (UUID v7).
    pub id: RunId,
    /// Tenant.
    pub tenant: TenantId,
    /// User.
    pub user: UserId,
    /// Conversation id.
    pub conversation_id: Option<ConversationId>,
    /// Model.
    pub model: String,
    /// When the run started (microsecond precision).
    pub started_at: DateTime<Utc>,
    /// Current status, derived from the last step.
    pub status: RunStatus,
    /// When the run ended, for terminal runs.
    pub ended_at: Option<DateTime<Utc>>,
    /// Number of steps so far.
    pub step_count: u64,
}

/// A step to append. The ledger assigns seq, timestamp and hashes.
#[derive(Clone, Debug, PartialEq)]
pub struct NewStep {
    /// Who or what caused it.
    pub actor: Actor,
    /// What happened.
    pub step: StepKind,
}

/// A stored step, as queried and exported (one JSONL line).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepRecord {
    /// Storage id: a global, monotonically assigned number (the pagination key).
    pub id: i64,
    /// Tenant.
    pub tenant: TenantId,
    /// Run.
    pub run_id: RunId,
    /// Position in the run: 0, 1, 2, … without gaps.
    pub seq: u64,
    /// When the step was recorded (microsecond precision, UTC).
    pub at: DateTime<Utc>,
    /// Who or what caused it.
    pub actor: Actor,
    /// The run's user (copied from the run header for filtering).
    pub user: UserId,
    /// What happened.
    pub step: StepKind,
    /// Hash of the previous step (or of the run header for step 0).
    pub prev_hash: Hash,
    /// `SHA-256(prev_hash ‖ JCS(content))`, see [`crate::canonical`].
    pub hash: Hash,
}

/// A record in a tenant's seal chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SealBody {
    /// A run was started: written in the same transaction as its header, so every run,
    /// finished or not, has a fixed position in its tenant's chain and cannot be removed
    /// without breaking it (or being named as missing).
    RunOpened {
        /// Tenant.
        tenant: TenantId,
        /// Position in the tenant chain.
        seal_seq: u64,
        /// The run opened.
        run_id: RunId,
        /// The genesis hash of the run's chain (the `prev_hash` of its step 0), which pins
        /// the run header.
        genesis: Hash,
        /// When the run started (hashed as six fractional digits).
        opened_at: String,
    },
    /// A terminal run's head: removing the run, or steps at its end, breaks this link.
    Run {
        /// Tenant.
        tenant: TenantId,
        /// Position in the tenant chain.
        seal_seq: u64,
        /// The run sealed.
        run_id: RunId,
        /// Hash of its last step.
        last_step_hash: Hash,
        /// Its number of steps.
        step_count: u64,
        /// When it was sealed (hashed as six fractional digits).
        sealed_at: String,
    },
    /// A retention purge: which sealed runs were removed, by whom, when.
    Purge {
        /// Tenant.
        tenant: TenantId,
        /// Position in the tenant chain.
        seal_seq: u64,
        /// Runs sealed strictly before this time (and before this record) were removed.
        cutoff: String,
        /// Who asked for the purge (the authenticated caller, as the API or CLI knew it).
        actor: Actor,
        /// Why (required since roles were introduced; absent in older records).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The database role that ran the purge, checked by the database itself against
        /// `session_user` (PostgreSQL only; absent in older records and on SQLite).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        db_role: Option<String>,
        /// When it ran.
        purged_at: String,
        /// How many runs were removed.
        runs_purged: u64,
        /// How many steps were removed.
        steps_purged: u64,
        /// Lowest seal seq of a removed run, if any.
        first_seal_seq: Option<u64>,
        /// Highest seal seq of a removed run, if any.
        last_seal_seq: Option<u64>,
        /// SHA-256 over the removed runs' seal hashes in seal order, so the set removed is
        /// pinned down (the run seals themselves stay and keep the chain verifiable).
        purged_digest: Hash,
    },
}

impl SealBody {
    /// Position in the tenant chain.
    pub fn seal_seq(&self) -> u64 {
        match self {
            SealBody::RunOpened { seal_seq, .. }
            | SealBody::Run { seal_seq, .. }
            | SealBody::Purge { seal_seq, .. } => *seal_seq,
        }
    }

    /// Tenant.
    pub fn tenant(&self) -> &TenantId {
        match self {
            SealBody::RunOpened { tenant, .. }
            | SealBody::Run { tenant, .. }
            | SealBody::Purge { tenant, .. } => tenant,
        }
    }
}

/// A retention purge, as asked for through the admin API or the CLI.
#[derive(Clone, Debug, PartialEq)]
pub struct PurgeRequest {
    /// Tenant.
    pub tenant: TenantId,
    /// Remove runs sealed strictly before this time.
    pub cutoff: DateTime<Utc>,
    /// Who asks: the authenticated caller, never a name taken from the request body.
    pub actor: Actor,
    /// Why; recorded in the purge record. Must not be blank.
    pub reason: String,
    /// The deployment's minimum retention: a cutoff later than now minus this is refused
    /// before the database is asked (which enforces its own, see `audit_settings`).
    pub min_retention: chrono::Duration,
}

impl PurgeRequest {
    /// Refuses a blank reason, or a cutoff later than `now - min_retention`.
    pub fn check(&self, now: DateTime<Utc>) -> crate::Result<()> {
        if self.reason.trim().is_empty() {
            return Err(crate::LedgerError::Invalid {
                what: "purge reason",
                reason: "must not be blank".into(),
            });
        }
        if self.cutoff > now - self.min_retention {
            return Err(crate::LedgerError::Invalid {
                what: "purge cutoff",
                reason: format!(
                    "must not be later than now minus the minimum retention ({} days)",
                    self.min_retention.num_days()
                ),
            });
        }
        Ok(())
    }
}

/// What a purge did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PurgeReport {
    /// Tenant.
    pub tenant: TenantId,
    /// Runs sealed before this were removed.
    pub cutoff: DateTime<Utc>,
    /// Runs removed.
    pub runs_purged: u64,
    /// Steps removed.
    pub steps_purged: u64,
    /// The purge record's position in the tenant chain.
    pub seal_seq: u64,
    /// The purge record's hash.
    pub hash: Hash,
}
