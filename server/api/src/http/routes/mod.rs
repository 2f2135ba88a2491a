//! Route groups, each with its own `router()`: parse, authorise, call `cairn_app::App`,
//! render.

pub mod audit;
pub mod chat;
pub mod health;
pub mod plugins;
pub mod policy;
pub mod runs;
