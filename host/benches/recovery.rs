//! Recovery and disk benchmark: the service binary on SQLite, filled over
//! HTTP by the load generator (in this process).
//!
//! `cargo bench -p hxp-events --bench recovery` (in `make bench`). Prints:
//! - restart time after `kill -9` under load against the events stored
//!   (none: the baseline, 1M, 10M; `HXP_BENCH_RECOVERY_SIZES=0,1000000`
//!   to choose), median of 3 restarts each: from spawn until the port
//!   accepts and until /health answers, with the database and WAL sizes;
//! - disk use over a steady run (`HXP_BENCH_STEADY_SECS`, default 600 s,
//!   at `HXP_BENCH_STEADY_RATE`, default 50,000 events/s) with
//!   `database.retention_secs` 60: database and WAL bytes every 30 s.

#[path = "../../tests/common/mod.rs"]
mod common;

use hxp_events::cli::loadgen;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

struct Svc {
    child: Child,
    port: u16,
}

impl Svc {
    /// Start on `dir`'s SQLite file; returns with the time until the port
    /// accepted and until /health answered.
    fn start(dir: &Path, env: &[(&str, &str)]) -> (Svc, f64, f64) {
        let port = common::free_port();
        let config = common::root().join("config/event-processing.yaml");
        let db_url = format!("sqlite://{}/events.db", dir.display());
        let mut cmd =
            common::serve_command(env!("CARGO_BIN_EXE_hxp-events"), &config, &db_url, port);
        cmd.env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .envs(env.iter().copied());
        let t = Instant::now();
        let child = cmd.spawn().expect("service starts");
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(300), "no start");
            std::thread::sleep(Duration::from_millis(5));
        }
        let accept = t.elapsed().as_secs_f64();
        while !health_ok(port) {
            std::thread::sleep(Duration::from_millis(5));
        }
        (Svc { child, port }, accept, t.elapsed().as_secs_f64())
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET /health answers 200.
fn health_ok(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut head = [0u8; 12];
    s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_ok()
        && s.read_exact(&mut head).is_ok()
        && head.ends_with(b" 200")
}

fn size(path: PathBuf) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// As fast as the service takes them.
const FAST: u64 = 500_000;

/// Send events for `secs` at `rate`; returns how many were accepted.
fn load(rt: &tokio::runtime::Runtime, url: &str, rate: u64, secs: f64) -> u64 {
    let report = rt.block_on(loadgen::run(loadgen::Options {
        target: url.to_string(),
        rate,
        duration: Duration::from_secs_f64(secs),
        batch: 1000,
        concurrency: 4,
        seed: 7,
        quiet: true,
    }));
    report.expect("load generator")["accepted"]
        .as_u64()
        .unwrap_or(0)
}

/// Events in the database (read while the service runs or after).
fn stored(rt: &tokio::runtime::Runtime, dir: &Path) -> i64 {
    use sqlx::Row;
    let url = format!("sqlite://{}/events.db", dir.display());
    let rows = rt.block_on(common::db_rows(&url, "SELECT COUNT(*) FROM events"));
    rows[0].get(0)
}

/// Fill a database to about `n` events, then restart it three times, each
/// after `kill -9` during a second of load.
fn restarts(rt: &tokio::runtime::Runtime, n: u64) {
    let dir = common::tempdir();
    let (svc, _, _) = Svc::start(&dir, &[]);
    let mut sent = 0;
    while sent < n {
        sent += load(
            rt,
            &svc.url(),
            FAST,
            10.0_f64.min(1.0 + (n - sent) as f64 / 150_000.0),
        );
    }
    let mut svc = svc;
    let (mut accepts, mut healthy) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        load(rt, &svc.url(), FAST, 1.0);
        svc.kill9();
        let wal = size(dir.join("events.db-wal"));
        let (s, a, h) = Svc::start(&dir, &[]);
        println!(
            "  restart: port after {a:.3} s, /health after {h:.3} s (WAL at the kill {:.1} MB)",
            mb(wal)
        );
        accepts.push(a);
        healthy.push(h);
        svc = s;
    }
    svc.kill9();
    println!(
        "events stored {:>10}: restart median {:.3} s to the port, {:.3} s to /health; db {:.0} MB",
        stored(rt, &dir),
        common::median(accepts),
        common::median(healthy),
        mb(size(dir.join("events.db")))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Disk use at a steady rate with one minute of retention.
fn steady(rt: &tokio::runtime::Runtime, rate: u64, secs: u64) {
    let dir = common::tempdir();
    let (svc, _, _) = Svc::start(&dir, &[("DATABASE_RETENTION_SECS", "60")]);
    println!("steady run: {rate} events/s for {secs} s, retention 60 s");
    let t = Instant::now();
    let mut sent = 0;
    while t.elapsed().as_secs() < secs {
        sent += load(rt, &svc.url(), rate, 30.0);
        println!(
            "  {:>4} s: sent {sent:>9}, stored now {:>8}, db {:>7.1} MB, WAL {:>6.1} MB",
            t.elapsed().as_secs(),
            stored(rt, &dir),
            mb(size(dir.join("events.db"))),
            mb(size(dir.join("events.db-wal")))
        );
    }
    svc.kill9();
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    println!("machine: {}", common::machine());
    let rt = common::bench_runtime(2);
    let sizes: String =
        common::env_or("HXP_BENCH_RECOVERY_SIZES", "0,1000000,10000000".to_string());
    for n in sizes.split(',').filter_map(|s| s.trim().parse().ok()) {
        restarts(&rt, n);
    }
    let secs = common::env_or("HXP_BENCH_STEADY_SECS", 600);
    if secs > 0 {
        steady(&rt, common::env_or("HXP_BENCH_STEADY_RATE", 50_000), secs);
    }
}
