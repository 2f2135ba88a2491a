//! A plugin's version. Plugin ids and tool names are `cairn-ids`' (one grammar for the
//! manifest, the ledger and the API); a version only appears in manifests, so it is here.
//!
//! A newtype with a private field, so a value that exists has been checked. Serde goes
//! through the same check (`#[serde(try_from = "String")]`), which is how a bad version
//! in a manifest is reported with its JSON path.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use cairn_ids::IdError;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Implements the shared plumbing of a validated string newtype.
macro_rules! string_newtype {
    ($ty:ident) => {
        impl $ty {
            /// The validated string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::check(&s)?;
                Ok(Self(s))
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::check(s)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl FromStr for $ty {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::try_from(s)
            }
        }

        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.0
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

/// A plugin version: semantic versioning `MAJOR.MINOR.PATCH` with an optional
/// `-prerelease` (build metadata `+...` is not accepted: it would make two different
/// packages compare equal).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version(String);

impl Version {
    /// The pattern a version matches, as a regular expression.
    pub const PATTERN: &'static str = concat!(
        r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)",
        r"(-((0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)",
        r"(\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?$"
    );

    fn check(s: &str) -> Result<(), IdError> {
        parse_version(s).map(|_| ()).map_err(|why| {
            IdError::new(
                "version",
                s,
                format!(
                    "{why}; expected a semantic version MAJOR.MINOR.PATCH with an optional \
                     -prerelease, e.g. \"1.2.3\" or \"1.2.3-beta.1\""
                ),
            )
        })
    }

    /// The major version number.
    pub fn major(&self) -> u64 {
        self.parts().0
    }

    /// The minor version number.
    pub fn minor(&self) -> u64 {
        self.parts().1
    }

    /// The patch version number.
    pub fn patch(&self) -> u64 {
        self.parts().2
    }

    /// The prerelease part after `-`, if any.
    pub fn prerelease(&self) -> Option<&str> {
        self.0.split_once('-').map(|(_, pre)| pre)
    }

    fn parts(&self) -> (u64, u64, u64) {
        // Checked at construction.
        parse_version(&self.0).unwrap_or((0, 0, 0))
    }
}
string_newtype!(Version);

fn parse_version(s: &str) -> Result<(u64, u64, u64), String> {
    if s.contains('+') {
        return Err("build metadata (\"+...\") is not allowed".into());
    }
    let (core, pre) = match s.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (s, None),
    };
    let nums: Vec<&str> = core.split('.').collect();
    if nums.len() != 3 {
        return Err(format!(
            "\"{}\" does not have three numbers",
            core.escape_debug()
        ));
    }
    let mut out = [0u64; 3];
    for (slot, n) in out.iter_mut().zip(&nums) {
        if n.is_empty() || !n.bytes().all(|c| c.is_ascii_digit()) {
            return Err(format!("\"{}\" is not a number", n.escape_debug()));
        }
        if n.len() > 1 && n.starts_with('0') {
            return Err(format!("\"{n}\" has a leading zero"));
        }
        *slot = n.parse().map_err(|_| format!("\"{n}\" is too large"))?;
    }
    if let Some(pre) = pre {
        for ident in pre.split('.') {
            if ident.is_empty() {
                return Err("the prerelease has an empty identifier".into());
            }
            if !ident
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-')
            {
                return Err(format!(
                    "prerelease identifier \"{}\" may only hold ASCII letters, digits and '-'",
                    ident.escape_debug()
                ));
            }
            if ident.len() > 1
                && ident.starts_with('0')
                && ident.bytes().all(|c| c.is_ascii_digit())
            {
                return Err(format!(
                    "prerelease identifier \"{ident}\" has a leading zero"
                ));
            }
        }
    }
    Ok((out[0], out[1], out[2]))
}

fn string_schema(description: &str, pattern: &str) -> Schema {
    json_schema!({ "type": "string", "description": description, "pattern": pattern })
}

impl JsonSchema for Version {
    fn schema_name() -> Cow<'static, str> {
        "Version".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        string_schema(
            "A semantic version MAJOR.MINOR.PATCH with an optional -prerelease.",
            Self::PATTERN,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        for ok in [
            "0.1.0",
            "1.2.3",
            "10.20.30",
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-0.3.7",
            "1.0.0-x-y",
        ] {
            assert!(Version::try_from(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1",
            "1.0",
            "1.0.0.0",
            "01.0.0",
            "1.0.0+build",
            "1.0.0-",
            "1.0.0-a..b",
            "1.0.0-01",
            "v1.0.0",
            "1.x.0",
            "1.0.0-ä",
        ] {
            assert!(Version::try_from(bad).is_err(), "{bad}");
        }
        let v = Version::try_from("1.2.3-rc.1").unwrap();
        assert_eq!(
            (v.major(), v.minor(), v.patch(), v.prerelease()),
            (1, 2, 3, Some("rc.1"))
        );
    }
}
