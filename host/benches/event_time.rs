//! What event time costs the plugin stages: the default analytics and
//! correlation components through wasmtime, at the default batch of 100,
//! on the same recorded stream placed four ways, all in this invocation:
//!
//! - processing time: every event of a batch at the batch's time (the host
//!   does this with `stream_processing.time: processing`), the baseline;
//! - event time, in order: the events' own times, watermark = newest;
//! - event time with 10% of the events 1–5 s out of order, no lateness
//!   (they go straight into their second's slot);
//! - the same with `allowed_lateness_secs: 5` (every event waits until the
//!   watermark reaches it, and correlation folds them in time order).
//!
//! Run with `cargo bench -p hxp-events --bench event_time`. ns per event
//! (analytics process + snapshot, correlation process), median of 15
//! passes, interleaved; the spread (min–max) is printed beside it, and the
//! ratio is the median of the ratios within each round.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "support/mix.rs"]
mod mix;

use hxp_events::plugin::{Clock, Limits, Plugin, PluginEngine, convert, types};
use hxp_plugin_sdk::{Event, EventBatch};
use std::time::Instant;

const RUNS: usize = 15;
const BATCH: usize = 100;
/// 100 events per second of event time: 100,000 events span 1,000 s, so
/// both windows (300 s, 60 s) fill and slide.
const MS_PER_EVENT: i64 = 10;

/// How the events are placed in time, and the watermark's lateness.
struct Placement {
    name: &'static str,
    arrival: bool,
    out_of_order: bool,
    lateness_ms: i64,
}

const PLACEMENTS: [Placement; 4] = [
    Placement {
        name: "processing time",
        arrival: true,
        out_of_order: false,
        lateness_ms: 0,
    },
    Placement {
        name: "event time, in order",
        arrival: false,
        out_of_order: false,
        lateness_ms: 0,
    },
    Placement {
        name: "event time, 10% out of order",
        arrival: false,
        out_of_order: true,
        lateness_ms: 0,
    },
    Placement {
        name: "event time, 10% out of order, lateness 5 s",
        arrival: false,
        out_of_order: true,
        lateness_ms: 5_000,
    },
];

/// The stream's batches as placed, each with the plugins' clock.
fn placed(p: &Placement) -> Vec<(types::EventBatch, i64)> {
    let mut events: Vec<Event> = mix::stream();
    let base = events[0].time_ms;
    for (i, e) in events.iter_mut().enumerate() {
        e.time_ms = base + i as i64 * MS_PER_EVENT;
        if p.out_of_order && i % 10 == 3 {
            e.time_ms -= 1_000 + (i as i64 * 7919) % 4_000;
        }
    }
    let mut newest = i64::MIN;
    events
        .chunks(BATCH)
        .map(|c| {
            newest = newest.max(c.iter().map(|e| e.time_ms).max().unwrap_or(newest));
            let mut b = EventBatch::from_events(c);
            if p.arrival {
                b.place_at(newest);
            }
            (convert::batch_to_wit(b), newest - p.lateness_ms)
        })
        .collect()
}

/// One pass of both stages over the batches; ns per event.
fn pass(engine: &std::sync::Arc<PluginEngine>, batches: &[(types::EventBatch, i64)]) -> f64 {
    let clock = Clock::manual(0);
    let load = |name: &str| {
        let loaded = engine.load_file(&common::wasm(name)).unwrap();
        Plugin::new(engine.clone(), loaded, Limits::default(), clock.clone()).unwrap()
    };
    let (mut a, mut c) = (load("hxp_analytics"), load("hxp_correlation"));
    let started = Instant::now();
    for (b, now) in batches {
        clock.set_ms(*now);
        a.analytics_process(b).unwrap();
        std::hint::black_box(a.analytics_snapshot().unwrap());
        std::hint::black_box(c.correlation_process(b).unwrap());
    }
    started.elapsed().as_nanos() as f64 / mix::EVENTS as f64
}

fn main() {
    let engine = PluginEngine::new(None).unwrap();
    let inputs: Vec<_> = PLACEMENTS.iter().map(placed).collect();
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); PLACEMENTS.len()];
    // Interleaved, so that drift of the machine hits every placement alike.
    for _ in 0..RUNS {
        for (r, input) in runs.iter_mut().zip(&inputs) {
            r.push(pass(&engine, input));
        }
    }
    let spread: Vec<(f64, f64)> = runs
        .iter()
        .map(|r| {
            let min = r.iter().copied().fold(f64::INFINITY, f64::min);
            (min, r.iter().copied().fold(0.0, f64::max))
        })
        .collect();
    // The machine's speed drifts between passes (a 2× spread on this VM):
    // each round's passes run back to back, so the ratio is taken within
    // a round, then its median over the rounds.
    let ratios: Vec<f64> = runs
        .iter()
        .map(|r| common::median(r.iter().zip(&runs[0]).map(|(x, base)| x / base).collect()))
        .collect();
    let medians: Vec<f64> = runs.into_iter().map(common::median).collect();
    println!("machine: {}", common::machine());
    println!(
        "{} events, batch {BATCH}, median of {RUNS} passes\n",
        mix::EVENTS
    );
    println!(
        "| placement | ns/event (analytics + correlation), median | min–max | against processing time (median of per-round ratios) |"
    );
    println!("|---|---:|---:|---:|");
    for (((p, m), (lo, hi)), ratio) in PLACEMENTS.iter().zip(&medians).zip(&spread).zip(&ratios) {
        println!("| {} | {m:.0} | {lo:.0}–{hi:.0} | {ratio:.3}× |", p.name);
    }
}
