//! The conversation as a fold over ledger steps.
//!
//! The loop never keeps a conversation of its own: every step it appends is also applied
//! to a [`Transcript`], and resuming a run applies the stored trail to a fresh one. So
//! the messages sent to the model after a restart, in another process, are exactly those
//! the original process would have sent: both come from the same steps through the same
//! function.

use std::collections::HashMap;

use cairn_audit::{ApprovalOutcome, Hash, PluginId, StepKind, StepRecord, ToolCallName};
use cairn_model::{ChatMessage, Role, ToolCall};
use serde_json::{Value, json};

/// A call waiting for someone's approval.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PendingCall {
    /// `gen_ai.tool.call.id`: what an [`ApprovalDecision`](crate::ApprovalDecision) names.
    pub call_id: String,
    /// The plugin that provides the tool.
    pub plugin: Option<PluginId>,
    /// The tool's name within its plugin.
    pub tool: ToolCallName,
    /// The arguments the model gave (already valid against the tool's input schema).
    pub arguments: Value,
    /// SHA-256 of `arguments` in canonical JSON (RFC 8785) as recorded in the call's
    /// `approval_requested` step: what the approver is shown, what a decision may name,
    /// and what the call's arguments must still hash to when it runs.
    pub arguments_sha256: Hash,
    /// Why approval is needed, for the person asked.
    pub reason: String,
}

/// One call as recorded in a `tool_call` step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RecordedCall {
    pub call_id: String,
    pub plugin: Option<PluginId>,
    pub tool: ToolCallName,
    pub arguments: Value,
}

/// A call's recorded outcome, as the model is told it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CallResult {
    Ok(Value),
    Err { error_type: String, message: String },
}

impl CallResult {
    /// The tool message's content: the result's JSON, or an error object the model can
    /// read and correct for.
    pub(crate) fn content(&self) -> String {
        match self {
            CallResult::Ok(v) => v.to_string(),
            CallResult::Err {
                error_type,
                message,
            } => json!({ "error": { "type": error_type, "message": message } }).to_string(),
        }
    }
}

/// One model turn: the assistant's message and its calls' results.
#[derive(Debug, Clone, Default, PartialEq)]
struct Turn {
    text: Option<String>,
    reasoning: Option<String>,
    calls: Vec<RecordedCall>,
    results: HashMap<String, CallResult>,
}

#[derive(Debug, Clone, PartialEq)]
enum Item {
    User(String),
    Turn(Turn),
}

/// The state of a run as its steps say it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Transcript {
    items: Vec<Item>,
    /// How many `model_request` steps the run has: the step budget counts these.
    pub model_calls: u32,
    /// Calls with an `approval_requested` step and no decision yet, in request order.
    pending: Vec<PendingCall>,
    /// Decisions recorded, by call id (the first decision of a call wins).
    decided: HashMap<String, ApprovalOutcome>,
    /// How many steps were applied.
    pub steps: u64,
}

/// The arguments text a model wrote for a recorded call. Arguments that were not a JSON
/// object (unparseable text included) are recorded as the raw text, so the model sees
/// again exactly what it sent.
pub(crate) fn arguments_text(arguments: &Value) -> String {
    match arguments {
        Value::String(raw) => raw.clone(),
        other => other.to_string(),
    }
}

impl Transcript {
    /// Replays a stored trail.
    pub(crate) fn replay(trail: &[StepRecord]) -> Result<Self, String> {
        let mut t = Transcript::default();
        for (i, rec) in trail.iter().enumerate() {
            if rec.seq != i as u64 {
                return Err(format!("step {i} has seq {}", rec.seq));
            }
            t.apply(&rec.step)?;
        }
        Ok(t)
    }

    /// The latest user message: what tools are selected against on resume.
    pub(crate) fn last_user_message(&self) -> Option<&str> {
        self.items.iter().rev().find_map(|i| match i {
            Item::User(text) => Some(text.as_str()),
            Item::Turn(_) => None,
        })
    }

