//! Guest SDK for Cairn plugin authors: write tools as plain Rust functions over serde types.
