//! The guest side of the three plugin worlds (wasm builds only).
//!
//! The bindings are generated here, once, from the crate's own copy of the
//! WIT (`wit/events.wit`), so a plugin crate needs neither a copy of the WIT
//! nor a `wit-bindgen` dependency: it implements [`Plugin`] and a stage trait
//! and calls [`export_analytics!`](crate::export_analytics),
//! [`export_correlation!`](crate::export_correlation) or
//! [`export_responses!`](crate::export_responses).
//!
//! Every world exports `plugin`, and wit-bindgen names the `#[macro_export]`
//! macro of an exported interface after the interface, so generating the
//! three `hxp:events` worlds in one crate would define the `plugin` macro
//! three times. Instead the bindings come in parts, each a world of the
//! SDK's own inline package `hxp:sdk` that exports one interface:
//! `plugin-part` (and the shared `types` and `host`, reused by the others
//! through `with`) and `analytics-part`, `correlation-part`,
//! `responses-part`. An export macro exports the `plugin` part and one stage
//! part; componentization unions their worlds, so the component has the
//! imports and exports of `hxp:events/<stage>-plugin` (which is all the host
//! looks at: it recognises a plugin by its exported interfaces).
//!
//! With `pub_export_macro`, each part's custom section here only describes
//! its imports; the world with its export is emitted by the export macro in
//! the plugin crate, so a plugin exports exactly the parts it asked for.

use crate::{Analytics, Correlation, Plugin, Responses};
use std::cell::RefCell;
use std::thread::LocalKey;

/// `interface plugin`, plus the shared `hxp:events/types` and
/// `hxp:events/host` and `convert` ([`wit_conversions!`](crate::wit_conversions)).
pub mod plugin {
    wit_bindgen::generate!({
        inline: "
            package hxp:sdk;
            world plugin-part {
                import hxp:events/host@0.1.0;
                export hxp:events/plugin@0.1.0;
            }
        ",
        path: "wit",
        world: "hxp:sdk/plugin-part",
        generate_all,
        pub_export_macro: true,
        default_bindings_module: "hxp_plugin_sdk::guest::plugin",
    });
    crate::wit_conversions!();
}

/// `interface analytics`.
pub mod analytics {
    wit_bindgen::generate!({
        inline: "
            package hxp:sdk;
            world analytics-part {
                import hxp:events/host@0.1.0;
                export hxp:events/analytics@0.1.0;
            }
        ",
        path: "wit",
        world: "hxp:sdk/analytics-part",
        pub_export_macro: true,
        default_bindings_module: "hxp_plugin_sdk::guest::analytics",
        with: {
            "hxp:events/types@0.1.0": super::plugin::hxp::events::types,
            "hxp:events/host@0.1.0": super::plugin::hxp::events::host,
        },
    });
}

/// `interface correlation`.
pub mod correlation {
    wit_bindgen::generate!({
        inline: "
            package hxp:sdk;
            world correlation-part {
                import hxp:events/host@0.1.0;
                export hxp:events/correlation@0.1.0;
            }
        ",
        path: "wit",
        world: "hxp:sdk/correlation-part",
        pub_export_macro: true,
        default_bindings_module: "hxp_plugin_sdk::guest::correlation",
        with: {
            "hxp:events/types@0.1.0": super::plugin::hxp::events::types,
            "hxp:events/host@0.1.0": super::plugin::hxp::events::host,
        },
    });
}

/// `interface responses`.
pub mod responses {
    wit_bindgen::generate!({
        inline: "
            package hxp:sdk;
            world responses-part {
                import hxp:events/host@0.1.0;
                export hxp:events/responses@0.1.0;
            }
        ",
        path: "wit",
        world: "hxp:sdk/responses-part",
        pub_export_macro: true,
        default_bindings_module: "hxp_plugin_sdk::guest::responses",
        with: {
            "hxp:events/types@0.1.0": super::plugin::hxp::events::types,
            "hxp:events/host@0.1.0": super::plugin::hxp::events::host,
        },
    });
}

/// The host's imports: `log` and the clock (`now_ms`).
pub use plugin::hxp::events::host;
/// The generated WIT types.
pub use plugin::hxp::events::types as wit;

/// The functions the export macros' `Guest` impls forward to: conversions
/// between the generated types and the SDK's plain types, around the plugin
/// value kept in the macro's `thread_local!`.
#[doc(hidden)]
pub mod glue {
    use super::plugin::convert;
    use super::*;
    use crate::EventBatch;

    pub type State<T> = LocalKey<RefCell<T>>;

    pub fn metadata<T: Plugin>() -> wit::PluginMetadata {
        convert::metadata(T::metadata())
    }

    pub fn configure<T: Plugin>(s: &'static State<T>, config: String) -> Result<(), String> {
        s.with_borrow_mut(|p| p.configure(&config))
    }

    pub fn save_state<T: Plugin>(s: &'static State<T>) -> Vec<u8> {
        s.with_borrow(|p| p.save_state())
    }

    pub fn load_state<T: Plugin>(
        s: &'static State<T>,
        state_version: u32,
        state: Vec<u8>,
    ) -> Result<(), String> {
        s.with_borrow_mut(|p| p.load_state(state_version, &state))
    }

    /// A batch from the host, checked once so that `EventBatch::get` cannot
    /// fail in the plugin. A malformed batch is a host bug: trap.
    fn batch(events: wit::EventBatch) -> EventBatch {
        let events = convert::batch(events);
        if let Err(e) = events.check() {
            panic!("malformed event batch from the host: {e}");
        }
        events
    }

    pub fn analytics_process<T: Analytics>(s: &'static State<T>, events: wit::EventBatch) {
        let events = batch(events);
        let now = host::now_ms();
        s.with_borrow_mut(|p| p.process(&events, now));
    }

    pub fn analytics_snapshot<T: Analytics>(s: &'static State<T>) -> wit::WindowSnapshot {
        let now = host::now_ms();
        convert::snapshot_to_wit(s.with_borrow_mut(|p| p.snapshot(now)))
    }

    pub fn correlation_process<T: Correlation>(
        s: &'static State<T>,
        events: wit::EventBatch,
    ) -> wit::CorrelationResult {
        let events = batch(events);
        let now = host::now_ms();
        let r = s.with_borrow_mut(|p| p.process(&events, now));
        wit::CorrelationResult {
            findings: r
                .findings
                .into_iter()
                .map(convert::finding_to_wit)
                .collect(),
            correlation_score: r.correlation_score,
        }
    }

    pub fn responses_decide<T: Responses>(
        s: &'static State<T>,
        input: wit::ResponseInput,
    ) -> Vec<wit::ActionRequest> {
        let input = convert::response_input(input);
        s.with_borrow_mut(|p| p.decide(&input))
            .into_iter()
            .map(convert::action_to_wit)
            .collect()
    }
}
