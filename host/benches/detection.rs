//! Detection quality of correlation configs: the incident scenario
//! (`loadgen --scenario incidents`) replayed into the real service, once
//! per config, and its alerts scored against the labels (`loadgen score`).
//!
//! `cargo bench -p hxp-events --bench detection`. Settings:
//! - `HXP_BENCH_SEED` (default 17): the scenario's seed;
//! - `HXP_BENCH_DETECTION_SECS` (default 7200): the event time it spans;
//! - `HXP_BENCH_DETECTION_CONFIGS`: config files, comma-separated,
//!   relative to the workspace root (default: the shipped
//!   `config/event-processing.yaml` and `config/examples/incident-rules.yaml`);
//! - `HXP_BENCH_PLUGIN_DIR` (default `target/plugins`): the plugins the
//!   service runs; `HXP_BENCH_BIN` (default this build): the service binary.
//!   Both for measuring a fixed build while `target/` changes.
//!
//! Each config runs `hxp-events serve` on a fresh SQLite database with the
//! automated responses in dry run; the stream (ending near now, so that
//! its timestamps are accepted) is sent in event-time order as fast as the
//! service takes it; once every event is stored the alerts (at their
//! batch's watermark) and the raw firings are read from the database and
//! scored with the default grace of 120 s. Prints a table, then per config
//! the detections by kind and the alerts by rule.

#[path = "../../tests/common/mod.rs"]
mod common;

use hxp_events::cli::labels::Labels;
use hxp_events::cli::scenario::{self, Scenario};
use hxp_events::cli::score;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const GRACE_MS: i64 = 120_000;
const DEFAULT_CONFIGS: &str = "config/event-processing.yaml,config/examples/incident-rules.yaml";

fn binary() -> PathBuf {
    std::env::var_os("HXP_BENCH_BIN").map_or(env!("CARGO_BIN_EXE_hxp-events").into(), PathBuf::from)
}

fn plugin_dir() -> PathBuf {
    std::env::var_os("HXP_BENCH_PLUGIN_DIR")
        .map_or(common::root().join("target/plugins"), PathBuf::from)
}

/// The service on one config; stopped (SIGTERM) when dropped.
struct Svc {
    child: Child,
    base: String,
    db_url: String,
}

