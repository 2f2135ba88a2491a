//! Cairn's identifiers, each defined once with one grammar that every crate shares.
//!
//! Each is a newtype with a private field, built only by parsing (also at the serde
//! boundary, through `#[serde(try_from = "String")]`), so a value that exists has been
//! checked, and the manifest, the ledger, the runtime and the API agree on what is valid.
//!
//! | type | grammar | where it comes from |
//! |---|---|---|
//! | [`PluginId`] | `^[a-z][a-z0-9-]{0,62}$` | a manifest's `id` |
//! | [`ToolName`] | `^[a-z][a-z0-9_]{0,63}$` | a manifest's tool `name` |
//! | [`ToolCallName`] | `^[A-Za-z0-9._-]{1,128}$` | `gen_ai.tool.name`: the name a tool is offered and called under |
//! | [`TenantId`] | `^[A-Za-z0-9._-]{1,64}$` | the token's tenant claim |
//! | [`UserId`] | 1..=256 characters, no control characters | the token's `sub` |
//! | [`Actor`] | 1..=261 characters, no control characters | `user:<UserId>`, `model`, `plugin:<PluginId>`, ... |
//! | [`ConversationId`] | 1..=256 characters, no control characters | the client's thread id |
//! | [`CallId`] | 1..=256 characters, no control characters | `gen_ai.tool.call.id` |
//! | [`RunId`] | a UUID version 7 | made by the ledger when a run starts |
//!
//! [`ToolCallName`] is wider than [`ToolName`] on purpose: the ledger also records tools a
//! client supplied (OpenAI function names such as `getWeather`), the `plugin__tool` names
//! used when two plugins offer a tool of one name, and whatever a model called, cleaned of
//! characters outside the grammar. Every [`ToolName`] converts into one.
//!
//! ```
//! use cairn_ids::{Actor, PluginId, ToolName, UserId};
//!
//! let plugin: PluginId = "tasks".parse()?;
//! let tool = ToolName::parse("add_task")?;
//! assert_eq!(tool.as_str(), "add_task");
//! let user = UserId::parse("auth0|5f7c8ec7c33c6c004bbafe82")?;
//! assert_eq!(Actor::user(&user).as_str(), "user:auth0|5f7c8ec7c33c6c004bbafe82");
//! assert_eq!(Actor::plugin(&plugin).as_str(), "plugin:tasks");
//!
//! let error = PluginId::parse("Tasks").unwrap_err();
//! assert!(error.to_string().starts_with("invalid plugin id \"Tasks\""));
//! # Ok::<(), cairn_ids::IdError>(())
//! ```
#![warn(missing_docs)]

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a string is not a valid identifier: which kind, the rejected value (control
/// characters escaped) and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} \"{value}\": {rule}")]
pub struct IdError {
    what: &'static str,
    value: String,
    rule: Cow<'static, str>,
}

impl IdError {
    /// An error about `value`, a `what` (e.g. `plugin id`), that breaks `rule`. Public so
    /// that crates with names of their own (a manifest's version) report them alike.
    pub fn new(what: &'static str, value: &str, rule: impl Into<Cow<'static, str>>) -> Self {
        Self {
            what,
            value: value
                .chars()
                .take(300)
                .collect::<String>()
                .escape_debug()
                .to_string(),
            rule: rule.into(),
        }
    }

    /// The kind of identifier, e.g. `tenant id`.
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// The rejected input (control characters escaped; at most 300 characters of it).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The rule it breaks, in words.
    pub fn rule(&self) -> &str {
        &self.rule
    }
}

/// The result of parsing an identifier.
pub type Result<T, E = IdError> = std::result::Result<T, E>;

/// Declares a string identifier: the newtype, its parsing, and the traits every one has.
/// `valid` decides; `rule` says why not; `schema` is its JSON Schema.
macro_rules! string_id {
    (
        $(#[$meta:meta])*
        $name:ident, what = $what:literal, pattern = $pattern:literal,
        valid = $valid:expr, rule = $rule:literal, schema = $schema:expr
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The grammar, as a regular expression.
            pub const PATTERN: &'static str = $pattern;

            /// Parses and checks the identifier.
            pub fn parse(s: impl Into<String>) -> Result<Self> {
                let s = s.into();
                let valid: fn(&str) -> bool = $valid;
                if valid(&s) {
                    Ok(Self(s))
                } else {
                    Err(IdError::new($what, &s, $rule))
                }
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self> {
                Self::parse(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self> {
                Self::parse(s)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
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

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                $schema
            }
        }
    };
}

/// `[a-z][a-z0-9<extra>]{0,max-1}`.
fn lower_name(s: &str, max: usize, extra: u8) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == extra)
}

/// `[A-Za-z0-9._-]{1,max}`.
fn token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// 1..=max characters, none of them a control character.
fn printable(s: &str, max: usize) -> bool {
    let n = s.chars().count();
    (1..=max).contains(&n) && !s.chars().any(char::is_control)
}

/// The schema of a manifest name: described for authors, as the manifest schema shows it.
fn name_schema(description: &str, pattern: &str) -> Schema {
    json_schema!({ "type": "string", "description": description, "pattern": pattern })
}

/// The schema of a ledger identifier, with its length bounds.
fn bounded_schema(max: usize, pattern: &str) -> Schema {
    json_schema!({ "type": "string", "minLength": 1, "maxLength": max, "pattern": pattern })
}

string_id!(
    /// A plugin's id, unique within a tenant: `^[a-z][a-z0-9-]{0,62}$` (`cairn.plugin.id`).
    ///
    /// It names the plugin in URLs, the audit ledger and key-value scopes, so it is kept to
    /// characters that need no escaping anywhere. (The ledger used to accept
    /// `[A-Za-z0-9._-]{1,128}`; every id it holds came from a manifest, so it holds only
    /// ids of this stricter grammar.)
    PluginId, what = "plugin id", pattern = "^[a-z][a-z0-9-]{0,62}$",
    valid = |s| lower_name(s, 63, b'-'),
    rule = "use 1 to 63 characters: a lowercase letter first, then lowercase letters, digits or '-'",
    schema = name_schema(
        "A plugin id: a lowercase letter, then up to 62 lowercase letters, digits or '-'.",
        Self::PATTERN,
    )
);

string_id!(
    /// A tool's name, unique within its plugin: `^[a-z][a-z0-9_]{0,63}$`.
    ///
    /// This is also a valid OpenAI function name, so the host can offer the tool to a model
    /// under a name derived from it without rewriting.
    ToolName, what = "tool name", pattern = "^[a-z][a-z0-9_]{0,63}$",
    valid = |s| lower_name(s, 64, b'_'),
    rule = "use 1 to 64 characters: a lowercase letter first, then lowercase letters, digits or '_'",
    schema = name_schema(
        "A tool name: a lowercase letter, then up to 63 lowercase letters, digits or '_'.",
        Self::PATTERN,
    )
);

string_id!(
    /// The name a tool is offered to a model and called under (`gen_ai.tool.name`):
    /// 1..=128 characters from `[A-Za-z0-9._-]`. A plugin's [`ToolName`], a
    /// `plugin__tool` name when two plugins offer one name, a client tool's name, or what
    /// a model called, cleaned (see the crate docs).
    ToolCallName, what = "tool name", pattern = "^[A-Za-z0-9._-]{1,128}$",
    valid = |s| token(s, 128),
    rule = "use 1 to 128 characters from A-Z, a-z, 0-9, '.', '_' and '-'",
    schema = bounded_schema(128, Self::PATTERN)
);

impl From<ToolName> for ToolCallName {
    fn from(name: ToolName) -> Self {
        // The tool-name grammar is a subset of this one.
        Self(name.0)
    }
}

string_id!(
    /// A tenant: 1..=64 characters from `[A-Za-z0-9._-]`. Every ledger row and every
    /// installation belongs to one.
    TenantId, what = "tenant id", pattern = "^[A-Za-z0-9._-]{1,64}$",
    valid = |s| token(s, 64),
    rule = "use 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-'",
    schema = bounded_schema(64, Self::PATTERN)
);

string_id!(
    /// The end user a run acts for (the subject of the bearer token): 1..=256 characters,
    /// none a control character. OpenID Connect allows a `sub` of up to 255 ASCII
    /// characters, so every subject is a user, and [`Actor::user`] always fits.
    UserId, what = "user id", pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,256}$",
    valid = |s| printable(s, 256),
    rule = "use 1 to 256 characters and no control characters",
    schema = bounded_schema(256, Self::PATTERN)
);

string_id!(
    /// Who or what caused a step, e.g. `user:alice`, `model`, `system`, `plugin:crm`:
    /// 1..=261 characters, none a control character, so `user:` and the longest
    /// [`UserId`] (256) fit.
    Actor, what = "actor", pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,261}$",
    valid = |s| printable(s, 261),
    rule = "use 1 to 261 characters and no control characters",
    schema = bounded_schema(261, Self::PATTERN)
);

