//! Approvals bound to what was approved (issue #11, point 6): the approval request records
//! the SHA-256 of the call's canonical arguments, a decision naming other arguments is
//! refused before anything is recorded, and an approved call runs only if the arguments
//! about to run still hash to the approved value.

use cairn_agent::*;
use cairn_audit::{RunStatus, StepKind, arguments_sha256};
use serde_json::json;
use sqlx::Connection;

use crate::approvals::{PAUSED, paused as pending_of};
use crate::helpers::*;

/// What follows the pause when the approved call runs and the model answers.
const APPROVED_AND_ANSWERED: &[&str] = &[
    "approval_decided",
    "tool_result",
    "model_request",
    "model_response",
    "final_answer",
];

fn approve_shown(p: &PendingCall) -> ApprovalDecision {
    ApprovalDecision {
        arguments_sha256: Some(p.arguments_sha256),
        ..approve(&p.call_id)
    }
}

/// Approves `pending` with the hash it showed; the call runs once and the run completes.
async fn approve_and_complete(w: &World, run: cairn_audit::RunId, pending: &PendingCall) {
    let outcome = w
        .agent
        .resume(&tenant(), run, &approver(), vec![approve_shown(pending)])
        .await
        .unwrap();
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    assert_eq!(w.tools.executed(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_with_the_hash_it_was_shown_runs_the_call_and_records_the_hash() {
    let args = json!({ "title": "Renew passport", "priority": "high" });
    let w = world([call("add_task", args.clone()), text("Added.")])
        .build()
        .await;
    let outcome = w.start("Remind me to renew my passport").await.unwrap();
    let run = outcome.run_id();
    let pending = pending_of(&outcome);
    let expected = arguments_sha256(&args).unwrap();
    assert_eq!(pending[0].arguments_sha256, expected);
    let steps = w.assert_trail(run, PAUSED).await;
    let StepKind::ApprovalRequested {
        arguments_sha256, ..
    } = &steps[5]
    else {
        unreachable!()
    };
    assert_eq!(*arguments_sha256, Some(expected), "the request records it");
    // What a pending view shows is what the ledger recorded.
    let info = w.agent.run_status(&tenant(), run).await.unwrap();
    assert_eq!(info.pending[0].arguments_sha256, expected);

    approve_and_complete(&w, run, &pending[0]).await;
    let steps = w
        .assert_trail(run, &[PAUSED, APPROVED_AND_ANSWERED].concat())
        .await;
    let StepKind::ApprovalDecided {
        arguments_sha256, ..
    } = &steps[6]
    else {
        unreachable!()
    };
    assert_eq!(*arguments_sha256, Some(expected), "the decision records it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_on_other_arguments_is_refused_and_the_run_still_waits() {
    let w = world([
        call("add_task", json!({ "title": "Renew passport" })),
        text("Added."),
    ])
    .build()
    .await;
    let outcome = w.start("Remind me to renew my passport").await.unwrap();
    let run = outcome.run_id();
    let pending = pending_of(&outcome);
    let other = arguments_sha256(&json!({ "title": "Something else" })).unwrap();
    for approve in [true, false] {
        let decision = ApprovalDecision {
            approve,
            arguments_sha256: Some(other),
            ..approve_shown(&pending[0])
        };
        let r = w
            .agent
            .resume(&tenant(), run, &approver(), vec![decision])
            .await;
        match &r {
            Err(e @ AgentError::ArgumentsMismatch { call_id, .. }) => {
                assert_eq!(call_id, "call_1_1");
                let m = e.to_string();
                assert!(m.contains("call_1_1") && m.contains(&other.to_hex()), "{m}");
            }
            other => panic!("expected ArgumentsMismatch, got {other:?}"),
        }
    }
    assert_eq!(w.tools.executed(), 0, "nothing ran");
    w.assert_trail(run, PAUSED).await;
    let info = w.agent.run_status(&tenant(), run).await.unwrap();
    assert_eq!(info.run.status, RunStatus::AwaitingApproval);
    // The right hash still decides it.
    approve_and_complete(&w, run, &pending[0]).await;
}

/// The call's arguments are rewritten in the database after the approver was shown them
/// (a superuser, triggers bypassed) and the approval is given on what was shown: the
/// approval is recorded, but the changed arguments do not hash to it, so the tool does not
/// run and the call fails with `arguments_not_approved`. A decision that names the
/// rewritten arguments' hash is refused outright.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_changed_between_approval_and_execution_do_not_run() {
    let shown = json!({ "title": "Renew passport" });
    let w = world([call("add_task", shown.clone()), text("It was not run.")])
        .postgres()
        .build()
        .await;
    let outcome = w.start("Remind me to renew my passport").await.unwrap();
    let run = outcome.run_id();
    let pending = pending_of(&outcome);
    assert_eq!(pending[0].arguments, shown);

    let mut c = sqlx::PgConnection::connect(&w.pg.as_ref().unwrap().url)
        .await
        .unwrap();
    let changed = sqlx::raw_sql(&format!(
        "SET session_replication_role = replica;
         UPDATE audit_steps
            SET payload = jsonb_set(payload::jsonb, '{{arguments,title}}', '\"Wire 10k to mallory\"')::json
          WHERE run_id = '{run}' AND kind = 'tool_call'"
    ))
    .execute(&mut c)
    .await
    .unwrap();
    assert_eq!(changed.rows_affected(), 1);
    let now = w.agent.run_status(&tenant(), run).await.unwrap().pending;
    assert_eq!(now[0].arguments["title"], "Wire 10k to mallory");

    // A client that hashes what it now shows names arguments nobody asked approval for.
    let rewritten = arguments_sha256(&now[0].arguments).unwrap();
    let r = w
        .agent
        .resume(
            &tenant(),
            run,
            &approver(),
            vec![ApprovalDecision {
                arguments_sha256: Some(rewritten),
                ..approve("call_1_1")
            }],
        )
        .await;
    assert!(
        matches!(r, Err(AgentError::ArgumentsMismatch { .. })),
        "{r:?}"
    );
    assert_eq!(w.tools.executed(), 0);

    // The approval of what was shown is recorded; the changed call does not run.
    let outcome = w
        .agent
        .resume(
            &tenant(),
            run,
            &approver(),
            vec![approve_shown(&pending[0])],
        )
        .await
        .unwrap();
    assert_eq!(w.tools.executed(), 0, "the rewritten call must not run");
    assert!(
        matches!(outcome, RunOutcome::Completed { .. }),
        "{outcome:?}"
    );
    let trail = w.ledger.trail(&tenant(), run).await.unwrap();
    let kinds: Vec<&str> = trail.iter().map(|s| s.step.kind_name()).collect();
    let not_run: Vec<&str> = APPROVED_AND_ANSWERED
        .iter()
        .map(|&k| if k == "tool_result" { "tool_error" } else { k })
        .collect();
    assert_eq!(kinds, [PAUSED, &not_run[..]].concat());
    let StepKind::ApprovalDecided {
        arguments_sha256: decided,
        ..
    } = &trail[6].step
    else {
        unreachable!()
    };
    assert_eq!(*decided, Some(arguments_sha256(&shown).unwrap()));
    let (kind, message) = tool_error(&trail[7].step);
    assert_eq!(kind, "arguments_not_approved");
    assert!(message.contains(&rewritten.to_hex()), "{message}");
    assert!(message.contains("was not run"), "{message}");
    // And the rewrite itself is visible to the ledger's verifier.
    let report = w.ledger.verify(Some(&tenant()), None, None).await.unwrap();
    assert!(!report.is_ok(), "{report}");
}
