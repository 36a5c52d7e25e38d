#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    world: "analytics-plugin",
    path: "wit",
});

use exports::hxp::events::{analytics, plugin};
use hxp::events::types;

struct Future;

impl plugin::Guest for Future {
    fn metadata() -> types::PluginMetadata {
        types::PluginMetadata {
            name: "future".into(),
            version: "2.0.0".into(),
        }
    }
}

impl analytics::Guest for Future {
    fn process(events: Vec<types::Event>) -> u64 {
        events.len() as u64
    }
}

export!(Future);
