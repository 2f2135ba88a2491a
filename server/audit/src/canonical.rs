//! Canonical JSON (RFC 8785, JCS) and the three hashes of the ledger.
//!
//! # What is hashed
//!
//! * **Run genesis.** A run's chain starts from
//!   `SHA-256(32 zero bytes ‖ JCS(header))` where `header` is
//!   `{"conversation_id", "model", "run_id", "started_at", "tenant", "type": "cairn.run", "user"}`
//!   (`conversation_id` is `null` when absent). Step 0's `prev_hash` is this value, so an
//!   edited run header breaks the link into step 0.
//! * **Step.** `hash = SHA-256(prev_hash ‖ JCS(content))` where `content` is
//!   `{"actor", "at", "run_id", "seq", "step", "tenant"}`: `step` is the [`StepKind`] JSON
//!   (its `kind` tag included), `at` is RFC 3339 UTC with exactly six fractional digits.
//!   Everything stored for a step is covered except `hash` itself and the columns derived
//!   from covered data for indexing (`kind`, `user_id`, `plugin_id`, `tool_name`, the
//!   full-text vector, the storage id), which verification checks against the payload.
//! * **Seal.** Per tenant, `hash = SHA-256(prev_seal_hash ‖ JCS(body))`, starting from 32
//!   zero bytes, where `body` is a [`SealBody`] (a run head or a purge record).
//!
//! [`StepKind`]: crate::StepKind
//! [`SealBody`]: crate::SealBody

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{LedgerError, Result};

/// Serialises any value to RFC 8785 canonical JSON bytes.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    Ok(serde_json_canonicalizer::to_vec(value)?)
}

/// `SHA-256(JCS(arguments))`: what binds an approval to the exact arguments the approver
/// was shown. Anyone can recompute it from a `tool_call` step's `arguments` (RFC 8785
/// canonical JSON, no prefix, no chaining).
pub fn arguments_sha256(arguments: &serde_json::Value) -> Result<Hash> {
    Ok(Hash(Sha256::digest(canonical_json(arguments)?).into()))
}

/// A SHA-256 digest, shown and serialised as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hash(pub(crate) [u8; 32]);

impl Hash {
    /// The all-zero hash every chain starts from.
    pub const ZERO: Hash = Hash([0; 32]);

    /// `SHA-256(prev ‖ canonical)`.
    pub fn chain(prev: &Hash, canonical: &[u8]) -> Hash {
        let mut h = Sha256::new();
        h.update(prev.0);
        h.update(canonical);
        Hash(h.finalize().into())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From stored bytes; anything but 32 bytes is corruption.
    pub fn from_slice(b: &[u8]) -> Result<Hash> {
        let a: [u8; 32] = b
            .try_into()
            .map_err(|_| LedgerError::Corrupt(format!("hash of {} bytes", b.len())))?;
        Ok(Hash(a))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Hash> {
        let v = hex::decode(s).map_err(|e| LedgerError::Invalid {
            what: "hash",
            reason: e.to_string(),
        })?;
        Hash::from_slice(&v)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Hash::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Hash {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Sha256Hex".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "pattern": "^[0-9a-f]{64}$" })
    }
}

/// The ledger's timestamp precision is the microsecond (PostgreSQL's); times are cut to it
/// before hashing so that what is stored is exactly what was hashed.
pub fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// The hashed spelling of a timestamp: RFC 3339, UTC, six fractional digits.
pub fn hash_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `SHA-256(ZERO ‖ JCS(header))`: the `prev_hash` of step 0 (public so that external
/// verifiers and tests can recompute it).
pub fn run_genesis(
    run_id: &str,
    tenant: &str,
    user: &str,
    conversation_id: Option<&str>,
    model: &str,
    started_at: &DateTime<Utc>,
) -> Result<Hash> {
    let header = serde_json::json!({
        "type": "cairn.run",
        "run_id": run_id,
        "tenant": tenant,
        "user": user,
        "conversation_id": conversation_id,
        "model": model,
        "started_at": hash_time(started_at),
    });
    Ok(Hash::chain(&Hash::ZERO, &canonical_json(&header)?))
}

/// `SHA-256(prev ‖ JCS(content))` for a step whose `step` JSON is already a value (the
/// stored payload when verifying, the serialised [`crate::StepKind`] when appending).
pub fn step_hash(
    prev: &Hash,
    run_id: &str,
    tenant: &str,
    seq: u64,
    actor: &str,
    at: &DateTime<Utc>,
    step: &serde_json::Value,
) -> Result<Hash> {
    #[derive(Serialize)]
    struct Content<'a> {
        actor: &'a str,
        at: String,
        run_id: &'a str,
        seq: u64,
        step: &'a serde_json::Value,
        tenant: &'a str,
    }
    let c = Content {
        actor,
        at: hash_time(at),
        run_id,
        seq,
        step,
        tenant,
    };
    Ok(Hash::chain(prev, &canonical_json(&c)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8785 §3.2.2 / §3.2.3: the published input and its canonical form.
    #[test]
    fn rfc8785_main_example() {
        let input = r#"{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],"string":"\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/","literals":[null,true,false]}"#;
        let v: serde_json::Value = serde_json::from_str(input).unwrap();
        let out = String::from_utf8(canonical_json(&v).unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    /// RFC 8785 appendix B: IEEE 754 bit patterns and their ECMAScript serialisation.
    #[test]
    fn rfc8785_number_vectors() {
        let vectors: &[(u64, &str)] = &[
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for (bits, want) in vectors {
            let f = f64::from_bits(*bits);
            let got = String::from_utf8(canonical_json(&f).unwrap()).unwrap();
            assert_eq!(&got, want, "bits {bits:#018x}");
        }
    }

    /// RFC 8785 §3.2.3: properties sorted by UTF-16 code units, not by UTF-8 bytes.
    #[test]
    fn rfc8785_key_sorting() {
        let input = r#"{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}"#;
        let v: serde_json::Value = serde_json::from_str(input).unwrap();
        let out = String::from_utf8(canonical_json(&v).unwrap()).unwrap();
        let want = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\"😀\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        assert_eq!(out, want);
    }

    /// The approval binding is SHA-256 of the canonical text alone: key order and
    /// whitespace in what the model wrote do not change it (value checked with sha256sum
    /// over `{"priority":"high","title":"Renew passport"}`).
    #[test]
    fn arguments_hash_is_sha256_of_the_canonical_text() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{ "title": "Renew passport",  "priority": "high" }"#).unwrap();
        assert_eq!(
            arguments_sha256(&a).unwrap().to_hex(),
            "9df8b44921acfafef3fd0a2a8a4af5fc34a98793deb0e904881af80da4706db0"
        );
        let b = serde_json::json!({ "title": "Renew passport", "priority": "low" });
        assert_ne!(arguments_sha256(&a).unwrap(), arguments_sha256(&b).unwrap());
    }

    #[test]
    fn chain_depends_on_prev_and_content() {
        let a = Hash::chain(&Hash::ZERO, b"{}");
        let b = Hash::chain(&a, b"{}");
        assert_ne!(a, b);
        assert_eq!(Hash::from_hex(&a.to_hex()).unwrap(), a);
        // SHA-256 of 32 zero bytes followed by "{}", computed independently.
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update(b"{}");
        assert_eq!(a.0, <[u8; 32]>::from(h.finalize()));
    }
}
