//! No global lock across slow work (issue #9 point 6): while one tenant's plugin takes
//! seconds to load (its `describe()` is slow), another tenant's listings, tool calls and
//! runs are answered at their usual speed.

use std::time::{Duration, Instant};

use cairn_scripted_model::{ScriptedServer, Step};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Options, spawn_app_with};

/// How long the slow plugin's `describe()` takes.
const DESCRIBE: Duration = Duration::from_millis(2500);

/// The hostile test plugin with a `describe_delay_ms` setting.
fn slow_describe_package() -> Vec<u8> {
    crate::security::hostile_package_with(|manifest| {
        manifest["id"] = json!("slowpoke");
        manifest["config"] = json!({
            "describe_delay_ms": { "description": "How long describe() sleeps.", "required": false }
        });
    })
}

/// Sends `request`: its status, JSON body and how long it took.
async fn send(request: reqwest::RequestBuilder) -> (u16, Value, Duration) {
    let started = Instant::now();
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, started.elapsed())
}

#[tokio::test]
async fn a_slow_describe_in_one_tenant_holds_up_no_other_tenant() {
    let model = ScriptedServer::start([Step::text("warm"), Step::text("hot")]).await;
    let app = spawn_app_with(Options {
        oidc: true,
        model_url: Some(model.url()),
        ..Options::default()
    })
    .await;
    let oidc = app.oidc.as_ref().unwrap();
    let (acme, globex) = (oidc.token("acme-all").await, oidc.token("globex-all").await);

    // globex: tasks enabled and warm (loaded, called once, a run done).
    let tasks = app.install_tasks(Some(&globex)).await;
    let list = || app.request(Method::GET, "/v1/plugins", Some(&globex));
    let call = || {
        app.request(
            Method::POST,
            &format!("/v1/plugins/{tasks}/tools/list_tasks/invoke"),
            Some(&globex),
        )
        .json(&json!({"arguments": {}}))
    };
    let run = || {
        app.request(Method::POST, "/v1/runs", Some(&globex))
            .json(&json!({"message": "What is on my list?"}))
    };
    assert_eq!(send(call()).await.0, 200);
    assert_eq!(send(run()).await.0, 201);

    // acme: the slow plugin, installed and configured (nothing loads yet).
    let response = app.install(&slow_describe_package(), Some(&acme)).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let slow = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = app
        .request(
            Method::PUT,
            &format!("/v1/plugins/{slow}/config"),
            Some(&acme),
        )
        .json(&json!({"config": {"describe_delay_ms": DESCRIBE.as_millis().to_string()}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    // Enabling loads it: compile (cached) and the slow describe().
    let enable = app.request(
        Method::POST,
        &format!("/v1/plugins/{slow}/enable"),
        Some(&acme),
    );
    let enabling = tokio::spawn(async move {
        let started = Instant::now();
        let response = enable.send().await.unwrap();
        (response.status().as_u16(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Meanwhile globex is served as usual.
    let (status, body, listed) = send(list()).await;
    assert_eq!(status, 200);
    assert_eq!(body["plugins"].as_array().unwrap().len(), 1);
    let (status, body, called) = send(call()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
    let (status, body, ran) = send(run()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "completed", "{body}");
    let bound = Duration::from_secs(1);
    for (what, took) in [("list", listed), ("call", called), ("run", ran)] {
        assert!(
            took < bound,
            "globex's {what} took {took:?} while acme's plugin loaded"
        );
    }
    assert!(
        !enabling.is_finished(),
        "the slow load ended before globex's requests did: the test proved nothing"
    );

    let (status, took) = enabling.await.unwrap();
    assert_eq!(status, 200);
    assert!(took >= DESCRIBE, "describe() was not slow: {took:?}");
}
