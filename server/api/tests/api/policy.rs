//! `/v1/policy`: approval-policy changes are audited admin actions, stored in the
//! database, and govern the next call on every host over it (issue #9 point 4).

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, expect_error, spawn_app, spawn_app_with};
use crate::one_path::FreshPostgres;
use crate::runs::get_json;

async fn put_policy(app: &TestApp, policy: Value) -> reqwest::Response {
    app.request(Method::PUT, "/v1/policy", None)
        .json(&policy)
        .send()
        .await
        .unwrap()
}

/// The `policy.update` admin actions of the tenant, oldest first.
async fn policy_actions(app: &TestApp) -> Vec<Value> {
    get_json(app, "/v1/audit/steps?kind=admin_action").await["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"]["action"] == "policy.update")
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_deny_rule_put_by_an_admin_refuses_the_next_invoke_and_is_in_the_ledger() {
    let app = spawn_app().await;
    let tasks = app.install_tasks(None).await;
    let before = get_json(&app, "/v1/policy").await;
    assert_eq!(before["source"], "deployment", "{before}");
    assert_eq!(before["revision"], 0);

    let response = put_policy(&app, json!({"tools": {"tasks.add_task": "deny"}})).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let stored = get_json(&app, "/v1/policy").await;
    assert_eq!(stored["source"], "stored");
    assert_eq!(stored["revision"], 1);
    assert_eq!(stored["updated_by"], "dev");
    assert_eq!(stored["policy"]["tools"]["tasks.add_task"], "deny");

    // The next direct invoke is refused, naming the tenant's rule.
    let error = expect_error(
        app.invoke(&tasks, "add_task", json!({"title": "Renew passport"}), None)
            .await,
        403,
    )
    .await;
    assert_eq!(error["code"], "denied_by_policy");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("approval.tenants.dev.tools.tasks.add_task"),
        "{message}"
    );
    // Other tools are as before.
    let response = app.invoke(&tasks, "list_tasks", json!({}), None).await;
    assert_eq!(response.status(), 200);

    // Who, before and after, in the ledger, which verifies.
    let actions = policy_actions(&app).await;
    assert_eq!(actions.len(), 1, "{actions:?}");
    let step = &actions[0];
    assert_eq!(step["actor"], "user:dev");
    assert_eq!(step["step"]["target"], "approval_policy");
    assert_eq!(step["step"]["before"]["source"], "deployment");
    assert_eq!(step["step"]["before"]["policy"], json!({"tools": {}}));
    assert_eq!(
        step["step"]["after"]["policy"]["tools"]["tasks.add_task"],
        "deny"
    );
    assert_eq!(get_json(&app, "/v1/audit/verify").await["ok"], true);

    // Lifting it is another audited change, and the call runs again.
    let response = put_policy(&app, json!({})).await;
    assert_eq!(response.status(), 200);
    let response = app
        .invoke(&tasks, "add_task", json!({"title": "Renew passport"}), None)
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let actions = policy_actions(&app).await;
    assert_eq!(actions.len(), 2);
    assert_eq!(actions[1]["step"]["before"]["revision"], 1);
}

#[tokio::test]
async fn a_bad_policy_is_refused_naming_the_problem_and_changes_nothing() {
    let app = spawn_app().await;
    let tasks = app.install_tasks(None).await;
    let response = put_policy(&app, json!({"tools": {"tasks.delete_task": "deny"}})).await;
    assert_eq!(response.status(), 200);

    let cases = [
        (
            json!({"tools": {"add_task": "deny"}}),
            422,
            "tools.add_task",
        ),
        (
            json!({"tools": {"tasks.add_task": "sometimes"}}),
            400,
            "tools",
        ),
        (json!({"default": "never"}), 400, "default"),
        (json!({"defualt": "deny"}), 400, "defualt"),
        (json!({"tools": {"a.b.c": "deny"}}), 422, "tools.a.b.c"),
    ];
    for (body, status, field) in cases {
        let error = expect_error(put_policy(&app, body.clone()).await, status).await;
        let named = error["field"].as_str().unwrap_or_default().to_owned()
            + error["message"].as_str().unwrap_or_default();
        assert!(named.contains(field), "{body}: {error}");
    }
    // Nothing changed: the stored policy, the ledger, and what it decides.
    let stored = get_json(&app, "/v1/policy").await;
    assert_eq!(stored["revision"], 1, "{stored}");
    assert_eq!(
        stored["policy"],
        json!({"tools": {"tasks.delete_task": "deny"}})
    );
    assert_eq!(policy_actions(&app).await.len(), 1);
    let response = app
        .invoke(&tasks, "add_task", json!({"title": "still allowed"}), None)
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_policy_file_is_the_default_until_a_tenant_stores_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("approval.json");
    let file = json!({
        "tools": {"tasks.list_tasks": "deny"},
        "tenants": {"dev": {"tools": {"tasks.add_task": "deny"}}}
    });
    std::fs::write(&path, file.to_string()).unwrap();
    let mut options = Options::default();
    options.agent.approval_policy = Some(path);
    let app = spawn_app_with(options).await;
    let tasks = app.install_tasks(None).await;
    let shown = get_json(&app, "/v1/policy").await;
    assert_eq!(shown["source"], "deployment");
    assert_eq!(shown["policy"]["tools"]["tasks.add_task"], "deny");
    let add = || app.invoke(&tasks, "add_task", json!({"title": "x"}), None);
    assert_eq!(add().await.status(), 403);

    // The tenant's own policy replaces the file's entry for it, not the global rules.
    let response = put_policy(&app, json!({"tools": {"tasks.complete_task": "deny"}})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(add().await.status(), 200);
    let error = expect_error(app.invoke(&tasks, "list_tasks", json!({}), None).await, 403).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("approval.tools.tasks.list_tasks"),
        "{error}"
    );
}

