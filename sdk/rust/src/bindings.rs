//! The generated bindings for the `cairn:plugin/plugin` world. Private to the SDK: authors
//! use the safe wrappers in `kv`, `config`, `log` and `http`, and the `plugin!` macro
//! reaches the export side through `crate::__private`.

wit_bindgen::generate!({
    world: "plugin",
    path: "../wit",
    // WASI HTTP is bound once, by the `wasip2` crate; reuse its types instead of
    // generating a second copy of them here.
    with: {
        "wasi:http/outgoing-handler@0.2.12": wasip2::http::outgoing_handler,
        "wasi:http/types@0.2.12": wasip2::http::types,
        "wasi:io/error@0.2.12": wasip2::io::error,
        "wasi:io/poll@0.2.12": wasip2::io::poll,
        "wasi:io/streams@0.2.12": wasip2::io::streams,
        "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
    },
    // The plugin crate expands the export macro (through `cairn_sdk::plugin!`), so it must
    // be reachable from there; it stays hidden from the docs.
    pub_export_macro: true,
    export_macro_name: "__export_cairn_plugin",
    default_bindings_module: "cairn_sdk::__private::bindings",
});
