//! Lines in the host's log, tagged by the host with plugin, tenant and run. The host caps
//! line length and lines per call, so log decisions, not data.
//!
//! On native targets lines go to standard error.

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Detail useful when debugging the plugin.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the plugin handled.
    Warn,
    /// A failure.
    Error,
}

/// Writes one line at `level`.
pub fn log(level: Level, message: &str) {
    imp::log(level, message)
}

/// Writes a `trace` line.
pub fn trace(message: &str) {
    log(Level::Trace, message)
}

/// Writes a `debug` line.
pub fn debug(message: &str) {
    log(Level::Debug, message)
}

/// Writes an `info` line.
pub fn info(message: &str) {
    log(Level::Info, message)
}

/// Writes a `warn` line.
pub fn warn(message: &str) {
    log(Level::Warn, message)
}

/// Writes an `error` line.
pub fn error(message: &str) {
    log(Level::Error, message)
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Level;
    use crate::bindings::cairn::plugin::logging as wit;

    pub fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        wit::log(level, message);
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::Level;

    pub fn log(level: Level, message: &str) {
        eprintln!("[{level:?}] {message}");
    }
}
