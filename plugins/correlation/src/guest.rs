//! The wasm export layer: converts the generated WIT types and forwards to
//! [`Correlation`](crate::Correlation).

use crate::Correlation;
use std::cell::RefCell;

wit_bindgen::generate!({
    world: "correlation-plugin",
    path: "../../wit",
});
hxp_plugin_sdk::wit_conversions!();

use exports::hxp::events::{correlation, plugin};
use hxp::events::{host, types};

thread_local! {
    static STATE: RefCell<Correlation> = RefCell::new(Correlation::default());
}

struct Component;

impl plugin::Guest for Component {
    fn metadata() -> types::PluginMetadata {
        convert::metadata(Correlation::metadata())
    }

    fn configure(config: String) -> Result<(), String> {
        STATE.with_borrow_mut(|c| c.configure(&config))
    }

    fn save_state() -> Vec<u8> {
        STATE.with_borrow(|c| c.save_state())
    }

    fn load_state(state_version: u32, state: Vec<u8>) -> Result<(), String> {
        STATE.with_borrow_mut(|c| c.load_state(state_version, &state))
    }
}

impl correlation::Guest for Component {
    fn process(events: types::EventBatch) -> types::CorrelationResult {
        let events = convert::batch(events);
        if let Err(e) = events.check() {
            panic!("malformed event batch from the host: {e}");
        }
        let now = host::now_ms();
        let r = STATE.with_borrow_mut(|c| c.process(&events, now));
        types::CorrelationResult {
            findings: r
                .findings
                .into_iter()
                .map(convert::finding_to_wit)
                .collect(),
            correlation_score: r.correlation_score,
        }
    }
}

export!(Component);
