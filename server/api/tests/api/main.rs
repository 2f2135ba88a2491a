//! Black-box tests of the HTTP API: each test starts its own server (port 0) with its own
//! data dir and ledger, and talks to it over HTTP.

mod auth;
mod chat;
mod conformance;
mod embedded;
mod helpers;
mod isolation;
mod one_path;
mod policy;
mod runs;
mod security;

use helpers::{
    AUDIENCE, Options, expect_error, expect_not_found, spawn_app, spawn_app_with, spawn_oidc_app,
    tasks_package,
};
use reqwest::Method;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// Health, metrics, routing, the OpenAPI document.

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );

    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ready"})
    );

    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains(r#"cairn_http_requests_total{method="GET",route="/healthz",status="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("cairn_http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_json() {
    let app = spawn_app().await;
    let error = expect_error(app.client.get(app.url("/nope")).send().await.unwrap(), 404).await;
    assert_eq!(error["code"], "not_found");
    let error = expect_error(
        app.client.delete(app.url("/healthz")).send().await.unwrap(),
        405,
    )
    .await;
    assert_eq!(error["code"], "method_not_allowed");
    let error = expect_error(
        app.client.put(app.url("/v1/plugins")).send().await.unwrap(),
        405,
    )
    .await;
    assert_eq!(error["code"], "method_not_allowed");
}

#[tokio::test]
async fn the_openapi_document_matches_the_committed_copy() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/plugins",
        "/v1/plugins/{id}",
        "/v1/plugins/{id}/enable",
        "/v1/plugins/{id}/disable",
        "/v1/plugins/{id}/config",
        "/v1/plugins/{id}/tools/{tool}/invoke",
        "/v1/audit/steps",
        "/v1/audit/runs/{id}",
        "/v1/audit/export",
        "/v1/audit/verify",
        "/v1/audit/checkpoints/latest",
        "/v1/audit/proofs/consistency",
        "/v1/audit/proofs/inclusion",
        "/v1/audit/runs/{id}/bundle",
        "/v1/audit/purge",
        "/v1/runs",
        "/v1/runs/{id}",
        "/v1/runs/{id}/events",
        "/v1/runs/{id}/approvals",
        "/v1/runs/{id}/cancel",
        "/v1/chat/completions",
    ] {
        assert!(document["paths"][path].is_object(), "{path} missing");
    }
    let text = serde_json::to_string_pretty(&document).unwrap() + "\n";
    let committed = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/openapi.json");
    if std::env::var_os("CAIRN_BLESS").is_some() {
        std::fs::write(committed, &text).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(committed).unwrap_or_default();
    assert!(
        on_disk == text,
        "schemas/openapi.json is stale: run `CAIRN_BLESS=1 cargo test -p cairn-server --test api openapi` and commit it"
    );
}

#[tokio::test]
async fn the_dev_identity_is_refused_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = helpers::test_config(dir.path());
    config.listen = "0.0.0.0:0".parse().unwrap();
    let error = match cairn_server::startup::Application::build(config).await {
        Ok(_) => panic!("the dev identity started on 0.0.0.0"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("loopback"), "{error}");
    assert!(error.contains("0.0.0.0"), "{error}");
}

// ---------------------------------------------------------------------------------------
// Plugins: install, enable, invoke (audited), configure, disable.

