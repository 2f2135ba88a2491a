//! The `cairn` binary, end to end: an auditor's `audit verify` on an intact and a tampered
//! ledger, and the offline bundle and checkpoint loop. (The plugin author's loop is
//! `cairn-plugin`'s, tested in sdk/cli/tests.)

use std::path::Path;
use std::process::{Command, Output};

use cairn_audit::{Actor, NewRun, NewStep, StepKind, TenantId, UserId};

fn cairn(args: &[&str]) -> Output {
    let cache = std::env::temp_dir().join("cairn-cli-tests-compiled");
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("CAIRN_CACHE_DIR", cache)
        .output()
        .expect("run cairn")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
}

#[test]
fn cairn_plugin_says_where_the_author_tool_went() {
    let output = cairn(&["plugin", "build", "--dir", "."]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("cargo install --path sdk/cli"));
}

#[tokio::test]
async fn audit_verify_passes_an_intact_ledger_and_names_a_tampered_step() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("ledger.db");
    let url = format!("sqlite:{}?mode=rwc", path.display());
    let ledger = cairn_audit::open(&url, Default::default()).await.unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    let run = ledger
        .start_run(NewRun {
            tenant: tenant.clone(),
            user: UserId::parse("alice").unwrap(),
            conversation_id: None,
            model: "scripted".into(),
        })
        .await
        .unwrap();
    for text in ["first", "second", "third"] {
        let step = NewStep {
            actor: Actor::parse("user:alice").unwrap(),
            step: StepKind::UserMessage { text: text.into() },
        };
        ledger.append(&tenant, run.id, step).await.unwrap();
    }
    drop(ledger);

    let url = format!("sqlite:{}", path.display());
    let ok = cairn(&["audit", "verify", "--database-url", &url]);
    assert_success(&ok);
    assert!(text(&ok.stdout).starts_with("OK"), "{}", text(&ok.stdout));

    // A privileged hand edits one step's payload past the append-only trigger.
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("DROP TRIGGER audit_steps_no_update")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE audit_steps SET payload = replace(payload, 'second', 'forged') WHERE seq = 1",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let broken = cairn(&[
        "audit",
        "verify",
        "--database-url",
        &url,
        "--tenant",
        "acme",
    ]);
    assert_eq!(broken.status.code(), Some(1), "{}", text(&broken.stdout));
    let report = text(&broken.stdout);
    assert!(report.contains("BROKEN"), "{report}");
    assert!(report.contains(&run.id.to_string()), "{report}");
    assert!(report.contains("step 1"), "{report}");

    let bad_tenant = cairn(&[
        "audit",
        "verify",
        "--database-url",
        &url,
        "--tenant",
        "no spaces",
    ]);
    assert_eq!(bad_tenant.status.code(), Some(1));
    assert!(text(&bad_tenant.stderr).contains("--tenant `no spaces`"));
}

/// An auditor's offline loop: keygen, a checkpoint, a run's bundle checked with no
/// database, and the live ledger proven consistent with the kept checkpoint, until a
/// privileged hand rolls the ledger back.
#[tokio::test]
async fn audit_bundle_and_checkpoint_round_trip_offline() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("ledger.db");
    let url = format!("sqlite:{}?mode=rwc", path.display());
    let ledger = cairn_audit::open(&url, Default::default()).await.unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    let mut runs = vec![];
    for _ in 0..2 {
        let run = ledger
            .start_run(NewRun {
                tenant: tenant.clone(),
                user: UserId::parse("alice").unwrap(),
                conversation_id: None,
                model: "scripted".into(),
            })
            .await
            .unwrap();
        for step in [
            StepKind::UserMessage { text: "hi".into() },
            StepKind::FinalAnswer {
                text: "done".into(),
            },
        ] {
            let step = NewStep {
                actor: Actor::parse("user:alice").unwrap(),
                step,
            };
            ledger.append(&tenant, run.id, step).await.unwrap();
        }
        runs.push(run);
    }
    drop(ledger);
    let url = format!("sqlite:{}", path.display());
    let key = folder.path().join("checkpoint.key");
    let keygen = cairn(&[
        "audit",
        "keygen",
        "--name",
        "cairn.test/audit",
        "--out",
        key.to_str().unwrap(),
    ]);
    assert_success(&keygen);
    let public = text(&keygen.stdout).trim().to_owned();
    assert!(public.starts_with("cairn.test/audit+"), "{public}");

    let cp = cairn(&[
        "audit",
        "checkpoint",
        "--database-url",
        &url,
        "--tenant",
        "acme",
        "--key-file",
        key.to_str().unwrap(),
    ]);
    assert_success(&cp);
    assert!(text(&cp.stdout).starts_with("cairn.test/audit/acme\n4\n"));
    let kept = folder.path().join("kept.checkpoint");
    std::fs::write(&kept, &cp.stdout).unwrap();

    let bundle = folder.path().join("run.bundle.json");
    let run = runs[0].id.to_string();
    assert_success(&cairn(&[
        "audit",
        "export",
        "--bundle",
        &run,
        "--tenant",
        "acme",
        "--database-url",
        &url,
        "--out",
        bundle.to_str().unwrap(),
    ]));
    let ok = cairn(&[
        "audit",
        "verify-bundle",
        bundle.to_str().unwrap(),
        "--key",
        &public,
    ]);
    assert_success(&ok);
    assert!(
        text(&ok.stdout).starts_with("OK: run"),
        "{}",
        text(&ok.stdout)
    );
    // A truncated copy is named as such.
    let bytes = std::fs::read(&bundle).unwrap();
    std::fs::write(&bundle, &bytes[..bytes.len() - 40]).unwrap();
    let cut = cairn(&[
        "audit",
        "verify-bundle",
        bundle.to_str().unwrap(),
        "--key",
        &public,
    ]);
    assert_eq!(cut.status.code(), Some(1));
    assert!(
        text(&cut.stdout).contains("truncated"),
        "{}",
        text(&cut.stdout)
    );

    let verify = |kept: &Path| {
        cairn(&[
            "audit",
            "verify",
            "--database-url",
            &url,
            "--checkpoint",
            kept.to_str().unwrap(),
            "--key",
            &public,
        ])
    };
    let live = verify(&kept);
    assert_success(&live);
    assert!(text(&live.stdout).contains("match the checkpoint"));

    // Rolled back: the last run's seal is gone (a restore of an older backup).
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "DROP TRIGGER audit_seals_no_delete; DELETE FROM audit_seals WHERE seal_seq = 3;
         UPDATE audit_tenant_heads SET next_seal_seq = 3,
           last_seal_hash = (SELECT hash FROM audit_seals WHERE seal_seq = 2);",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let rolled = verify(&kept);
    assert_eq!(rolled.status.code(), Some(1), "{}", text(&rolled.stdout));
    assert!(
        text(&rolled.stdout).contains("rolled back: a checkpoint covers 4 seals, but only 3"),
        "{}",
        text(&rolled.stdout)
    );
}
