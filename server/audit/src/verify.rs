//! Verification: recompute every hash and report the first broken link.
//!
//! The stores only fetch rows (seals, run headers, steps in `(run_id, seq)` order); this
//! module holds the one algorithm both stores share, so SQLite and PostgreSQL cannot
//! disagree about what "intact" means.
//!
//! What is detected, and where:
//! - every run is anchored in its tenant's chain when it starts (`run_opened`, carrying its
//!   genesis hash) and again when it ends (the `run` seal, carrying its last hash and step
//!   count). Removing a run, finished or not, is reported as [`Problem::RunMissing`] at the
//!   chain position where it was opened; removing it together with its chain records breaks
//!   the chain itself ([`Problem::SealMissing`]).
//! - inside a run, an edited, removed, reordered or inserted step breaks the hash links; a
//!   finished run that was cut short and re-hashed disagrees with its seal.
//! - **Limit:** the steps at the end of an *unfinished* run are anchored only by the run
//!   head (`audit_run_heads`), which is mutable and unhashed. Removing the last steps is
//!   caught when the head is left alone (it still counts them: [`Problem::StepMissing`]) or
//!   only partly rewritten ([`Problem::RunHeadMismatch`]); someone with write access who
//!   removes the tail *and* rewinds the head consistently is not detectable until the run
//!   ends, because nothing hashed records the tail yet. Closing that gap needs a per-step
//!   anchor outside the database (e.g. streaming step hashes to an external log).

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::canonical::{self, Hash, canonical_json};
use crate::model::SealBody;
use crate::step::StepKind;

/// What went wrong at the first broken link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A step's stored hash does not match its content: the content was edited.
    StepContentChanged,
    /// Step 0 does not link to the run header: the run header was edited.
    RunHeaderChanged,
    /// A step is missing: the sequence has a gap (or steps at the end were removed).
    StepMissing,
    /// A step does not link to the one before it: steps were reordered or replaced.
    OrderBroken,
    /// Steps exist for a run whose header is gone.
    RunHeaderMissing,
    /// A run recorded in the tenant chain (opened, and perhaps sealed) is gone and no
    /// purge record covers it.
    RunMissing,
    /// A run ended but was never sealed into the tenant chain.
    RunNotSealed,
    /// The run's steps do not end where its seal says (re-hashed or truncated steps).
    SealMismatch,
    /// A seal record is missing from the tenant chain (a whole run and its seal removed).
    SealMissing,
    /// A seal record's content does not match its hash.
    SealChanged,
    /// A seal record does not link to the one before it.
    SealOrderBroken,
    /// An indexed column disagrees with the hashed content it is derived from.
    IndexColumnMismatch,
    /// A row could not be decoded.
    CorruptRow,
    /// A run header exists that was never opened in the tenant chain (planted).
    RunNotAnchored,
    /// The run's head disagrees with its steps: it is missing, or its last hash is not the
    /// last step's (steps at the end of an unfinished run removed, head partly rewound).
    RunHeadMismatch,
}

impl Problem {
    /// A short phrase for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Problem::StepContentChanged => "step content changed",
            Problem::RunHeaderChanged => "run header changed",
            Problem::StepMissing => "step missing",
            Problem::OrderBroken => "order broken: step does not link to the previous step",
            Problem::RunHeaderMissing => "run header missing",
            Problem::RunMissing => "run missing from the ledger but recorded in the tenant chain",
            Problem::RunNotSealed => "run ended but is not sealed in the tenant chain",
            Problem::SealMismatch => "run does not match its seal (steps re-hashed or removed)",
            Problem::SealMissing => "seal missing from the tenant chain (a run was removed)",
            Problem::SealChanged => "seal content changed",
            Problem::SealOrderBroken => "seal does not link to the previous seal",
            Problem::IndexColumnMismatch => "indexed column differs from hashed content",
            Problem::CorruptRow => "row cannot be decoded",
            Problem::RunNotAnchored => "run is not anchored in the tenant chain",
            Problem::RunHeadMismatch => "run head disagrees with the run's steps",
        }
    }
}

/// The first broken link found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Break {
    /// Tenant.
    pub tenant: String,
    /// The run concerned, when the break is in a run.
    pub run: Option<Uuid>,
    /// The step seq concerned, when the break is at a step.
    pub seq: Option<u64>,
    /// The seal seq concerned, when the break is in the tenant chain.
    pub seal_seq: Option<u64>,
    /// What the chain says should be there (a hash in hex, or a description).
    pub expected: String,
    /// What is there.
    pub found: String,
    /// What is wrong.
    pub problem: Problem,
}

