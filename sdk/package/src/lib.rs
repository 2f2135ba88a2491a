//! Plugin packages: the unit a plugin author builds and an administrator installs.
//!
//! A package is an uncompressed tar archive (`<id>-<version>.cairnpkg`) holding exactly
//! three files:
//!
//! | entry               | content                                             |
//! |---------------------|-----------------------------------------------------|
//! | `cairn-plugin.json` | the manifest, as written by the author              |
//! | `plugin.wasm`       | the WebAssembly component                           |
//! | `SHA256`            | `sha256:<hex>` of `plugin.wasm`, one line           |
//!
//! Reading a package is treating hostile input: sizes are capped before anything is
//! buffered, unknown or duplicate entries are refused, the digest must match and the
//! manifest must parse. What an install pins is [`Package::package_digest`], over the
//! manifest *and* the component.
//!
//! This crate is shared by the author's tool (`cairn-plugin build`, which writes packages)
//! and the server (which installs them), so both judge a package by the same rules; it
//! needs neither the runtime nor the server.
//!
//! ```
//! use cairn_package::Package;
//!
//! let manifest = r#"{"id": "demo", "version": "0.1.0", "publisher": "Docs",
//!     "description": "An example.",
//!     "tools": [{"name": "noop", "description": "Does nothing.",
//!                "input_schema": {"type": "object"}, "output_schema": {"type": "object"}}]}"#;
//! let package = Package::new(manifest.to_owned(), b"\0asm...".to_vec())?;
//! let mut bytes = Vec::new();
//! package.write_to(&mut bytes)?;
//! let read = Package::read_from(bytes.as_slice())?;
//! assert_eq!(read.package_digest(), package.package_digest());
//! assert_eq!(read.file_name(), "demo-0.1.0.cairnpkg");
//! # Ok::<(), cairn_package::PackageError>(())
//! ```
#![warn(missing_docs)]

use std::fmt;
use std::io::{Read, Write};

use cairn_manifest::Manifest;
use sha2::{Digest as _, Sha256};

/// File extension of a package.
pub const PACKAGE_EXTENSION: &str = "cairnpkg";
const MANIFEST_ENTRY: &str = "cairn-plugin.json";
const COMPONENT_ENTRY: &str = "plugin.wasm";
const DIGEST_ENTRY: &str = "SHA256";
/// Largest manifest accepted in a package.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;
/// Largest component accepted in a package.
pub const MAX_COMPONENT_BYTES: u64 = 64 * 1024 * 1024;

