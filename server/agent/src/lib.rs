//! The reasoning loop: run state machine, tool dispatch, schema validation, approvals.
#![warn(missing_docs)]
