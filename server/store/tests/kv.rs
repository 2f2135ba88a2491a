//! `SqlKv` and the `plugin-kv.json` import: the same suite against PostgreSQL and SQLite.

#[macro_use]
mod common;

use std::sync::Arc;

use cairn_runtime::{JsonFileKv, KvError, KvScope, KvStore};
use cairn_store::{ImportError, SqlKv, import_json_kv};
use common::TestDb;

fn scope(tenant: &str, plugin: &str, user: &str) -> KvScope {
    KvScope {
        tenant: tenant.into(),
        plugin: plugin.into(),
        user: user.into(),
    }
}

/// What the quota should count for `scope`: keys plus values, recomputed from the rows.
async fn actual_usage(kv: &SqlKv, scope: &KvScope) -> u64 {
    let mut total = 0;
    for key in kv.list_keys(scope, "").await.unwrap() {
        let value = kv
            .get(scope, &key)
            .await
            .unwrap()
            .expect("listed key has a value");
        total += (key.len() + value.len()) as u64;
    }
    total
}

async fn values_round_trip_and_scopes_stay_apart(t: TestDb) {
    let kv = SqlKv::new(t.db());
    let a = scope("acme", "tasks", "alice");
    let other_user = scope("acme", "tasks", "bob");
    let other_plugin = scope("acme", "notes", "alice");
    let other_tenant = scope("globex", "tasks", "alice");

    assert_eq!(kv.get(&a, "k").await.unwrap(), None);
    kv.set(&a, "k", b"\x00\xffone".to_vec(), 1000)
        .await
        .unwrap();
    assert_eq!(
        kv.get(&a, "k").await.unwrap(),
        Some(b"\x00\xffone".to_vec())
    );
    kv.set(&a, "k", b"two".to_vec(), 1000).await.unwrap();
    assert_eq!(kv.get(&a, "k").await.unwrap(), Some(b"two".to_vec()));
    kv.set(&a, "empty", Vec::new(), 1000).await.unwrap();
    assert_eq!(kv.get(&a, "empty").await.unwrap(), Some(Vec::new()));
    for s in [&other_user, &other_plugin, &other_tenant] {
        assert_eq!(
            kv.get(s, "k").await.unwrap(),
            None,
            "{s:?} sees alice's key"
        );
        assert!(kv.list_keys(s, "").await.unwrap().is_empty());
        kv.delete(s, "k").await.unwrap();
    }
    assert_eq!(kv.get(&a, "k").await.unwrap(), Some(b"two".to_vec()));

    kv.delete(&a, "k").await.unwrap();
    assert_eq!(kv.get(&a, "k").await.unwrap(), None);
    kv.delete(&a, "k").await.unwrap(); // missing: not an error
    assert_eq!(kv.usage(&a).await.unwrap(), "empty".len() as u64);
}

