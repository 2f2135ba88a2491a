//! Identifiers, parsed once at the boundary (also when deserialised) and opaque after.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::LedgerError;

/// Declares a string newtype with a private field that can only be built by parsing.
macro_rules! string_id {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal, max = $max:literal, pattern = $pattern:literal, valid = $valid:expr
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses and validates the identifier.
            pub fn parse(s: impl Into<String>) -> Result<Self, LedgerError> {
                let s = s.into();
                let n = s.chars().count();
                if n == 0 || n > $max {
                    return Err(LedgerError::Invalid {
                        what: $what,
                        reason: format!("must be 1..={} characters, got {}", $max, n),
                    });
                }
                let valid: fn(char) -> bool = $valid;
                if let Some(bad) = s.chars().find(|c| !valid(*c)) {
                    return Err(LedgerError::Invalid {
                        what: $what,
                        reason: format!("character {bad:?} is not allowed (pattern {})", $pattern),
                    });
                }
                Ok(Self(s))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = LedgerError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl FromStr for $name {
            type Err = LedgerError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": $max,
                    "pattern": $pattern,
                })
            }
        }
    };
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn printable(c: char) -> bool {
    !c.is_control()
}

string_id!(
    /// A tenant: 1..=64 characters from `[A-Za-z0-9._-]`. Every ledger row belongs to one.
    TenantId, "tenant id", max = 64, pattern = "^[A-Za-z0-9._-]{1,64}$", valid = ident_char
);
string_id!(
    /// The end user a run acts for (the subject of the bearer token): 1..=256 printable characters.
    UserId, "user id", max = 256, pattern = "^[^\\u0000-\\u001f\\u007f]{1,256}$", valid = printable
);
string_id!(
    /// Who or what caused a step, e.g. `user:alice`, `model`, `system`, `plugin:crm`:
    /// 1..=261 printable characters, so `user:` and the longest [`UserId`] (256) fit.
    Actor, "actor", max = 261, pattern = "^[^\\u0000-\\u001f\\u007f]{1,261}$", valid = printable
);
string_id!(
    /// A plugin id as installed (`cairn.plugin.id`): 1..=128 characters from `[A-Za-z0-9._-]`.
    PluginId, "plugin id", max = 128, pattern = "^[A-Za-z0-9._-]{1,128}$", valid = ident_char
);
string_id!(
    /// A tool name as offered to the model (`gen_ai.tool.name`): 1..=128 characters from
    /// `[A-Za-z0-9._-]`.
    ToolName, "tool name", max = 128, pattern = "^[A-Za-z0-9._-]{1,128}$", valid = ident_char
);
string_id!(
    /// The client's conversation (thread) id: 1..=256 printable characters.
    ConversationId, "conversation id", max = 256, pattern = "^[^\\u0000-\\u001f\\u007f]{1,256}$", valid = printable
);

/// A run id: a UUID version 7, so ids sort by start time and time ranges map onto id
/// ranges (which verification uses to include rows whose run header was deleted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunId(Uuid);

impl RunId {
    /// A new id for a run starting at `at`.
    pub fn new_at(at: chrono::DateTime<chrono::Utc>) -> Self {
        let secs = at.timestamp().max(0) as u64;
        let nanos = at.timestamp_subsec_nanos();
        Self(Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            secs,
            nanos,
        )))
    }

    /// Parses a UUID v7 in any of the usual text forms.
    pub fn parse(s: &str) -> Result<Self, LedgerError> {
        let u = Uuid::parse_str(s).map_err(|e| LedgerError::Invalid {
            what: "run id",
            reason: e.to_string(),
        })?;
        Self::from_uuid(u)
    }

    /// Accepts an existing UUID if it is a version 7.
    pub fn from_uuid(u: Uuid) -> Result<Self, LedgerError> {
        if u.get_version_num() != 7 {
            return Err(LedgerError::Invalid {
                what: "run id",
                reason: format!("must be a UUID v7, got version {}", u.get_version_num()),
            });
        }
        Ok(Self(u))
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// The smallest v7 UUID whose timestamp is `at` (millisecond precision); used to turn
    /// a time range into an id range.
    pub(crate) fn lower_bound(at: chrono::DateTime<chrono::Utc>) -> Uuid {
        let ms = at.timestamp_millis().max(0) as u64;
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        Uuid::from_bytes(b)
    }
}

impl TryFrom<String> for RunId {
    type Error = LedgerError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<RunId> for String {
    fn from(v: RunId) -> String {
        v.0.to_string()
    }
}

impl FromStr for RunId {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl JsonSchema for RunId {
    fn schema_name() -> Cow<'static, str> {
        "RunId".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "uuid" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_parsed() {
        assert!(TenantId::parse("acme-corp_1.eu").is_ok());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse("a".repeat(64)).is_ok());
        assert!(TenantId::parse("a".repeat(65)).is_err());
        assert!(TenantId::parse("acme corp").is_err());
        assert!(TenantId::parse("acmé").is_err());
        let e: Result<TenantId, _> = serde_json::from_str("\"bad/tenant\"");
        assert!(e.is_err(), "serde must go through parse");
    }

    #[test]
    fn run_ids_must_be_v7() {
        assert!(RunId::parse(&Uuid::new_v4().to_string()).is_err());
        let id = RunId::new_at(chrono::Utc::now());
        assert_eq!(RunId::parse(&id.to_string()).ok(), Some(id));
        assert!(
            RunId::lower_bound(chrono::Utc::now()) <= RunId::new_at(chrono::Utc::now()).as_uuid()
        );
    }

    #[test]
    fn user_ids_reject_control_characters() {
        assert!(UserId::parse("alice@example.com").is_ok());
        assert!(UserId::parse("alice\nbob").is_err());
    }

    /// Regression (issue 10): a 252..=256-character subject was a valid user but
    /// `user:<subject>` was too long for an actor, so invoking and cancelling failed.
    #[test]
    fn every_user_id_makes_an_actor() {
        for n in [1, 251, 252, 255, 256] {
            let user = UserId::parse("u".repeat(n)).unwrap();
            assert!(Actor::parse(format!("user:{user}")).is_ok(), "length {n}");
        }
        assert!(Actor::parse("u".repeat(262)).is_err());
    }
}
