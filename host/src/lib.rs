//! hxp-events: real-time event processing whose logic runs in sandboxed
//! WebAssembly components.
//!
//! Modules, lowest layer first; each imports only from the layers before
//! it (`make lint` checks that the `use crate::` graph has no cycle and
//! follows this order):
//!
//! 1. `util`, `event`, `plugin`: helpers, the event types and parsing, the
//!    wasmtime runtime. They know nothing of the service.
//! 2. `config`, `tls`: the config tree (serde schema, defaults, checks);
//!    the HTTPS listener and client built from it.
//! 3. `telemetry`: the Prometheus registry and the Pushgateway push.
//! 4. `store`: persistence (sqlx, SQLite or PostgreSQL) and its rows.
//! 5. `actions`: guardrails and the executors of automated responses.
//! 6. `pipeline`: intake, batcher, processor (stages, swaps, checkpoints),
//!    writer, replay, the live view.
//! 7. `sources`, `deploy`: HTTP/Kafka ingestion, hot deployment.
//! 8. `api`: the HTTP API.
//! 9. `cli`: the commands (`serve` wires everything).

pub mod util;

pub mod event;
pub mod plugin;

pub mod config;
pub mod tls;

pub mod telemetry;

pub mod store;

pub mod actions;

pub mod pipeline;

pub mod deploy;
pub mod sources;

pub mod api;

pub mod cli;
