//! Service benchmark: the release binary with SQLite, driven over HTTP by
//! the load generator (in this process).
//!
//! `make bench` (or `cargo bench -p hxp-events --bench service`). Prints
//! (with `HXP_BENCH_BASELINE_BIN`, `HXP_BENCH_QUARANTINE` or `HXP_BENCH_SHADOW` set, only an
//! alternating comparison at the shipped batch size, see `alternate`):
//! - sustained throughput through all three plugins with bulk ingestion,
//!   against a baseline run without the plugin stages (same binary, stages
//!   switched off), median of 3 runs each, with CPU of the service and of the
//!   load generator, and the service's peak RSS;
//! - ingest-to-stored latency at 1,000 and 10,000 events/s (one event per
//!   request), from the client and from the service's own histogram;
//! - how long until GET /analytics reflects an event.

// Shared with the integration tests (paths, ports, CPU accounting).
#[path = "../../tests/common/mod.rs"]
mod common;

use hxp_events::cli::loadgen;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 3;

/// The binary under test: this build, or (for a before/after comparison,
/// `HXP_BENCH_BASELINE_BIN=path`) another build of the service.
static BINARY: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

fn binary() -> PathBuf {
    BINARY
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hxp-events")))
}

/// The config file the binary starts with: the shipped one, or for the
/// baseline `HXP_BENCH_BASELINE_CONFIG` (an older build refuses keys it
/// does not know).
fn config_file() -> PathBuf {
    let baseline = BINARY.lock().unwrap().is_some();
    match std::env::var("HXP_BENCH_BASELINE_CONFIG") {
        Ok(path) if baseline => PathBuf::from(path),
        _ => common::root().join("config/event-processing.yaml"),
    }
}

struct Svc {
    child: Child,
    base: String,
    _dir: PathBuf,
}

impl Drop for Svc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn start(env: &[(&str, &str)]) -> Svc {
    let dir = common::tempdir();
    let port = common::free_port();
    let db_url = format!("sqlite://{}/events.db", dir.display());
    let mut cmd = common::serve_command(binary(), &config_file(), &db_url, port);
    cmd.env("RUST_LOG", "warn")
        .env("EVENT_PROCESSING_ADMIN_TOKEN", common::TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "service did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Svc {
        child,
        base,
        _dir: dir,
    }
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    kb / 1024.0
}

struct Throughput {
    rate: f64,
    service_cpu: f64,
    loadgen_cpu: f64,
    rss_mb: f64,
}

fn throughput(rt: &tokio::runtime::Runtime, env: &[(&str, &str)]) -> Throughput {
    throughput_with(rt, env, false)
}

/// Throughput, optionally with a shadow of each default plugin (the same
/// version: it does all its plugin's work, and agrees).
fn throughput_with(
    rt: &tokio::runtime::Runtime,
    env: &[(&str, &str)],
    shadows: bool,
) -> Throughput {
    let svc = start(env);
    if shadows {
        rt.block_on(shadow_each_plugin(&svc.base));
    }
    let pid = svc.child.id();
    let secs = 15.0;
    let (s0, l0) = (
        common::cpu_seconds(pid),
        common::cpu_seconds(std::process::id()),
    );
    let summary = rt
        .block_on(loadgen::run(loadgen::Options {
            target: svc.base.clone(),
            rate: 500_000,
            duration: Duration::from_secs_f64(secs),
            batch: 1000,
            concurrency: 4,
            seed: 7,
            quiet: true,
        }))
        .unwrap();
    let (s1, l1) = (
        common::cpu_seconds(pid),
        common::cpu_seconds(std::process::id()),
    );
    let elapsed = summary["seconds"].as_f64().unwrap();
    assert_eq!(summary["rejected"], 0);
    Throughput {
        rate: summary["achieved_rate"].as_f64().unwrap(),
        service_cpu: (s1 - s0) / elapsed,
        loadgen_cpu: (l1 - l0) / elapsed,
        rss_mb: peak_rss_mb(svc.child.id()),
    }
}

/// p50/p99 from the service's ingest-to-stored histogram (bucket bounds).
fn server_quantiles(metrics: &str) -> (f64, f64) {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for l in metrics
        .lines()
        .filter(|l| l.starts_with("event_processing_duration_seconds_bucket"))
    {
        let le = l.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap()
        };
        let n: f64 = l.rsplit(' ').next().unwrap().parse().unwrap();
        buckets.push((le, n));
    }
    let total = buckets.last().unwrap().1;
    let q = |p: f64| buckets.iter().find(|(_, n)| *n >= total * p).unwrap().0;
    (q(0.5) * 1000.0, q(0.99) * 1000.0)
}

