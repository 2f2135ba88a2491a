//! A personal task list kept in the plugin key-value store.
