//! Signed checkpoints: a tenant tree's size, root hash and time in the C2SP
//! tlog-checkpoint format (<https://c2sp.org/tlog-checkpoint>), signed as a C2SP signed note
//! (<https://c2sp.org/signed-note>) with an Ed25519 key held outside the database.
//!
//! ```text
//! cairn.example/audit/acme        <- origin: the deployment's key name, then the tenant
//! 42                              <- tree size (seals)
//! 0f3v…=                          <- root hash, base64
//! time 2026-12-02T10:00:00Z       <- extension line: when it was published
//!
//! — cairn.example/audit AbCd…=    <- Ed25519 signature, key name and id
//! ```
//!
//! Keys are signed-note keys (`PRIVATE+KEY+<name>+<id>+<base64>` and `<name>+<id>+<base64>`);
//! a rotation is a new key (a new id) whose verifier key is given to auditors beside the
//! old one, which keeps verifying the checkpoints it signed.

use chrono::{DateTime, SecondsFormat, Utc};
use signed_note::{Note, Signer, StandardSigner, StandardVerifier, VerifierList};
use tlog_tiles::Checkpoint;

use crate::canonical::Hash;
use crate::ids::TenantId;

/// Why a checkpoint could not be made or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The signing key is not a signed-note Ed25519 private key.
    #[error("the checkpoint signing key is malformed: {0}")]
    SigningKey(String),
    /// A verifier key is not a signed-note Ed25519 public key.
    #[error("verifier key {key:?} is malformed: {reason}")]
    VerifierKey {
        /// The key as given.
        key: String,
        /// Why.
        reason: String,
    },
    /// The note or checkpoint text is not well formed.
    #[error("the checkpoint is malformed: {0}")]
    Malformed(String),
    /// No signature by a known key verifies.
    #[error("the checkpoint signature does not verify with the given key(s): {0}")]
    Signature(String),
    /// Signed, but for another log.
    #[error("the checkpoint is for {found:?}, expected {expected:?}")]
    Origin {
        /// The origin expected.
        expected: String,
        /// The origin found.
        found: String,
    },
}

/// A checkpoint whose signature verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    /// `<key name>/<tenant>`.
    pub origin: String,
    /// Number of seals covered.
    pub size: u64,
    /// Root of the tree of the first `size` seals.
    pub root: Hash,
    /// When it was published, if the extension line says.
    pub time: Option<DateTime<Utc>>,
    /// The signed note, byte for byte.
    pub note: String,
}

/// Signs checkpoints. Holds the private key; never stored in the database.
pub struct CheckpointSigner {
    signer: StandardSigner,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("name", &self.signer.name())
            .field("key_id", &format_args!("{:08x}", self.signer.key_id()))
            .finish_non_exhaustive()
    }
}

/// A new key pair for `name` (e.g. `cairn.example/audit`): `(private, verifier)`.
pub fn generate_key(name: &str) -> (String, String) {
    signed_note::generate_key(&mut rand_core::OsRng, name)
}

/// The origin line of `tenant`'s checkpoints under key `name`.
pub fn origin(name: &str, tenant: &TenantId) -> String {
    format!("{name}/{tenant}")
}

impl CheckpointSigner {
    /// From a signed-note private key (`PRIVATE+KEY+name+id+base64`).
    pub fn from_key(key: &str) -> Result<Self, CheckpointError> {
        StandardSigner::new(key.trim())
            .map(|signer| Self { signer })
            .map_err(|e| CheckpointError::SigningKey(e.to_string()))
    }

    /// The key name, which prefixes every origin.
    pub fn name(&self) -> &str {
        self.signer.name()
    }

    /// Signs `tenant`'s tree of `size` seals with root `root`, published at `time`.
    pub fn sign(
        &self,
        tenant: &TenantId,
        size: u64,
        root: &Hash,
        time: DateTime<Utc>,
    ) -> Result<String, CheckpointError> {
        let ext = format!("time {}\n", time.to_rfc3339_opts(SecondsFormat::Secs, true));
        let cp = Checkpoint::new(
            &origin(self.name(), tenant),
            size,
            tlog_tiles::Hash(*root.as_bytes()),
            &ext,
        )
        .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        let mut note = Note::new(&cp.to_bytes(), &[])
            .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
        note.add_sigs(&[&self.signer])
            .map_err(|e| CheckpointError::Signature(e.to_string()))?;
        String::from_utf8(note.to_bytes()).map_err(|e| CheckpointError::Malformed(e.to_string()))
    }
}

/// Verifies a signed checkpoint with any of `verifier_keys` (several during a rotation) and,
/// when given, checks its origin.
pub fn verify(
    note: &str,
    verifier_keys: &[String],
    expected_origin: Option<&str>,
) -> Result<VerifiedCheckpoint, CheckpointError> {
    let mut verifiers: Vec<Box<dyn signed_note::Verifier>> = Vec::new();
    for k in verifier_keys {
        let v = StandardVerifier::new(k.trim()).map_err(|e| CheckpointError::VerifierKey {
            key: k.clone(),
            reason: e.to_string(),
        })?;
        verifiers.push(Box::new(v));
    }
    let parsed =
        Note::from_bytes(note.as_bytes()).map_err(|e| CheckpointError::Malformed(e.to_string()))?;
    parsed
        .verify(&VerifierList::new(verifiers))
        .map_err(|e| CheckpointError::Signature(e.to_string()))?;
    let cp = Checkpoint::from_bytes(parsed.text())
        .map_err(|e| CheckpointError::Malformed(e.to_string()))?;
    if let Some(expected) = expected_origin
        && cp.origin() != expected
    {
        return Err(CheckpointError::Origin {
            expected: expected.to_owned(),
            found: cp.origin().to_owned(),
        });
    }
    let time = cp
        .extension()
        .lines()
        .find_map(|l| l.strip_prefix("time "))
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    Ok(VerifiedCheckpoint {
        origin: cp.origin().to_owned(),
        size: cp.size(),
        root: Hash(cp.hash().0),
        time,
        note: note.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_and_refuses_other_keys_and_edits() {
        let (sk, vk) = generate_key("cairn.test/audit");
        let (_, other) = generate_key("cairn.test/audit");
        let s = CheckpointSigner::from_key(&sk).unwrap();
        let t = TenantId::parse("acme").unwrap();
        let root = Hash([7; 32]);
        let note = s.sign(&t, 42, &root, Utc::now()).unwrap();
        assert!(note.starts_with("cairn.test/audit/acme\n42\n"), "{note}");
        let v = verify(
            &note,
            std::slice::from_ref(&vk),
            Some("cairn.test/audit/acme"),
        )
        .unwrap();
        assert_eq!((v.size, v.root), (42, root));
        assert!(v.time.is_some());
        assert!(matches!(
            verify(&note, &[other], None),
            Err(CheckpointError::Signature(_))
        ));
        let edited = note.replacen("\n42\n", "\n43\n", 1);
        assert!(matches!(
            verify(&edited, std::slice::from_ref(&vk), None),
            Err(CheckpointError::Signature(_))
        ));
        assert!(matches!(
            verify(&note, &[vk], Some("cairn.test/audit/globex")),
            Err(CheckpointError::Origin { .. })
        ));
    }
}
