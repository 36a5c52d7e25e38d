//! What a plugin implements: [`Plugin`] plus one stage trait
//! ([`Analytics`], [`Correlation`] or [`Responses`]), then one export macro
//! line turns the type into the wasm component of that stage's world:
//!
//! ```
//! use hxp_plugin_sdk::prelude::*;
//! #[derive(Default)]
//! struct Pager;
//! impl Plugin for Pager {
//!     fn metadata() -> Metadata {
//!         Metadata::new("pager", "0.1.0")
//!     }
//! }
//! impl Responses for Pager {
//!     fn decide(&mut self, input: &ResponseInput) -> Vec<ActionRequest> {
//!         let page = ActionRequest::new("pager", "page_oncall", "team");
//!         Vec::from_iter((input.analytics.overall.error_rate > 0.5).then_some(page))
//!     }
//! }
//! hxp_plugin_sdk::export_responses!(Pager);
//! ```
//!
//! The methods mirror the WIT functions (`interface plugin` and the stage
//! interfaces in `wit/events.wit`) with the SDK's plain types; the export
//! macro converts, keeps one instance of the type (created with
//! [`Default`]) for the life of the component instance, and reads the host
//! clock for the `now_ms` arguments. Outside wasm the macros only check that
//! the type implements the traits, so the same crate can be unit-tested
//! natively by calling the methods directly.

use crate::{ActionRequest, CorrelationResult, EventBatch, Metadata, ResponseInput, Snapshot};

/// `interface plugin`: what every plugin implements.
pub trait Plugin: Default + 'static {
    /// Name, version and state handling of the plugin (see
    /// [`Metadata::new`]).
    fn metadata() -> Metadata;

    /// The plugin's section of the service config, as JSON text (empty when
    /// there is none). An error names what is wrong; the host keeps the
    /// previous config. Default: accept anything.
    fn configure(&mut self, config: &str) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// Serialized state, given to `load_state` of this or a later version on
    /// hot swap and restart. Default: no state.
    fn save_state(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Restore what `save_state` produced; `state_version` is the
    /// `Metadata::state_version` of the plugin that saved it. Default: ignore
    /// it (start empty).
    fn load_state(&mut self, state_version: u32, state: &[u8]) -> Result<(), String> {
        let _ = (state_version, state);
        Ok(())
    }
}

/// `interface analytics` (world `analytics-plugin`).
pub trait Analytics: Plugin {
    /// Fold a batch (already checked with [`EventBatch::check`]) into the
    /// window. `now_ms` is the host clock.
    fn process(&mut self, events: &EventBatch, now_ms: i64);

    /// Aggregates over the window as of `now_ms` (the host clock).
    fn snapshot(&mut self, now_ms: i64) -> Snapshot;
}

/// `interface correlation` (world `correlation-plugin`).
pub trait Correlation: Plugin {
    /// Fold a batch (already checked with [`EventBatch::check`]) into the
    /// correlation window and report the active findings. `now_ms` is the
    /// host clock.
    fn process(&mut self, events: &EventBatch, now_ms: i64) -> CorrelationResult;
}

/// `interface responses` (world `responses-plugin`).
pub trait Responses: Plugin {
    /// Which actions to ask for. Plugins ask; the host decides whether and
    /// how to act (executors, category switches, cooldowns, dry run).
    fn decide(&mut self, input: &ResponseInput) -> Vec<ActionRequest>;
}

/// Exports `$ty` (a [`Plugin`] + [`Analytics`]) as the `analytics-plugin`
/// world. Once per crate (a `cdylib`).
#[macro_export]
macro_rules! export_analytics {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            $crate::__export_plugin!($ty);
            impl $crate::guest::analytics::exports::hxp::events::analytics::Guest for __HxpGuest {
                fn process(events: $crate::guest::wit::EventBatch) {
                    $crate::guest::glue::analytics_process(&__HXP_STATE, events)
                }
                fn snapshot() -> $crate::guest::wit::WindowSnapshot {
                    $crate::guest::glue::analytics_snapshot(&__HXP_STATE)
                }
            }
    $crate::guest::analytics::export!(__HxpGuest with_types_in $crate::guest::analytics);
        };
        $crate::__check_plugin!($ty, $crate::Analytics);
    };
}

/// Exports `$ty` (a [`Plugin`] + [`Correlation`]) as the
/// `correlation-plugin` world. Once per crate (a `cdylib`).
#[macro_export]
macro_rules! export_correlation {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            $crate::__export_plugin!($ty);
            impl $crate::guest::correlation::exports::hxp::events::correlation::Guest for __HxpGuest {
                fn process(
                    events: $crate::guest::wit::EventBatch,
                ) -> $crate::guest::wit::CorrelationResult {
                    $crate::guest::glue::correlation_process(&__HXP_STATE, events)
                }
            }
            $crate::guest::correlation::export!(__HxpGuest with_types_in $crate::guest::correlation);
        };
        $crate::__check_plugin!($ty, $crate::Correlation);
    };
}

/// Exports `$ty` (a [`Plugin`] + [`Responses`]) as the `responses-plugin`
/// world. Once per crate (a `cdylib`).
#[macro_export]
macro_rules! export_responses {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            $crate::__export_plugin!($ty);
            impl $crate::guest::responses::exports::hxp::events::responses::Guest for __HxpGuest {
                fn decide(
                    input: $crate::guest::wit::ResponseInput,
                ) -> ::std::vec::Vec<$crate::guest::wit::ActionRequest> {
                    $crate::guest::glue::responses_decide(&__HXP_STATE, input)
                }
            }
    $crate::guest::responses::export!(__HxpGuest with_types_in $crate::guest::responses);
        };
        $crate::__check_plugin!($ty, $crate::Responses);
    };
}

/// The part every export shares: the instance (`__HXP_STATE`), the exported
/// type (`__HxpGuest`) and its `plugin::Guest` impl.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_plugin {
    ($ty:ty) => {
        struct __HxpGuest;
        ::std::thread_local! {
            static __HXP_STATE: ::std::cell::RefCell<$ty> =
                ::std::cell::RefCell::new(<$ty as ::core::default::Default>::default());
        }
        impl $crate::guest::plugin::exports::hxp::events::plugin::Guest for __HxpGuest {
            fn metadata() -> $crate::guest::wit::PluginMetadata {
                $crate::guest::glue::metadata::<$ty>()
            }
            fn configure(
                config: ::std::string::String,
            ) -> ::core::result::Result<(), ::std::string::String> {
                $crate::guest::glue::configure(&__HXP_STATE, config)
            }
            fn save_state() -> ::std::vec::Vec<u8> {
                $crate::guest::glue::save_state(&__HXP_STATE)
            }
            fn load_state(
                state_version: u32,
                state: ::std::vec::Vec<u8>,
            ) -> ::core::result::Result<(), ::std::string::String> {
                $crate::guest::glue::load_state(&__HXP_STATE, state_version, state)
            }
        }
        $crate::guest::plugin::export!(__HxpGuest with_types_in $crate::guest::plugin);
    };
}

/// Outside wasm: only check that the exported type implements the traits.
#[doc(hidden)]
#[macro_export]
macro_rules! __check_plugin {
    ($ty:ty, $stage:path) => {
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn implements<T: $stage>() {}
            let _ = implements::<$ty>;
        };
    };
}
