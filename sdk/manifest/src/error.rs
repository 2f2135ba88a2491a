//! The one error type of this crate.

use std::fmt;
use std::path::PathBuf;

/// Which of a tool's two schemas a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaKind {
    /// `input_schema`: the tool's arguments.
    Input,
    /// `output_schema`: the tool's result.
    Output,
}

impl SchemaKind {
    /// The field name as spelled in the manifest.
    pub fn field(self) -> &'static str {
        match self {
            SchemaKind::Input => "input_schema",
            SchemaKind::Output => "output_schema",
        }
    }
}

impl fmt::Display for SchemaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.field())
    }
}

/// Why a manifest was rejected, or why a component does not match its manifest.
///
/// Every message starts with the JSON path of the problem in the manifest (`tools[1].
/// input_schema: ...`; `manifest` for the document as a whole), so it can be shown to
/// the plugin's author as it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The manifest file could not be read.
    #[error("cannot read {}: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The text is not JSON (a missing comma, a trailing comma, an unclosed brace, ...).
    #[error("{path}: malformed JSON: {source}")]
    Syntax {
        /// JSON path of the value being read when the parser stopped.
        path: String,
        /// serde_json's description, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A value of the wrong type, an unknown or missing field, or a
    /// malformed id, name, version or host pattern. The message ends with the line and
    /// column.
    #[error("{path}: {source}")]
    Json {
        /// JSON path of the problem.
        path: String,
        /// serde_json's description, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A well-formed manifest that breaks a rule: a duplicate, an empty description, a
    /// number out of range, ...
    #[error("{path}: {message}")]
    Invalid {
        /// JSON path of the problem.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A tool's `input_schema` or `output_schema` is not a usable JSON Schema 2020-12.
    #[error("{path}: not a valid JSON Schema (draft 2020-12): {message}")]
    InvalidSchema {
        /// JSON path of the schema, e.g. `tools[1].input_schema`.
        path: String,
        /// What is wrong, with the location inside the schema when there is one.
        message: String,
    },
    /// The manifest and the component name different sets of tools.
    #[error("tools: {}", tools_differ(only_in_manifest, only_in_code))]
    ToolsDiffer {
        /// Tools the manifest declares that the component does not describe.
        only_in_manifest: Vec<String>,
        /// Tools the component describes that the manifest does not declare.
        only_in_code: Vec<String>,
    },
    /// The component describes the same tool twice.
    #[error("tools: the component describes tool \"{tool}\" more than once")]
    DuplicateDescriptor {
        /// The tool's name.
        tool: String,
    },
    /// A tool's schema in the manifest differs from the one the component describes.
    #[error(
        "tools[{index}].{which}: the manifest's {which} for tool \"{tool}\" differs from \
         the component's at JSON pointer \"{pointer}\": manifest has {manifest}, component \
         has {code}"
    )]
    SchemaMismatch {
        /// Index of the tool in the manifest's `tools`.
        index: usize,
        /// The tool's name.
        tool: String,
        /// Which schema.
        which: SchemaKind,
        /// RFC 6901 pointer, inside the schema, of the first difference (`""` is the
        /// whole schema).
        pointer: String,
        /// The manifest's value there, as short JSON, or `nothing` when absent.
        manifest: String,
        /// The component's value there, as short JSON, or `nothing` when absent.
        code: String,
    },
    /// A schema string a component returned from `describe` is not JSON.
    #[error("the component's {which} for tool \"{tool}\" is not valid JSON: {source}")]
    DescriptorJson {
        /// The tool's name.
        tool: String,
        /// Which schema.
        which: SchemaKind,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

impl ManifestError {
    /// JSON path in the manifest of the problem, when the problem has one place.
    pub fn path(&self) -> Option<String> {
        match self {
            ManifestError::Json { path, .. }
            | ManifestError::Syntax { path, .. }
            | ManifestError::Invalid { path, .. }
            | ManifestError::InvalidSchema { path, .. } => Some(path.clone()),
            ManifestError::SchemaMismatch { index, which, .. } => {
                Some(format!("tools[{index}].{which}"))
            }
            ManifestError::ToolsDiffer { .. } | ManifestError::DuplicateDescriptor { .. } => {
                Some("tools".into())
            }
            ManifestError::Io { .. } | ManifestError::DescriptorJson { .. } => None,
        }
    }

    pub(crate) fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        ManifestError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

fn tools_differ(only_in_manifest: &[String], only_in_code: &[String]) -> String {
    let list = |names: &[String]| {
        names
            .iter()
            .map(|n| format!("\"{}\"", n.escape_debug()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    if !only_in_manifest.is_empty() {
        parts.push(format!(
            "declared in the manifest but not described by the component: {}",
            list(only_in_manifest)
        ));
    }
    if !only_in_code.is_empty() {
        parts.push(format!(
            "described by the component but not declared in the manifest: {}",
            list(only_in_code)
        ));
    }
    format!(
        "the manifest and the component disagree on tools: {}",
        parts.join("; ")
    )
}

/// Shorthand for this crate's results.
pub type Result<T, E = ManifestError> = std::result::Result<T, E>;
