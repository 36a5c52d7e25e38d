//! The WebAssembly plugin runtime: one engine, compiled components cached
//! on disk by content hash, pre-instantiation, and bounded calls.

pub mod bindings;
pub mod engine;
pub mod error;
pub mod instance;
mod pipe;
pub mod state;

pub use bindings::{convert, types};
pub use engine::{LoadedComponent, PluginEngine, PluginKind};
pub use error::{Failure, LoadError, PluginError};
pub use instance::{CallStats, Limits, Plugin};
pub use state::Clock;
