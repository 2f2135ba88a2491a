//! Outbound HTTP: deny by default, every request and redirect checked, names that
//! resolve to loopback refused, counts and sizes capped, credentials injected by the host.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_runtime::{
    CallError, EgressAuthorizer, EgressDenial, EgressRequest, EgressVerdict, RuntimeConfig,
};
use http::{HeaderName, HeaderValue};
use serde_json::{Value, json};

use crate::helpers::{
    TestServer, alice, contained, default_config, hostile, load_hostile, runtime,
};

fn allow(origins: &[String]) -> Value {
    json!({ "outbound_hosts": origins, "max_http_response_bytes": 1000, "max_outbound_requests": 3 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_not_in_the_allowlist_is_refused() {
    let server = TestServer::start().await;
    let (_rt, plugin) = hostile(allow(&[server.origin()])).await;
    let failure = contained(
        &plugin,
        "fetch",
        json!({ "url": "https://evil.example/x" }),
        false,
    )
    .await;
    assert_eq!(
        failure.error.to_string(),
        format!(
            "egress denied: https://evil.example:443/x is not in the plugin's outbound_hosts [http://{}]",
            server.addr
        )
    );
    assert!(matches!(
        failure.error,
        CallError::EgressDenied(EgressDenial::NotAllowed { .. })
    ));
    assert_eq!(failure.egress.len(), 1);
    assert_eq!(failure.egress[0].url, "https://evil.example:443/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_a_forbidden_host_is_refused() {
    let allowed = TestServer::start().await;
    let forbidden = TestServer::start().await;
    let (_rt, plugin) = hostile(allow(&[allowed.origin()])).await;
    let target = format!("{}/ok", forbidden.origin());
    let url = format!("{}/redirect?to={target}", allowed.origin());
    let failure = contained(&plugin, "fetch", json!({ "url": url }), false).await;

    match &failure.error {
        CallError::EgressDenied(EgressDenial::NotAllowed { url, .. }) => {
            assert_eq!(url, &target);
        }
        other => panic!("expected NotAllowed, got {other:?}"),
    }
    // The first hop was allowed and reached the allowed server; the second never left.
    assert!(matches!(
        failure.egress[0].verdict,
        EgressVerdict::Allowed { .. }
    ));
    assert!(matches!(
        failure.egress[1].verdict,
        EgressVerdict::Denied { .. }
    ));
    assert_eq!(allowed.seen().len(), 1);
    assert_eq!(allowed.seen()[0].path, "/redirect");
    assert!(forbidden.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_name_that_resolves_to_loopback_is_refused() {
    let server = TestServer::start().await;
    let by_name = format!("http://localhost:{}", server.addr.port());
    let (_rt, plugin) = hostile(allow(std::slice::from_ref(&by_name))).await;
    let failure = contained(
        &plugin,
        "fetch",
        json!({ "url": format!("{by_name}/ok") }),
        false,
    )
    .await;
    match &failure.error {
        CallError::EgressDenied(EgressDenial::BlockedAddress {
            host,
            address,
            class,
            ..
        }) => {
            assert_eq!(host, "localhost");
            assert!(address.is_loopback(), "{address}");
            assert_eq!(class, "loopback");
        }
        other => panic!("expected BlockedAddress, got {other:?}"),
    }
    let message = failure.error.to_string();
    assert!(
        message.starts_with("egress denied: localhost resolves to ")
            && message.ends_with("(loopback); name the address explicitly to allow it"),
        "{message}"
    );
    assert!(server.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_requests_than_allowed_are_refused() {
    let server = TestServer::start().await;
    let (_rt, plugin) = hostile(allow(&[server.origin()])).await;
    let url = format!("{}/ok", server.origin());
    let failure = contained(
        &plugin,
        "fetch_many",
        json!({ "url": url, "count": 5 }),
        false,
    )
    .await;
    match &failure.error {
        CallError::EgressDenied(EgressDenial::TooManyRequests { attempt, limit, .. }) => {
            assert_eq!((*attempt, *limit), (4, 3));
        }
        other => panic!("expected TooManyRequests, got {other:?}"),
    }
    assert!(
        failure
            .error
            .to_string()
            .contains("is over the plugin's max_outbound_requests of 3 per call")
    );
    assert_eq!(server.seen().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_bodies_are_capped_declared_or_streamed() {
    let server = TestServer::start().await;
    let (_rt, plugin) = hostile(allow(&[server.origin()])).await;
    for path in ["big", "stream"] {
        let url = format!("{}/{path}?n=5000", server.origin());
        let failure = plugin
            .call(&alice(), "fetch", &json!({ "url": url }).to_string())
            .await
            .unwrap_err();
        match &failure.error {
            CallError::HttpResponseTooLarge { url: u, limit } => {
                assert_eq!(*limit, 1000);
                assert!(u.ends_with(&format!("/{path}?n=5000")), "{u}");
            }
            other => panic!("{path}: expected HttpResponseTooLarge, got {other:?}"),
        }
        assert!(
            failure
                .egress
                .iter()
                .any(|r| r.verdict == EgressVerdict::ResponseTooLarge { limit: 1000 })
        );
    }
    // Under the cap is fine.
    let url = format!("{}/big?n=900", server.origin());
    let outcome = plugin
        .call(&alice(), "fetch", &json!({ "url": url }).to_string())
        .await
        .unwrap();
    let body: Value = serde_json::from_str(&outcome.output).unwrap();
    assert_eq!(body["body"].as_str().unwrap().len(), 900);
}

struct BearerToken;

#[async_trait::async_trait]
impl EgressAuthorizer for BearerToken {
    async fn credentials(
        &self,
        request: &EgressRequest<'_>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        let token = format!("Bearer host-token-for-{}-{}", request.tenant, request.user);
        Ok(vec![(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&token).unwrap(),
        )])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_requests_get_host_credentials_the_guest_cannot_set() {
    let server = TestServer::start().await;
    let rt = runtime(RuntimeConfig {
        authorizer: Arc::new(BearerToken),
        ..default_config()
    });
    let plugin = load_hostile(&rt, allow(&[server.origin()])).await;
    let url = format!("{}/ok", server.origin());

    let outcome = plugin
        .call(&alice(), "fetch", &json!({ "url": url }).to_string())
        .await
        .expect("allowed fetch");
    let body: Value = serde_json::from_str(&outcome.output).unwrap();
    assert_eq!(body["status"], 200);
    assert_eq!(body["body"], "hello");
    match &outcome.egress[..] {
        [record] => match &record.verdict {
            EgressVerdict::Allowed { rule, address } => {
                assert_eq!(rule, &server.origin());
                assert_eq!(address, &server.addr);
            }
            other => panic!("expected Allowed, got {other:?}"),
        },
        other => panic!("expected one record, got {other:?}"),
    }
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers.get("authorization").unwrap(),
        "Bearer host-token-for-acme-alice"
    );

    // The guest may not set Authorization (or Cookie) itself: the header is refused.
    for header in ["authorization", "cookie", "proxy-authorization"] {
        let failure = plugin
            .call(
                &alice(),
                "fetch",
                &json!({ "url": url, "headers": { header: "Bearer guest" } }).to_string(),
            )
            .await
            .unwrap_err();
        match &failure.error {
            CallError::Tool { message, .. } => {
                assert!(
                    message.contains(&format!("header {header} refused: HeaderError::Forbidden")),
                    "{message}"
                );
            }
            other => panic!("expected the guest's own error, got {other:?}"),
        }
    }
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_on_a_slow_upstream_hits_the_wall_clock_limit() {
    let server = TestServer::start().await;
    let mut config = default_config();
    config.ceilings.wall_clock_ms_per_call = 500;
    let rt = runtime(config);
    let plugin = load_hostile(&rt, allow(&[server.origin()])).await;
    let started = Instant::now();
    let url = format!("{}/slow", server.origin());
    let failure = plugin
        .call(&alice(), "fetch", &json!({ "url": url }).to_string())
        .await
        .unwrap_err();
    assert_eq!(
        failure.error,
        CallError::Timeout {
            kind: cairn_runtime::TimeoutKind::WallClock,
            limit: Duration::from_millis(500)
        }
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // The request itself was allowed and recorded before the call was stopped.
    assert!(matches!(
        failure.egress[0].verdict,
        EgressVerdict::Allowed { .. }
    ));
}