async fn listing_is_by_prefix_in_byte_order(t: TestDb) {
    let kv = SqlKv::new(t.db());
    let s = scope("acme", "tasks", "alice");
    // Byte order, not a locale's: "B" < "a" < "b" < "é" (0xC3 0xA9) < "\u{10FFFF}".
    for key in [
        "task:b",
        "task:a",
        "task:B",
        "task:é",
        "task:\u{10FFFF}x",
        "task",
        "tasl",
        "note:1",
        "\u{10FFFF}",
        "\u{10FFFF}\u{10FFFF}",
    ] {
        kv.set(&s, key, b"v".to_vec(), 10_000).await.unwrap();
    }
    assert_eq!(
        kv.list_keys(&s, "task:").await.unwrap(),
        ["task:B", "task:a", "task:b", "task:é", "task:\u{10FFFF}x"]
    );
    assert_eq!(
        kv.list_keys(&s, "task").await.unwrap(),
        [
            "task",
            "task:B",
            "task:a",
            "task:b",
            "task:é",
            "task:\u{10FFFF}x"
        ]
    );
    assert_eq!(
        kv.list_keys(&s, "\u{10FFFF}").await.unwrap(),
        ["\u{10FFFF}", "\u{10FFFF}\u{10FFFF}"]
    );
    assert_eq!(kv.list_keys(&s, "zzz").await.unwrap(), Vec::<String>::new());
    // A LIKE wildcard in the prefix is a plain character.
    assert_eq!(
        kv.list_keys(&s, "task%").await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(kv.list_keys(&s, "").await.unwrap().len(), 10);
}

async fn the_quota_counts_keys_and_values_and_overwrites_free_the_old_value(t: TestDb) {
    let kv = SqlKv::new(t.db());
    let s = scope("acme", "tasks", "alice");
    kv.set(&s, "a", vec![1; 49], 100).await.unwrap(); // 50
    kv.set(&s, "b", vec![2; 39], 100).await.unwrap(); // 90
    assert_eq!(
        kv.set(&s, "c", vec![3; 10], 100).await,
        Err(KvError::QuotaExceeded { quota: 100 })
    );
    assert_eq!(
        kv.get(&s, "c").await.unwrap(),
        None,
        "a refused write left a row"
    );
    assert_eq!(kv.usage(&s).await.unwrap(), 90);
    // Growing a value counts only the growth; exactly at the quota is allowed.
    kv.set(&s, "a", vec![1; 59], 100).await.unwrap(); // 100
    assert_eq!(kv.usage(&s).await.unwrap(), 100);
    assert_eq!(
        kv.set(&s, "a", vec![1; 60], 100).await,
        Err(KvError::QuotaExceeded { quota: 100 })
    );
    // Shrinking and deleting give bytes back.
    kv.set(&s, "a", vec![1; 9], 100).await.unwrap(); // 50
    kv.delete(&s, "b").await.unwrap(); // 10
    assert_eq!(kv.usage(&s).await.unwrap(), 10);
    kv.set(&s, "c", vec![3; 89], 100).await.unwrap(); // 100
    assert_eq!(kv.usage(&s).await.unwrap(), actual_usage(&kv, &s).await);
    // Another scope has its own quota.
    kv.set(&scope("acme", "tasks", "bob"), "a", vec![1; 99], 100)
        .await
        .unwrap();
}

async fn bad_keys_and_oversized_values_are_refused(t: TestDb) {
    let kv = SqlKv::new(t.db()).with_max_value_bytes(16);
    let s = scope("acme", "tasks", "alice");
    assert!(matches!(
        kv.set(&s, "", b"v".to_vec(), 1000).await,
        Err(KvError::InvalidKey(_))
    ));
    let long = "k".repeat(cairn_runtime::MAX_KEY_BYTES + 1);
    assert!(matches!(
        kv.set(&s, &long, b"v".to_vec(), 1000).await,
        Err(KvError::InvalidKey(_))
    ));
    assert!(matches!(
        kv.get(&s, &long).await,
        Err(KvError::InvalidKey(_))
    ));
    let longest = "é".repeat(cairn_runtime::MAX_KEY_BYTES / 2);
    kv.set(&s, &longest, b"v".to_vec(), 1000).await.unwrap();
    kv.set(&s, "k", vec![0; 16], 1000).await.unwrap();
    assert_eq!(
        kv.set(&s, "k", vec![0; 17], u64::MAX).await,
        Err(KvError::ValueTooLarge { bytes: 17, max: 16 })
    );
    assert_eq!(kv.get(&s, "k").await.unwrap(), Some(vec![0; 16]));
}

/// 16 writers race to fill one scope: exactly as many entries as fit are stored, none
/// more, and the usage row agrees with the rows.
async fn concurrent_writers_cannot_overshoot_the_quota(t: TestDb) {
    let kv = Arc::new(SqlKv::new(t.db()));
    let s = scope("acme", "tasks", "alice");
    const ENTRY: usize = 100; // "w00-k0" (6 bytes) + 94 bytes of value
    const FITS: usize = 25;
    let quota = (ENTRY * FITS) as u64;
    let mut writers = Vec::new();
    for w in 0..16 {
        let (kv, s) = (Arc::clone(&kv), s.clone());
        writers.push(tokio::spawn(async move {
            let mut stored = 0;
            for k in 0..8 {
                match kv
                    .set(&s, &format!("w{w:02}-k{k}"), vec![7; ENTRY - 6], quota)
                    .await
                {
                    Ok(()) => stored += 1,
                    Err(KvError::QuotaExceeded { .. }) => {}
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            stored
        }));
    }
    let mut stored = 0;
    for w in writers {
        stored += w.await.unwrap();
    }
    assert_eq!(
        stored, FITS,
        "the writers together stored more or less than fits"
    );
    assert_eq!(kv.list_keys(&s, "").await.unwrap().len(), FITS);
    assert_eq!(kv.usage(&s).await.unwrap(), quota);
    assert_eq!(actual_usage(&kv, &s).await, quota);

    // Overwrites of the same keys with different sizes, concurrently: the usage row must
    // still equal what the rows hold.
    let t2 = scope("acme", "tasks", "bob");
    let mut writers = Vec::new();
    for w in 0..16 {
        let (kv, t2) = (Arc::clone(&kv), t2.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..10 {
                let key = format!("shared{}", (w + i) % 3);
                kv.set(&t2, &key, vec![1; (w * 7 + i * 13) % 200], 1 << 20)
                    .await
                    .unwrap();
                if i % 4 == 3 {
                    kv.delete(&t2, &key).await.unwrap();
                }
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(kv.usage(&t2).await.unwrap(), actual_usage(&kv, &t2).await);
}

/// The file `JsonFileKv` writes is imported once: values, scopes and usage arrive, the
/// file is renamed, and importing the same file again (a rename that failed) changes
/// nothing, not even a value a plugin changed since.
async fn a_data_dirs_json_file_is_imported_once(t: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin-kv.json");
    let a = scope("acme", "tasks", "alice");
    let b = scope("globex", "tasks", "bob");
    {
        let file = JsonFileKv::open(&path).unwrap();
        file.set(&a, "k1", b"\x00\xffone".to_vec(), 1000)
            .await
            .unwrap();
        file.set(&a, "k2", b"two".to_vec(), 1000).await.unwrap();
        file.set(&b, "k1", b"bee".to_vec(), 1000).await.unwrap();
    }
    let copy = std::fs::read(&path).unwrap();
    let db = t.db();
    let kv = SqlKv::new(db.clone());
    kv.set(&a, "k2", b"newer".to_vec(), 1000).await.unwrap(); // already in the database

    let report = import_json_kv(&db, &path).await.unwrap();
    assert_eq!((report.scopes, report.keys, report.inserted), (2, 3, 2));
    assert!(!report.already_imported);
    assert!(!path.exists());
    assert_eq!(
        report.renamed_to.as_deref(),
        Some(dir.path().join("plugin-kv.json.imported").as_path())
    );
    assert_eq!(
        kv.get(&a, "k1").await.unwrap(),
        Some(b"\x00\xffone".to_vec())
    );
    assert_eq!(kv.get(&a, "k2").await.unwrap(), Some(b"newer".to_vec()));
    assert_eq!(kv.get(&b, "k1").await.unwrap(), Some(b"bee".to_vec()));
    assert_eq!(kv.usage(&a).await.unwrap(), actual_usage(&kv, &a).await);
    assert_eq!(kv.usage(&b).await.unwrap(), 5);

    // The next start: nothing to import.
    assert_eq!(
        import_json_kv(&db, &path).await.unwrap(),
        cairn_store::ImportReport::default()
    );
    // The same file again (say the rename had failed): recognised, nothing written.
    kv.delete(&b, "k1").await.unwrap();
    std::fs::write(&path, &copy).unwrap();
    let again = import_json_kv(&db, &path).await.unwrap();
    assert!(again.already_imported);
    assert_eq!(again.inserted, 0);
    assert_eq!(
        kv.get(&b, "k1").await.unwrap(),
        None,
        "a deleted key came back"
    );
    assert!(!path.exists());
}

async fn a_malformed_file_is_refused_and_left_in_place(t: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin-kv.json");
    let db = t.db();
    std::fs::write(
        &path,
        r#"[{"tenant":"acme","plugin":"tasks","user":"alice","entries":{"ok":"00","bad":"zz"}}]"#,
    )
    .unwrap();
    assert!(matches!(
        import_json_kv(&db, &path).await,
        Err(ImportError::Format { .. })
    ));
    assert!(path.exists());
    let kv = SqlKv::new(db.clone());
    assert_eq!(
        kv.get(&scope("acme", "tasks", "alice"), "ok")
            .await
            .unwrap(),
        None
    );
    std::fs::write(&path, "{}").unwrap();
    assert!(matches!(
        import_json_kv(&db, &path).await,
        Err(ImportError::Format { .. })
    ));
}

both_stores!(
    values_round_trip_and_scopes_stay_apart,
    listing_is_by_prefix_in_byte_order,
    the_quota_counts_keys_and_values_and_overwrites_free_the_old_value,
    bad_keys_and_oversized_values_are_refused,
    concurrent_writers_cannot_overshoot_the_quota,
    a_data_dirs_json_file_is_imported_once,
    a_malformed_file_is_refused_and_left_in_place,
);