impl Actor {
    /// `user:<user>`: a person, by the subject of their token. Never fails.
    pub fn user(user: &UserId) -> Self {
        Self(format!("user:{user}"))
    }

    /// `plugin:<id>`: a plugin acting (its egress, its errors). Never fails.
    pub fn plugin(plugin: &PluginId) -> Self {
        Self(format!("plugin:{plugin}"))
    }
}

string_id!(
    /// The client's conversation (thread) id: 1..=256 characters, none a control character.
    ConversationId, what = "conversation id", pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,256}$",
    valid = |s| printable(s, 256),
    rule = "use 1 to 256 characters and no control characters",
    schema = bounded_schema(256, Self::PATTERN)
);

string_id!(
    /// A tool call's id (`gen_ai.tool.call.id`), as the model or the host named it:
    /// 1..=256 characters, none a control character.
    CallId, what = "call id", pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,256}$",
    valid = |s| printable(s, 256),
    rule = "use 1 to 256 characters and no control characters",
    schema = bounded_schema(256, Self::PATTERN)
);

/// A run id: a UUID version 7, so ids sort by start time and time ranges map onto id
/// ranges (which the ledger's verification uses to include rows whose run header was
/// deleted).
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
    pub fn parse(s: &str) -> Result<Self> {
        let u = Uuid::parse_str(s).map_err(|e| IdError::new("run id", s, e.to_string()))?;
        Self::from_uuid(u)
    }

    /// Accepts an existing UUID if it is a version 7.
    pub fn from_uuid(u: Uuid) -> Result<Self> {
        if u.get_version_num() != 7 {
            return Err(IdError::new(
                "run id",
                &u.to_string(),
                format!("must be a UUID v7, got version {}", u.get_version_num()),
            ));
        }
        Ok(Self(u))
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// The smallest v7 UUID whose timestamp is `at` (millisecond precision): turns a time
    /// range into an id range.
    pub fn lower_bound(at: chrono::DateTime<chrono::Utc>) -> Uuid {
        let ms = at.timestamp_millis().max(0) as u64;
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        Uuid::from_bytes(b)
    }
}

