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

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
