//! Route groups, each with its own `router()`.

pub mod audit;
pub mod chat;
pub mod health;
pub mod plugins;
pub mod runs;
