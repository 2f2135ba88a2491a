//! Host bindings generated from `sdk/wit`, kept private: callers see Cairn's own types.

wasmtime::component::bindgen!({
    path: "../../sdk/wit",
    world: "cairn:plugin/plugin",
    imports: { default: async | trappable },
    exports: { default: async },
    require_store_data_send: true,
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
    },
});

pub(crate) use cairn::plugin::{config, kv, logging};
pub(crate) use exports::cairn::plugin::tools::{ToolDescriptor, ToolError};
