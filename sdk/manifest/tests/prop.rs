//! Property tests of the manifest parser, which reads what a tenant admin uploads:
//! whatever the bytes, parsing returns a manifest or an error (never a panic or a hang),
//! and a manifest it accepts survives its own serialisation unchanged.
//!
//! Bounded so CI runs it in seconds: `PROPTEST_CASES` raises the count for a longer hunt.

use cairn_manifest::Manifest;
use proptest::prelude::*;
use serde_json::{Value, json};

/// The golden `full.json`: every field in use, the seed the mutations start from.
const FULL: &str = include_str!("golden/valid/full.json");

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        // Strings that look like what the manifest's fields hold.
        prop::sample::select(vec![
            "https://*.example.com",
            "http://169.254.169.254",
            "https://host:99999",
            "0.1.0",
            "tasks",
            "object",
            "../../etc/passwd",
            "",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every path to a value inside `v` (object keys and array indexes).
fn paths(v: &Value, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let mut p = prefix.clone();
                p.push(k.clone());
                paths(child, p, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let mut p = prefix.clone();
                p.push(i.to_string());
                paths(child, p, out);
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(v, |v, k| match v {
        Value::Array(items) => &mut items[k.parse::<usize>().unwrap()],
        other => &mut other[k.as_str()],
    })
}

/// Accepted manifests serialise to JSON that parses back to the same manifest.
fn check_accepted(text: &str) -> Result<(), TestCaseError> {
    if let Ok(manifest) = Manifest::from_json_str(text) {
        let again = serde_json::to_string(&manifest).unwrap();
        let reparsed = Manifest::from_json_str(&again);
        prop_assert!(reparsed.is_ok(), "{again}: {reparsed:?}");
        prop_assert_eq!(reparsed.unwrap(), manifest);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        let _ = Manifest::from_json_str(&text);
    }

    #[test]
    fn arbitrary_bytes_as_utf8_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = Manifest::from_json_str(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn any_field_replaced_by_any_value_is_accepted_or_refused_cleanly(
        pick in any::<prop::sample::Index>(),
        replacement in json_value(),
    ) {
        let mut manifest: Value = serde_json::from_str(FULL).unwrap();
        let mut all = Vec::new();
        paths(&manifest, Vec::new(), &mut all);
        let path = pick.get(&all).clone();
        *at(&mut manifest, &path) = replacement;
        check_accepted(&manifest.to_string())?;
    }

    #[test]
    fn any_field_removed_or_added_is_accepted_or_refused_cleanly(
        pick in any::<prop::sample::Index>(),
        key in ".{0,12}",
        value in json_value(),
        remove in any::<bool>(),
    ) {
        let mut manifest: Value = serde_json::from_str(FULL).unwrap();
        let mut all = Vec::new();
        paths(&manifest, Vec::new(), &mut all);
        let path = pick.get(&all).clone();
        if let Value::Object(map) = at(&mut manifest, &path) {
            if remove {
                let first = map.keys().next().cloned();
                if let Some(k) = first {
                    map.remove(&k);
                }
            } else {
                map.insert(key, value);
            }
        }
        check_accepted(&manifest.to_string())?;
    }

    #[test]
    fn truncated_manifests_are_refused_cleanly(cut in 0usize..FULL.trim_end().len()) {
        let text = FULL.get(..cut).unwrap_or("");
        prop_assert!(Manifest::from_json_str(text).is_err());
    }
}

#[test]
fn the_seed_is_valid() {
    check_accepted(FULL).unwrap();
    assert!(Manifest::from_json_str(FULL).is_ok());
}
