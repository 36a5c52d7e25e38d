//! Backtest speed: the shipped correlation plugin over about a million
//! stored events of a SQLite database, as `hxp-events plugin backtest`
//! runs it (batch 1,000, the CLI's default).
//!
//! `cargo bench -p hxp-events --bench backtest`. The database is filled
//! through the service (the load generator over HTTP, in this process;
//! `HXP_BENCH_BACKTEST_EVENTS`, default 1,000,000), which is then
//! stopped. Then, interleaved, `RUNS` passes each of:
//! - sqlx pages: the range read in event-time order through sqlx's pool,
//!   20,000 rows a query (how backtests read before the scan: the
//!   baseline);
//! - scan: the store's scan of the range (rusqlite, `store/scan.rs`), the
//!   floor under any backtest on this store;
//! - scan + parse: the same, each event's typed fields read from its
//!   stored JSON (what the plugin gets);
//! - backtest: the whole backtest (scan, parse and the plugin overlapped);
//! - backtest, three stages: the same with the shipped analytics and
//!   responses plugins beside it (`--with`), as a backtest through the API
//!   runs it (action requests compared too).
//!
//! Prints events/s per pass and the medians, and the backtests' ratio to
//! the baseline within each round; then the three stages once at the
//! service's batch size (100), whose responses see the windows the live
//! service saw.

#[path = "../../tests/common/mod.rs"]
mod common;

use hxp_events::cli::{loadgen, plugin};
use hxp_events::plugin::PluginEngine;
use hxp_events::store::Store;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const RUNS: usize = 5;

/// Start the service on `dir`'s database, load it to `n` events, stop it.
fn fill(rt: &tokio::runtime::Runtime, dir: &Path, n: u64) {
    let port = common::free_port();
    let config = common::root().join("config/event-processing.yaml");
    let db_url = format!("sqlite://{}/events.db", dir.display());
    let mut child = common::serve_command(env!("CARGO_BIN_EXE_hxp-events"), &config, &db_url, port)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("service starts");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(300), "no start");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut sent = 0;
    while sent < n {
        let report = rt.block_on(loadgen::run(loadgen::Options {
            target: format!("http://127.0.0.1:{port}"),
            rate: 500_000,
            duration: Duration::from_secs_f64(1.0 + (n - sent) as f64 / 150_000.0),
            batch: 1000,
            concurrency: 4,
            seed: 7,
            quiet: true,
        }));
        sent += report.expect("load generator")["accepted"]
            .as_u64()
            .unwrap_or(0);
    }
    // A clean stop: the last batches stored, the log checkpointed.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// The event-time range of everything stored, and how many events.
fn range(rt: &tokio::runtime::Runtime, db_url: &str) -> ((i64, i64), i64) {
    use sqlx::Row;
    let rows = rt.block_on(common::db_rows(
        db_url,
        "SELECT MIN(event_time), MAX(event_time), COUNT(*) FROM events",
    ));
    let (lo, hi, n): (i64, i64, i64) = (rows[0].get(0), rows[0].get(1), rows[0].get(2));
    ((lo, hi + 1), n)
}

/// Events/s of reading the range through sqlx's pool, page by page (the
/// read path before the scan).
fn sqlx_pages(rt: &tokio::runtime::Runtime, store: &Store, range: (i64, i64)) -> f64 {
    rt.block_on(async {
        let t = Instant::now();
        let (mut after, mut n) = ((i64::MIN, 0u64), 0u64);
        loop {
            let rows = store
                .events_by_time(range.0, range.1, after, 20_000)
                .await
                .expect("read");
            let Some(last) = rows.last() else { break };
            after = (last.event_time, last.seq);
            n += rows.len() as u64;
        }
        n as f64 / t.elapsed().as_secs_f64()
    })
}

