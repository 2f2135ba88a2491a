//! Identity and ownership under attack (issue 10): the OIDC verifier when its issuer is
//! stopped mid-test or flooded with made-up key ids, ID tokens offered as access tokens,
//! runs decided or cancelled by someone other than their owner, and very long subjects.

use std::time::{Duration, Instant};

use cairn_scripted_model::{ScriptedCall, ScriptedServer, Step};
use cairn_server::config::{AgentSettings, AuthConfig, OidcConfig};
use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, expect_error, spawn_app_with};

async fn oidc_app(tweak: fn(&mut OidcConfig), model_url: Option<String>) -> TestApp {
    spawn_app_with(Options {
        oidc: true,
        oidc_config: Some(tweak),
        model_url,
        ..Options::default()
    })
    .await
}

/// `GET /v1/plugins` with each token at once; the statuses and how long the slowest took.
async fn list_all(app: &TestApp, tokens: &[String]) -> (Vec<u16>, Duration) {
    let started = Instant::now();
    let statuses = join_all(tokens.iter().map(|t| async move {
        app.request(Method::GET, "/v1/plugins", Some(t))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }))
    .await;
    (statuses, started.elapsed())
}

/// The issuer stops answering (SIGSTOP: connections hang, the worst case) after the keys
/// were fetched, and the cache goes stale. Before the fix one request held the cache lock
/// for the whole fetch (up to 2 × 10 s) and every other request queued behind it.
#[tokio::test]
async fn tokens_keep_verifying_while_the_issuer_is_stopped() {
    let app = oidc_app(
        |c| {
            c.jwks_cache_seconds = 1;
            c.jwks_min_refetch_seconds = 0;
        },
        None,
    )
    .await;
    let oidc = app.oidc.as_ref().unwrap();
    let token = oidc.token("acme-user").await;
    let made_up = oidc
        .mint_with(oidc.claims(), Some("at+jwt"), Some("no-such-key"))
        .await;
    let (statuses, _) = list_all(&app, std::slice::from_ref(&token)).await;
    assert_eq!(statuses, [200], "the control: keys fetched, token accepted");

    oidc.freeze();
    tokio::time::sleep(Duration::from_millis(1200)).await; // the cached keys are stale now
    for round in 0..3 {
        let (statuses, took) = list_all(&app, &vec![token.clone(); 16]).await;
        assert!(
            statuses.iter().all(|s| *s == 200),
            "round {round}: {statuses:?}"
        );
        assert!(
            took < Duration::from_secs(3),
            "round {round}: requests waited {took:?} on the stopped issuer"
        );
        // Made-up key ids are answered from the cache too, without waiting on the issuer.
        let (statuses, took) = list_all(&app, &vec![made_up.clone(); 8]).await;
        assert!(
            statuses.iter().all(|s| *s == 401),
            "round {round}: {statuses:?}"
        );
        assert!(took < Duration::from_secs(3), "round {round}: {took:?}");
    }
    oidc.thaw();
}

/// How many times `count` tokens with made-up key ids, sent one after another (so no
/// fetch in progress hides the next), make `app` fetch the issuer's keys.
async fn fetches_for_made_up_kids(app: &TestApp, count: usize) -> u64 {
    let oidc = app.oidc.as_ref().unwrap();
    let token = oidc.token("acme-user").await;
    assert_eq!(list_all(app, &[token]).await.0, [200]);
    let before = oidc.jwks_fetches().await;
    for i in 0..count {
        let forged = oidc
            .mint_with(oidc.claims(), Some("at+jwt"), Some(&format!("kid-{i}")))
            .await;
        assert_eq!(list_all(app, &[forged]).await.0, [401]);
    }
    oidc.jwks_fetches().await - before
}

/// Tokens with random key ids make the keys be fetched at most once per
/// `jwks_min_refetch_seconds`, however many arrive.
#[tokio::test]
async fn made_up_key_ids_refetch_the_keys_at_most_once_per_interval() {
    let app = oidc_app(|c| c.jwks_min_refetch_seconds = 300, None).await;
    let fetched = fetches_for_made_up_kids(&app, 20).await;
    assert!(
        fetched <= 1,
        "20 made-up key ids fetched the keys {fetched} times"
    );
    // At once, too.
    let oidc = app.oidc.as_ref().unwrap();
    let before = oidc.jwks_fetches().await;
    let mut forged = Vec::new();
    for i in 0..20 {
        forged.push(
            oidc.mint_with(
                oidc.claims(),
                Some("at+jwt"),
                Some(&format!("kid-at-once-{i}")),
            )
            .await,
        );
    }
    let (statuses, _) = list_all(&app, &forged).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let fetched = oidc.jwks_fetches().await - before;
    assert!(fetched <= 1, "20 at once fetched the keys {fetched} times");

    // Negative control: with no minimum interval each made-up key id refetches the keys
    // (the attack works), so the bound above is the interval's doing.
    let app = oidc_app(|c| c.jwks_min_refetch_seconds = 0, None).await;
    let fetched = fetches_for_made_up_kids(&app, 20).await;
    assert!(fetched >= 10, "without the interval: {fetched} fetches");
}

