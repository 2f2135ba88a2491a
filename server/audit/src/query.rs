//! Auditors' queries, cursors and streaming export.

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::error::{LedgerError, Result};
use crate::ids::{PluginId, RunId, TenantId, ToolCallName, UserId};
use crate::model::StepRecord;
use crate::step::{RunStatus, StepKind};

/// The largest page a query returns.
pub const MAX_PAGE: u32 = 10_000;

/// A filter over one tenant's steps, oldest first. Every filter is optional except the
/// tenant; they combine with AND.
#[derive(Clone, Debug, PartialEq)]
pub struct StepQuery {
    /// Tenant (required: auditors see one tenant at a time).
    pub tenant: TenantId,
    /// Only steps of runs for this user.
    pub user: Option<UserId>,
    /// Only steps that concern this plugin (`cairn.plugin.id`).
    pub plugin: Option<PluginId>,
    /// Only steps that concern this tool (`gen_ai.tool.name`).
    pub tool: Option<ToolCallName>,
    /// Only steps of this kind (a [`StepKind::KIND_NAMES`] entry; set with [`StepQuery::kind`]).
    kind: Option<&'static str>,
    /// Only steps of this run.
    pub run: Option<RunId>,
    /// Only steps of runs whose current status is this.
    pub status: Option<RunStatus>,
    /// Only steps recorded at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Only steps recorded strictly before this time.
    pub to: Option<DateTime<Utc>>,
    /// Full-text search over the step content (all words must match).
    pub text: Option<String>,
    /// Page size, 1..=[`MAX_PAGE`].
    pub limit: u32,
    /// Continue after this cursor.
    pub after: Option<Cursor>,
}

impl StepQuery {
    /// All steps of a tenant, 100 per page.
    pub fn new(tenant: TenantId) -> Self {
        Self {
            tenant,
            user: None,
            plugin: None,
            tool: None,
            kind: None,
            run: None,
            status: None,
            from: None,
            to: None,
            text: None,
            limit: 100,
            after: None,
        }
    }

    /// Restricts to one step kind, parsed from its tag (e.g. `tool_call`).
    pub fn kind(mut self, kind: &str) -> Result<Self> {
        let k = StepKind::KIND_NAMES
            .iter()
            .find(|k| **k == kind)
            .ok_or_else(|| LedgerError::Invalid {
                what: "step kind",
                reason: format!("unknown kind {kind:?}"),
            })?;
        self.kind = Some(k);
        Ok(self)
    }

    /// The kind filter, if any.
    pub fn kind_filter(&self) -> Option<&'static str> {
        self.kind
    }

    /// The page size, clamped to 1..=[`MAX_PAGE`].
    pub fn page_size(&self) -> u32 {
        self.limit.clamp(1, MAX_PAGE)
    }

    /// The words of the full-text filter (letters, digits and `_` only), if any.
    pub(crate) fn text_terms(&self) -> Vec<String> {
        self.text
            .as_deref()
            .unwrap_or("")
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .map(|w| w.to_lowercase())
            .collect()
    }
}

/// An opaque position in a query's results. Results are ordered by the steps' storage id,
/// which only grows, so a cursor stays valid (no duplicates, no gaps) while new steps
/// arrive: they sort after every existing step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor(pub(crate) i64);

impl Cursor {
    /// The text form handed to clients.
    pub fn encode(&self) -> String {
        format!("c1.{:x}", self.0)
    }

    /// Parses a cursor handed back by a client.
    pub fn decode(s: &str) -> Result<Self> {
        let bad = || LedgerError::Invalid {
            what: "cursor",
            reason: "not a cursor issued by this ledger".into(),
        };
        let hex = s.strip_prefix("c1.").ok_or_else(bad)?;
        let id = i64::from_str_radix(hex, 16).map_err(|_| bad())?;
        if id < 0 {
            return Err(bad());
        }
        Ok(Cursor(id))
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.encode())
    }
}

/// One page of results.
#[derive(Clone, Debug, PartialEq)]
pub struct StepPage {
    /// The steps, oldest first.
    pub steps: Vec<StepRecord>,
    /// Where the next page starts; `None` when this page was the last.
    pub next: Option<Cursor>,
}

/// Writes a stream of steps as JSON Lines (one [`StepRecord`] per line). Memory use is one
/// row at a time plus the writer's buffer. Returns the number of rows written.
pub async fn write_jsonl<S, W>(rows: S, writer: W) -> Result<u64>
where
    S: Stream<Item = Result<StepRecord>>,
    W: AsyncWrite + Unpin,
{
    let mut w = tokio::io::BufWriter::new(writer);
    let mut rows = std::pin::pin!(rows);
    let mut n = 0u64;
    let mut line = Vec::with_capacity(1024);
    while let Some(row) = rows.next().await {
        line.clear();
        serde_json::to_writer(&mut line, &row?)?;
        line.push(b'\n');
        w.write_all(&line).await?;
        n += 1;
    }
    w.flush().await?;
    Ok(n)
}

/// The CSV header written by [`write_csv`].
pub const CSV_HEADER: &str =
    "id,tenant,run_id,seq,at,actor,user,kind,plugin_id,tool_name,step_json,prev_hash,hash";

/// Writes a stream of steps as CSV (RFC 4180 quoting; the step itself as a JSON column).
/// Returns the number of rows written.
pub async fn write_csv<S, W>(rows: S, writer: W) -> Result<u64>
where
    S: Stream<Item = Result<StepRecord>>,
    W: AsyncWrite + Unpin,
{
    let mut w = tokio::io::BufWriter::new(writer);
    w.write_all(CSV_HEADER.as_bytes()).await?;
    w.write_all(b"\r\n").await?;
    let mut rows = std::pin::pin!(rows);
    let mut n = 0u64;
    let mut line = String::with_capacity(1024);
    while let Some(row) = rows.next().await {
        let r = row?;
        line.clear();
        let step_json = serde_json::to_string(&r.step)?;
        let fields: [&str; 13] = [
            &r.id.to_string(),
            r.tenant.as_str(),
            &r.run_id.to_string(),
            &r.seq.to_string(),
            &crate::canonical::hash_time(&r.at),
            r.actor.as_str(),
            r.user.as_str(),
            r.step.kind_name(),
            r.step.plugin_id().map(|p| p.as_str()).unwrap_or(""),
            r.step.tool_name().map(|t| t.as_str()).unwrap_or(""),
            &step_json,
            &r.prev_hash.to_hex(),
            &r.hash.to_hex(),
        ];
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            csv_field(&mut line, f);
        }
        line.push_str("\r\n");
        w.write_all(line.as_bytes()).await?;
        n += 1;
    }
    w.flush().await?;
    Ok(n)
}

fn csv_field(out: &mut String, f: &str) {
    if f.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&f.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor(123_456);
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        assert!(Cursor::decode("123").is_err());
        assert!(Cursor::decode("c1.zz").is_err());
        assert!(Cursor::decode("c1.-5").is_err());
    }

    #[test]
    fn kind_filter_is_parsed() {
        let t = TenantId::parse("acme").unwrap();
        assert!(StepQuery::new(t.clone()).kind("tool_call").is_ok());
        assert!(StepQuery::new(t).kind("tool_calls").is_err());
    }

    #[test]
    fn csv_quoting() {
        let mut s = String::new();
        csv_field(&mut s, "a,\"b\"\n");
        assert_eq!(s, "\"a,\"\"b\"\"\n\"");
    }
}
