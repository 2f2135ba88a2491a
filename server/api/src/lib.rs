//! The Cairn service and its command-line tool.
//!
//! Today this crate holds the `cairn` CLI for plugin authors and auditors:
//! [`cli`] parses commands, [`package`] reads and writes plugin packages,
//! [`scaffold`] writes new plugins, and [`sandbox`] runs tools in the real runtime.
#![warn(missing_docs)]

pub mod cli;
pub mod package;
pub mod sandbox;
pub mod scaffold;
