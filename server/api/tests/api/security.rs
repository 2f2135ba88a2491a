//! Attacks from outside the sandbox (issue 10): a tenant admin's manifest aiming at the
//! host's network, made-up HTTP methods growing `/metrics`, web pages driving the
//! development identity (cross-origin requests, DNS rebinding), CORS in OIDC mode, and
//! one tenant flooding the call slots.

use cairn_server::package::Package;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, expect_error, spawn_app, spawn_app_with};

/// The `tasks` example plugin with `outbound_hosts` replaced.
fn tasks_with_hosts(hosts: &[&str]) -> Vec<u8> {
    let plugin = cairn_test_plugins::EXAMPLE_PLUGINS
        .iter()
        .find(|p| p.name == "tasks")
        .expect("the tasks example plugin is built");
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(plugin.manifest).unwrap()).unwrap();
    manifest["permissions"]["outbound_hosts"] = json!(hosts);
    package(manifest, std::fs::read(plugin.component).unwrap())
}

fn package(manifest: Value, component: Vec<u8>) -> Vec<u8> {
    let package = Package::new(manifest.to_string(), component).unwrap();
    let mut bytes = Vec::new();
    package.write_to(&mut bytes).unwrap();
    bytes
}

/// The hostile test plugin, packaged, every tool read-only, CPU budget 3 s.
fn hostile_package() -> Vec<u8> {
    hostile_package_with(|_| {})
}

/// The hostile test plugin, packaged as [`hostile_package`] with `change` made to its
/// manifest.
pub fn hostile_package_with(change: impl FnOnce(&mut Value)) -> Vec<u8> {
    let tools: Vec<Value> = cairn_test_plugins::HOSTILE_TOOLS
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "description": format!("hostile {name}"),
                "input_schema": { "type": "object" },
                "output_schema": { "type": "object" },
                "annotations": { "read_only": true },
            })
        })
        .collect();
    let mut manifest = json!({
        "id": "hostile",
        "version": "0.1.0",
        "publisher": "Cairn API tests",
        "description": "Attacks the host.",
        "tools": tools,
        "permissions": { "cpu_ms_per_call": 3000 },
    });
    change(&mut manifest);
    package(
        manifest,
        std::fs::read(cairn_test_plugins::HOSTILE).unwrap(),
    )
}

fn no_cors(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("access-control-allow-origin")
        .is_none()
}

async fn installed_count(app: &TestApp) -> usize {
    let body: Value = app
        .request(Method::GET, "/v1/plugins", None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["plugins"]
        .as_array()
        .or(body.as_array())
        .map_or(0, Vec::len)
}

// ---------------------------------------------------------------------------------------
// 1. The operator's egress ceiling.

#[tokio::test]
async fn install_refuses_manifests_outside_the_egress_ceiling_naming_the_rule() {
    let app = spawn_app().await;
    let own = app.address.clone();
    for (hosts, index, words) in [
        (
            vec!["https://api.example.com", "http://169.254.169.254"],
            1,
            "169.254.0.0/16",
        ),
        (vec!["http://10.0.0.5:8000"], 0, "10.0.0.0/8"),
        (vec![own.as_str()], 0, "own listen address"),
        (vec!["http://[64:ff9b::a9fe:a9fe]"], 0, "169.254.0.0/16"),
        (vec!["http://[2002:a9fe:a9fe::1]"], 0, "2002::/16"),
        (vec!["http://192.0.0.170"], 0, "192.0.0.0/24"),
        (vec!["http://198.18.0.1"], 0, "198.18.0.0/15"),
        (vec!["http://localhost:3000"], 0, "loopback"),
    ] {
        let error = expect_error(app.install(&tasks_with_hosts(&hosts), None).await, 422).await;
        assert_eq!(error["code"], "egress_ceiling", "{hosts:?}: {error}");
        assert_eq!(
            error["field"],
            format!("permissions.outbound_hosts[{index}]"),
            "{error}"
        );
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(words), "{hosts:?}: {message}");
    }
    assert_eq!(installed_count(&app).await, 0, "nothing was stored");
    let response = app
        .install(&tasks_with_hosts(&["https://api.example.com"]), None)
        .await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());

    // Negative control: with no denied ranges the same manifests install (only Cairn's
    // own address stays denied, always), so the refusals above are the ceiling's.
    let open = spawn_app_with(Options {
        configure: |config| config.egress.denied_ranges = Vec::new(),
        ..Options::default()
    })
    .await;
    let response = open
        .install(
            &tasks_with_hosts(&["http://169.254.169.254", "http://10.0.0.5:8000"]),
            None,
        )
        .await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

