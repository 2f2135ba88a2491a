//! Guest SDK for Cairn plugin authors: write tools as plain Rust functions over serde
//! types, register them with [`plugin!`], and the SDK implements the
//! `cairn:plugin/tools` export of the WIT contract for you.
//!
//! A tool is a function `fn(Input) -> Result<Output, ToolError>` where `Input` derives
//! `Deserialize + JsonSchema` and `Output` derives `Serialize + JsonSchema`. The tool's
//! name is the function's name. `describe` reports JSON Schemas (draft 2020-12) generated
//! by `schemars` from the two types; `call` deserialises the arguments (a bad argument is
//! answered with an `invalid_input` error that names the field), runs the function and
//! serialises its result.
//!
//! # Setup
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib", "rlib"]   # cdylib: the component; rlib: native unit tests
//!
//! [dependencies]
//! cairn-sdk = { path = "../../sdk/rust" }
//! serde = { version = "1", features = ["derive"] }   # the derives expand to `serde::` paths
//! schemars = "1.2"                                   # and `schemars::` paths
//! ```
//!
//! # Example
//!
//! ```
//! use cairn_sdk::prelude::*;
//!
//! #[derive(Deserialize, JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct Greet {
//!     /// Who to greet.
//!     name: String,
//! }
//!
//! #[derive(Serialize, JsonSchema)]
//! struct Greeting {
//!     /// The greeting text.
//!     text: String,
//! }
//!
//! /// Greets someone, remembering how often we did.
//! fn greet(input: Greet) -> Result<Greeting, ToolError> {
//!     if input.name.trim().is_empty() {
//!         return Err(ToolError::invalid_input("`name` must not be empty"));
//!     }
//!     let key = format!("greeted/{}", input.name);
//!     let count: u32 = kv::get_json(&key)?.unwrap_or(0) + 1;
//!     kv::set_json(&key, &count)?;
//!     log::info(&format!("greeting {}", input.name));
//!     Ok(Greeting { text: format!("Hello, {} (#{count})!", input.name) })
//! }
//!
//! cairn_sdk::plugin! { tools: [greet] }
//!
//! // Native unit tests call the tools the way the host does, through JSON...
//! let out = call_tool("greet", r#"{"name":"Anna"}"#).unwrap();
//! assert_eq!(out, r#"{"text":"Hello, Anna (#1)!"}"#);
//! let err = call_tool("greet", r#"{"name":7}"#).unwrap_err();
//! assert_eq!(err.code, "invalid_input");
//! // ...and check the manifest against the code (see `testing::check_manifest`):
//! assert_eq!(descriptors()[0].name, "greet");
//! ```
//!
//! In the plugin crate (`crate-type = ["cdylib", "rlib"]`) a test keeps the manifest honest:
//!
//! ```no_run
//! # fn descriptors() -> Vec<cairn_sdk::ToolDescriptor> { vec![] }
//! #[test]
//! fn manifest_matches_code() {
//!     let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/cairn-plugin.json");
//!     cairn_sdk::testing::check_manifest(manifest, &descriptors()).unwrap();
//! }
//! ```
//! Run it with `CAIRN_BLESS=1` to write the code's schemas into the manifest.
//!
//! Build the component with `cargo build --target wasm32-wasip2 --profile plugin`.
//!
//! # Host capabilities
//! - [`kv`]: a key-value store scoped by the host to (tenant, plugin, user).
//! - [`config`]: settings an administrator gave the plugin at install.
//! - [`log`]: lines in the host's log, tagged with plugin, tenant and run.
//! - [`http`]: a blocking HTTP client; the host checks every request (and every redirect
//!   hop) against the manifest's `outbound_hosts` and injects credentials itself.
//!
//! On native targets (unit tests) `kv` and `config` are in-memory and `http` answers from
//! a mock installed with [`testing::mock_http`]; each test thread has its own state.
#![warn(missing_docs)]

pub mod config;
mod error;
pub mod http;
pub mod kv;
pub mod log;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

#[allow(missing_docs, unsafe_op_in_unsafe_fn, clippy::all)]
mod bindings;

pub use error::ToolError;

/// Re-exports for plugin code: `use cairn_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::ToolError;
    pub use crate::{config, http, kv, log};
    pub use schemars::JsonSchema;
    pub use serde::{Deserialize, Serialize};
}

// Derive macros expand to paths such as `schemars::...` and `serde::...`, so plugin crates
// still list `serde` and `schemars` as their own dependencies; these re-exports are for
// code that wants the exact versions the SDK uses.
pub use schemars;
pub use serde;
pub use serde_json;

/// What a plugin says about one of its tools: the name and the JSON Schemas (draft
/// 2020-12) generated from its input and output types. The host checks these against the
/// manifest at load; [`testing::check_manifest`] does the same in `cargo test`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDescriptor {
    /// The tool's name: the name of the function that implements it.
    pub name: String,
    /// JSON Schema of the arguments.
    pub input_schema: serde_json::Value,
    /// JSON Schema of the result.
    pub output_schema: serde_json::Value,
}

