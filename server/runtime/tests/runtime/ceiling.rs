//! Attacks on the host's shared resources and network from a tenant's own manifest: the
//! operator's egress ceiling holds whatever `outbound_hosts` says, a call's tool error
//! cannot be made huge, and one tenant cannot take every call slot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_runtime::{
    CallContext, CallError, CallFailure, CallOutcome, CeilingRule, EgressCeiling, EgressDenial,
    EgressVerdict, HostCeilings, Plugin, RuntimeConfig, SlotScope,
};
use serde_json::json;

use crate::helpers::{TestServer, alice, default_config, load_hostile, runtime, test_ceilings};

async fn fetch(plugin: &Plugin, url: &str) -> Result<CallOutcome, CallFailure> {
    plugin
        .call(&alice(), "fetch", &json!({ "url": url }).to_string())
        .await
}

fn with_ceiling(ceiling: EgressCeiling) -> RuntimeConfig {
    RuntimeConfig {
        egress_ceiling: Arc::new(ceiling),
        ..default_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ceiling_refuses_an_address_the_manifest_names_and_nothing_is_sent() {
    let server = TestServer::start().await;
    let rt = runtime(with_ceiling(EgressCeiling::new()));
    let plugin = load_hostile(&rt, json!({ "outbound_hosts": [server.origin()] })).await;
    let url = format!("{}/ok", server.origin());
    let failure = fetch(&plugin, &url).await.unwrap_err();
    match &failure.error {
        CallError::EgressDenied(EgressDenial::Ceiling {
            rule: CeilingRule::DeniedRange { range, .. },
            address,
            ..
        }) => {
            assert_eq!(range, "127.0.0.0/8");
            assert_eq!(address, &Some(server.addr.ip()));
        }
        other => panic!("expected a ceiling denial, got {other:?}"),
    }
    assert!(
        failure.error.to_string().contains("egress.denied_ranges"),
        "{}",
        failure.error
    );
    assert!(server.seen().is_empty(), "the request reached the server");

    // Negative control: without the ceiling the same manifest reaches the address (the
    // attack works, so the refusal above is the ceiling's doing).
    let rt = runtime(with_ceiling(EgressCeiling::unrestricted()));
    let plugin = load_hostile(&rt, json!({ "outbound_hosts": [server.origin()] })).await;
    fetch(&plugin, &url)
        .await
        .expect("reached without a ceiling");
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_nat64_and_6to4_literals_are_refused() {
    let rt = runtime(with_ceiling(EgressCeiling::new()));
    let targets = [
        "http://169.254.169.254",
        "http://[64:ff9b::a9fe:a9fe]",
        "http://[64:ff9b:1::a9fe:a9fe]",
        "http://[2002:a9fe:a9fe::1]",
        "http://192.0.0.170",
        "http://198.18.0.1",
        "http://[fd00:ec2::254]",
    ];
    let plugin = load_hostile(&rt, json!({ "outbound_hosts": targets })).await;
    for target in targets {
        let url = format!("{target}/latest/meta-data/");
        let failure = fetch(&plugin, &url).await.unwrap_err();
        assert!(
            matches!(
                failure.error,
                CallError::EgressDenied(EgressDenial::Ceiling { .. })
            ),
            "{target}: {}",
            failure.error
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permitted_range_is_reached_and_the_record_holds_the_connected_address() {
    let server = TestServer::start().await;
    let ceiling = EgressCeiling::new().with_permitted(["127.0.0.1/32".parse().unwrap()]);
    let rt = runtime(with_ceiling(ceiling.clone()));
    let plugin = load_hostile(&rt, json!({ "outbound_hosts": [server.origin()] })).await;
    let url = format!("{}/ok?q=1&api_key=sk-live-123", server.origin());
    let outcome = fetch(&plugin, &url).await.expect("permitted");
    match &outcome.egress[..] {
        [record] => {
            assert_eq!(
                record.verdict,
                EgressVerdict::Allowed {
                    rule: server.origin(),
                    address: server.addr
                }
            );
            // The key went to the server but not into the record.
            assert!(
                record.url.ends_with("/ok?q=1&api_key=REDACTED"),
                "{}",
                record.url
            );
        }
        other => panic!("expected one record, got {other:?}"),
    }
    assert_eq!(server.seen().len(), 1);

    // Cairn's own address stays out of reach even inside a permitted range.
    let rt = runtime(with_ceiling(ceiling.with_own_address(server.addr)));
    let plugin = load_hostile(&rt, json!({ "outbound_hosts": [server.origin()] })).await;
    let failure = fetch(&plugin, &url).await.unwrap_err();
    assert!(
        matches!(
            failure.error,
            CallError::EgressDenied(EgressDenial::Ceiling {
                rule: CeilingRule::OwnAddress,
                ..
            })
        ),
        "{}",
        failure.error
    );
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_allow_list_is_checked_on_every_request() {
    let server = TestServer::start().await;
    let ceiling = EgressCeiling::unrestricted()
        .with_allowed_origins(Some(vec!["https://*.example.com".parse().unwrap()]));
    let rt = runtime(with_ceiling(ceiling));
    // Loaded directly (no installer ran check_manifest): the request is still refused.
    let plugin = load_hostile(&rt, json!({ "outbound_hosts": [server.origin()] })).await;
    let failure = fetch(&plugin, &format!("{}/ok", server.origin()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            failure.error,
            CallError::EgressDenied(EgressDenial::Ceiling {
                rule: CeilingRule::NotAllowedOrigin { .. },
                ..
            })
        ),
        "{}",
        failure.error
    );
    assert!(server.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_tool_error_message_is_cut_to_the_host_limit() {
    let rt = runtime(default_config());
    let plugin = load_hostile(&rt, json!({})).await;
    // Not a URL: the guest fails before any request and echoes it into its error.
    let url = "x".repeat(200_000);
    let failure = fetch(&plugin, &url).await.unwrap_err();
    match &failure.error {
        CallError::Tool { code, message } => {
            assert_eq!(code, "upstream_error");
            assert!(message.len() < 4096 + 100, "{} bytes", message.len());
            assert!(message.contains("truncated by the host"), "{message}");
        }
        other => panic!("expected a tool error, got {other:?}"),
    }

    // Negative control: with the cap lifted the whole message comes through.
    let rt = runtime(RuntimeConfig {
        ceilings: HostCeilings {
            max_tool_error_bytes: usize::MAX,
            ..test_ceilings()
        },
        ..default_config()
    });
    let plugin = load_hostile(&rt, json!({})).await;
    match fetch(&plugin, &url).await.unwrap_err().error {
        CallError::Tool { message, .. } => assert!(message.len() > 200_000, "{}", message.len()),
        other => panic!("expected a tool error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_tenant_gets_busy_while_another_tenant_is_served() {
    let rt = runtime(RuntimeConfig {
        max_concurrent_calls: 4,
        max_concurrent_calls_per_tenant: 2,
        call_wait: Duration::from_millis(200),
        ..default_config()
    });
    let plugin = load_hostile(&rt, json!({ "cpu_ms_per_call": 1500 })).await;
    // Tenant "flood" fills its share with calls that spin for their CPU budget.
    let mut flood = Vec::new();
    for _ in 0..6 {
        let plugin = plugin.clone();
        flood.push(tokio::spawn(async move {
            plugin
                .call(&CallContext::new("flood", "mallory"), "infinite_loop", "{}")
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Another tenant is served at once.
    let started = Instant::now();
    plugin
        .call(&CallContext::new("acme", "bob"), "echo", "{}")
        .await
        .expect("the other tenant is served");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let mut busy = 0;
    for call in flood {
        match call.await.unwrap() {
            Err(failure) => match failure.error {
                CallError::Busy {
                    scope: SlotScope::Tenant,
                    limit: 2,
                    retry_after,
                    ..
                } => {
                    assert_eq!(retry_after, Duration::from_secs(1));
                    busy += 1;
                }
                CallError::Timeout { .. } => {}
                other => panic!("unexpected {other:?}"),
            },
            Ok(outcome) => panic!("infinite_loop returned {}", outcome.output),
        }
    }
    assert_eq!(
        busy, 4,
        "only the tenant's share may run; the rest wait and are refused"
    );

    // Negative control: with a tenant's share as large as the host's pool, the flood
    // takes every slot and the other tenant is refused after its wait.
    let rt = runtime(RuntimeConfig {
        max_concurrent_calls: 4,
        max_concurrent_calls_per_tenant: 4,
        call_wait: Duration::from_millis(200),
        ..default_config()
    });
    let plugin = load_hostile(&rt, json!({ "cpu_ms_per_call": 1500 })).await;
    let flood: Vec<_> = (0..4)
        .map(|_| {
            let plugin = plugin.clone();
            tokio::spawn(async move {
                plugin
                    .call(&CallContext::new("flood", "mallory"), "infinite_loop", "{}")
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let failure = plugin
        .call(&CallContext::new("acme", "bob"), "echo", "{}")
        .await
        .expect_err("without a per-tenant share the other tenant waits and is refused");
    assert!(
        matches!(
            failure.error,
            CallError::Busy {
                scope: SlotScope::Host,
                ..
            }
        ),
        "{:?}",
        failure.error
    );
    for call in flood {
        let _ = call.await.unwrap();
    }
}