#[tokio::test]
async fn install_enable_invoke_tasks_is_audited_and_verifies() {
    let app = spawn_app().await;
    let response = app.install(&tasks_package(), None).await;
    assert_eq!(response.status(), 201);
    let installed: Value = response.json().await.unwrap();
    assert_eq!(installed["plugin_id"], "tasks");
    assert_eq!(installed["enabled"], false);
    assert_eq!(installed["tenant"], "dev");
    assert!(installed["digest"].as_str().unwrap().starts_with("sha256:"));
    let id = installed["id"].as_str().unwrap().to_owned();

    // Installing the same plugin again conflicts.
    let error = expect_error(app.install(&tasks_package(), None).await, 409).await;
    assert_eq!(error["code"], "already_installed");

    let list: Value = app
        .client
        .get(app.url("/v1/plugins"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["plugins"].as_array().unwrap().len(), 1);

    let detail: Value = app
        .client
        .get(app.url(&format!("/v1/plugins/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tools = detail["tools"].as_array().unwrap();
    let list_tasks = tools.iter().find(|t| t["name"] == "list_tasks").unwrap();
    assert_eq!(list_tasks["annotations"]["read_only"], true);
    assert_eq!(list_tasks["input_schema"]["type"], "object");
    assert!(tools.iter().any(|t| t["name"] == "add_task"));

    // Disabled plugins cannot be called.
    let error = expect_error(
        app.invoke(&id, "add_task", json!({"title": "x"}), None)
            .await,
        409,
    )
    .await;
    assert_eq!(error["code"], "plugin_disabled");

    let response = app
        .client
        .post(app.url(&format!("/v1/plugins/{id}/enable")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["enabled"], true);

    let response = app
        .invoke(
            &id,
            "add_task",
            json!({"title": "Call Anna", "priority": "high"}),
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    let outcome: Value = response.json().await.unwrap();
    assert_eq!(outcome["status"], "ok", "{outcome}");
    assert_eq!(outcome["result"]["title"], "Call Anna");
    let run_id = outcome["run_id"].as_str().unwrap().to_owned();

    let listed: Value = app
        .invoke(&id, "list_tasks", json!({}), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["result"]["count"], 1, "{listed}");

    // Arguments are checked against the input schema before anything runs.
    let error = expect_error(
        app.invoke(&id, "add_task", json!({"title": 5}), None).await,
        422,
    )
    .await;
    assert_eq!(error["code"], "invalid_arguments");
    assert_eq!(error["field"], "arguments.title");
    let error = expect_error(app.invoke(&id, "add_task", json!({}), None).await, 422).await;
    assert_eq!(error["field"], "arguments.title");
    let error = expect_error(
        app.invoke(
            &id,
            "add_task",
            json!({"title": "x", "priority": "urgent"}),
            None,
        )
        .await,
        422,
    )
    .await;
    assert_eq!(error["field"], "arguments.priority");
    let error = expect_error(
        app.invoke(
            &id,
            "add_task",
            json!({"title": "x", "colour": "red"}),
            None,
        )
        .await,
        422,
    )
    .await;
    assert_eq!(error["field"], "arguments.colour");
    let error = expect_error(app.invoke(&id, "no_such_tool", json!({}), None).await, 404).await;
    assert_eq!(error["code"], "not_found");

    // The call is in the ledger, in order.
    let trail: Value = app
        .client
        .get(app.url(&format!("/v1/audit/runs/{run_id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = trail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"]["kind"].as_str().unwrap())
        .collect();
    // The loop's path: add_task is not read-only, so the policy asks, and the caller's
    // direct invocation is recorded as their approval.
    assert_eq!(
        kinds,
        [
            "run_configured",
            "user_message",
            "tool_call",
            "policy_decision",
            "approval_requested",
            "approval_decided",
            "tool_result",
            "final_answer"
        ]
    );
    assert_eq!(trail["steps"][0]["step"]["mode"], "direct");
    assert_eq!(trail["steps"][2]["step"]["gen_ai.tool.name"], "add_task");
    assert_eq!(trail["steps"][2]["step"]["cairn.plugin.id"], "tasks");
    assert_eq!(trail["steps"][2]["actor"], "user:dev");
    assert_eq!(trail["run"]["status"], "completed");

    // Query with filters and cursor pagination.
    let page: Value = app
        .client
        .get(app.url("/v1/audit/steps?kind=tool_call&plugin=tasks&limit=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["steps"].as_array().unwrap().len(), 1);
    let next = page["next"].as_str().expect("a second page").to_owned();
    let page2: Value = app
        .client
        .get(app.url(&format!(
            "/v1/audit/steps?kind=tool_call&limit=1&cursor={next}"
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page2["steps"][0]["step"]["gen_ai.tool.name"], "list_tasks");
    let by_run: Value = app
        .client
        .get(app.url(&format!("/v1/audit/steps?run={run_id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_run["steps"].as_array().unwrap().len(), 8);

    // Export, both formats, streamed.
    let response = app
        .client
        .get(app.url("/v1/audit/export"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let jsonl = response.text().await.unwrap();
    // install and enable (2 steps each, admin actions), add_task (8), list_tasks (5).
    assert_eq!(jsonl.lines().count(), 17);
    for line in jsonl.lines() {
        serde_json::from_str::<Value>(line).unwrap();
    }
    let csv = app
        .client
        .get(app.url(&format!("/v1/audit/export?format=csv&run={run_id}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.starts_with(cairn_audit::CSV_HEADER));
    assert_eq!(csv.lines().count(), 9);

    let verify: Value = app
        .client
        .get(app.url("/v1/audit/verify"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(verify["runs"], 4);
    assert_eq!(verify["steps"], 17);

    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains(r#"cairn_tool_calls_total{plugin="tasks",tool="add_task",outcome="ok"} 1"#),
        "{metrics}"
    );

    // Settings: undeclared ones are refused; an empty set is fine.
    let error = expect_error(
        app.client
            .put(app.url(&format!("/v1/plugins/{id}/config")))
            .json(&json!({"config": {"colour": "blue"}}))
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_eq!(error["field"], "config.colour");
    let response = app
        .client
        .put(app.url(&format!("/v1/plugins/{id}/config")))
        .json(&json!({"config": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Disabled again: no calls.
    let response = app
        .client
        .post(app.url(&format!("/v1/plugins/{id}/disable")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    expect_error(app.invoke(&id, "list_tasks", json!({}), None).await, 409).await;
}

#[tokio::test]
async fn the_registry_survives_a_restart() {
    let app = spawn_app().await;
    let id = app.install_tasks(None).await;
    let dir = app.data_dir.path().to_owned();
    let config = helpers::test_config(&dir);
    let again = cairn_server::startup::Application::build(config)
        .await
        .unwrap();
    let address = format!("http://127.0.0.1:{}", again.port());
    tokio::spawn(again.run_until_stopped());
    let detail: Value = helpers::http_client()
        .get(format!("{address}/v1/plugins/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["enabled"], true);
    assert_eq!(detail["plugin_id"], "tasks");
}

// ---------------------------------------------------------------------------------------
// Bad input: every 4xx is JSON naming the problem.

#[tokio::test]
async fn bad_bodies_are_answered_with_the_field_at_fault() {
    let app = spawn_app().await;
    let id = app.install_tasks(None).await;
    let invoke = app.url(&format!("/v1/plugins/{id}/tools/add_task/invoke"));
    let post = |body: &'static str| {
        app.client
            .post(&invoke)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let error = expect_error(post(r#"{"arguments": "#).await.unwrap(), 400).await;
    assert_eq!(error["code"], "invalid_json");
    assert!(
        error["message"].as_str().unwrap().contains("line 1"),
        "{error}"
    );

    let error = expect_error(post(r#"{}"#).await.unwrap(), 400).await;
    assert_eq!(error["field"], "arguments");

    let error = expect_error(post(r#"{"arguments": {}, "extra": 1}"#).await.unwrap(), 400).await;
    assert_eq!(error["code"], "invalid_body");
    assert_eq!(error["field"], "extra");

    let error = expect_error(
        app.client
            .put(app.url(&format!("/v1/plugins/{id}/config")))
            .header("content-type", "application/json")
            .body(r#"{"config": {"a": 1}}"#)
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(error["field"], "config.a");

    let error = expect_error(
        app.client
            .post(&invoke)
            .body(r#"{"arguments": {}}"#)
            .send()
            .await
            .unwrap(),
        415,
    )
    .await;
    assert_eq!(error["code"], "unsupported_media_type");

    let big = format!(
        r#"{{"arguments": {{"title": "{}"}}}}"#,
        "x".repeat(100 * 1024)
    );
    let error = expect_error(
        app.client
            .post(&invoke)
            .header("content-type", "application/json")
            .body(big)
            .send()
            .await
            .unwrap(),
        413,
    )
    .await;
    assert_eq!(error["code"], "payload_too_large");
}

#[tokio::test]
async fn bad_ids_and_query_parameters_are_named() {
    let app = spawn_app().await;
    let error = expect_error(
        app.client
            .get(app.url("/v1/plugins/not-a-uuid"))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(error["code"], "invalid_path");
    assert_eq!(error["field"], "id");
    let error = expect_error(
        app.client
            .post(app.url("/v1/plugins/123/enable"))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(error["field"], "id");
    let unknown = uuid::Uuid::now_v7();
    let error = expect_error(
        app.client
            .get(app.url(&format!("/v1/plugins/{unknown}")))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    assert_eq!(error["code"], "not_found");

    let error = expect_error(
        app.client
            .get(app.url("/v1/audit/runs/xyz"))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(error["field"], "id");
    // A UUID, but not a v7 run id.
    let error = expect_error(
        app.client
            .get(app.url(&format!("/v1/audit/runs/{}", uuid::Uuid::new_v4())))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(error["field"], "id");
    expect_error(
        app.client
            .get(app.url(&format!("/v1/audit/runs/{}", uuid::Uuid::now_v7())))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;

    for (query, field) in [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("kind=bogus", "kind"),
        ("status=done", "status"),
        ("cursor=zzz", "cursor"),
        ("run=nope", "run"),
        ("from=yesterday", "from"),
        ("colour=blue", "colour"),
    ] {
        let error = expect_error(
            app.client
                .get(app.url(&format!("/v1/audit/steps?{query}")))
                .send()
                .await
                .unwrap(),
            400,
        )
        .await;
        assert_eq!(error["code"], "invalid_query", "{query}");
        assert_eq!(error["field"], field, "{query}: {error}");
    }
    let error = expect_error(
        app.client
            .get(app.url("/v1/audit/export?format=xml"))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(error["field"], "format");
    let error = expect_error(
        app.client
            .get(app.url("/v1/audit/verify?from=soon"))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(error["field"], "from");
}

#[tokio::test]
async fn bad_packages_are_refused() {
    let app = spawn_app_with(Options {
        max_package_bytes: 1024 * 1024,
        ..Options::default()
    })
    .await;
    let error = expect_error(app.install(b"not a tar archive at all", None).await, 422).await;
    assert_eq!(error["code"], "invalid_package");
    let error = expect_error(
        app.client
            .post(app.url("/v1/plugins"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap(),
        415,
    )
    .await;
    assert_eq!(error["code"], "unsupported_media_type");
    let error = expect_error(app.install(&vec![0u8; 2 * 1024 * 1024], None).await, 413).await;
    assert_eq!(error["code"], "payload_too_large");
    // Nothing was half-installed.
    let list: Value = app
        .client
        .get(app.url("/v1/plugins"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["plugins"], json!([]));
}

// ---------------------------------------------------------------------------------------
// Authentication with a real OpenID Connect provider.

/// Every route that needs a token, with a body that would otherwise be acceptable.
fn protected_routes(id: &str, run: &str) -> Vec<(Method, String)> {
    vec![
        (Method::GET, "/v1/plugins".into()),
        (Method::POST, "/v1/plugins".into()),
        (Method::GET, format!("/v1/plugins/{id}")),
        (Method::POST, format!("/v1/plugins/{id}/enable")),
        (Method::POST, format!("/v1/plugins/{id}/disable")),
        (Method::PUT, format!("/v1/plugins/{id}/config")),
        (
            Method::POST,
            format!("/v1/plugins/{id}/tools/list_tasks/invoke"),
        ),
        (Method::GET, "/v1/audit/steps".into()),
        (Method::GET, format!("/v1/audit/runs/{run}")),
        (Method::GET, "/v1/audit/export".into()),
        (Method::GET, "/v1/audit/verify".into()),
        (Method::POST, "/v1/runs".into()),
        (Method::GET, format!("/v1/runs/{run}")),
        (Method::GET, format!("/v1/runs/{run}/events")),
        (Method::POST, format!("/v1/runs/{run}/approvals")),
        (Method::POST, format!("/v1/runs/{run}/cancel")),
        (Method::POST, "/v1/chat/completions".into()),
    ]
}

#[tokio::test]
async fn missing_and_invalid_tokens_get_401_on_every_route() {
    let app = spawn_oidc_app().await;
    let oidc = app.oidc.as_ref().unwrap();
    let admin = oidc.token("acme-all").await;
    let id = app.install_tasks(Some(&admin)).await;
    let run = uuid::Uuid::now_v7().to_string();

    let now = chrono::Utc::now().timestamp();
    let mut expired = oidc.claims();
    expired["iat"] = json!(now - 3600);
    expired["exp"] = json!(now - 600);
    let mut not_yet = oidc.claims();
    not_yet["nbf"] = json!(now + 600);
    let mut wrong_audience = oidc.claims();
    wrong_audience["aud"] = json!("https://other.example");
    let mut wrong_issuer = oidc.claims();
    wrong_issuer["iss"] = json!("https://evil.example");
    let mut no_tenant = oidc.claims();
    no_tenant.as_object_mut().unwrap().remove("tenant");
    let bad_tokens = [
        ("expired", oidc.mint(expired, "published").await),
        ("not yet valid", oidc.mint(not_yet, "published").await),
        (
            "wrong audience",
            oidc.mint(wrong_audience, "published").await,
        ),
        ("wrong issuer", oidc.mint(wrong_issuer, "published").await),
        ("bad signature", oidc.mint(oidc.claims(), "rogue").await),
        ("no tenant", oidc.mint(no_tenant, "published").await),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    // The control: the same claims, properly signed, are accepted.
    let good = oidc.mint(oidc.claims(), "published").await;
    let response = app
        .request(Method::GET, "/v1/plugins", Some(&good))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    for (method, path) in protected_routes(&id, &run) {
        let response = app
            .request(method.clone(), &path, None)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned()),
            Some("Bearer realm=\"cairn\"".to_owned()),
            "{method} {path}"
        );
        let error = expect_error(response, 401).await;
        assert_eq!(error["code"], "unauthorized", "{method} {path}");
        for (what, token) in &bad_tokens {
            let response = app
                .request(method.clone(), &path, Some(token))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 401, "{what}: {method} {path}");
        }
    }
    // Public routes stay public.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(
            app.client.get(app.url(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
}

#[tokio::test]
async fn roles_are_enforced_with_403() {
    let app = spawn_oidc_app().await;
    let oidc = app.oidc.as_ref().unwrap();
    let admin = oidc.token("acme-admin").await;
    let user = oidc.token("acme-user").await;
    let auditor = oidc.token("acme-auditor").await;
    let nobody = oidc.token("acme-none").await;

    // Admins install and enable; users may not.
    let error = expect_error(app.install(&tasks_package(), Some(&user)).await, 403).await;
    assert_eq!(error["code"], "forbidden");
    let id = app.install_tasks(Some(&admin)).await;
    for (method, path) in [
        (Method::POST, format!("/v1/plugins/{id}/enable")),
        (Method::POST, format!("/v1/plugins/{id}/disable")),
    ] {
        expect_error(
            app.request(method, &path, Some(&user))
                .send()
                .await
                .unwrap(),
            403,
        )
        .await;
    }
    expect_error(
        app.request(
            Method::PUT,
            &format!("/v1/plugins/{id}/config"),
            Some(&auditor),
        )
        .json(&json!({"config": {}}))
        .send()
        .await
        .unwrap(),
        403,
    )
    .await;
    // Users invoke; admins and auditors without the user role do not.
    let response = app.invoke(&id, "list_tasks", json!({}), Some(&user)).await;
    assert_eq!(response.status(), 200);
    let run_id = response.json::<Value>().await.unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    expect_error(
        app.invoke(&id, "list_tasks", json!({}), Some(&admin)).await,
        403,
    )
    .await;
    // Only auditors read the ledger.
    for path in [
        "/v1/audit/steps".to_owned(),
        format!("/v1/audit/runs/{run_id}"),
        "/v1/audit/export".to_owned(),
        "/v1/audit/verify".to_owned(),
    ] {
        expect_error(
            app.request(Method::GET, &path, Some(&admin))
                .send()
                .await
                .unwrap(),
            403,
        )
        .await;
        expect_error(
            app.request(Method::GET, &path, Some(&user))
                .send()
                .await
                .unwrap(),
            403,
        )
        .await;
        let response = app
            .request(Method::GET, &path, Some(&auditor))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    // The invocation was recorded as the token's subject.
    let trail: Value = app
        .request(
            Method::GET,
            &format!("/v1/audit/runs/{run_id}"),
            Some(&auditor),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(trail["run"]["user"], "acme-user");
    assert_eq!(trail["run"]["tenant"], "acme");
    // No role at all: not even the list.
    expect_error(
        app.request(Method::GET, "/v1/plugins", Some(&nobody))
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
}

#[tokio::test]
async fn tenants_never_see_each_others_plugins_or_ledger() {
    let app = spawn_oidc_app().await;
    let oidc = app.oidc.as_ref().unwrap();
    let acme = oidc.token("acme-all").await;
    let globex = oidc.token("globex-all").await;

    let id = app.install_tasks(Some(&acme)).await;
    let response = app
        .invoke(
            &id,
            "add_task",
            json!({"title": "acme secret"}),
            Some(&acme),
        )
        .await;
    assert_eq!(response.status(), 200);
    let run_id = response.json::<Value>().await.unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // By id: 404, exactly like an id that does not exist.
    expect_not_found(
        &app,
        vec![
            (Method::GET, format!("/v1/plugins/{id}")),
            (Method::POST, format!("/v1/plugins/{id}/enable")),
            (Method::POST, format!("/v1/plugins/{id}/disable")),
            (Method::GET, format!("/v1/audit/runs/{run_id}")),
        ],
        &globex,
    )
    .await;
    expect_error(
        app.request(
            Method::PUT,
            &format!("/v1/plugins/{id}/config"),
            Some(&globex),
        )
        .json(&json!({"config": {}}))
        .send()
        .await
        .unwrap(),
        404,
    )
    .await;
    let error = expect_error(
        app.invoke(&id, "list_tasks", json!({}), Some(&globex))
            .await,
        404,
    )
    .await;
    assert_eq!(error["code"], "not_found");

    // Lists, queries and exports show only the caller's tenant.
    let list: Value = app
        .request(Method::GET, "/v1/plugins", Some(&globex))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["plugins"], json!([]));
    let steps: Value = app
        .request(
            Method::GET,
            &format!("/v1/audit/steps?run={run_id}"),
            Some(&globex),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(steps["steps"], json!([]));
    let export = app
        .request(Method::GET, "/v1/audit/export", Some(&globex))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!export.contains("acme secret"));
    assert_eq!(export, "");
    let verify: Value = app
        .request(Method::GET, "/v1/audit/verify", Some(&globex))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verify["runs"], 0);

    // The owner still sees everything.
    let steps: Value = app
        .request(
            Method::GET,
            &format!("/v1/audit/steps?run={run_id}"),
            Some(&acme),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(steps["steps"].as_array().unwrap().len(), 8);
}

#[tokio::test]
async fn a_rotated_signing_key_is_picked_up() {
    let app = spawn_oidc_app().await;
    let oidc = app.oidc.as_ref().unwrap();
    let before = oidc.token("acme-all").await;
    let response = app
        .request(Method::GET, "/v1/plugins", Some(&before))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    oidc.rotate().await;
    let after = oidc.token("acme-all").await;
    assert_ne!(header_kid(&before), header_kid(&after));
    let response = app
        .request(Method::GET, "/v1/plugins", Some(&after))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The old key is still published, so tokens it signed stay valid until they expire.
    let response = app
        .request(Method::GET, "/v1/plugins", Some(&before))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let _ = AUDIENCE;
}

fn header_kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

// ---------------------------------------------------------------------------------------
// PostgreSQL: the production store behaves the same behind the API.

#[tokio::test]
async fn invoke_and_verify_on_postgres() {
    let db = one_path::FreshPostgres::create().await;
    let app = spawn_app_with(Options {
        database_url: Some(db.url.clone()),
        ..Options::default()
    })
    .await;
    let id = app.install_tasks(None).await;
    let outcome: Value = app
        .invoke(&id, "add_task", json!({"title": "on postgres"}), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(outcome["status"], "ok", "{outcome}");
    let verify: Value = app
        .client
        .get(app.url("/v1/audit/verify"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verify["ok"], true, "{verify}");
    // install and enable (admin actions, 2 steps each), then the call's 8.
    assert_eq!(verify["steps"], 12);
    drop(app);
}

// ---------------------------------------------------------------------------------------
// `cairn serve`: config errors stop it; SIGTERM stops it cleanly.

fn cairn_serve(config: &std::path::Path, data: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
    command
        .args(["serve", "--config"])
        .arg(config)
        .env("CAIRN_DATA_DIR", data)
        .env(
            "CAIRN_CACHE_DIR",
            std::env::temp_dir().join("cairn-api-tests-compiled"),
        )
        .env("CAIRN_MAX_CONCURRENT_CALLS", "2")
        .env_remove("DATABASE_URL")
        .env_remove("CAIRN_LISTEN")
        .env_remove("CAIRN_AUTH");
    command
}

#[test]
fn cairn_serve_refuses_bad_config_and_the_dev_identity_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cairn.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nlisten_port = 1\n").unwrap();
    let output = cairn_serve(&config, dir.path()).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("listen_port"), "{stderr}");

    std::fs::write(&config, "listen = \"0.0.0.0:0\"\n").unwrap();
    let output = cairn_serve(&config, dir.path()).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
}

#[tokio::test]
async fn cairn_serve_answers_and_stops_cleanly_on_sigterm() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cairn.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\n").unwrap();
    let mut child = cairn_serve(&config, dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let address = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stderr).lines().find_map(|l| {
            l.ok().and_then(|l| {
                l.split_once("listening on ")
                    .map(|(_, a)| a.trim().to_owned())
            })
        })
    })
    .await
    .unwrap()
    .expect("cairn serve printed its address");
    let response = helpers::http_client()
        .get(format!("{address}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// A data dir from before plugin key-value data moved into the database: its
/// `plugin-kv.json` is imported at start-up, renamed, and the plugin finds its data.
#[tokio::test]
async fn an_older_data_dirs_plugin_kv_file_is_imported_at_start_up() {
    use cairn_runtime::{JsonFileKv, KvScope, KvStore};
    let app = spawn_app().await;
    let id = app.install_tasks(None).await;
    let dir = app.data_dir.path().to_owned();
    let file = dir.join("plugin-kv.json");
    let scope = KvScope {
        tenant: "dev".into(),
        plugin: "tasks".into(),
        user: "dev".into(),
    };
    let old = JsonFileKv::open(&file).unwrap();
    let task =
        br#"{"id":"1","title":"Imported from the old data dir","priority":"normal","done":false}"#;
    old.set(&scope, "task/00000000000000000001", task.to_vec(), 1 << 20)
        .await
        .unwrap();
    old.set(&scope, "meta/next_id", b"2".to_vec(), 1 << 20)
        .await
        .unwrap();
    drop(old);

    let again = cairn_server::startup::Application::build(helpers::test_config(&dir))
        .await
        .unwrap();
    let address = format!("http://127.0.0.1:{}", again.port());
    tokio::spawn(again.run_until_stopped());
    assert!(!file.exists(), "the file was left in place");
    assert!(dir.join("plugin-kv.json.imported").exists());
    let listed: Value = helpers::http_client()
        .post(format!("{address}/v1/plugins/{id}/tools/list_tasks/invoke"))
        .json(&json!({ "arguments": {} }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = listed.to_string();
    assert!(text.contains("Imported from the old data dir"), "{listed}");
}

/// Issue 11's purge attack through the API: the body cannot name the actor, a cutoff
/// inside the minimum retention is refused naming the field, nothing is removed; and
/// without a signing key no checkpoint exists or can be published.
#[tokio::test]
async fn the_purge_route_refuses_a_forged_actor_and_a_future_cutoff() {
    let app = spawn_app().await;
    let forged = expect_error(
        app.client
            .post(app.url("/v1/audit/purge"))
            .json(
                &json!({"cutoff": "9999-01-01T00:00:00Z", "reason": "retention",
                          "actor": "user:retention-job"}),
            )
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert!(
        forged["message"].as_str().unwrap().contains("actor"),
        "{forged}"
    );
    let future = expect_error(
        app.client
            .post(app.url("/v1/audit/purge"))
            .json(&json!({"cutoff": "9999-01-01T00:00:00Z", "reason": "retention"}))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(future["field"], "cutoff", "{future}");
    let blank = expect_error(
        app.client
            .post(app.url("/v1/audit/purge"))
            .json(&json!({"cutoff": "2020-01-01T00:00:00Z", "reason": " "}))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(blank["field"], "reason", "{blank}");
    expect_error(
        app.client
            .get(app.url("/v1/audit/checkpoints/latest"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    let no_key = expect_error(
        app.client
            .post(app.url("/v1/audit/checkpoints/latest"))
            .send()
            .await
            .unwrap(),
        409,
    )
    .await;
    assert_eq!(no_key["code"], "no_signing_key");
}

/// The proof routes answer from the server's kept tree: an inclusion proof of each seal
/// in the current tree, a consistency proof between two sizes, and sizes out of range as
/// `400` naming the query parameter.
#[tokio::test]
async fn proofs_are_served_for_the_current_tree_and_bad_sizes_name_the_parameter() {
    let app = spawn_app().await;
    let tasks = app.install_tasks(None).await;
    for title in ["one", "two"] {
        let response = app
            .invoke(&tasks, "add_task", json!({"title": title}), None)
            .await;
        assert_eq!(response.status(), 200);
    }
    let get = |path: String| {
        let app = &app;
        async move { app.client.get(app.url(&path)).send().await.unwrap() }
    };
    let inclusion: Value = get("/v1/audit/proofs/inclusion?seal=0".into())
        .await
        .json()
        .await
        .unwrap();
    let size = inclusion["to"].as_u64().unwrap();
    assert!(
        size >= 4,
        "two invocations open and seal two runs: {inclusion}"
    );
    assert_eq!(inclusion["leaf"], 0);
    assert!(
        !inclusion["proof"].as_array().unwrap().is_empty(),
        "{inclusion}"
    );
    let consistency: Value = get(format!("/v1/audit/proofs/consistency?from=2&to={size}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(consistency["from"], 2);
    assert_eq!(consistency["to"], size);
    assert!(
        !consistency["proof"].as_array().unwrap().is_empty(),
        "{consistency}"
    );
    let error = expect_error(
        get(format!("/v1/audit/proofs/inclusion?seal={size}")).await,
        400,
    )
    .await;
    assert_eq!(error["field"], "seal", "{error}");
    let error = expect_error(
        get(format!("/v1/audit/proofs/consistency?from={}", size + 1)).await,
        400,
    )
    .await;
    assert_eq!(error["field"], "from", "{error}");
}
