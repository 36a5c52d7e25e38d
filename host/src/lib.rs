//! hxp-events: real-time event processing whose logic runs in sandboxed
//! WebAssembly components.
//!
//! `app` wires the parts: `config` → `store` (sqlx) → `plugin` (wasmtime)
//! → `pipeline` (batcher, processor thread, writer) → `api` (axum), with
//! `telemetry` (Prometheus) throughout.

pub mod api;
pub mod app;
pub mod config;
pub mod event;
pub mod ingest;
pub mod kafka;
pub mod loadgen;
pub mod pipeline;
pub mod plugin;
pub mod plugin_cli;
pub mod recalc;
pub mod store;
pub mod telemetry;