/// An ID token is signed by the same issuer and may carry a matching `aud`; without the
/// `typ: at+jwt` check it opened the API.
#[tokio::test]
async fn id_tokens_are_not_access_tokens() {
    let app = oidc_app(|_| {}, None).await;
    let oidc = app.oidc.as_ref().unwrap();
    // The provider's own access tokens and tokens minted as at+jwt pass.
    let issued = oidc.token("acme-user").await;
    let minted = oidc.mint_with(oidc.claims(), Some("at+jwt"), None).await;
    let prefixed = oidc
        .mint_with(oidc.claims(), Some("application/at+jwt"), None)
        .await;
    assert_eq!(
        list_all(&app, &[issued, minted, prefixed]).await.0,
        [200; 3]
    );
    for typ in [Some("JWT"), None, Some("id_token+jwt")] {
        let token = oidc.mint_with(oidc.claims(), typ, None).await;
        let response = app
            .request(Method::GET, "/v1/plugins", Some(&token))
            .send()
            .await
            .unwrap();
        let error = expect_error(response, 401).await;
        assert!(
            error["message"].as_str().unwrap().contains("access token"),
            "typ {typ:?}: {error}"
        );
    }

    // An issuer without `typ`: the explicit claim rule decides instead.
    let app = oidc_app(
        |c| {
            c.token_type = Some(String::new());
            c.required_claims = [("token_use".to_owned(), "access".to_owned())].into();
        },
        None,
    )
    .await;
    let oidc = app.oidc.as_ref().unwrap();
    let mut access = oidc.claims();
    access["token_use"] = json!("access");
    let mut id = oidc.claims();
    id["token_use"] = json!("id");
    let access = oidc.mint_with(access, Some("JWT"), None).await;
    let id = oidc.mint_with(id, Some("JWT"), None).await;
    let bare = oidc.mint_with(oidc.claims(), Some("JWT"), None).await;
    assert_eq!(list_all(&app, &[access, id, bare]).await.0, [200, 401, 401]);
}

#[test]
fn configuration_refuses_oidc_without_an_access_token_rule() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path());
    let mut oidc = OidcConfig {
        issuer: "https://login.example.com".into(),
        audience: "cairn".into(),
        tenant_claim: "tenant".into(),
        roles_claim: "roles".into(),
        jwks_cache_seconds: 300,
        jwks_min_refetch_seconds: 10,
        leeway_seconds: 30,
        token_type: Some("at+jwt".into()),
        required_claims: Default::default(),
    };
    config.auth = AuthConfig::Oidc(oidc.clone());
    config.validate().unwrap();
    oidc.token_type = Some(String::new());
    config.auth = AuthConfig::Oidc(oidc.clone());
    let e = config.validate().unwrap_err().to_string();
    assert!(e.contains("required_claims"), "{e}");
    oidc.required_claims = [("token_use".to_owned(), "access".to_owned())].into();
    config.auth = AuthConfig::Oidc(oidc);
    config.validate().unwrap();
}

/// A token for `sub` in tenant acme with `roles`.
async fn token_for(app: &TestApp, sub: &str, roles: &[&str]) -> String {
    let oidc = app.oidc.as_ref().unwrap();
    let mut claims = oidc.claims();
    claims["sub"] = json!(sub);
    claims["roles"] = json!(roles);
    oidc.mint(claims, "published").await
}

