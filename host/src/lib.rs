//! hxp-events: real-time event processing whose logic runs in sandboxed
//! WebAssembly components.
//!
//! `app` wires the parts: `config` → `store` (sqlx) → `plugin` (wasmtime)
//! → `pipeline` (batcher, processor thread, writer) → `api` (axum), with
//! `telemetry` (Prometheus) throughout; `deploy` watches the plugin
//! directory and the config file and hot-swaps plugins between batches.

pub mod api;
pub mod app;
pub mod config;
pub mod deploy;
pub mod event;
pub mod executor;
pub mod ingest;
pub mod kafka;
pub mod loadgen;
pub mod pipeline;
pub mod plugin;
pub mod plugin_cli;
pub mod push;
pub mod recalc;
pub mod store;
pub mod telemetry;
