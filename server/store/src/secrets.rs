//! Secret plugin settings at rest: sealed with AES-256-GCM under a key the database never
//! holds (config or environment), bound to where they belong.
//!
//! A sealed value is `cairn-secret:v1:<key id>:<hex of nonce ‖ ciphertext>`. The key id
//! (the first 8 bytes of the key's SHA-256, in hex) says which key sealed it, so a rotated
//! deployment opens old values with a previous key and seals new ones with the current
//! one. The associated data is the value's place (tenant, installation, setting): a
//! sealed value copied to another setting, installation or tenant does not open.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use sha2::{Digest, Sha256};

const PREFIX: &str = "cairn-secret:v1:";
const NONCE_BYTES: usize = 12;

/// Why a secret could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// A configured key is not 64 hex digits.
    #[error("a secret key must be 32 bytes as 64 hex digits ({0})")]
    BadKey(String),
    /// The value was sealed with a key this host does not have.
    #[error(
        "the secret was sealed with key {0}, which this host is not configured with (secret key rotation: keep the old key in previous_keys)"
    )]
    UnknownKey(String),
    /// The value is not a sealed secret, was changed, or belongs elsewhere.
    #[error("the sealed secret does not open: it was altered or belongs to another setting")]
    Corrupt,
}

/// The keys that seal and open secret settings: the current one first.
pub struct SecretBox {
    keys: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("SecretBox").field("key_ids", &ids).finish()
    }
}

fn key_id(key: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(key)[..8])
}

/// Parses a key written as 64 hex digits.
pub fn parse_key(text: &str) -> Result<[u8; 32], SecretError> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key).map_err(|e| SecretError::BadKey(e.to_string()))?;
    Ok(key)
}

/// A fresh random key, as 64 hex digits.
pub fn generate_key() -> String {
    hex::encode(Aes256Gcm::generate_key(&mut OsRng))
}

impl SecretBox {
    /// Seals with `current`; opens with it or any of `previous`.
    pub fn new(current: [u8; 32], previous: &[[u8; 32]]) -> Self {
        let keys = std::iter::once(&current)
            .chain(previous)
            .map(|k| (key_id(k), Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(k))))
            .collect();
        Self { keys }
    }

    /// Seals `plaintext` for `place` (e.g. `tenant/installation/setting`).
    pub fn seal(&self, place: &str, plaintext: &str) -> String {
        let (id, cipher) = &self.keys[0];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: place.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of a bounded setting cannot fail");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{PREFIX}{id}:{}", hex::encode(bytes))
    }

    /// Opens a value [`seal`](Self::seal)ed for the same `place`.
    pub fn open(&self, place: &str, sealed: &str) -> Result<String, SecretError> {
        let rest = sealed.strip_prefix(PREFIX).ok_or(SecretError::Corrupt)?;
        let (id, body) = rest.split_once(':').ok_or(SecretError::Corrupt)?;
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(k, _)| k == id)
            .ok_or_else(|| SecretError::UnknownKey(id.to_owned()))?;
        let bytes = hex::decode(body).map_err(|_| SecretError::Corrupt)?;
        if bytes.len() < NONCE_BYTES {
            return Err(SecretError::Corrupt);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let plain = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: place.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Corrupt)?;
        String::from_utf8(plain).map_err(|_| SecretError::Corrupt)
    }

    /// Whether `value` is a sealed secret (as opposed to a plain setting).
    pub fn is_sealed(value: &str) -> bool {
        value.starts_with(PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn sealed_values_open_only_in_their_place_and_with_a_known_key() {
        let b = SecretBox::new(key(1), &[]);
        let sealed = b.seal("acme/inst/api_key", "s3cr3t");
        assert!(SecretBox::is_sealed(&sealed));
        assert!(!sealed.contains("s3cr3t"));
        assert_eq!(b.open("acme/inst/api_key", &sealed).unwrap(), "s3cr3t");
        // Two seals of one value differ (fresh nonce).
        assert_ne!(sealed, b.seal("acme/inst/api_key", "s3cr3t"));
        // Moved to another tenant or setting: refused.
        assert_eq!(
            b.open("globex/inst/api_key", &sealed),
            Err(SecretError::Corrupt)
        );
        assert_eq!(
            b.open("acme/inst/other", &sealed),
            Err(SecretError::Corrupt)
        );
        // Altered: refused.
        let mut altered = sealed.clone();
        let last = altered.pop().unwrap();
        altered.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            b.open("acme/inst/api_key", &altered),
            Err(SecretError::Corrupt)
        );
        // Another key: refused, naming the key it needs.
        let other = SecretBox::new(key(2), &[]);
        assert!(matches!(
            other.open("acme/inst/api_key", &sealed),
            Err(SecretError::UnknownKey(_))
        ));
        assert_eq!(
            b.open("acme/inst/api_key", "plain"),
            Err(SecretError::Corrupt)
        );
    }

    #[test]
    fn after_a_rotation_old_values_open_and_new_ones_use_the_new_key() {
        let old = SecretBox::new(key(1), &[]);
        let sealed = old.seal("t/i/k", "v");
        let rotated = SecretBox::new(key(2), &[key(1)]);
        assert_eq!(rotated.open("t/i/k", &sealed).unwrap(), "v");
        let resealed = rotated.seal("t/i/k", "v");
        assert!(matches!(
            old.open("t/i/k", &resealed),
            Err(SecretError::UnknownKey(_))
        ));
        assert!(parse_key("zz").is_err());
        assert_eq!(parse_key(&generate_key()).unwrap().len(), 32);
    }
}
