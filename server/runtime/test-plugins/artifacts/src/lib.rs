//! Paths of the plugins the runtime's tests and benchmarks run, built from source by this
//! crate's `build.rs` (never committed as binaries).

/// An example plugin from `plugins/`, built for `wasm32-wasip2`.
#[derive(Debug, Clone, Copy)]
pub struct ExamplePlugin {
    /// The directory name under `plugins/`, e.g. `table`.
    pub name: &'static str,
    /// The built component.
    pub component: &'static str,
    /// Its `cairn-plugin.json`.
    pub manifest: &'static str,
}

/// The hostile plugin's tools, as its `describe()` returns them (each with input and
/// output schema `{"type":"object"}`), for tests that write its manifest.
pub const HOSTILE_TOOLS: &[&str] = &[
    "noop",
    "echo",
    "counter",
    "infinite_loop",
    "allocate_forever",
    "recurse_forever",
    "huge_output",
    "fetch",
    "fetch_many",
    "panic",
    "read_file",
    "read_env",
    "kv_set",
    "kv_get",
    "config_get",
    "log_flood",
];

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
