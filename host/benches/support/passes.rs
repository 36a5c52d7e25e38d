//! Timing a plugin stage over the recorded stream, shared by the benches
//! that call plugins directly (plugin_stages, correlation_rules).

use super::mix::EVENTS;
use hxp_events::plugin::{convert, types};
use hxp_plugin_sdk::{Event, EventBatch};
use std::time::Instant;

/// The stream cut into host-side batches, each with the time of its last
/// event (the clock the plugins see when it is processed).
pub fn batches(events: &[Event], size: usize) -> Vec<(types::EventBatch, i64)> {
    events
        .chunks(size)
        .map(|c| {
            let now = c.last().map(|e| e.time_ms).unwrap_or(0);
            (convert::batch_to_wit(EventBatch::from_events(c)), now)
        })
        .collect()
}

/// Time one pass; returns ns per event.
pub fn pass(
    batches: &[(types::EventBatch, i64)],
    mut f: impl FnMut(&types::EventBatch, i64),
) -> f64 {
    let started = Instant::now();
    for (b, now) in batches {
        f(b, *now);
    }
    started.elapsed().as_nanos() as f64 / EVENTS as f64
}
