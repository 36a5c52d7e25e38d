//! Hot-deployment benchmark.
//!
//! `cargo bench -p hxp-events --bench deploy` (part of `make bench`). Prints:
//! - compile time of a new plugin version (cold: empty compile cache), and
//!   with the on-disk cache warm: loading the compiled artifact,
//!   instantiating + configuring, and the first `process` call (batch 100);
//!   median of 7 each, for the analytics plugin;
//! - the swap pause on the processing path under load: the release binary
//!   fed by the load generator while the analytics plugin is replaced 100
//!   times (alternating two builds). Per swap: the time the processor spends
//!   swapping (state hand-over), and the gap from the end of the last batch
//!   on the old version to the start of the first on the new. p50/p99/max
//!   per run, 3 runs, median of the runs. Baselines in the same run: the
//!   gap between ordinary consecutive batches, and the throughput with the
//!   same load and no swapping.

#[path = "../../tests/common/mod.rs"]
mod common;

use hxp_events::plugin::{Clock, Limits, Plugin, PluginEngine};
use std::path::Path;
use std::time::{Duration, Instant};

const RUNS: usize = 3;
const SWAPS: usize = 100;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(((v.len() as f64) * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn batch100() -> hxp_events::plugin::types::EventBatch {
    let events: Vec<hxp_plugin_sdk::Event> = (0..100)
        .map(|i| {
            let mut data = serde_json::Map::new();
            data.insert("model".into(), "m1".into());
            data.insert("latency_ms".into(), (100 + i).into());
            let v = serde_json::json!({"event_type": "llm_request", "data": data});
            let mut e = hxp_events::event::validate(
                v,
                1_700_000_000_000,
                &hxp_events::event::Acceptance::ALL,
            )
            .unwrap()
            .typed;
            e.seq = i + 1;
            e
        })
        .collect();
    hxp_events::plugin::convert::batch_to_wit(hxp_plugin_sdk::EventBatch::from_events(&events))
}

fn compile_times(bytes: &[u8]) {
    let mut cold = Vec::new();
    let mut cached_load = Vec::new();
    let mut instantiate = Vec::new();
    let mut first_call = Vec::new();
    let config = hxp_events::config::Config::default()
        .section_json("real_time_analytics")
        .expect("a plugin section");
    let batch = batch100();
    for _ in 0..7 {
        let cache = common::tempdir();
        let engine = PluginEngine::new(Some(cache.clone())).unwrap();
        let t = Instant::now();
        let loaded = engine.load_bytes(bytes, "analytics").unwrap();
        cold.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(!loaded.from_cache);
        drop(engine);
        // A new engine (as after a restart, or a redeploy of a known file).
        let engine = PluginEngine::new(Some(cache.clone())).unwrap();
        let t = Instant::now();
        let loaded = engine.load_bytes(bytes, "analytics").unwrap();
        cached_load.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(loaded.from_cache);
        let t = Instant::now();
        let mut p = Plugin::new(
            engine.clone(),
            loaded,
            Limits::default(),
            Clock::manual(1_700_000_000_000),
        )
        .unwrap();
        p.configure(&config).unwrap();
        instantiate.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        p.analytics_process(&batch).unwrap();
        first_call.push(t.elapsed().as_secs_f64() * 1e6);
        let _ = std::fs::remove_dir_all(&cache);
    }
    println!(
        "analytics plugin ({} KiB): cold compile {:.0} ms | cache warm: load {:.1} ms, instantiate+configure {:.2} ms, first process call (100 events) {:.0} µs   [median of 7]",
        bytes.len() / 1024,
        common::median(cold),
        common::median(cached_load),
        common::median(instantiate),
        common::median(first_call)
    );
}

fn put(dir: &Path, bytes: &[u8]) {
    let tmp = dir.join(".analytics.wasm.tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join("analytics.wasm")).unwrap();
}

async fn running_sha(svc: &common::Service) -> String {
    let (_, p) = common::get(&svc.url("/plugins")).await;
    p["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "analytics")
        .map(|p| p["sha256"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

struct Run {
    gaps_us: Vec<f64>,
    batch_gaps_us: Vec<f64>,
    pauses_us: Vec<f64>,
    rate_swapping: f64,
    rate_quiet: f64,
}

async fn swap_run(a: &[u8], b: &[u8]) -> Run {
    let dir = common::tempdir().join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    for p in ["analytics", "correlation", "responses"] {
        std::fs::copy(
            common::root().join(format!("target/plugins/{p}.wasm")),
            dir.join(format!("{p}.wasm")),
        )
        .unwrap();
    }
    let db = common::tempdir().join("events.db");
    let svc = common::Service::start(
        &format!("sqlite://{}", db.display()),
        &[
            ("EVENT_PROCESSING_PLUGIN_DIR", dir.to_str().unwrap()),
            ("RUST_LOG", "warn"),
        ],
    )
    .await;
    let load = |secs: u64| {
        hxp_events::cli::loadgen::run(hxp_events::cli::loadgen::Options {
            target: svc.base.clone(),
            rate: 150_000,
            duration: Duration::from_secs(secs),
            batch: 500,
            concurrency: 4,
            seed: 3,
            quiet: true,
        })
    };
    // Quiet baseline: the same load without swapping.
    let quiet = load(5).await.unwrap();
    let swapping = tokio::spawn(hxp_events::cli::loadgen::run(
        hxp_events::cli::loadgen::Options {
            target: svc.base.clone(),
            rate: 150_000,
            duration: Duration::from_secs(600),
            batch: 500,
            concurrency: 4,
            seed: 4,
            quiet: true,
        },
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (sha_a, sha_b) = (common::sha256_hex(a), common::sha256_hex(b));
    let started = Instant::now();
    for i in 0..SWAPS {
        let (bytes, want) = if i % 2 == 0 { (b, &sha_b) } else { (a, &sha_a) };
        put(&dir, bytes);
        let t = Instant::now();
        while running_sha(&svc).await != *want {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "swap {i} did not happen"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let swap_secs = started.elapsed().as_secs_f64();
    swapping.abort();
    let (_, pipeline) = common::get(&svc.url("/processing/pipeline")).await;
    let gaps_us: Vec<f64> = pipeline["plugin_swap_gaps_us"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    // The last deployment's record is written just after it goes live.
    let pauses_us = loop {
        let (_, h) = common::get(&svc.url("/plugins/analytics/history?limit=1000")).await;
        let p: Vec<f64> = h["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["trigger"] == "watch")
            .filter_map(|d| d["pause_us"].as_f64())
            .collect();
        if p.len() == SWAPS {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let batch_gaps_us: Vec<f64> = pipeline["batch_gaps_us"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let (_, status) = common::get(&svc.url("/analytics/status")).await;
    let processed_total = status["events_processed"].as_f64().unwrap();
    let quiet_accepted = quiet["accepted"].as_f64().unwrap();
    Run {
        gaps_us,
        batch_gaps_us,
        pauses_us,
        rate_swapping: (processed_total - quiet_accepted) / swap_secs,
        rate_quiet: quiet["achieved_rate"].as_f64().unwrap(),
    }
}

fn main() {
    let a = std::fs::read(common::root().join("target/plugins/analytics.wasm")).unwrap();
    let b = std::fs::read(common::root().join("target/test-plugins/analytics-b.wasm"))
        .expect("target/test-plugins/analytics-b.wasm: run `make build`");
    println!("{}", common::machine());
    compile_times(&a);
    let rt = common::bench_runtime(2);
    let mut p99_gap = Vec::new();
    let mut p99_pause = Vec::new();
    for run in 0..RUNS {
        let mut r = rt.block_on(swap_run(&a, &b));
        let n_gaps = r.gaps_us.len();
        let (g50, g99, gmax) = (
            pct(&mut r.gaps_us, 0.5),
            pct(&mut r.gaps_us, 0.99),
            pct(&mut r.gaps_us, 1.0),
        );
        let (b50, b99) = (
            pct(&mut r.batch_gaps_us, 0.5),
            pct(&mut r.batch_gaps_us, 0.99),
        );
        let (p50, p99, pmax) = (
            pct(&mut r.pauses_us, 0.5),
            pct(&mut r.pauses_us, 0.99),
            pct(&mut r.pauses_us, 1.0),
        );
        println!(
            "run {}: {SWAPS} swaps under load; swap work on the processor p50 {:.0} µs p99 {:.0} µs max {:.0} µs; \
             last-old-batch-end → first-new-batch-start ({n_gaps} swaps with a batch waiting) p50 {:.0} µs p99 {:.0} µs max {:.0} µs \
             (baseline, ordinary consecutive batches: p50 {:.0} µs p99 {:.0} µs); \
             throughput while swapping {:.0} ev/s vs {:.0} ev/s without ({:.2}×)",
            run + 1,
            p50,
            p99,
            pmax,
            g50,
            g99,
            gmax,
            b50,
            b99,
            r.rate_swapping,
            r.rate_quiet,
            r.rate_swapping / r.rate_quiet
        );
        p99_gap.push(g99);
        p99_pause.push(p99);
    }
    println!(
        "median of {RUNS} runs: swap gap p99 {:.0} µs (goal ≤ 5000 µs), swap work p99 {:.0} µs",
        common::median(p99_gap),
        common::median(p99_pause)
    );
}