/// Counts of what was verified.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyCounts {
    /// Tenants seen.
    pub tenants: u64,
    /// Runs verified.
    pub runs: u64,
    /// Steps verified.
    pub steps: u64,
    /// Tenant-chain records verified (run openings, run seals and purge records).
    pub seals: u64,
    /// Purge records among them.
    pub purges: u64,
    /// Runs those purges removed.
    pub runs_purged: u64,
    /// Steps those purges removed.
    pub steps_purged: u64,
}

/// The outcome of [`crate::Ledger::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// What was checked (up to the break, if any).
    pub counts: VerifyCounts,
    /// The first broken link, or `None` when everything verified.
    pub broken: Option<Break>,
}

impl VerifyReport {
    /// True when nothing is broken.
    pub fn is_ok(&self) -> bool {
        self.broken.is_none()
    }
}

fn short(s: &str) -> &str {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        &s[..16]
    } else {
        s
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        match &self.broken {
            None => {
                write!(
                    f,
                    "OK: {} tenants, {} runs, {} steps, {} seals verified",
                    c.tenants, c.runs, c.steps, c.seals
                )?;
                if c.purges > 0 {
                    write!(
                        f,
                        " ({} purges removed {} runs, {} steps)",
                        c.purges, c.runs_purged, c.steps_purged
                    )?;
                }
                Ok(())
            }
            Some(b) => {
                write!(f, "BROKEN at tenant {}", b.tenant)?;
                if let Some(r) = b.run {
                    write!(f, " run {r}")?;
                }
                if let Some(s) = b.seq {
                    write!(f, " step {s}")?;
                }
                if let Some(s) = b.seal_seq {
                    write!(f, " seal {s}")?;
                }
                write!(
                    f,
                    ": expected {}, found {} ({})",
                    short(&b.expected),
                    short(&b.found),
                    b.problem.describe()
                )
            }
        }
    }
}

