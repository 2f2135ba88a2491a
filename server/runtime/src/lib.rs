//! The wasmtime host that runs Cairn plugins.
