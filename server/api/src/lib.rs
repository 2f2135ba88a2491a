//! The Cairn service: axum API, authentication, configuration and the cairn command-line tool.