/// Declares the plugin's tools and exports them to the host.
///
/// ```ignore
/// cairn_sdk::plugin! { tools: [add_task, list_tasks, complete_task] }
/// ```
///
/// Each entry names a function `fn(I) -> Result<O, ToolError>` in scope, where
/// `I: Deserialize + JsonSchema` and `O: Serialize + JsonSchema`; the tool is called by the
/// function's name. Use it once per plugin crate, at the crate root.
///
/// Besides the WebAssembly export (compiled only for `wasm32`), the macro defines two
/// public functions in the calling module, for tests and tooling:
/// - `pub fn descriptors() -> Vec<cairn_sdk::ToolDescriptor>`: what `describe` reports;
/// - `pub fn call_tool(name: &str, arguments: &str) -> Result<String, cairn_sdk::ToolError>`:
///   what `call` does, JSON text in and out, including `invalid_input` and
///   `unknown_tool` errors.
#[macro_export]
macro_rules! plugin {
    (tools: [$($tool:ident),+ $(,)?] $(,)?) => {
        /// The plugin's tools with their JSON Schemas, as `describe` reports them.
        pub fn descriptors() -> ::std::vec::Vec<$crate::ToolDescriptor> {
            ::std::vec![$($crate::__private::descriptor(::core::stringify!($tool), &$tool)),+]
        }

        /// Calls the tool `name` with JSON `arguments`, as the host does.
        pub fn call_tool(
            name: &str,
            arguments: &str,
        ) -> ::core::result::Result<::std::string::String, $crate::ToolError> {
            $(
                if name == ::core::stringify!($tool) {
                    return $crate::__private::call(&$tool, arguments);
                }
            )+
            ::core::result::Result::Err($crate::ToolError::unknown_tool(name))
        }

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __CairnPlugin;

            impl $crate::__private::Guest for __CairnPlugin {
                fn describe() -> ::std::vec::Vec<$crate::__private::WitToolDescriptor> {
                    $crate::__private::describe(descriptors())
                }

                fn call(
                    name: ::std::string::String,
                    arguments: ::std::string::String,
                ) -> ::core::result::Result<::std::string::String, $crate::__private::WitToolError>
                {
                    call_tool(&name, &arguments).map_err($crate::__private::wit_error)
                }
            }

            $crate::__export_plugin_impl!(__CairnPlugin with_types_in $crate::__private::bindings);
        };
    };
}

/// Support for [`plugin!`]; not a stable API.
#[doc(hidden)]
pub mod __private {
    use crate::{ToolDescriptor, ToolError};
    use schemars::JsonSchema;
    use schemars::generate::SchemaSettings;
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    pub use crate::bindings::exports::cairn::plugin::tools::Guest;
    pub use crate::bindings::exports::cairn::plugin::tools::{
        ToolDescriptor as WitToolDescriptor, ToolError as WitToolError,
    };

    /// The generated bindings, for the export macro's `with_types_in`.
    pub mod bindings {
        pub use crate::bindings::*;
    }

    /// The JSON Schema of `T` as the host sees it: draft 2020-12, `$defs` for shared types.
    pub fn input_schema<T: JsonSchema>() -> serde_json::Value {
        SchemaSettings::draft2020_12()
            .for_deserialize()
            .into_generator()
            .into_root_schema_for::<T>()
            .into()
    }

    /// The JSON Schema of what `T` serialises to.
    pub fn output_schema<T: JsonSchema>() -> serde_json::Value {
        SchemaSettings::draft2020_12()
            .for_serialize()
            .into_generator()
            .into_root_schema_for::<T>()
            .into()
    }

    /// Describes the tool `name` implemented by `_f`; the function is only used to infer
    /// its input and output types.
    pub fn descriptor<I, O, F>(name: &str, _f: &F) -> ToolDescriptor
    where
        I: JsonSchema,
        O: JsonSchema,
        F: Fn(I) -> Result<O, ToolError>,
    {
        ToolDescriptor {
            name: name.to_owned(),
            input_schema: input_schema::<I>(),
            output_schema: output_schema::<O>(),
        }
    }

    /// Deserialises `arguments`, calls `f` and serialises its result.
    pub fn call<I, O, F>(f: &F, arguments: &str) -> Result<String, ToolError>
    where
        I: DeserializeOwned,
        O: Serialize,
        F: Fn(I) -> Result<O, ToolError>,
    {
        let input = parse_arguments::<I>(arguments)?;
        let output = f(input)?;
        serde_json::to_string(&output)
            .map_err(|e| ToolError::internal(format!("could not serialise the result: {e}")))
    }

    /// Deserialises tool arguments, naming the offending field on failure.
    pub fn parse_arguments<I: DeserializeOwned>(arguments: &str) -> Result<I, ToolError> {
        let mut de = serde_json::Deserializer::from_str(arguments);
        let value = serde_path_to_error::deserialize::<_, I>(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let message = strip_position(&e.inner().to_string());
            if path == "." || path.is_empty() {
                ToolError::invalid_input(format!("invalid arguments: {message}"))
            } else {
                ToolError::invalid_input(format!("invalid argument `{path}`: {message}"))
            }
        })?;
        // Trailing characters after the object are an error too.
        de.end().map_err(|e| {
            ToolError::invalid_input(format!(
                "invalid arguments: {}",
                strip_position(&e.to_string())
            ))
        })?;
        Ok(value)
    }

    /// serde_json appends "at line 1 column 17" to its messages; the path says it better.
    fn strip_position(message: &str) -> String {
        match message.rfind(" at line ") {
            Some(i) if message[i..].contains(" column ") => message[..i].to_owned(),
            _ => message.to_owned(),
        }
    }

    /// Converts descriptors to the WIT record, schemas as JSON text.
    pub fn describe(descriptors: Vec<ToolDescriptor>) -> Vec<WitToolDescriptor> {
        descriptors
            .into_iter()
            .map(|d| WitToolDescriptor {
                name: d.name,
                input_schema: d.input_schema.to_string(),
                output_schema: d.output_schema.to_string(),
            })
            .collect()
    }

    /// Converts a tool error to the WIT record.
    pub fn wit_error(e: ToolError) -> WitToolError {
        WitToolError {
            code: e.code,
            message: e.message,
        }
    }
}
