//! Typed plugin errors: each names the plugin (or file) and what happened.

use serde::Serialize;

/// Why a plugin file was refused.
#[derive(Debug, Clone, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LoadError {
    #[error("{path}: cannot read: {message}")]
    Io { path: String, message: String },
    #[error("{path}: not a WebAssembly file ({size} bytes, no \\0asm header)")]
    NotWasm { path: String, size: usize },
    #[error(
        "{path}: is a core WebAssembly module, not a component (build the plugin with `cargo build --target wasm32-wasip2`)"
    )]
    CoreModule { path: String },
    #[error("{path}: not a valid component: {message}")]
    Invalid { path: String, message: String },
    #[error(
        "{path}: wrong world: exports none of hxp:events/analytics, correlation or responses (it exports: {})",
        if exports.is_empty() { "nothing".to_string() } else { exports.join(", ") }
    )]
    WrongWorld { path: String, exports: Vec<String> },
    #[error("{path}: built for {found}, this host implements {supported}")]
    WrongVersion {
        path: String,
        found: String,
        supported: String,
    },
    #[error("{path}: imports {import}, which plugins may not use (only WASI and hxp:events/host)")]
    ForbiddenImport { path: String, import: String },
    #[error("{path}: incompatible: {message}")]
    Incompatible { path: String, message: String },
}

/// What went wrong in a call into a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// Ran past its deadline and was interrupted.
    Timeout,
    /// Tried to grow memory past its limit.
    MemoryLimit,
    /// Trapped (a panic, `unreachable`, out of bounds, stack overflow...).
    Trap,
    /// Returned something the host refuses (too large, inconsistent).
    BadOutput,
    /// Returned an error (configure, load-state).
    Rejected,
    /// Could not be instantiated (its start code trapped, for example).
    Instantiate,
}

#[derive(Debug, Clone, thiserror::Error, Serialize)]
#[error("plugin '{plugin}': {call}: {}", describe(self))]
pub struct PluginError {
    pub plugin: String,
    /// The export that was called.
    pub call: &'static str,
    pub failure: Failure,
    pub message: String,
}

fn describe(e: &PluginError) -> String {
    let what = match e.failure {
        Failure::Timeout => "timed out",
        Failure::MemoryLimit => "hit its memory limit",
        Failure::Trap => "trapped",
        Failure::BadOutput => "returned an invalid result",
        Failure::Rejected => "refused",
        Failure::Instantiate => "could not be instantiated",
    };
    if e.message.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {}", e.message)
    }
}

impl Failure {
    /// The name used in metrics labels and JSON (its serde name).
    pub fn as_str(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::MemoryLimit => "memory_limit",
            Failure::Trap => "trap",
            Failure::BadOutput => "bad_output",
            Failure::Rejected => "rejected",
            Failure::Instantiate => "instantiate",
        }
    }
}

impl PluginError {
    /// True when the instance was discarded (everything but a refusal).
    pub fn poisoned(&self) -> bool {
        !matches!(self.failure, Failure::Rejected)
    }
}
