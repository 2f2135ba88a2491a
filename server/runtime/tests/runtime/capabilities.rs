//! Host capabilities: key-value scoping and quota, plugin config, manifest checks at load.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_runtime::{CallContext, CallError, KvScope, MemoryKv, RuntimeConfig, RuntimeError};
use serde_json::{Value, json};

use crate::helpers::{default_config, hostile_bytes, hostile_manifest, load_hostile, runtime};

async fn kv_get(plugin: &cairn_runtime::Plugin, ctx: &CallContext, key: &str) -> Value {
    let outcome = plugin
        .call(ctx, "kv_get", &json!({ "key": key }).to_string())
        .await
        .expect("kv_get runs");
    serde_json::from_str(&outcome.output).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_is_scoped_by_tenant_and_user_and_quota_is_enforced() {
    let kv = Arc::new(MemoryKv::new());
    let rt = runtime(RuntimeConfig {
        kv: kv.clone(),
        ..default_config()
    });
    let plugin = load_hostile(&rt, json!({ "kv_quota_bytes": 100 })).await;
    let alice_a = CallContext::new("tenant-a", "alice");
    let alice_b = CallContext::new("tenant-b", "alice");
    let bob_a = CallContext::new("tenant-a", "bob");

    plugin
        .call(&alice_a, "kv_set", r#"{"key":"secret","value":"from-a"}"#)
        .await
        .expect("set");
    let own = kv_get(&plugin, &alice_a, "secret").await;
    assert_eq!(own, json!({ "value": "from-a", "keys": ["secret"] }));
    // Same user name, other tenant; same tenant, other user: nothing there.
    for other in [&alice_b, &bob_a] {
        assert_eq!(
            kv_get(&plugin, other, "secret").await,
            json!({ "value": null, "keys": [] })
        );
    }
    let scope = KvScope {
        tenant: "tenant-a".into(),
        plugin: "hostile".into(),
        user: "alice".into(),
    };
    assert_eq!(kv.usage(&scope), ("secret".len() + "from-a".len()) as u64);

    // 100 bytes per scope: a 200-byte value is refused and nothing is written.
    let big = json!({ "key": "big", "value": "x".repeat(200) }).to_string();
    let failure = plugin.call(&alice_a, "kv_set", &big).await.unwrap_err();
    assert_eq!(
        failure.error,
        CallError::Tool {
            code: "quota_exceeded".into(),
            message: "kv quota exceeded".into()
        }
    );
    assert_eq!(kv.usage(&scope), 12);
    // The empty key is refused by the host.
    let failure = plugin
        .call(&alice_a, "kv_set", r#"{"key":"","value":"v"}"#)
        .await
        .unwrap_err();
    assert!(matches!(failure.error, CallError::Tool { ref code, .. } if code == "invalid_key"));
}

fn config_declarations() -> Value {
    json!({
        "greeting": { "description": "What to say.", "required": true },
        "color": { "description": "A colour.", "default": "blue" }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_is_read_with_defaults_and_checked_at_load() {
    let rt = runtime(default_config());
    let manifest = hostile_manifest(json!({}), config_declarations());
    let config = BTreeMap::from([("greeting".to_string(), "hi".to_string())]);
    let plugin = rt
        .load(hostile_bytes(), manifest.clone(), config)
        .await
        .expect("loads");
    let ctx = CallContext::new("acme", "alice");
    for (key, expected) in [
        ("greeting", json!("hi")),
        ("color", json!("blue")),
        ("nope", Value::Null),
    ] {
        let outcome = plugin
            .call(&ctx, "config_get", &json!({ "key": key }).to_string())
            .await
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&outcome.output).unwrap(),
            json!({ "value": expected })
        );
    }

    let missing = rt
        .load(hostile_bytes(), manifest.clone(), BTreeMap::new())
        .await
        .expect_err("a required setting is missing");
    assert!(matches!(missing, RuntimeError::Config(_)));
    assert!(
        missing.to_string().contains("\"greeting\" is required"),
        "{missing}"
    );

    let undeclared = BTreeMap::from([
        ("greeting".to_string(), "hi".to_string()),
        ("api_key".to_string(), "k".to_string()),
    ]);
    let err = rt
        .load(hostile_bytes(), manifest, undeclared)
        .await
        .expect_err("an undeclared setting");
    assert!(
        err.to_string().contains("\"api_key\" is not declared"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_that_disagrees_with_describe_is_refused() {
    let rt = runtime(default_config());
    let mut manifest = hostile_manifest(json!({}), json!({}));
    manifest.tools.retain(|t| t.name.as_str() != "panic");
    let err = rt
        .load(hostile_bytes(), manifest, BTreeMap::new())
        .await
        .expect_err("mismatch refused");
    assert!(matches!(err, RuntimeError::ManifestMismatch(_)), "{err:?}");
    assert!(err.to_string().contains("panic"), "{err}");
}
