//! The wasm export layer: converts the generated WIT types and forwards to
//! [`Analytics`](crate::Analytics).

use crate::Analytics;
use std::cell::RefCell;

wit_bindgen::generate!({
    world: "analytics-plugin",
    path: "../../wit",
});
hxp_plugin_sdk::wit_conversions!();

use exports::hxp::events::{analytics, plugin};
use hxp::events::{host, types};

thread_local! {
    static STATE: RefCell<Analytics> = RefCell::new(Analytics::default());
}

struct Component;

impl plugin::Guest for Component {
    fn metadata() -> types::PluginMetadata {
        convert::metadata(Analytics::metadata())
    }

    fn configure(config: String) -> Result<(), String> {
        STATE.with_borrow_mut(|a| a.configure(&config))
    }

    fn save_state() -> Vec<u8> {
        STATE.with_borrow(|a| a.save_state())
    }

    fn load_state(state_version: u32, state: Vec<u8>) -> Result<(), String> {
        STATE.with_borrow_mut(|a| a.load_state(state_version, &state))
    }
}

impl analytics::Guest for Component {
    fn process(events: types::EventBatch) {
        let events = convert::batch(events);
        if let Err(e) = events.check() {
            panic!("malformed event batch from the host: {e}");
        }
        let now = host::now_ms();
        STATE.with_borrow_mut(|a| a.process(&events, now));
    }

    fn snapshot() -> types::WindowSnapshot {
        let now = host::now_ms();
        convert::snapshot_to_wit(STATE.with_borrow_mut(|a| a.snapshot(now)))
    }
}

export!(Component);