    /// Applies one step. Fails only on a trail this loop would never write (a result
    /// before any model turn).
    pub(crate) fn apply(&mut self, step: &StepKind) -> Result<(), String> {
        self.steps += 1;
        match step {
            StepKind::UserMessage { text } => self.items.push(Item::User(text.clone())),
            StepKind::ModelRequest { .. } => self.model_calls += 1,
            StepKind::ModelResponse {
                reasoning, text, ..
            } => self.items.push(Item::Turn(Turn {
                text: text.clone(),
                reasoning: reasoning.clone(),
                ..Turn::default()
            })),
            StepKind::ToolCall {
                plugin_id,
                tool_name,
                call_id,
                arguments,
            } => self.call_turn().calls.push(RecordedCall {
                call_id: call_id.clone(),
                plugin: plugin_id.clone(),
                tool: tool_name.clone(),
                arguments: arguments.clone(),
            }),
            StepKind::ToolResult {
                call_id, result, ..
            } => {
                let r = CallResult::Ok(result.clone());
                self.turn(step)?.results.insert(call_id.clone(), r);
            }
            StepKind::ToolError {
                call_id,
                error_type,
                message,
                ..
            } => {
                let r = CallResult::Err {
                    error_type: error_type.clone(),
                    message: message.clone(),
                };
                self.turn(step)?.results.insert(call_id.clone(), r);
            }
            StepKind::ApprovalRequested {
                call_id,
                reason,
                arguments_sha256,
                ..
            } => {
                let call = self
                    .turn(step)?
                    .calls
                    .iter()
                    .find(|c| &c.call_id == call_id)
                    .cloned()
                    .ok_or_else(|| format!("approval requested for unknown call {call_id:?}"))?;
                // Requests recorded before approvals were bound carry no hash: theirs is
                // the recorded call's.
                let arguments_sha256 = match arguments_sha256 {
                    Some(h) => *h,
                    None => cairn_audit::arguments_sha256(&call.arguments)
                        .map_err(|e| format!("call {call_id:?}: arguments: {e}"))?,
                };
                self.pending.push(PendingCall {
                    call_id: call.call_id,
                    plugin: call.plugin,
                    tool: call.tool,
                    arguments: call.arguments,
                    arguments_sha256,
                    reason: reason.clone(),
                });
            }
            StepKind::ApprovalDecided {
                call_id, decision, ..
            } => {
                if let Some(i) = self.pending.iter().position(|p| &p.call_id == call_id) {
                    self.pending.remove(i);
                    self.decided.entry(call_id.clone()).or_insert(*decision);
                }
            }
            StepKind::RunConfigured { .. }
            | StepKind::AdminAction { .. }
            | StepKind::PolicyDecision { .. }
            | StepKind::FinalAnswer { .. }
            | StepKind::RunFailed { .. }
            | StepKind::RunCancelled { .. } => {}
        }
        Ok(())
    }

    /// The turn a `tool_call` belongs to: the model's latest, or for a direct invocation
    /// (a call named by a person, with no model turn) a turn of its own.
    fn call_turn(&mut self) -> &mut Turn {
        if !matches!(self.items.last(), Some(Item::Turn(_))) {
            self.items.push(Item::Turn(Turn::default()));
        }
        match self.items.last_mut() {
            Some(Item::Turn(t)) => t,
            _ => unreachable!("a turn was just pushed"),
        }
    }

    /// The id of the latest turn's last call.
    pub(crate) fn last_call_id(&self) -> Option<&str> {
        match self.items.last() {
            Some(Item::Turn(t)) => t.calls.last().map(|c| c.call_id.as_str()),
            _ => None,
        }
    }

    /// The recorded outcome of call `call_id` of the latest turn, if it has one.
    pub(crate) fn result_of(&self, call_id: &str) -> Option<&CallResult> {
        match self.items.last() {
            Some(Item::Turn(t)) => t.results.get(call_id),
            _ => None,
        }
    }

    fn turn(&mut self, step: &StepKind) -> Result<&mut Turn, String> {
        match self.items.last_mut() {
            Some(Item::Turn(t)) => Ok(t),
            _ => Err(format!(
                "{} step before any model response",
                step.kind_name()
            )),
        }
    }

    /// The calls awaiting a decision.
    pub(crate) fn pending(&self) -> &[PendingCall] {
        &self.pending
    }