/// A stored seal, as fetched.
pub(crate) struct SealRow {
    pub seal_seq: i64,
    pub body: serde_json::Value,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// A stored run header with its (unhashed) head, as fetched.
pub(crate) struct RunRow {
    pub id: Uuid,
    pub tenant: String,
    pub user_id: String,
    pub conversation_id: Option<String>,
    pub model: String,
    pub started_at: DateTime<Utc>,
    pub head_next_seq: Option<i64>,
    pub head_last_hash: Option<Vec<u8>>,
}

/// A stored step, as fetched.
pub(crate) struct StepRow {
    pub id: i64,
    pub tenant: String,
    pub run_id: Uuid,
    pub seq: i64,
    pub kind: String,
    pub actor: String,
    pub at: DateTime<Utc>,
    pub user_id: String,
    pub plugin_id: Option<String>,
    pub tool_name: Option<String>,
    /// The step JSON as stored (text, so that queries can decode it straight into
    /// [`StepKind`] without an intermediate value).
    pub payload: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

struct RunSeal {
    seal_seq: u64,
    last: Hash,
    count: u64,
    sealed_at: String,
}

struct OpenRun {
    id: Uuid,
    header: Option<RunRow>,
    genesis: Hash,
    next_seq: u64,
    prev: Hash,
    last_kind: Option<String>,
}

/// Verifies one tenant: feed seals (in order), then run headers, then steps in
/// `(run_id, seq)` order, then call [`TenantVerifier::finish`].
pub(crate) struct TenantVerifier {
    tenant: String,
    pub counts: VerifyCounts,
    seal_expected: u64,
    seal_prev: Hash,
    run_seals: HashMap<Uuid, RunSeal>,
    /// Run id → (seal seq of its `run_opened` record, genesis).
    opened: HashMap<Uuid, (u64, Hash)>,
    purges: Vec<(u64, String)>,
    runs: HashMap<Uuid, RunRow>,
    seen: std::collections::HashSet<Uuid>,
    open: Option<OpenRun>,
    range: (Option<Uuid>, Option<Uuid>),
}

type Check = std::result::Result<(), Box<Break>>;

impl TenantVerifier {
    pub fn new(tenant: &str, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Self {
        Self {
            tenant: tenant.to_owned(),
            counts: VerifyCounts {
                tenants: 1,
                ..Default::default()
            },
            seal_expected: 0,
            seal_prev: Hash::ZERO,
            run_seals: HashMap::new(),
            opened: HashMap::new(),
            purges: Vec::new(),
            runs: HashMap::new(),
            seen: Default::default(),
            open: None,
            range: (
                from.map(crate::ids::RunId::lower_bound),
                to.map(crate::ids::RunId::lower_bound),
            ),
        }
    }

    fn brk(
        &self,
        run: Option<Uuid>,
        seq: Option<u64>,
        seal_seq: Option<u64>,
        expected: impl Into<String>,
        found: impl Into<String>,
        problem: Problem,
    ) -> Box<Break> {
        Box::new(Break {
            tenant: self.tenant.clone(),
            run,
            seq,
            seal_seq,
            expected: expected.into(),
            found: found.into(),
            problem,
        })
    }

    fn hash_of(&self, b: &[u8], run: Option<Uuid>, seq: Option<u64>) -> Result<Hash, Box<Break>> {
        Hash::from_slice(b).map_err(|e| {
            self.brk(
                run,
                seq,
                None,
                "32-byte hash",
                e.to_string(),
                Problem::CorruptRow,
            )
        })
    }

    /// One seal, in `seal_seq` order. The whole chain of a tenant is always checked.
    pub fn seal(&mut self, row: SealRow) -> Check {
        let seq = row.seal_seq as u64;
        let at = Some(self.seal_expected);
        if seq > self.seal_expected {
            return Err(self.brk(
                None,
                None,
                at,
                format!("seal {}", self.seal_expected),
                format!("seal {seq}"),
                Problem::SealMissing,
            ));
        }
        if seq < self.seal_expected {
            return Err(self.brk(
                None,
                None,
                at,
                format!("seal {}", self.seal_expected),
                format!("seal {seq} again"),
                Problem::SealOrderBroken,
            ));
        }
        let prev = self.hash_of(&row.prev_hash, None, None)?;
        let stored = self.hash_of(&row.hash, None, None)?;
        if prev != self.seal_prev {
            return Err(self.brk(
                None,
                None,
                Some(seq),
                self.seal_prev.to_hex(),
                prev.to_hex(),
                Problem::SealOrderBroken,
            ));
        }
        let computed = canonical_json(&row.body)
            .map(|c| Hash::chain(&prev, &c))
            .map_err(|e| {
                self.brk(
                    None,
                    None,
                    Some(seq),
                    "",
                    e.to_string(),
                    Problem::CorruptRow,
                )
            })?;
        if computed != stored {
            return Err(self.brk(
                None,
                None,
                Some(seq),
                stored.to_hex(),
                computed.to_hex(),
                Problem::SealChanged,
            ));
        }
        let body: SealBody = serde_json::from_value(row.body).map_err(|e| {
            self.brk(
                None,
                None,
                Some(seq),
                "seal body",
                e.to_string(),
                Problem::CorruptRow,
            )
        })?;
        if body.seal_seq() != seq || body.tenant().as_str() != self.tenant {
            return Err(self.brk(
                None,
                None,
                Some(seq),
                format!("seal {seq} of {}", self.tenant),
                format!("seal {} of {}", body.seal_seq(), body.tenant()),
                Problem::IndexColumnMismatch,
            ));
        }
        match body {
            SealBody::RunOpened {
                run_id, genesis, ..
            } => {
                self.opened.insert(run_id.as_uuid(), (seq, genesis));
            }
            SealBody::Run {
                run_id,
                last_step_hash,
                step_count,
                sealed_at,
                ..
            } => {
                self.run_seals.insert(
                    run_id.as_uuid(),
                    RunSeal {
                        seal_seq: seq,
                        last: last_step_hash,
                        count: step_count,
                        sealed_at,
                    },
                );
            }
            SealBody::Purge {
                cutoff,
                runs_purged,
                steps_purged,
                ..
            } => {
                self.counts.purges += 1;
                self.counts.runs_purged += runs_purged;
                self.counts.steps_purged += steps_purged;
                self.purges.push((seq, cutoff));
            }
        }
        self.counts.seals += 1;
        self.seal_expected += 1;
        self.seal_prev = stored;
        Ok(())
    }

    /// The tenant head (not hashed; it catches removal of the newest seals).
    pub fn tenant_head(&mut self, next_seal_seq: i64, last_seal_hash: &[u8]) -> Check {
        if next_seal_seq as u64 > self.seal_expected {
            return Err(self.brk(
                None,
                None,
                Some(self.seal_expected),
                format!("{next_seal_seq} seals"),
                format!("{} seals", self.seal_expected),
                Problem::SealMissing,
            ));
        }
        let last = self.hash_of(last_seal_hash, None, None)?;
        if next_seal_seq as u64 == self.seal_expected && last != self.seal_prev {
            return Err(self.brk(
                None,
                None,
                Some(self.seal_expected.saturating_sub(1)),
                last.to_hex(),
                self.seal_prev.to_hex(),
                Problem::SealChanged,
            ));
        }
        Ok(())
    }

    fn in_range(&self, id: &Uuid) -> bool {
        self.range.0.is_none_or(|lo| *id >= lo) && self.range.1.is_none_or(|hi| *id < hi)
    }

    /// One run header (any order, all before the steps).
    pub fn run(&mut self, row: RunRow) {
        self.runs.insert(row.id, row);
    }

    /// One step, in `(run_id, seq)` order.
    pub fn step(&mut self, row: StepRow) -> Check {
        if self.open.as_ref().is_none_or(|o| o.id != row.run_id) {
            if let Some(o) = self.open.take() {
                self.close(o)?;
            }
            let header = self.runs.remove(&row.run_id);
            self.seen.insert(row.run_id);
            let Some(h) = header else {
                return Err(self.brk(
                    Some(row.run_id),
                    Some(row.seq as u64),
                    None,
                    "run header",
                    "none",
                    Problem::RunHeaderMissing,
                ));
            };
            let genesis = canonical::run_genesis(
                &h.id.to_string(),
                &h.tenant,
                &h.user_id,
                h.conversation_id.as_deref(),
                &h.model,
                &h.started_at,
            )
            .map_err(|e| {
                self.brk(
                    Some(h.id),
                    None,
                    None,
                    "",
                    e.to_string(),
                    Problem::CorruptRow,
                )
            })?;
            self.open = Some(OpenRun {
                id: row.run_id,
                header: Some(h),
                genesis,
                next_seq: 0,
                prev: genesis,
                last_kind: None,
            });
        }
        let run = row.run_id;
        let (expected_seq, prev, user) = match &self.open {
            Some(o) => (
                o.next_seq,
                o.prev,
                o.header
                    .as_ref()
                    .map(|h| h.user_id.clone())
                    .unwrap_or_default(),
            ),
            None => return Ok(()),
        };
        let seq = row.seq as u64;
        if row.seq < 0 || seq < expected_seq {
            return Err(self.brk(
                Some(run),
                Some(seq),
                None,
                format!("seq {expected_seq}"),
                format!("seq {} again", row.seq),
                Problem::OrderBroken,
            ));
        }
        if seq > expected_seq {
            return Err(self.brk(
                Some(run),
                Some(expected_seq),
                None,
                format!("seq {expected_seq}"),
                format!("seq {seq}"),
                Problem::StepMissing,
            ));
        }
        let stored_prev = self.hash_of(&row.prev_hash, Some(run), Some(seq))?;
        let stored = self.hash_of(&row.hash, Some(run), Some(seq))?;
        if stored_prev != prev {
            let problem = if seq == 0 {
                Problem::RunHeaderChanged
            } else {
                Problem::OrderBroken
            };
            return Err(self.brk(
                Some(run),
                Some(seq),
                None,
                prev.to_hex(),
                stored_prev.to_hex(),
                problem,
            ));
        }
        let payload: serde_json::Value = serde_json::from_str(&row.payload).map_err(|e| {
            self.brk(
                Some(run),
                Some(seq),
                None,
                "step payload",
                e.to_string(),
                Problem::CorruptRow,
            )
        })?;
        let computed = canonical::step_hash(
            &prev,
            &run.to_string(),
            &row.tenant,
            seq,
            &row.actor,
            &row.at,
            &payload,
        )
        .map_err(|e| {
            self.brk(
                Some(run),
                Some(seq),
                None,
                "",
                e.to_string(),
                Problem::CorruptRow,
            )
        })?;
        if computed != stored {
            return Err(self.brk(
                Some(run),
                Some(seq),
                None,
                stored.to_hex(),
                computed.to_hex(),
                Problem::StepContentChanged,
            ));
        }
        // The hash covers the payload; the indexed columns must agree with it, or a query
        // by tool, plugin, kind or user could be steered around a step.
        let step: StepKind = serde_json::from_value(payload).map_err(|e| {
            self.brk(
                Some(run),
                Some(seq),
                None,
                "step payload",
                e.to_string(),
                Problem::CorruptRow,
            )
        })?;
        let derived = (
            step.kind_name(),
            step.plugin_id().map(|p| p.as_str()),
            step.tool_name().map(|t| t.as_str()),
            user.as_str(),
            self.tenant.as_str(),
        );
        let columns = (
            row.kind.as_str(),
            row.plugin_id.as_deref(),
            row.tool_name.as_deref(),
            row.user_id.as_str(),
            row.tenant.as_str(),
        );
        if derived != columns {
            return Err(self.brk(
                Some(run),
                Some(seq),
                None,
                format!("{derived:?}"),
                format!("{columns:?}"),
                Problem::IndexColumnMismatch,
            ));
        }
        let _ = row.id;
        if let Some(o) = self.open.as_mut() {
            o.next_seq += 1;
            o.prev = stored;
            o.last_kind = Some(row.kind);
        }
        self.counts.steps += 1;
        Ok(())
    }

    fn close(&mut self, o: OpenRun) -> Check {
        self.counts.runs += 1;
        match self.opened.get(&o.id) {
            None => {
                return Err(self.brk(
                    Some(o.id),
                    None,
                    None,
                    "a run_opened record",
                    "none",
                    Problem::RunNotAnchored,
                ));
            }
            Some((seal_seq, genesis)) if *genesis != o.genesis => {
                return Err(self.brk(
                    Some(o.id),
                    None,
                    Some(*seal_seq),
                    genesis.to_hex(),
                    o.genesis.to_hex(),
                    Problem::RunHeaderChanged,
                ));
            }
            Some(_) => {}
        }
        let terminal = matches!(
            o.last_kind.as_deref(),
            Some("final_answer" | "run_failed" | "run_cancelled")
        );
        if let Some(seal) = self.run_seals.get(&o.id) {
            if seal.count != o.next_seq || seal.last != o.prev {
                return Err(self.brk(
                    Some(o.id),
                    Some(o.next_seq.saturating_sub(1)),
                    Some(seal.seal_seq),
                    format!("{} ({} steps)", seal.last.to_hex(), seal.count),
                    format!("{} ({} steps)", o.prev.to_hex(), o.next_seq),
                    Problem::SealMismatch,
                ));
            }
        } else if terminal {
            return Err(self.brk(
                Some(o.id),
                Some(o.next_seq.saturating_sub(1)),
                None,
                "a seal",
                "none",
                Problem::RunNotSealed,
            ));
        }
        // The run head is not hashed, but an unfinished run's tail has no other anchor:
        // a head that counts more steps than exist, or whose last hash is not the last
        // step's, means steps at the end went missing (see the module docs for the limit).
        let Some(h) = o.header.as_ref() else {
            return Ok(());
        };
        let Some(next) = h.head_next_seq else {
            return Err(self.brk(
                Some(o.id),
                Some(o.next_seq),
                None,
                "a run head",
                "none",
                Problem::RunHeadMismatch,
            ));
        };
        if next as u64 > o.next_seq {
            return Err(self.brk(
                Some(o.id),
                Some(o.next_seq),
                None,
                format!("{next} steps"),
                format!("{} steps", o.next_seq),
                Problem::StepMissing,
            ));
        }
        let last = h
            .head_last_hash
            .as_deref()
            .and_then(|b| Hash::from_slice(b).ok());
        if next as u64 != o.next_seq || last != Some(o.prev) {
            let found = last.map(|l| l.to_hex()).unwrap_or_else(|| "none".into());
            return Err(self.brk(
                Some(o.id),
                Some(o.next_seq.saturating_sub(1)),
                None,
                format!("{} ({} steps)", o.prev.to_hex(), o.next_seq),
                format!("{found} ({next} steps)"),
                Problem::RunHeadMismatch,
            ));
        }
        Ok(())
    }

    fn purged(&self, seal: &RunSeal) -> bool {
        self.purges.iter().any(|(pseq, cutoff)| {
            *pseq > seal.seal_seq && seal.sealed_at.as_str() < cutoff.as_str()
        })
    }

    /// Closes the last run and checks runs without steps and sealed runs never seen.
    pub fn finish(mut self) -> (VerifyCounts, Option<Break>) {
        if let Some(o) = self.open.take()
            && let Err(b) = self.close(o)
        {
            return (self.counts, Some(*b));
        }
        // Runs with no steps at all.
        let mut empty: Vec<Uuid> = self.runs.keys().copied().collect();
        empty.sort();
        for id in empty {
            let Some(h) = self.runs.remove(&id) else {
                continue;
            };
            self.seen.insert(id);
            let genesis = match canonical::run_genesis(
                &h.id.to_string(),
                &h.tenant,
                &h.user_id,
                h.conversation_id.as_deref(),
                &h.model,
                &h.started_at,
            ) {
                Ok(g) => g,
                Err(e) => {
                    let b = self.brk(Some(id), None, None, "", e.to_string(), Problem::CorruptRow);
                    return (self.counts, Some(*b));
                }
            };
            let o = OpenRun {
                id,
                header: Some(h),
                genesis,
                next_seq: 0,
                prev: genesis,
                last_kind: None,
            };
            if let Err(b) = self.close(o) {
                return (self.counts, Some(*b));
            }
        }
        // Runs the chain says were opened, that are gone, and that no purge covers (only
        // sealed runs are ever purged), reported where they were opened.
        let mut opened: Vec<(&Uuid, &(u64, Hash))> = self.opened.iter().collect();
        opened.sort_by_key(|(_, (s, _))| *s);
        for (id, (seal_seq, _)) in opened {
            let purged = self.run_seals.get(id).is_some_and(|s| self.purged(s));
            if !self.seen.contains(id) && self.in_range(id) && !purged {
                let expected = match self.run_seals.get(id) {
                    Some(s) => {
                        format!("run with {} steps (sealed at seal {})", s.count, s.seal_seq)
                    }
                    None => "unfinished run".to_string(),
                };
                let b = self.brk(
                    Some(*id),
                    None,
                    Some(*seal_seq),
                    expected,
                    "no run",
                    Problem::RunMissing,
                );
                return (self.counts, Some(*b));
            }
        }
        let mut sealed: Vec<(&Uuid, &RunSeal)> = self.run_seals.iter().collect();
        sealed.sort_by_key(|(_, s)| s.seal_seq);
        for (id, seal) in sealed {
            if !self.seen.contains(id) && self.in_range(id) && !self.purged(seal) {
                let b = self.brk(
                    Some(*id),
                    None,
                    Some(seal.seal_seq),
                    format!("run with {} steps", seal.count),
                    "no run",
                    Problem::RunMissing,
                );
                return (self.counts, Some(*b));
            }
        }
        (self.counts, None)
    }
}

/// Adds one tenant's counts to the total.
pub(crate) fn add(total: &mut VerifyCounts, c: &VerifyCounts) {
    total.tenants += c.tenants;
    total.runs += c.runs;
    total.steps += c.steps;
    total.seals += c.seals;
    total.purges += c.purges;
    total.runs_purged += c.runs_purged;
    total.steps_purged += c.steps_purged;
}

impl StepRow {
    /// Decodes a stored step into the public type.
    pub(crate) fn into_record(self) -> crate::Result<crate::model::StepRecord> {
        use crate::error::LedgerError;
        let corrupt =
            |e: crate::ids::IdError| LedgerError::Corrupt(format!("step {}: {e}", self.id));
        Ok(crate::model::StepRecord {
            id: self.id,
            tenant: crate::ids::TenantId::parse(self.tenant.clone()).map_err(corrupt)?,
            run_id: crate::ids::RunId::from_uuid(self.run_id).map_err(corrupt)?,
            seq: u64::try_from(self.seq)
                .map_err(|_| LedgerError::Corrupt("negative seq".into()))?,
            at: self.at,
            actor: crate::ids::Actor::parse(self.actor.clone()).map_err(corrupt)?,
            user: crate::ids::UserId::parse(self.user_id.clone()).map_err(corrupt)?,
            step: serde_json::from_str(&self.payload)
                .map_err(|e| LedgerError::Corrupt(format!("step {}: {e}", self.id)))?,
            prev_hash: Hash::from_slice(&self.prev_hash)?,
            hash: Hash::from_slice(&self.hash)?,
        })
    }
}
