//! Cost per event of the correlation stage with per-key rules, sequences
//! and an absence, against the shipped three global rules, in WebAssembly
//! (the real host runtime) and natively, at batch 100 and 1,000.
//!
//! `cargo bench --profile ci -p hxp-events --bench correlation_rules`.
//!
//! The stream is the benches' recorded mix (100,000 events, 20,000 events
//! per second of event time) with its users spread over 10,000 ids, so the
//! rules grouped by user track up to 10,000 keys each. The keyed set is 10
//! per-key rules (by user, model, service and model+user; four of them read
//! a per-key window aggregate, so they look their key up for every event
//! with it), 2 sequences and 1 absence. Both configurations run in this one
//! process, one after the other, median of 7 passes each.
//!
//! Two passes per configuration: "first" times a fresh instance over the
//! stream (every key is new: the cost of creating 20,000 keys is in it);
//! "steady" feeds the stream once untimed and times the same stream again
//! 5 s later in event time, the keys known (a service that has been
//! running, as in production). Every configuration has a 5 s window, the
//! stream's span: in the steady pass what enters the window is what leaves
//! it, so counts per key, and the findings active, stay as they were.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "support/mix.rs"]
mod mix;
#[path = "support/passes.rs"]
mod passes;

use hxp_events::plugin::{Clock, Limits, Plugin, PluginEngine, convert, types};
use hxp_plugin_sdk::Event;
use mix::{EVENTS, stream};
use passes::{batches, pass};

const RUNS: usize = 7;
const USERS: u64 = 10_000;
/// The stream's span in event time.
const WINDOW_SECS: u32 = 5;

/// The keyed rule set: what a team tracking users, models and services
/// would write. `busy`: thresholds low enough that about 230 keys are over
/// them at the end (every batch reports them all); otherwise about 40.
fn keyed_rules(busy: bool) -> serde_json::Value {
    let count = |name: &str, cond: &str, by: &[&str], threshold: u32| {
        let threshold = if busy { threshold } else { threshold + 1 };
        serde_json::json!({"name": name, "condition": cond, "group_by": by, "threshold": threshold})
    };
    let (slow, unhappy) = if busy { (1000, 1.0) } else { (1040, 0.3) };
    serde_json::json!({
        "window_size": WINDOW_SECS,
        "correlation_rules": [
            count("slow_user", &format!("latency > {slow}"), &["user_id"], 4),
            count("user_errors", "success == false", &["user_id"], 4),
            count("unhappy_user", "user_satisfaction < 1", &["user_id"], 3),
            count("user_error_rate", "error_rate > 0.5", &["user_id"], 3),
            count("costly_user", "cost > 0.009", &["user_id"], 5),
            count("model_user_errors", "success == false", &["model", "user_id"], 2),
            count("model_errors", "error_rate > 0.1", &["model"], 5),
            count("model_latency", "avg_latency > 1200", &["model"], 5),
            count("service_throughput", "throughput > 100000", &["service"], 5),
            count("service_failed", "health == \"failed\"", &["service"], 1),
            {"name": "failed_then_errors", "sequence": ["health == \"failed\"", "success == false"],
             "within": "30s", "group_by": ["service"]},
            {"name": "slow_then_unhappy",
             "sequence": [format!("latency > {slow}"), format!("user_satisfaction < {unhappy}")],
             "within": "60s", "group_by": ["user_id"]},
            {"name": "no_recovery", "absence": {"after": "health == \"failed\"",
             "expect": "health == \"healthy\"", "within": "60s"}, "group_by": ["service"]},
        ]
    })
}

/// The mix with users over `USERS` ids.
fn events() -> Vec<Event> {
    let mut events = stream();
    for e in &mut events {
        if e.user.is_some() {
            let h = e.seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 17;
            e.user = Some(format!("user-{}", h % USERS));
        }
    }
    events
}

