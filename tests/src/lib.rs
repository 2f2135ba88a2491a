//! Black-box end-to-end tests against a running Cairn.
