//! The reasoning loop end to end: a scripted model, the real runtime with the `tasks`,
//! `table` and hostile plugins, and a real ledger (SQLite, PostgreSQL where it matters).
//! Every test checks the run's exact ledger trail and that the chain verifies.

mod approval_binding;
mod approvals;
mod helpers;
mod loop_tests;
mod selection;