#[tokio::test]
async fn a_policy_put_through_one_host_governs_another_over_the_same_postgres() {
    let db = FreshPostgres::create().await;
    let options = || Options {
        database_url: Some(db.url.clone()),
        ..Options::default()
    };
    let a = spawn_app_with(options()).await;
    let b = spawn_app_with(options()).await;
    let tasks = a.install_tasks(None).await;
    // B has read the tenant's (absent) policy already.
    let response = b
        .invoke(&tasks, "add_task", json!({"title": "before"}), None)
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    let response = put_policy(&a, json!({"tools": {"tasks.add_task": "deny"}})).await;
    assert_eq!(response.status(), 200);
    let error = expect_error(
        b.invoke(&tasks, "add_task", json!({"title": "after"}), None)
            .await,
        403,
    )
    .await;
    assert_eq!(error["code"], "denied_by_policy");
    assert_eq!(get_json(&b, "/v1/policy").await["revision"], 1);
    assert_eq!(get_json(&b, "/v1/audit/verify").await["ok"], true);
    drop((a, b));
}

#[tokio::test]
async fn only_admins_change_the_policy() {
    let app = crate::helpers::spawn_oidc_app().await;
    let oidc = app.oidc.as_ref().unwrap();
    let user = oidc.token("acme-user").await;
    let response = app
        .request(Method::PUT, "/v1/policy", Some(&user))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    expect_error(response, 403).await;
    let response = app
        .request(Method::GET, "/v1/policy", Some(&user))
        .send()
        .await
        .unwrap();
    expect_error(response, 403).await;
    let admin = oidc.token("acme-admin").await;
    let response = app
        .request(Method::PUT, "/v1/policy", Some(&admin))
        .json(&json!({"default": "always_ask"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// Concurrent changes: each PUT replaces the revision it read, so racing PUTs either
/// apply one after another or are refused `409 changed_meanwhile` with nothing stored;
/// the revision counts exactly the changes that were applied, and every applied change's
/// admin record names the policy it replaced (no update is lost, no record lies).
#[tokio::test]
async fn racing_policy_changes_are_applied_one_at_a_time_or_refused() {
    let app = spawn_app().await;
    const WRITERS: usize = 12;
    let responses = futures::future::join_all(
        (0..WRITERS)
            .map(|i| put_policy(&app, json!({"tools": {format!("tasks.tool_{i}"): "deny"}}))),
    )
    .await;
    let mut applied = 0;
    for response in responses {
        match response.status().as_u16() {
            200 => applied += 1,
            409 => {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "changed_meanwhile", "{body}");
            }
            other => panic!("{other}: {}", response.text().await.unwrap()),
        }
    }
    assert!(applied >= 1);
    let stored = get_json(&app, "/v1/policy").await;
    assert_eq!(stored["revision"], applied as i64, "{stored}");
    // The applied changes form one chain: each one's `before` revision is the previous
    // one's, from 0 up.
    let mut befores: Vec<i64> = policy_actions(&app)
        .await
        .iter()
        .map(|a| a["step"]["before"]["revision"].as_i64().unwrap())
        .collect();
    befores.sort();
    let chain: Vec<i64> = (0..applied as i64).collect();
    assert!(
        chain.iter().all(|r| befores.contains(r)),
        "applied changes' before-revisions {befores:?} should include {chain:?}"
    );
    assert_eq!(
        befores.len(),
        WRITERS,
        "every attempt, applied or refused, is on record"
    );
}
