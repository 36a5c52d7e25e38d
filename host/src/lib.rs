//! hxp-events: real-time event processing whose logic runs in sandboxed
//! WebAssembly components.

pub mod event;
pub mod plugin;
pub mod plugin_cli;
