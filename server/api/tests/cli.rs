//! The `cairn` binary, end to end: a plugin author's loop from `plugin new` to a tested
//! package, and an auditor's `audit verify` on an intact and a tampered ledger.

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

fn cargo_test(dir: &Path) -> Output {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .output()
        .expect("run cargo test")
}

/// One test for the whole loop: each step needs the previous one, and builds are slow.
#[test]
fn a_new_plugin_builds_passes_its_tests_and_runs_in_the_sandbox() {
    let folder = tempfile::tempdir().unwrap();
    let dir = folder.path().join("greeter");
    let dir_arg = dir.to_str().unwrap();

    assert_success(&cairn(&[
        "plugin",
        "new",
        "greeter",
        "--dir",
        folder.path().to_str().unwrap(),
    ]));
    assert_success(&cargo_test(&dir));

    let build = cairn(&["plugin", "build", "--dir", dir_arg]);
    assert_success(&build);
    let package = dir.join("dist/greeter-0.1.0.cairnpkg");
    assert!(text(&build.stdout).contains("greeter-0.1.0.cairnpkg"));
    assert!(text(&build.stdout).contains("sha256:"));

    let package_arg = package.to_str().unwrap();
    let call = cairn(&[
        "plugin",
        "test",
        "greet",
        "--package",
        package_arg,
        "--input",
        r#"{"name": "Ada"}"#,
    ]);
    assert_success(&call);
    let result: serde_json::Value = serde_json::from_slice(&call.stdout).unwrap();
    assert_eq!(result, serde_json::json!({"greeting": "Hello, Ada!"}));

    // A tool error is reported, with a failing exit code.
    let refused = cairn(&[
        "plugin",
        "test",
        "greet",
        "--package",
        package_arg,
        "--input",
        r#"{"name": ""}"#,
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("invalid_input"),
        "{}",
        text(&refused.stderr)
    );
    // Arguments that are not JSON are refused before anything runs.
    let bad_json = cairn(&[
        "plugin",
        "test",
        "greet",
        "--package",
        package_arg,
        "--input",
        "{name",
    ]);
    assert_eq!(bad_json.status.code(), Some(1));
    assert!(text(&bad_json.stderr).contains("--input is not valid JSON"));

    let inspect = cairn(&["plugin", "inspect", package_arg]);
    assert_success(&inspect);
    let shown = text(&inspect.stdout);
    assert!(shown.contains("greeter 0.1.0"), "{shown}");
    assert!(shown.contains("greet [read-only, idempotent]"), "{shown}");
    assert!(shown.contains("outbound hosts: none"), "{shown}");

    // A package whose component was swapped after packaging is refused.
    let mut bytes = std::fs::read(&package).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    let tampered = folder.path().join("tampered.cairnpkg");
    std::fs::write(&tampered, bytes).unwrap();
    let inspect = cairn(&["plugin", "inspect", tampered.to_str().unwrap()]);
    assert_eq!(inspect.status.code(), Some(1));
    assert!(
        text(&inspect.stderr).contains("digest mismatch"),
        "{}",
        text(&inspect.stderr)
    );

    // Code that drifts from the manifest fails the build, naming the tool and the spot.
    let lib = dir.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(
        &lib,
        source
            .replace(
                "pub greeting: String,",
                "pub greeting: String,\n    /// Added.\n    pub shout: bool,",
            )
            .replace(
                "greeting: format!(\"Hello, {name}!\"),",
                "greeting: format!(\"Hello, {name}!\"),\n        shout: false,",
            ),
    )
    .unwrap();
    let build = cairn(&["plugin", "build", "--dir", dir_arg]);
    assert_eq!(build.status.code(), Some(1), "{}", text(&build.stderr));
    let stderr = text(&build.stderr);
    assert!(stderr.contains("does not match its manifest"), "{stderr}");
    assert!(stderr.contains("output_schema"), "{stderr}");
    assert!(stderr.contains("greet"), "{stderr}");
}

#[test]
fn a_bad_manifest_fails_the_build_before_compiling() {
    let folder = tempfile::tempdir().unwrap();
    assert_success(&cairn(&[
        "plugin",
        "new",
        "broken",
        "--dir",
        folder.path().to_str().unwrap(),
    ]));
    let manifest = folder.path().join("broken/cairn-plugin.json");
    let json = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, json.replace("\"publisher\"", "\"publsher\"")).unwrap();
    let build = cairn(&[
        "plugin",
        "build",
        "--dir",
        folder.path().join("broken").to_str().unwrap(),
    ]);
    assert_eq!(build.status.code(), Some(1));
    let stderr = text(&build.stderr);
    assert!(stderr.contains("publsher"), "{stderr}");
    assert!(
        !stderr.contains("Compiling"),
        "compiled before checking the manifest: {stderr}"
    );
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
