//! Plugin manifest types.
