//! Golden tests: every manifest under `tests/golden/valid` parses to exactly its
//! `*.expected.json` (defaults filled in, canonical spellings), and every manifest under
//! `tests/golden/invalid` fails with exactly the message in its `*.expected.txt`.
//!
//! `CAIRN_BLESS=1 cargo test -p cairn-manifest --test golden` rewrites the expectations;
//! read every changed message before committing it.

use std::fs;
use std::path::{Path, PathBuf};

use cairn_manifest::Manifest;

fn golden_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(kind)
}

fn bless() -> bool {
    std::env::var_os("CAIRN_BLESS").is_some_and(|v| v == "1")
}

/// The manifests in a golden folder: `*.json` that are not expectations.
fn cases(kind: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(golden_dir(kind))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.ends_with(".json") && !name.ends_with(".expected.json")
        })
        .collect();
    out.sort();
    out
}

fn expectation(case: &Path, ext: &str) -> PathBuf {
    case.with_extension(ext)
}

/// Compares or, when blessing, rewrites; returns a failure description.
fn check(path: &Path, actual: &str) -> Option<String> {
    if bless() {
        fs::write(path, actual).unwrap();
        return None;
    }
    match fs::read_to_string(path) {
        Ok(expected) if expected == actual => None,
        Ok(expected) => Some(format!(
            "{}:\n  expected: {expected}\n  actual:   {actual}",
            path.display()
        )),
        Err(_) => Some(format!(
            "{} is missing; run with CAIRN_BLESS=1",
            path.display()
        )),
    }
}

#[test]
fn valid_manifests() {
    let cases = cases("valid");
    assert!(
        cases.len() >= 4,
        "expected at least 4 valid golden manifests"
    );
    let mut failures = Vec::new();
    for case in &cases {
        let manifest = match Manifest::from_path(case) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{}: rejected: {e}", case.display()));
                continue;
            }
        };
        let json = serde_json::to_string_pretty(&manifest).unwrap() + "\n";
        // What we write must read back as the same manifest.
        let again = Manifest::from_json_str(&json).unwrap_or_else(|e| {
            panic!("{}: reserialised manifest is rejected: {e}", case.display())
        });
        assert_eq!(again, manifest, "{}: round trip", case.display());
        failures.extend(check(&expectation(case, "expected.json"), &json));
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn invalid_manifests() {
    let cases = cases("invalid");
    assert!(
        cases.len() >= 14,
        "expected at least 14 invalid golden manifests"
    );
    let mut failures = Vec::new();
    for case in &cases {
        match Manifest::from_path(case) {
            Ok(_) => failures.push(format!(
                "{}: accepted, but should be rejected",
                case.display()
            )),
            Err(e) => failures.extend(check(&expectation(case, "expected.txt"), &format!("{e}\n"))),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_expectation_has_a_manifest() {
    for kind in ["valid", "invalid"] {
        for entry in fs::read_dir(golden_dir(kind)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if let Some(stem) = name
                .strip_suffix(".expected.json")
                .or_else(|| name.strip_suffix(".expected.txt"))
            {
                let case = path.with_file_name(format!("{stem}.json"));
                assert!(
                    case.exists(),
                    "{} has no manifest {}",
                    path.display(),
                    case.display()
                );
            }
        }
    }
}
