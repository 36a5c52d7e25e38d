//! The wasm export layer: converts the generated WIT types and forwards to
//! [`Responses`](crate::Responses).

use crate::Responses;
use std::cell::RefCell;

wit_bindgen::generate!({
    world: "responses-plugin",
    path: "../../wit",
});
hxp_plugin_sdk::wit_conversions!();

use exports::hxp::events::{plugin, responses};
use hxp::events::types;

thread_local! {
    static STATE: RefCell<Responses> = RefCell::new(Responses::default());
}

struct Component;

impl plugin::Guest for Component {
    fn metadata() -> types::PluginMetadata {
        convert::metadata(Responses::metadata())
    }

    fn configure(config: String) -> Result<(), String> {
        STATE.with_borrow_mut(|r| r.configure(&config))
    }

    fn save_state() -> Vec<u8> {
        STATE.with_borrow(|r| r.save_state())
    }

    fn load_state(state_version: u32, state: Vec<u8>) -> Result<(), String> {
        STATE.with_borrow_mut(|r| r.load_state(state_version, &state))
    }
}

impl responses::Guest for Component {
    fn decide(input: types::ResponseInput) -> Vec<types::ActionRequest> {
        let input = convert::response_input(input);
        STATE
            .with_borrow_mut(|r| r.decide(&input))
            .into_iter()
            .map(convert::action_to_wit)
            .collect()
    }
}

export!(Component);