async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> reqwest::Response {
    app.request(Method::POST, path, Some(token))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Runs belong to users: before the fix any user of the tenant could approve, deny or
/// cancel another's run.
#[tokio::test]
async fn only_the_owner_or_an_approver_decides_or_cancels_a_run() {
    let add =
        |title: &str| Step::tool_calls([ScriptedCall::new("add_task", json!({ "title": title }))]);
    let model = ScriptedServer::start([add("a"), add("b"), Step::text("Added a.")]).await;
    let app = oidc_app(|_| {}, Some(model.url())).await;
    let admin = token_for(&app, "root", &["admin"]).await;
    app.install_tasks(Some(&admin)).await;
    let alice = token_for(&app, "alice", &["user"]).await;
    let mallory = token_for(&app, "mallory", &["user", "admin", "auditor"]).await;
    let carol = token_for(&app, "carol", &["user", "approver"]).await;

    let mut runs = Vec::new();
    for message in ["add a", "add b"] {
        let response = post(&app, "/v1/runs", &alice, json!({ "message": message })).await;
        assert_eq!(response.status(), 201);
        let run: Value = response.json().await.unwrap();
        assert_eq!(run["status"], "awaiting_approval", "{run}");
        runs.push((
            run["id"].as_str().unwrap().to_owned(),
            run["pending_approvals"][0]["call_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        ));
    }
    let (first, call) = &runs[0];
    for approve in [true, false] {
        let response = post(
            &app,
            &format!("/v1/runs/{first}/approvals"),
            &mallory,
            json!({ "decisions": [{ "call_id": call, "approve": approve }] }),
        )
        .await;
        let error = expect_error(response, 403).await;
        assert!(
            error["message"].as_str().unwrap().contains("approver"),
            "{error}"
        );
    }
    let response = post(
        &app,
        &format!("/v1/runs/{first}/cancel"),
        &mallory,
        json!({}),
    )
    .await;
    expect_error(response, 403).await;

    // An approver decides for the owner; the owner cancels their own run.
    let response = post(
        &app,
        &format!("/v1/runs/{first}/approvals"),
        &carol,
        json!({ "decisions": [{ "call_id": call, "approve": true }] }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let run: Value = response.json().await.unwrap();
    assert_eq!(run["status"], "completed", "{run}");
    let (second, _) = &runs[1];
    let response = post(
        &app,
        &format!("/v1/runs/{second}/cancel"),
        &alice,
        json!({}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let run: Value = response.json().await.unwrap();
    assert_eq!(run["status"], "cancelled", "{run}");

    // Negative control: a policy that makes every user an approver lets mallory decide
    // alice's run (the attack), so the 403s above come from the ownership rule.
    let policy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(policy.path(), r#"{ "approver_roles": ["user"] }"#).unwrap();
    let model = ScriptedServer::start([add("c"), Step::text("Added c.")]).await;
    let app = spawn_app_with(Options {
        oidc: true,
        model_url: Some(model.url()),
        agent: AgentSettings {
            approval_policy: Some(policy.path().to_owned()),
            ..AgentSettings::default()
        },
        ..Options::default()
    })
    .await;
    let admin = token_for(&app, "root", &["admin"]).await;
    app.install_tasks(Some(&admin)).await;
    let alice = token_for(&app, "alice", &["user"]).await;
    let mallory = token_for(&app, "mallory", &["user"]).await;
    let response = post(&app, "/v1/runs", &alice, json!({ "message": "add c" })).await;
    let run: Value = response.json().await.unwrap();
    let (id, call) = (
        run["id"].as_str().unwrap(),
        run["pending_approvals"][0]["call_id"].as_str().unwrap(),
    );
    let response = post(
        &app,
        &format!("/v1/runs/{id}/approvals"),
        &mallory,
        json!({ "decisions": [{ "call_id": call, "approve": true }] }),
    )
    .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// A subject of 252–256 characters is a valid user; `user:<sub>` used to be too long for
/// an actor, so invoking and cancelling answered 500.
#[tokio::test]
async fn subjects_of_256_characters_invoke_and_cancel() {
    let model = ScriptedServer::start([Step::tool_calls([ScriptedCall::new(
        "add_task",
        json!({ "title": "x" }),
    )])])
    .await;
    let app = oidc_app(|_| {}, Some(model.url())).await;
    let admin = token_for(&app, "root", &["admin"]).await;
    let plugin = app.install_tasks(Some(&admin)).await;
    for (i, n) in [252, 256].into_iter().enumerate() {
        let sub = format!("{i}{}", "s".repeat(n - 1));
        let token = token_for(&app, &sub, &["user"]).await;
        let response = app
            .invoke(&plugin, "list_tasks", json!({}), Some(&token))
            .await;
        assert_eq!(response.status(), 200, "invoke with a {n}-character sub");
        if i == 0 {
            let response = post(&app, "/v1/runs", &token, json!({ "message": "add x" })).await;
            assert_eq!(response.status(), 201);
            let run: Value = response.json().await.unwrap();
            let id = run["id"].as_str().unwrap();
            let response = post(&app, &format!("/v1/runs/{id}/cancel"), &token, json!({})).await;
            assert_eq!(response.status(), 200, "cancel with a {n}-character sub");
        }
    }
}