    /// The messages to send the model: the system prompt, then the conversation. Each
    /// turn's tool results follow its assistant message in call order, whatever order they
    /// were recorded in (calls run before a pause are recorded before approved ones).
    /// `name_of` gives the name a recorded tool is offered under.
    pub(crate) fn messages(
        &self,
        system: Option<&str>,
        name_of: impl Fn(Option<&PluginId>, &ToolCallName) -> String,
    ) -> Vec<ChatMessage> {
        let mut out = Vec::with_capacity(self.items.len() * 2 + 1);
        if let Some(s) = system {
            out.push(ChatMessage::system(s));
        }
        for item in &self.items {
            match item {
                Item::User(text) => out.push(ChatMessage::user(text.clone())),
                Item::Turn(turn) => {
                    out.push(ChatMessage {
                        role: Role::Assistant,
                        content: turn.text.clone(),
                        reasoning: turn.reasoning.clone(),
                        tool_calls: turn
                            .calls
                            .iter()
                            .map(|c| ToolCall {
                                id: c.call_id.clone(),
                                name: name_of(c.plugin.as_ref(), &c.tool),
                                arguments: arguments_text(&c.arguments),
                            })
                            .collect(),
                        tool_call_id: None,
                    });
                    for call in &turn.calls {
                        if let Some(r) = turn.results.get(&call.call_id) {
                            out.push(ChatMessage::tool_result(call.call_id.clone(), r.content()));
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str, tool: &str, args: Value) -> StepKind {
        StepKind::ToolCall {
            plugin_id: Some(PluginId::parse("tasks").unwrap()),
            tool_name: ToolCallName::parse(tool).unwrap(),
            call_id: id.into(),
            arguments: args,
        }
    }

    #[test]
    fn results_follow_their_turn_in_call_order_and_decisions_clear_pending() {
        let steps = vec![
            StepKind::UserMessage { text: "hi".into() },
            StepKind::ModelRequest {
                operation: "chat".into(),
                model: "m".into(),
                tools_offered: vec![],
                message_count: 1,
            },
            StepKind::ModelResponse {
                response_model: None,
                reasoning: Some("think".into()),
                text: None,
                finish_reasons: vec!["tool_calls".into()],
                input_tokens: 1,
                output_tokens: 1,
            },
            call("a", "add_task", json!({"title": "x"})),
            call("b", "list_tasks", Value::String("{not json".into())),
            StepKind::ToolResult {
                plugin_id: None,
                tool_name: ToolCallName::parse("list_tasks").unwrap(),
                call_id: "b".into(),
                result: json!({"count": 0}),
                duration_ms: 1,
            },
            StepKind::ApprovalRequested {
                plugin_id: None,
                tool_name: ToolCallName::parse("add_task").unwrap(),
                call_id: "a".into(),
                reason: "not read-only".into(),
                arguments_sha256: None,
            },
        ];
        let mut t = Transcript::default();
        for s in &steps {
            t.apply(s).unwrap();
        }
        assert_eq!(t.pending().len(), 1);
        assert_eq!(t.pending()[0].arguments, json!({"title": "x"}));
        // A request recorded without a hash is bound to its recorded call's arguments.
        assert_eq!(
            t.pending()[0].arguments_sha256,
            cairn_audit::arguments_sha256(&json!({"title": "x"})).unwrap()
        );
        t.apply(&StepKind::ToolError {
            plugin_id: None,
            tool_name: ToolCallName::parse("add_task").unwrap(),
            call_id: "a".into(),
            error_type: "denied_by_user".into(),
            message: "no".into(),
        })
        .unwrap();
        t.apply(&StepKind::ApprovalDecided {
            call_id: "a".into(),
            decided_by: cairn_audit::UserId::parse("alice").unwrap(),
            decided_at: chrono::Utc::now(),
            decision: ApprovalOutcome::Deny,
            reason: None,
            arguments_sha256: None,
        })
        .unwrap();
        assert!(t.pending().is_empty());
        let m = t.messages(Some("sys"), |_, tool| tool.to_string());
        assert_eq!(m.len(), 5);
        assert_eq!(m[2].tool_calls[1].arguments, "{not json");
        assert_eq!(m[2].reasoning.as_deref(), Some("think"));
        // Call order, not record order.
        assert_eq!(m[3].tool_call_id.as_deref(), Some("a"));
        assert_eq!(m[4].tool_call_id.as_deref(), Some("b"));
        assert!(m[3].content.as_deref().unwrap().contains("denied_by_user"));
    }
}
