//! Cost per event of each plugin stage through wasmtime, against the same
//! Rust logic called natively, at batch sizes 1, 100 and 1000.
//!
//! Run with `make bench` (or `cargo bench -p hxp-events --bench
//! plugin_stages`). Each measurement is the median of several runs over the
//! same event stream; both sides run in this one process, one after the
//! other, so the ratio is taken under the same conditions.
//!
//! What is timed per batch, as the pipeline does it:
//! - analytics: `process(batch)` then `snapshot()`;
//! - correlation: `process(batch)`;
//! - responses: `decide({snapshot, findings})` once per batch.
//!
//! The native side gets the same host-side batch and converts it into the
//! logic's own types (cloning strings, as lifting into the guest copies
//! them), then calls the plugin crate directly.

// Shared with the integration tests (paths, ports, CPU accounting).
#[path = "../../tests/common/mod.rs"]
mod common;
// The recorded stream, shared with the event-time bench.
#[path = "support/mix.rs"]
mod mix;
#[path = "support/passes.rs"]
mod passes;

use hxp_events::plugin::{Clock, Limits, Plugin, PluginEngine, convert, types};
use mix::{EVENTS, stream};
use passes::{batches, pass};

const RUNS: usize = 7;
const BATCHES: [usize; 3] = [1, 100, 1000];

struct Row {
    stage: &'static str,
    batch: usize,
    wasm: f64,
    native: f64,
}

fn main() {
    let events = stream();
    let engine = PluginEngine::new(None).unwrap();
    let load = |name: &str, clock: &Clock| {
        let loaded = engine.load_file(&common::wasm(name)).unwrap();
        Plugin::new(engine.clone(), loaded, Limits::default(), clock.clone()).unwrap()
    };
    // A snapshot and findings to feed the responses stage, from a warm window.
    let clock = Clock::manual(0);
    let mut warm_a = load("hxp_analytics", &clock);
    let mut warm_c = load("hxp_correlation", &clock);
    let mut last = None;
    for (b, now) in batches(&events, 1000) {
        clock.set_ms(now);
        warm_a.analytics_process(&b).unwrap();
        last = Some(warm_c.correlation_process(&b).unwrap());
    }
    let response_input = types::ResponseInput {
        time_ms: clock.now_ms(),
        analytics: warm_a.analytics_snapshot().unwrap(),
        findings: last.unwrap().findings,
    };

    // The native side's equivalent of lowering a batch into a guest: copy
    // the columns (and the few distinct strings), then move them over.
    let to_sdk = |b: &types::EventBatch| convert::batch(b.clone());
    let mut rows = Vec::new();
    for &size in &BATCHES {
        let input = batches(&events, size);
        let (mut aw, mut an, mut cw, mut cn, mut rw, mut rn) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..RUNS {
            // analytics
            let clock = Clock::manual(0);
            let mut p = load("hxp_analytics", &clock);
            aw.push(pass(&input, |b, now| {
                clock.set_ms(now);
                p.analytics_process(b).unwrap();
                std::hint::black_box(p.analytics_snapshot().unwrap());
            }));
            let mut n = hxp_analytics::Analytics::default();
            an.push(pass(&input, |b, now| {
                n.process(&to_sdk(b), now);
                std::hint::black_box(n.snapshot(now));
            }));
            // correlation
            let clock = Clock::manual(0);
            let mut p = load("hxp_correlation", &clock);
            cw.push(pass(&input, |b, now| {
                clock.set_ms(now);
                std::hint::black_box(p.correlation_process(b).unwrap());
            }));
            let mut n = hxp_correlation::Correlation::default();
            cn.push(pass(&input, |b, now| {
                std::hint::black_box(n.process(&to_sdk(b), now));
            }));
            // responses: one decision per batch
            let clock = Clock::manual(0);
            let mut p = load("hxp_responses", &clock);
            let mut ri = response_input.clone();
            rw.push(pass(&input, |_, now| {
                ri.time_ms = now;
                std::hint::black_box(p.responses_decide(&ri).unwrap());
            }));
            let mut n = hxp_responses::Responses::default();
            rn.push(pass(&input, |_, now| {
                ri.time_ms = now;
                let i = convert::response_input(ri.clone());
                std::hint::black_box(n.decide(&i));
            }));
        }
        rows.push(Row {
            stage: "analytics",
            batch: size,
            wasm: common::median(aw),
            native: common::median(an),
        });
        rows.push(Row {
            stage: "correlation",
            batch: size,
            wasm: common::median(cw),
            native: common::median(cn),
        });
        rows.push(Row {
            stage: "responses",
            batch: size,
            wasm: common::median(rw),
            native: common::median(rn),
        });
    }

    println!("machine: {}", common::machine());
    println!("events per pass: {EVENTS}; median of {RUNS} passes\n");
    println!("| stage | batch | wasm ns/event | native ns/event | wasm / native |");
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2}× |",
            r.stage,
            r.batch,
            r.wasm,
            r.native,
            r.wasm / r.native
        );
    }
}