/// Why a package could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The archive could not be read or written.
    #[error("package archive: {0}")]
    Io(#[from] std::io::Error),
    /// The archive holds something other than the three expected files.
    #[error(
        "package entry `{0}` is not allowed (expected {MANIFEST_ENTRY}, {COMPONENT_ENTRY}, {DIGEST_ENTRY})"
    )]
    UnexpectedEntry(String),
    /// A file appears twice.
    #[error("package entry `{0}` appears twice")]
    DuplicateEntry(&'static str),
    /// A required file is missing.
    #[error("package has no `{0}`")]
    MissingEntry(&'static str),
    /// A file is larger than allowed.
    #[error("package entry `{entry}` is larger than {limit} bytes")]
    TooLarge {
        /// Which entry.
        entry: &'static str,
        /// The cap in bytes.
        limit: u64,
    },
    /// The `SHA256` entry is not `sha256:<64 hex digits>`.
    #[error("package digest `{0}` is not of the form sha256:<64 hex digits>")]
    MalformedDigest(String),
    /// The component does not hash to the recorded digest.
    #[error("component digest mismatch: package says {expected}, component hashes to {actual}")]
    DigestMismatch {
        /// What the package records.
        expected: ComponentDigest,
        /// What the component hashes to.
        actual: ComponentDigest,
    },
    /// The manifest is not valid UTF-8.
    #[error("{MANIFEST_ENTRY} is not valid UTF-8")]
    ManifestEncoding,
    /// The manifest does not parse or validate.
    #[error("{MANIFEST_ENTRY}: {0}")]
    Manifest(#[from] cairn_manifest::ManifestError),
}

/// The SHA-256 digest of a component, spelled `sha256:<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ComponentDigest([u8; 32]);

impl ComponentDigest {
    /// Hashes a component.
    pub fn of(component: &[u8]) -> Self {
        Self(Sha256::digest(component).into())
    }

    /// Parses `sha256:<64 hex digits>`.
    pub fn parse(text: &str) -> Result<Self, PackageError> {
        let malformed = || PackageError::MalformedDigest(text.chars().take(80).collect());
        let hex_part = text.strip_prefix("sha256:").ok_or_else(malformed)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| malformed())?;
        Ok(Self(bytes))
    }

    /// The digest as lowercase hex, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ComponentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for ComponentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A parsed, digest-checked plugin package.
#[derive(Debug, Clone)]
pub struct Package {
    manifest: Manifest,
    manifest_json: String,
    component: Vec<u8>,
    digest: ComponentDigest,
}

impl Package {
    /// Builds a package from a manifest's text and a component's bytes.
    pub fn new(manifest_json: String, component: Vec<u8>) -> Result<Self, PackageError> {
        let manifest = Manifest::from_json_str(&manifest_json)?;
        let digest = ComponentDigest::of(&component);
        Ok(Self {
            manifest,
            manifest_json,
            component,
            digest,
        })
    }

    /// The parsed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest as the author wrote it.
    pub fn manifest_json(&self) -> &str {
        &self.manifest_json
    }

    /// The component's bytes.
    pub fn component(&self) -> &[u8] {
        &self.component
    }

    /// The component's digest.
    pub fn digest(&self) -> ComponentDigest {
        self.digest
    }

    /// The package's digest, over its manifest *and* its component: what an installation
    /// pins and what packages are stored under. Two packages with one component and two
    /// manifests are two packages (the component digest alone would let a repacked copy
    /// pass for the original).
    pub fn package_digest(&self) -> ComponentDigest {
        let mut hasher = Sha256::new();
        hasher.update(b"cairn-package-v1\n");
        hasher.update((self.manifest_json.len() as u64).to_be_bytes());
        hasher.update(self.manifest_json.as_bytes());
        hasher.update(&self.component);
        ComponentDigest(hasher.finalize().into())
    }

    /// The conventional file name, `<id>-<version>.cairnpkg`.
    pub fn file_name(&self) -> String {
        format!(
            "{}-{}.{PACKAGE_EXTENSION}",
            self.manifest.id, self.manifest.version
        )
    }

    /// Writes the package as a tar archive.
    pub fn write_to(&self, writer: impl Write) -> Result<(), PackageError> {
        let mut archive = tar::Builder::new(writer);
        let digest_line = format!("{}\n", self.digest);
        for (name, bytes) in [
            (MANIFEST_ENTRY, self.manifest_json.as_bytes()),
            (COMPONENT_ENTRY, self.component.as_slice()),
            (DIGEST_ENTRY, digest_line.as_bytes()),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            archive.append_data(&mut header, name, bytes)?;
        }
        archive.into_inner()?.flush()?;
        Ok(())
    }

    /// Reads and checks a package archive.
    pub fn read_from(reader: impl Read) -> Result<Self, PackageError> {
        let mut archive = tar::Archive::new(reader);
        let mut manifest: Option<Vec<u8>> = None;
        let mut component: Option<Vec<u8>> = None;
        let mut digest: Option<Vec<u8>> = None;
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.to_string_lossy().into_owned();
            let (slot, name, limit) = match path.as_str() {
                MANIFEST_ENTRY => (&mut manifest, MANIFEST_ENTRY, MAX_MANIFEST_BYTES),
                COMPONENT_ENTRY => (&mut component, COMPONENT_ENTRY, MAX_COMPONENT_BYTES),
                DIGEST_ENTRY => (&mut digest, DIGEST_ENTRY, 128),
                _ => return Err(PackageError::UnexpectedEntry(path)),
            };
            if entry.header().entry_type() != tar::EntryType::Regular {
                return Err(PackageError::UnexpectedEntry(path));
            }
            if slot.is_some() {
                return Err(PackageError::DuplicateEntry(name));
            }
            if entry.size() > limit {
                return Err(PackageError::TooLarge { entry: name, limit });
            }
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            // `take` guards against a header that lies about the size.
            (&mut entry).take(limit + 1).read_to_end(&mut bytes)?;
            if bytes.len() as u64 > limit {
                return Err(PackageError::TooLarge { entry: name, limit });
            }
            *slot = Some(bytes);
        }
        let manifest = manifest.ok_or(PackageError::MissingEntry(MANIFEST_ENTRY))?;
        let component = component.ok_or(PackageError::MissingEntry(COMPONENT_ENTRY))?;
        let digest = digest.ok_or(PackageError::MissingEntry(DIGEST_ENTRY))?;
        let recorded = ComponentDigest::parse(String::from_utf8_lossy(&digest).trim())?;
        let actual = ComponentDigest::of(&component);
        if recorded != actual {
            return Err(PackageError::DigestMismatch {
                expected: recorded,
                actual,
            });
        }
        let manifest_json =
            String::from_utf8(manifest).map_err(|_| PackageError::ManifestEncoding)?;
        Self::new(manifest_json, component)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"{"id": "demo", "version": "0.1.0", "publisher": "Tests",
        "description": "A package used by tests.",
        "tools": [{"name": "noop", "description": "Does nothing.",
                   "input_schema": {"type": "object"}, "output_schema": {"type": "object"}}]}"#;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, bytes) in entries {
            // Raw name bytes: `tar` itself refuses to write hostile paths such as `..`.
            let mut header = tar::Header::new_old();
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            builder.append(&header, *bytes).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn digest_line(component: &[u8]) -> Vec<u8> {
        format!("{}\n", ComponentDigest::of(component)).into_bytes()
    }

    #[test]
    fn a_written_package_reads_back_identically() {
        let package = Package::new(MANIFEST.to_owned(), b"\0asm component".to_vec()).unwrap();
        let mut bytes = Vec::new();
        package.write_to(&mut bytes).unwrap();
        let read = Package::read_from(bytes.as_slice()).unwrap();
        assert_eq!(read.component(), package.component());
        assert_eq!(read.manifest_json(), MANIFEST);
        assert_eq!(read.digest(), package.digest());
        assert_eq!(read.file_name(), "demo-0.1.0.cairnpkg");
    }

    #[test]
    fn a_swapped_component_is_refused_by_digest() {
        let bytes = archive(&[
            (MANIFEST_ENTRY, MANIFEST.as_bytes()),
            (COMPONENT_ENTRY, b"evil"),
            (DIGEST_ENTRY, &digest_line(b"good")),
        ]);
        let error = Package::read_from(bytes.as_slice()).unwrap_err();
        assert!(
            matches!(error, PackageError::DigestMismatch { .. }),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains(&ComponentDigest::of(b"evil").to_string())
        );
    }

    #[test]
    fn extra_missing_and_duplicate_entries_are_refused() {
        let digest = digest_line(b"c");
        let extra = archive(&[
            (MANIFEST_ENTRY, MANIFEST.as_bytes()),
            (COMPONENT_ENTRY, b"c"),
            (DIGEST_ENTRY, &digest),
            ("../../etc/passwd", b"x"),
        ]);
        let error = Package::read_from(extra.as_slice()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "package entry `../../etc/passwd` is not allowed (expected cairn-plugin.json, plugin.wasm, SHA256)"
        );

        let missing = archive(&[
            (MANIFEST_ENTRY, MANIFEST.as_bytes()),
            (DIGEST_ENTRY, &digest),
        ]);
        let error = Package::read_from(missing.as_slice()).unwrap_err();
        assert_eq!(error.to_string(), "package has no `plugin.wasm`");

        let twice = archive(&[
            (MANIFEST_ENTRY, MANIFEST.as_bytes()),
            (COMPONENT_ENTRY, b"c"),
            (COMPONENT_ENTRY, b"c"),
            (DIGEST_ENTRY, &digest),
        ]);
        let error = Package::read_from(twice.as_slice()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "package entry `plugin.wasm` appears twice"
        );
    }

    #[test]
    fn malformed_digest_and_bad_manifest_are_refused() {
        let bytes = archive(&[
            (MANIFEST_ENTRY, MANIFEST.as_bytes()),
            (COMPONENT_ENTRY, b"c"),
            (DIGEST_ENTRY, b"md5:abc"),
        ]);
        let error = Package::read_from(bytes.as_slice()).unwrap_err();
        assert!(matches!(error, PackageError::MalformedDigest(_)), "{error}");

        let bytes = archive(&[
            (MANIFEST_ENTRY, br#"{"id": "demo"}"#),
            (COMPONENT_ENTRY, b"c"),
            (DIGEST_ENTRY, &digest_line(b"c")),
        ]);
        let error = Package::read_from(bytes.as_slice()).unwrap_err();
        assert!(matches!(error, PackageError::Manifest(_)), "{error}");
    }

    #[test]
    fn an_oversized_manifest_is_refused_before_it_is_buffered() {
        let big = vec![b' '; (MAX_MANIFEST_BYTES + 1) as usize];
        let bytes = archive(&[(MANIFEST_ENTRY, &big)]);
        let error = Package::read_from(bytes.as_slice()).unwrap_err();
        assert!(
            matches!(
                error,
                PackageError::TooLarge {
                    entry: MANIFEST_ENTRY,
                    ..
                }
            ),
            "{error}"
        );
    }

    /// Property tests: the reader takes hostile bytes, so whatever it is given it returns
    /// a package or an error, never panics, and what it accepts is self-consistent.
    /// Bounded (256 cases each) so CI runs them in seconds; `PROPTEST_CASES` raises it.
    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 256,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        fn valid(component: &[u8]) -> Vec<u8> {
            let package = Package::new(MANIFEST.to_owned(), component.to_vec()).unwrap();
            let mut bytes = Vec::new();
            package.write_to(&mut bytes).unwrap();
            bytes
        }

        /// An accepted package's component hashes to its digest and its manifest parses.
        fn consistent(bytes: &[u8]) -> Result<(), TestCaseError> {
            if let Ok(p) = Package::read_from(bytes) {
                prop_assert_eq!(p.digest(), ComponentDigest::of(p.component()));
                prop_assert!(Manifest::from_json_str(p.manifest_json()).is_ok());
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn any_component_round_trips(component in prop::collection::vec(any::<u8>(), 0..4096)) {
                let read = Package::read_from(valid(&component).as_slice()).unwrap();
                prop_assert_eq!(read.component(), component.as_slice());
                prop_assert_eq!(read.manifest_json(), MANIFEST);
            }

            #[test]
            fn arbitrary_bytes_are_refused_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..3072)) {
                consistent(&bytes)?;
            }

            #[test]
            fn corrupted_packages_are_refused_or_consistent(
                component in prop::collection::vec(any::<u8>(), 0..600),
                edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            ) {
                let mut bytes = valid(&component);
                for (at, byte) in edits {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
                consistent(&bytes)?;
            }

            #[test]
            fn truncated_packages_are_refused(
                component in prop::collection::vec(any::<u8>(), 1..600),
                cut in any::<prop::sample::Index>(),
            ) {
                let bytes = valid(&component);
                // Cut before the last entry's data ends (after it come padding to a
                // 512-byte block and two zero blocks, which a reader may do without).
                let end = bytes.len() - 1024 - (512 - digest_line(&component).len());
                let cut = cut.index(end);
                prop_assert!(Package::read_from(&bytes[..cut]).is_err());
            }

            #[test]
            fn entries_in_any_order_and_number_are_judged_cleanly(
                picks in prop::collection::vec(0usize..5, 0..6),
            ) {
                let component = b"\0asm";
                let digest = digest_line(component);
                let choices: [(&str, &[u8]); 5] = [
                    (MANIFEST_ENTRY, MANIFEST.as_bytes()),
                    (COMPONENT_ENTRY, component),
                    (DIGEST_ENTRY, &digest),
                    ("../plugin.wasm", component),
                    ("SHA256 ", &digest),
                ];
                let entries: Vec<_> = picks.iter().map(|&i| choices[i]).collect();
                let result = Package::read_from(archive(&entries).as_slice());
                let mut sorted = picks.clone();
                sorted.sort_unstable();
                // Accepted only for exactly the three expected entries, once each.
                prop_assert_eq!(result.is_ok(), sorted == [0, 1, 2], "{:?}", picks);
            }
        }
    }
}