#[tokio::test]
async fn the_operator_can_restrict_origins_and_permit_an_internal_address() {
    let app = spawn_app_with(Options {
        configure: |config| {
            config.egress.allowed_origins = Some(vec![
                "https://*.example.com".parse().unwrap(),
                "http://10.0.0.5:8000".parse().unwrap(),
            ]);
            config.egress.permitted_ranges = vec!["10.0.0.5/32".parse().unwrap()];
        },
        ..Options::default()
    })
    .await;
    let error = expect_error(
        app.install(&tasks_with_hosts(&["https://api.other.example"]), None)
            .await,
        422,
    )
    .await;
    assert_eq!(error["code"], "egress_ceiling");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("egress.allowed_origins"),
        "{error}"
    );
    let response = app
        .install(
            &tasks_with_hosts(&["https://crm.example.com", "http://10.0.0.5:8000"]),
            None,
        )
        .await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

// ---------------------------------------------------------------------------------------
// 2. Bounded metrics.

#[tokio::test]
async fn made_up_methods_do_not_grow_metrics() {
    let app = spawn_app().await;
    let size = || async {
        app.client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // One request of each kind first, so their series exist.
    let method = Method::from_bytes(b"WARMUP").unwrap();
    app.client
        .request(method, app.url("/healthz"))
        .send()
        .await
        .unwrap();
    let before = size().await.len();
    for i in 0..300 {
        let method = Method::from_bytes(format!("M{i:03}XYZ").as_bytes()).unwrap();
        let path = if i % 2 == 0 { "/healthz" } else { "/v1/nope" };
        let response = app
            .client
            .request(method, app.url(path))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    let text = size().await;
    assert!(
        !text.contains("M001XYZ") && !text.contains("WARMUP"),
        "a made-up method became a label"
    );
    assert!(text.contains(r#"method="other""#), "{text}");
    // At most a few new series (the 404 route of the unmatched path), not 300.
    assert!(
        text.len() < before + 4096,
        "metrics grew from {before} to {} bytes",
        text.len()
    );
}

// ---------------------------------------------------------------------------------------
// 3. The development identity against web pages.

#[tokio::test]
async fn the_dev_identity_answers_only_loopback_host_names() {
    let app = spawn_app().await;
    let port = app.address.rsplit(':').next().unwrap().to_owned();
    for host in [
        "attacker.example".to_owned(),
        format!("attacker.example:{port}"),
    ] {
        let error = expect_error(
            app.client
                .get(app.url("/v1/plugins"))
                .header("host", host.as_str())
                .send()
                .await
                .unwrap(),
            400,
        )
        .await;
        assert_eq!(error["code"], "invalid_host", "{host}");
        assert_eq!(error["field"], "Host");
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let response = app
            .client
            .get(app.url("/v1/plugins"))
            .header("host", host.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{host}");
    }
}

#[tokio::test]
async fn the_dev_identity_refuses_cross_origin_state_changes() {
    let app = spawn_app().await;
    for origin in ["https://attacker.example", "null", "http://localhost:1"] {
        let error = expect_error(
            app.request(Method::POST, "/v1/plugins", None)
                .header("origin", origin)
                .header("content-type", "application/octet-stream")
                .body(crate::helpers::tasks_package())
                .send()
                .await
                .unwrap(),
            403,
        )
        .await;
        assert_eq!(error["code"], "forbidden", "{origin}");
        assert!(
            error["message"].as_str().unwrap().contains("cross-origin"),
            "{error}"
        );
    }
    let error = expect_error(
        app.request(Method::POST, "/v1/runs", None)
            .header("sec-fetch-site", "cross-site")
            .json(&json!({"input": "hello"}))
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
    assert_eq!(error["code"], "forbidden");
    assert_eq!(installed_count(&app).await, 0);
    // The server's own origin (its own UI) and callers that send no Origin still work;
    // no CORS header is ever sent in dev mode.
    let response = app
        .request(Method::POST, "/v1/plugins", None)
        .header("origin", app.address.as_str())
        .header("content-type", "application/octet-stream")
        .body(crate::helpers::tasks_package())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert!(no_cors(&response));
}

// ---------------------------------------------------------------------------------------
// 3b. CORS in OIDC mode: from config, none by default.

#[tokio::test]
async fn oidc_mode_sends_cors_headers_only_to_configured_origins() {
    let app = spawn_app_with(Options {
        oidc: true,
        configure: |config| {
            config.cors.allowed_origins = vec!["https://addin.example.com".into()];
        },
        ..Options::default()
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, app.url("/v1/runs"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let response = preflight("https://addin.example.com").await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://addin.example.com"
    );
    let response = preflight("https://attacker.example").await.unwrap();
    assert!(no_cors(&response));
    // No Host rule in OIDC mode: a real name behind a load balancer is fine.
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("host", "cairn.example.com")
        .header("origin", "https://addin.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://addin.example.com"
    );

    let default = spawn_app_with(Options {
        oidc: true,
        ..Options::default()
    })
    .await;
    let response = default
        .client
        .request(Method::OPTIONS, default.url("/v1/runs"))
        .header("origin", "https://addin.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(no_cors(&response));
}

// ---------------------------------------------------------------------------------------
// 5. Fair call slots.

#[tokio::test]
async fn calls_past_the_tenants_share_get_429_with_retry_after() {
    let app = spawn_app_with(Options {
        configure: |config| {
            config.max_concurrent_calls = 2;
            config.max_concurrent_calls_per_tenant = 1;
            config.call_wait_ms = 200;
        },
        ..Options::default()
    })
    .await;
    let response = app.install(&hostile_package(), None).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = app
        .request(Method::POST, &format!("/v1/plugins/{id}/enable"), None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Three calls that each spin for 3 s of CPU, at once: the tenant's one slot runs one,
    // the others wait 200 ms for it and are refused.
    let calls = (0..3).map(|_| app.invoke(&id, "infinite_loop", json!({}), None));
    let responses = futures::future::join_all(calls).await;
    let (mut ran, mut refused) = (0, 0);
    for response in responses {
        if response.status() == 429 {
            assert_eq!(response.headers()["retry-after"], "1");
            let error = expect_error(response, 429).await;
            assert_eq!(error["code"], "busy");
            assert!(
                error["message"]
                    .as_str()
                    .unwrap()
                    .contains("max_concurrent_calls_per_tenant"),
                "{error}"
            );
            refused += 1;
        } else {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["type"], "timeout", "{body}");
            ran += 1;
        }
    }
    assert!(ran >= 1 && refused >= 1, "ran {ran}, refused {refused}");
    // Then calls go through again.
    let response = app.invoke(&id, "noop", json!({}), None).await;
    assert_eq!(response.status(), 200);

    // Negative control: with a share of 3 the same three calls all run (each stopped at
    // its CPU budget); none is refused, so the 429s above are the share's doing.
    let roomy = spawn_app_with(Options {
        configure: |config| {
            config.max_concurrent_calls = 3;
            config.max_concurrent_calls_per_tenant = 3;
            config.call_wait_ms = 200;
        },
        ..Options::default()
    })
    .await;
    let response = roomy.install(&hostile_package(), None).await;
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    roomy
        .request(Method::POST, &format!("/v1/plugins/{id}/enable"), None)
        .send()
        .await
        .unwrap();
    let calls = (0..3).map(|_| roomy.invoke(&id, "infinite_loop", json!({}), None));
    for response in futures::future::join_all(calls).await {
        assert_ne!(response.status(), 429);
    }
}
