//! `database` and `plugins`: where events, state and plugin files live.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// DATABASE_URL: `sqlite://PATH` (embedded, the default) or
    /// `postgres://USER@HOST:PORT/DB`.
    pub url: String,
    /// Connections (PostgreSQL; SQLite writes through one).
    pub max_connections: u32,
    /// DATABASE_RETENTION_SECS: events, batches, alerts and action
    /// requests older than this are deleted in the background (0: kept
    /// forever). An event resent after its retention is stored again.
    pub retention_secs: u64,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            url: "sqlite://data/hxp-events.db".into(),
            max_connections: 8,
            retention_secs: 7 * 24 * 3600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Plugins {
    /// EVENT_PROCESSING_PLUGIN_DIR: where `analytics.wasm`,
    /// `correlation.wasm` and `responses.wasm` are (`make build` puts them in
    /// target/plugins).
    pub directory: PathBuf,
    /// Compiled components, by content hash.
    pub cache_dir: PathBuf,
    /// Bounds of every plugin call (a manifest may set its own).
    pub limits: crate::plugin::Limits,
    /// Watch the plugin directory and the config file, and deploy changes
    /// while running.
    pub watch: bool,
    /// Quiet time after the last file change before a deployment starts.
    pub debounce_ms: u64,
    /// Every deployed version is kept here by content hash, for rollback
    /// and for restarts while the directory holds a rejected file.
    pub archive_dir: PathBuf,
    /// Largest component PUT /plugins/{name} accepts, in bytes (a Python
    /// plugin carries its interpreter).
    pub max_upload_bytes: usize,
    /// When a misbehaving version is taken out.
    pub quarantine: Quarantine,
}

/// `plugins.quarantine`: a version that traps, times out or hits its memory
/// limit `failures` times within `window_secs` is taken out: rolled back
/// to the previous version, or unloaded when there is none.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quarantine {
    /// 0 switches quarantine off.
    pub failures: u64,
    pub window_secs: u64,
}

impl Default for Quarantine {
    fn default() -> Self {
        Quarantine {
            failures: 10,
            window_secs: 60,
        }
    }
}

impl Default for Plugins {
    fn default() -> Self {
        Plugins {
            directory: "target/plugins".into(),
            cache_dir: "data/plugin-cache".into(),
            limits: crate::plugin::Limits::default(),
            watch: true,
            debounce_ms: 200,
            archive_dir: "data/plugin-archive".into(),
            max_upload_bytes: 64 << 20,
            quarantine: Quarantine::default(),
        }
    }
}

impl Database {
    pub(super) fn check(&self) -> Result<(), String> {
        let db = &self.url;
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return Err("database.url: must start with sqlite: or postgres://".into());
        }
        if self.max_connections == 0 {
            return Err("database.max_connections: must be at least 1".into());
        }
        Ok(())
    }
}
