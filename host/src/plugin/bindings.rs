//! Host-side bindings for the `hxp:events@0.1.0` worlds.
//!
//! One `bindgen!` per world; the shared `types` and `host` interfaces are
//! generated once (by the analytics world) and reused by the others, so an
//! `Event` built by the pipeline can be handed to any stage unchanged.

pub mod analytics {
    wasmtime::component::bindgen!({
        world: "analytics-plugin",
        path: "../wit",
    });
    // `convert`: WIT types <-> the SDK's plain types (shared with guests).
    hxp_plugin_sdk::wit_conversions!();
}

pub mod correlation {
    wasmtime::component::bindgen!({
        world: "correlation-plugin",
        path: "../wit",
        with: {
            "hxp:events/types": super::analytics::hxp::events::types,
            "hxp:events/host": super::analytics::hxp::events::host,
        },
    });
}

pub mod responses {
    wasmtime::component::bindgen!({
        world: "responses-plugin",
        path: "../wit",
        with: {
            "hxp:events/types": super::analytics::hxp::events::types,
            "hxp:events/host": super::analytics::hxp::events::host,
        },
    });
}

pub use analytics::convert;
pub use analytics::hxp::events::host;
pub use analytics::hxp::events::types;

/// The WIT package version this host implements.
pub const WIT_PACKAGE: &str = "hxp:events";
pub const WIT_VERSION: &str = "0.1.0";

#[cfg(test)]
#[path = "bindings_proptests.rs"]
mod proptests;
