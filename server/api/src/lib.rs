//! The Cairn service and its command-line tool.
//!
//! The server: [`config`] (settings), [`startup`] (`Application::build`, then
//! `run_until_stopped`), [`http`] (the router, errors, extractors, authentication and
//! routes: thin adapters over the application layer, `cairn_app`), [`copilot`] (the
//! configured model, tool retrieval and the tenant's plugins as the loop's tools) and
//! [`registry`] (installed plugins per tenant). The `cairn` CLI: [`cli`]
//! parses commands (`cairn serve` runs the server, `cairn audit` checks the ledger).
//! Plugin packages are read with [`package`] (the `cairn-package` crate, which the
//! author's tool `cairn-plugin` writes them with).
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod copilot;
pub mod http;
pub mod registry;
pub mod startup;

pub use cairn_package as package;