/// The same stream `by_ms` later in event time, with new seqs and ids.
fn later(events: &[Event], by_ms: i64) -> Vec<Event> {
    let n = events.len() as u64;
    events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.time_ms += by_ms;
            e.seq += n;
            e.id += n as u128;
            e
        })
        .collect()
}

/// Median ns per event in wasm and natively for one configuration: over
/// `timed`, after `warm_up` was fed (untimed) to the same instance.
fn measure(
    engine: &std::sync::Arc<PluginEngine>,
    warm_up: &[(types::EventBatch, i64)],
    timed: &[(types::EventBatch, i64)],
    config: &str,
) -> (f64, f64) {
    let (mut wasm, mut native) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let clock = Clock::manual(0);
        let loaded = engine.load_file(&common::wasm("hxp_correlation")).unwrap();
        let mut p = Plugin::new(engine.clone(), loaded, Limits::default(), clock.clone()).unwrap();
        p.configure(config).unwrap();
        let mut run = |b: &types::EventBatch, now| {
            clock.set_ms(now);
            std::hint::black_box(p.correlation_process(b).unwrap());
        };
        pass(warm_up, &mut run);
        wasm.push(pass(timed, run));
        let mut n = hxp_correlation::Correlation::default();
        n.configure(config).unwrap();
        let mut run = |b: &types::EventBatch, now| {
            std::hint::black_box(n.process(&convert::batch(b.clone()), now));
        };
        pass(warm_up, &mut run);
        native.push(pass(timed, run));
    }
    (common::median(wasm), common::median(native))
}

fn main() {
    let events = events();
    let engine = PluginEngine::new(None).unwrap();
    println!("machine: {}", common::machine());
    println!("events per pass: {EVENTS}; median of {RUNS} passes\n");
    println!(
        "| rules | batch | pass | wasm ns/event | native ns/event | wasm / native | wasm / shipped |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|");
    let sizes: Vec<usize> = common::env_or("HXP_BENCH_BATCHES", "100,1000".to_string())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let span = events.last().map_or(0, |e| e.time_ms) - events[0].time_ms + 1;
    let again = later(&events, span);
    for size in sizes {
        let input = batches(&events, size);
        let steady = batches(&again, size);
        for (name, warm_up, timed) in [("first", &[][..], &input), ("steady", &input[..], &steady)]
        {
            let shipped = serde_json::json!({ "window_size": WINDOW_SECS }).to_string();
            let (sw, sn) = measure(&engine, warm_up, timed, &shipped);
            println!(
                "| shipped (3 global) | {size} | {name} | {sw:.0} | {sn:.0} | {:.2}× | 1.00× |",
                sw / sn
            );
            for busy in [false, true] {
                let config = keyed_rules(busy).to_string();
                let (kw, kn) = measure(&engine, warm_up, timed, &config);
                println!(
                    "| 10 per-key + 2 sequences + 1 absence, {} | {size} | {name} | {kw:.0} | {kn:.0} | {:.2}× | {:.2}× |",
                    if busy { "busy" } else { "quiet" },
                    kw / kn,
                    kw / sw
                );
            }
        }
    }
    for busy in [false, true] {
        summary([&events, &again], &keyed_rules(busy).to_string());
    }
}

/// Keys tracked and findings active at the end of each pass (native,
/// batch 1,000).
fn summary(passes: [&[Event]; 2], config: &str) {
    let mut n = hxp_correlation::Correlation::default();
    n.configure(config).unwrap();
    for (name, events) in ["first", "steady"].into_iter().zip(passes) {
        let mut last = Default::default();
        for (b, now) in batches(events, 1000) {
            last = n.process(&convert::batch(b), now);
        }
        let mut per_rule = std::collections::BTreeMap::<String, usize>::new();
        for f in &last.findings {
            *per_rule.entry(f.name.clone()).or_default() += 1;
        }
        println!(
            "{name}: keys tracked at the end: {}; findings active: {} {per_rule:?}",
            n.keys_tracked(),
            last.findings.len()
        );
    }
}