impl TryFrom<String> for RunId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<RunId> for String {
    fn from(v: RunId) -> String {
        v.0.to_string()
    }
}

impl FromStr for RunId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self> {
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
    fn plugin_ids() {
        for ok in ["a", "tasks", "crm-2", &format!("a{}", "b".repeat(62))] {
            assert!(PluginId::parse(ok).is_ok(), "{ok}");
        }
        // The ledger's old grammar took the last four; no manifest ever could.
        for bad in [
            "",
            "Tasks",
            "1tasks",
            "-a",
            "a_b",
            "a.b",
            "tâches",
            &"a".repeat(64),
        ] {
            assert!(PluginId::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            PluginId::parse("My Plugin").unwrap_err().to_string(),
            "invalid plugin id \"My Plugin\": use 1 to 63 characters: a lowercase letter \
             first, then lowercase letters, digits or '-'"
        );
    }

    #[test]
    fn tool_names_and_the_names_tools_are_called_under() {
        for ok in ["a", "add_task", "x9", &format!("a{}", "b".repeat(63))] {
            assert!(ToolName::parse(ok).is_ok(), "{ok}");
            let called = ToolCallName::from(ToolName::parse(ok).unwrap());
            assert_eq!(called, ok);
        }
        for bad in ["", "Add", "_a", "add-task", "a b", &"a".repeat(65)] {
            assert!(ToolName::parse(bad).is_err(), "{bad}");
        }
        // What the ledger records beyond plugins' own names.
        for ok in [
            "getWeather",
            "crm__find_contact",
            "get-weather",
            "v1.search",
        ] {
            assert!(ToolCallName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "tool()", &"a".repeat(129)] {
            assert!(ToolCallName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tenant_ids() {
        assert!(TenantId::parse("acme-corp_1.eu").is_ok());
        assert!(TenantId::parse("a".repeat(64)).is_ok());
        for bad in ["", "acme corp", "acmé", "bad/tenant", &"a".repeat(65)] {
            assert!(TenantId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_conversation_and_call_ids_refuse_control_characters() {
        assert!(UserId::parse("alice@example.com").is_ok());
        assert!(UserId::parse("Ädå 🙂").is_ok());
        for bad in ["", "alice\nbob", "nul\0", "c1\u{85}"] {
            assert!(UserId::parse(bad).is_err(), "{bad:?}");
            assert!(ConversationId::parse(bad).is_err(), "{bad:?}");
            assert!(CallId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(CallId::parse("call_abc123").is_ok());
        assert!(CallId::parse("c".repeat(256)).is_ok());
        assert!(CallId::parse("c".repeat(257)).is_err());
        let error = UserId::parse("a\u{7}b").unwrap_err();
        assert_eq!(error.value(), "a\\u{7}b");
    }

    /// An OIDC `sub` may be 255 ASCII characters; the grammar takes 256 characters (not
    /// bytes), and `user:` plus the longest user is still an actor (issue 10: it was not).
    #[test]
    fn the_longest_oidc_subject_is_a_user_an_actor_can_carry() {
        for n in [1, 251, 252, 255, 256] {
            let user = UserId::parse("u".repeat(n)).unwrap();
            let actor = Actor::user(&user);
            assert_eq!(
                Actor::parse(actor.as_str()),
                Ok(actor.clone()),
                "length {n}"
            );
        }
        let wide = UserId::parse("é".repeat(256)).unwrap();
        assert!(Actor::parse(Actor::user(&wide).as_str()).is_ok());
        assert!(UserId::parse("u".repeat(257)).is_err());
        assert!(Actor::parse("u".repeat(262)).is_err());
        let plugin = PluginId::parse("a".repeat(63)).unwrap();
        assert!(Actor::parse(Actor::plugin(&plugin).as_str()).is_ok());
    }

    #[test]
    fn run_ids_must_be_v7() {
        assert!(RunId::parse(&Uuid::new_v4().to_string()).is_err());
        assert!(RunId::parse("not-a-uuid").is_err());
        let id = RunId::new_at(chrono::Utc::now());
        assert_eq!(RunId::parse(&id.to_string()).ok(), Some(id));
        assert!(
            RunId::lower_bound(chrono::Utc::now()) <= RunId::new_at(chrono::Utc::now()).as_uuid()
        );
    }

    #[test]
    fn serde_goes_through_the_grammar() {
        assert!(serde_json::from_str::<PluginId>("\"ok\"").is_ok());
        let error = serde_json::from_str::<PluginId>("\"Not OK\"")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("invalid plugin id \"Not OK\""), "{error}");
        assert!(serde_json::from_str::<TenantId>("\"bad/tenant\"").is_err());
        assert!(serde_json::from_str::<RunId>("\"00000000-0000-4000-8000-000000000000\"").is_err());
        assert_eq!(
            serde_json::to_string(&ToolName::parse("t").unwrap()).unwrap(),
            "\"t\""
        );
    }
}