fn latency(
    rt: &tokio::runtime::Runtime,
    env: &[(&str, &str)],
    rate: u64,
    batch: usize,
) -> (f64, f64, f64, f64) {
    let svc = start(env);
    let summary = rt
        .block_on(loadgen::run(loadgen::Options {
            target: svc.base.clone(),
            rate,
            duration: Duration::from_secs(10),
            batch,
            concurrency: 64,
            seed: 9,
            quiet: true,
        }))
        .unwrap();
    let metrics = rt.block_on(async {
        reqwest::get(format!("{}/metrics", svc.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let (s50, s99) = server_quantiles(&metrics);
    (
        summary["request_ms_p50"].as_f64().unwrap(),
        summary["request_ms_p99"].as_f64().unwrap(),
        s50,
        s99,
    )
}

fn analytics_visibility(rt: &tokio::runtime::Runtime) -> Vec<f64> {
    let svc = start(&[]);
    rt.block_on(async {
        let client = reqwest::Client::new();
        let mut delays = Vec::new();
        for i in 0..20u64 {
            let count = |v: &Value| v["event_count"].as_u64().unwrap_or(0);
            let before = count(&client.get(format!("{}/analytics", svc.base)).send().await.unwrap().json().await.unwrap());
            let sent = Instant::now();
            client
                .post(format!("{}/process", svc.base))
                .json(&serde_json::json!({"event_type": "llm_request", "data": {"model": "m", "latency_ms": i}}))
                .send()
                .await
                .unwrap();
            loop {
                let v: Value = client.get(format!("{}/analytics", svc.base)).send().await.unwrap().json().await.unwrap();
                if count(&v) > before {
                    delays.push(sent.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
            }
        }
        delays
    })
}

/// PUT /plugins/{name}?mode=shadow with the plugin's own file, for the
/// three default plugins.
async fn shadow_each_plugin(base: &str) {
    for p in ["analytics", "correlation", "responses"] {
        let wasm = std::fs::read(common::root().join(format!("target/plugins/{p}.wasm"))).unwrap();
        let resp = reqwest::Client::new()
            .put(format!("{base}/plugins/{p}?mode=shadow"))
            .bearer_auth(common::TOKEN)
            .body(wasm)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "shadow of {p}");
    }
}

/// One side of an alternating comparison: a name, a binary (None: this
/// build), extra environment, and whether each plugin runs a shadow.
type Side<'a> = (&'a str, Option<PathBuf>, &'a [(&'a str, &'a str)], bool);

/// Throughput at the shipped batch size of two setups (another build, or
/// another setting), runs alternating so that drift hits both alike; the
/// ratio is `b / a`.
fn alternate(rt: &tokio::runtime::Runtime, a: Side, b: Side) {
    const PAIRS: usize = 5;
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    for _ in 0..PAIRS {
        for ((_, bin, env, shadows), rates) in [(&a, &mut ra), (&b, &mut rb)] {
            *BINARY.lock().unwrap() = bin.clone();
            rates.push(throughput_with(rt, env, *shadows).rate);
        }
    }
    *BINARY.lock().unwrap() = None;
    let show = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (ma, mb) = (common::median(ra.clone()), common::median(rb.clone()));
    println!(
        "\nAll three plugins, batch_size 100 (shipped), SQLite, 15 s per run, {PAIRS} alternating pairs:\n"
    );
    println!("| setup | events/s (median) | runs |");
    println!("|---|---:|---|");
    println!("| {} | {ma:.0} | {} |", a.0, show(&ra));
    println!("| {} | {mb:.0} | {} |", b.0, show(&rb));
    println!("\n{} / {}: {:.3}", b.0, a.0, mb / ma);
}

fn main() {
    let rt = common::bench_runtime(1);
    println!("machine: {}", common::machine());
    if let Ok(baseline) = std::env::var("HXP_BENCH_BASELINE_BIN") {
        let before = (
            "before: HXP_BENCH_BASELINE_BIN",
            Some(PathBuf::from(baseline)),
            &[][..],
            false,
        );
        alternate(&rt, before, ("after: this build", None, &[], false));
        return;
    }
    // What taking misbehaving plugins out costs when none misbehaves.
    if std::env::var_os("HXP_BENCH_QUARANTINE").is_some() {
        let off = &[("EVENT_PROCESSING_PLUGIN_QUARANTINE_FAILURES", "0")][..];
        alternate(
            &rt,
            ("quarantine off", None, off, false),
            ("quarantine on (shipped)", None, &[], false),
        );
        return;
    }
    // What a shadow of each plugin costs the live path.
    if std::env::var_os("HXP_BENCH_SHADOW").is_some() {
        let none = ("no shadow", None, &[][..], false);
        alternate(&rt, none, ("a shadow of each plugin", None, &[], true));
        return;
    }

    let full: &[(&str, &str)] = &[("STREAM_PROCESSING_BATCH_SIZE", "1000")];
    let no_plugins: &[(&str, &str)] = &[
        ("STREAM_PROCESSING_BATCH_SIZE", "1000"),
        ("REAL_TIME_ANALYTICS_ENABLED", "false"),
        ("EVENT_CORRELATION_ENABLED", "false"),
        ("AUTOMATED_RESPONSE_ENABLED", "false"),
    ];
    let default_batch: &[(&str, &str)] = &[];
    let fixed_batch: &[(&str, &str)] = &[("STREAM_PROCESSING_MAX_BATCH_SIZE", "100")];
    // HXP_BENCH_LATENCY_ONLY: the latency table alone.
    if std::env::var_os("HXP_BENCH_LATENCY_ONLY").is_none() {
        throughput_table(&rt, full, no_plugins, default_batch, fixed_batch);
    }
    latency_table(&rt, default_batch, fixed_batch);

    let d = analytics_visibility(&rt);
    println!(
        "\nAnalytics reflect an event (POST /process answered, then GET /analytics shows it): max {:.2} ms, median {:.2} ms over {} events",
        d.iter().cloned().fold(0.0, f64::max),
        common::median(d.clone()),
        d.len()
    );
}

type Env<'a> = &'a [(&'a str, &'a str)];

/// Sustained bulk throughput per configuration, median of `RUNS`.
fn throughput_table(
    rt: &tokio::runtime::Runtime,
    full: Env,
    no_plugins: Env,
    default_batch: Env,
    fixed_batch: Env,
) {
    let mut rows = Vec::new();
    for (name, env) in [
        ("all three plugins, batch_size 1000", full),
        ("baseline: no plugin stages, batch_size 1000", no_plugins),
        (
            "all three plugins, shipped: batch_size 100, adaptive up to 1000",
            default_batch,
        ),
        (
            "all three plugins, batch_size 100 fixed (adaptive off)",
            fixed_batch,
        ),
    ] {
        let runs: Vec<Throughput> = (0..RUNS).map(|_| throughput(rt, env)).collect();
        let rate = common::median(runs.iter().map(|r| r.rate).collect());
        rows.push((
            name,
            rate,
            common::median(runs.iter().map(|r| r.service_cpu).collect()),
            common::median(runs.iter().map(|r| r.loadgen_cpu).collect()),
            runs.iter().map(|r| r.rss_mb).fold(0.0, f64::max),
            runs.iter()
                .map(|r| format!("{:.0}", r.rate))
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    println!(
        "\nThroughput, SQLite, POST /events NDJSON (1000 events per request, 4 in flight), 15 s per run, median of {RUNS}:\n"
    );
    println!(
        "| configuration | events/s (median) | runs | service CPU (cores) | load generator CPU (cores) | service peak RSS |"
    );
    println!("|---|---:|---|---:|---:|---:|");
    for (name, rate, scpu, lcpu, rss, runs) in &rows {
        println!("| {name} | {rate:.0} | {runs} | {scpu:.2} | {lcpu:.2} | {rss:.0} MB |");
    }
    println!(
        "\nplugin stages cost: {:.2}× the baseline's time per event",
        rows[1].1 / rows[0].1
    );
}

/// Ingest-to-stored latency with adaptive batching (shipped) and without,
/// alternating per row.
fn latency_table(rt: &tokio::runtime::Runtime, adaptive: Env, fixed: Env) {
    println!(
        "\nIngest-to-stored latency (POST /events, NDJSON), 10 s each; the client figure includes HTTP:\n"
    );
    println!(
        "| batching | events/s | events per request | client p50 | client p99 | service p50 (bucket bound) | service p99 (bucket bound) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (rate, batch) in [(1_000, 1), (10_000, 10), (10_000, 1)] {
        for (name, env) in [("adaptive (shipped)", adaptive), ("fixed 100", fixed)] {
            let (c50, c99, s50, s99) = latency(rt, env, rate, batch);
            println!(
                "| {name} | {rate} | {batch} | {c50:.2} ms | {c99:.2} ms | ≤ {s50:.1} ms | ≤ {s99:.1} ms |"
            );
        }
    }
}