impl Drop for Svc {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn start(rt: &tokio::runtime::Runtime, config: &Path) -> Svc {
    let dir = common::tempdir();
    let port = common::free_port();
    let db_url = format!("sqlite://{}/events.db", dir.display());
    let log = std::fs::File::create(dir.join("service.log")).unwrap();
    let child = common::serve_command(binary(), config, &db_url, port)
        .env("EVENT_PROCESSING_PLUGIN_DIR", plugin_dir())
        .env("AUTOMATED_RESPONSE_DRY_RUN", "true")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let svc = Svc {
        child,
        base: format!("http://127.0.0.1:{port}"),
        db_url,
    };
    let t = Instant::now();
    let health = format!("{}/health", svc.base);
    while !rt.block_on(async {
        reqwest::get(&health)
            .await
            .is_ok_and(|r| r.status().is_success())
    }) {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the service on {} did not start: see {}",
            config.display(),
            dir.join("service.log").display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    svc
}

/// Events stored in the service's database.
fn stored(rt: &tokio::runtime::Runtime, db_url: &str) -> i64 {
    use sqlx::Row;
    let rows = rt.block_on(common::db_rows(db_url, "SELECT COUNT(*) FROM events"));
    rows[0].get(0)
}

/// One config: serve, send, wait until every event is stored, score.
fn run(
    rt: &tokio::runtime::Runtime,
    config: &Path,
    labels: &Labels,
    lines: &[String],
) -> (score::Report, f64) {
    let svc = start(rt, config);
    let t = Instant::now();
    let sent = rt
        .block_on(scenario::send::send(
            lines.iter().cloned(),
            &svc.base,
            1000,
            true,
        ))
        .expect("scenario sent");
    assert_eq!(sent.rejected, 0, "events refused: {sent:?}");
    // POST /events answers once its events are stored; this waits for
    // nothing in the ordinary case and says so if it ever did.
    while stored(rt, &svc.db_url) < lines.len() as i64 {
        assert!(
            t.elapsed() < Duration::from_secs(1800),
            "events still unstored"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let secs = t.elapsed().as_secs_f64();
    let span = (labels.start_ms, labels.end_ms);
    let (alerts, firings) = rt
        .block_on(score::input::from_database(&svc.db_url, span))
        .expect("alerts read");
    (score::score(labels, &alerts, Some(firings), GRACE_MS), secs)
}

fn configs() -> Vec<PathBuf> {
    let list =
        std::env::var("HXP_BENCH_DETECTION_CONFIGS").unwrap_or_else(|_| DEFAULT_CONFIGS.into());
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| common::root().join(s))
        .collect()
}

fn fmt(x: Option<f64>, digits: usize) -> String {
    x.map_or("–".into(), |x| format!("{x:.digits$}"))
}

fn row(config: &Path, r: &score::Report) -> String {
    let ttd = r
        .time_to_detect_s
        .map_or("–".into(), |t| format!("{:.0} / {:.0}", t.median, t.max));
    let raw = r.raw_firings.map_or(0, |f| f.firings);
    format!(
        "| {} | {} ({}/{}) | {:.2} ({}/{}) | {ttd} | {} | {raw} : {} ({}×) |",
        config
            .strip_prefix(common::root())
            .unwrap_or(config)
            .display(),
        fmt(r.precision, 2),
        r.true_positives,
        r.alerts,
        r.recall,
        r.detected,
        r.incidents,
        fmt(r.alerts_per_detected_incident, 1),
        r.alerts,
        fmt(r.raw_firings_per_alert, 1),
    )
}

fn details(config: &Path, r: &score::Report, secs: f64, events: usize) {
    let kinds: Vec<String> = r
        .by_kind
        .iter()
        .map(|(k, s)| format!("{k} {}/{}", s.detected, s.incidents))
        .collect();
    let rules: Vec<String> = r
        .by_rule
        .iter()
        .map(|(k, s)| format!("{k} {}/{}", s.true_positives, s.alerts))
        .collect();
    println!(
        "{}: replayed in {secs:.1} s ({:.0} events/s); {} batches; unkeyed alerts {} ({} true); false alerts on another subject during an incident {}\n  detected by kind: {}\n  true/all alerts by rule: {}",
        config
            .strip_prefix(common::root())
            .unwrap_or(config)
            .display(),
        events as f64 / secs,
        r.raw_firings.map_or(0, |f| f.batches),
        r.unkeyed.alerts,
        r.unkeyed.true_positives,
        r.wrong_key,
        kinds.join(", "),
        if rules.is_empty() {
            "none".into()
        } else {
            rules.join(", ")
        },
    );
}

fn main() {
    println!("machine: {}", common::machine());
    let seed: u64 = common::env_or("HXP_BENCH_SEED", 17);
    let duration_ms = common::env_or("HXP_BENCH_DETECTION_SECS", 7200i64) * 1000;
    let start = scenario::default_start(chrono::Utc::now().timestamp_millis(), duration_ms);
    let s = Scenario::new(seed, start, duration_ms).expect("scenario");
    let lines: Vec<String> = s.events().map(|e| e.to_string()).collect();
    let plugin = common::sha256_hex(
        &std::fs::read(plugin_dir().join("correlation.wasm"))
            .expect("correlation.wasm in the plugin directory (make plugins)"),
    );
    println!(
        "scenario: seed {seed}, {} s of event time, {} events, {} incidents; grace {} s; correlation plugin {}\n",
        duration_ms / 1000,
        lines.len(),
        s.labels.incidents.len(),
        GRACE_MS / 1000,
        &plugin[..12]
    );
    let rt = common::bench_runtime(1);
    let results: Vec<(PathBuf, score::Report, f64)> = configs()
        .into_iter()
        .map(|c| {
            let (r, secs) = run(&rt, &c, &s.labels, &lines);
            (c, r, secs)
        })
        .collect();
    println!(
        "| config | precision (true/alerts) | recall (detected/incidents) | time to detect, median / max (s) | alerts per detected incident | raw firings : alerts |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (c, r, _) in &results {
        println!("{}", row(c, r));
    }
    println!();
    for (c, r, secs) in &results {
        details(c, r, *secs, lines.len());
    }
}