/// Events/s of the store's scan of the range (`typed`: and parsing each
/// page as it arrives, on this thread).
fn scan(rt: &tokio::runtime::Runtime, store: &Store, range: (i64, i64), typed: bool) -> f64 {
    rt.block_on(async {
        let t = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let scanning = tokio::spawn({
            let store = store.clone();
            async move { store.scan_by_time(range, tx).await }
        });
        let mut n = 0u64;
        while let Some(rows) = rx.recv().await {
            n += if typed {
                rows.iter().filter_map(|r| r.typed()).count() as u64
            } else {
                rows.len() as u64
            };
        }
        scanning.await.expect("scan").expect("scan");
        n as f64 / t.elapsed().as_secs_f64()
    })
}

fn main() {
    println!("machine: {}", common::machine());
    let rt = common::bench_runtime(2);
    let n = common::env_or("HXP_BENCH_BACKTEST_EVENTS", 1_000_000);
    let dir = common::tempdir();
    let db_url = format!("sqlite://{}/events.db", dir.display());
    let t = Instant::now();
    fill(&rt, &dir, n);
    let (range, stored) = range(&rt, &db_url);
    println!(
        "filled {stored} events in {:.1} s, event times {} ms apart",
        t.elapsed().as_secs_f64(),
        range.1 - range.0
    );
    let store = rt
        .block_on(Store::connect(&db_url, 2))
        .expect("store opens");
    let engine = PluginEngine::new(None).expect("engine");
    let opts = plugin::BacktestOptions {
        file: common::root().join("target/plugins/correlation.wasm"),
        database: db_url.clone(),
        from_ms: range.0,
        until_ms: range.1,
        config: Some(common::root().join("config/event-processing.yaml")),
        with: Vec::new(),
        batch_size: Some(1000),
        warmup: 0,
    };
    let plugins = |p: &str| common::root().join(format!("target/plugins/{p}.wasm"));
    let three = plugin::BacktestOptions {
        with: vec![plugins("analytics"), plugins("responses")],
        ..opts.clone()
    };
    let mut figures: [Vec<f64>; 7] = Default::default();
    for round in 0..RUNS {
        let pages = sqlx_pages(&rt, &store, range);
        let read = scan(&rt, &store, range, false);
        let parsed = scan(&rt, &store, range, true);
        let report = plugin::backtest(&engine, &opts).expect("backtest");
        let b = report["events_per_second"].as_f64().unwrap_or(0.0);
        let all = plugin::backtest(&engine, &three).expect("backtest, three stages");
        let b3 = all["events_per_second"].as_f64().unwrap_or(0.0);
        println!(
            "round {round}: sqlx pages {pages:>9.0}, scan {read:>9.0}, scan + parse {parsed:>9.0}, backtest {b:>9.0}, three stages {b3:>9.0} ev/s ({} events, {} failed batches, difference {}; three stages: {} failed, difference {}, actions {}, action difference {})",
            report["events"],
            report["failed_batches"],
            report["difference"],
            all["failed_batches"],
            all["difference"],
            all["actions"],
            all["action_difference"]
        );
        let row = [pages, read, parsed, b, b / pages, b3, b3 / pages];
        for (v, x) in figures.iter_mut().zip(row) {
            v.push(x);
        }
    }
    let [pages, read, parsed, b, ratio, b3, ratio3] = figures.map(common::median);
    println!(
        "median of {RUNS} (ev/s): sqlx pages {pages:.0}, scan {read:.0}, scan + parse {parsed:.0}, backtest {b:.0}, three stages {b3:.0}; / sqlx pages {ratio:.2} and {ratio3:.2}"
    );
    // Once more at the service's batch size: the windows the responses
    // plugin decides on are then those the live service had.
    let live_batches = plugin::BacktestOptions {
        batch_size: Some(100),
        ..three
    };
    let r = plugin::backtest(&engine, &live_batches).expect("backtest, batch 100");
    println!(
        "three stages at batch 100: {:.0} ev/s, difference {}, actions {}, action difference {}",
        r["events_per_second"].as_f64().unwrap_or(0.0),
        r["difference"],
        r["actions"],
        r["action_difference"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
