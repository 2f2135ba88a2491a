//! Route groups, each with its own `router()`.

pub mod audit;
pub mod health;
pub mod plugins;
