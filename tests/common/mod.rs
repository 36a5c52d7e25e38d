//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod tls;

use std::path::PathBuf;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A component built by `make build` (`cargo build --release --target
/// wasm32-wasip2`), by its artifact name.
pub fn wasm(name: &str) -> PathBuf {
    let p = root()
        .join("target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: run `make build` (it builds the plugins and test guests for wasm32-wasip2)",
        p.display()
    );
    p
}

pub fn wasm_bytes(name: &str) -> Vec<u8> {
    std::fs::read(wasm(name)).unwrap()
}

/// A fresh empty directory under the system temp dir.
pub fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "hxp-test-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A fresh plugin directory holding the three default plugins (tests that
/// deploy must not touch the shared target/plugins).
pub fn plugin_dir() -> PathBuf {
    let dir = tempdir().join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    for p in ["analytics", "correlation", "responses"] {
        let from = root().join(format!("target/plugins/{p}.wasm"));
        std::fs::copy(from, dir.join(format!("{p}.wasm"))).unwrap();
    }
    dir
}

/// A request with a bearer token and a body: the status and the JSON answer
/// (null when there is none).
pub async fn request_as(
    method: reqwest::Method,
    svc: &Service,
    path: &str,
    token: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .request(method, svc.url(path))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// SHA-256 of bytes, hex (as GET /plugins shows a plugin's hash).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Admin token the test services run with.
pub const TOKEN: &str = "test-admin-token";

/// A running `hxp-events serve`: the real binary, on a free loopback port.
pub struct Service {
    pub child: Child,
    pub base: String,
    pub dir: PathBuf,
    pub db_url: String,
    pub log: PathBuf,
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `program serve --config CONFIG` in the workspace root, on `db_url` and
/// `port`: how every test and bench starts the service (callers add their
/// environment and where the output goes).
pub fn serve_command(
    program: impl AsRef<std::ffi::OsStr>,
    config: &std::path::Path,
    db_url: &str,
    port: u16,
) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .current_dir(root())
        .env("DATABASE_URL", db_url)
        .env("EVENT_PROCESSING_API_PORT", port.to_string());
    cmd
}

/// A SQLite database URL in a fresh directory.
pub fn sqlite_url() -> (String, PathBuf) {
    let dir = tempdir();
    (format!("sqlite://{}/events.db", dir.display()), dir)
}

/// A fresh PostgreSQL database on the local server (127.0.0.1:5432).
pub async fn postgres_url() -> String {
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect("postgres://postgres@127.0.0.1:5432/test")
        .await
        .expect("PostgreSQL must run on 127.0.0.1:5432 (make test starts it)");
    let name = format!("hxp_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}

impl Service {
    /// Start with the shipped config, `db_url`, and extra environment.
    pub async fn start(db_url: &str, env: &[(&str, &str)]) -> Service {
        Service::start_with(db_url, env, None).await
    }

    /// Start with an extra YAML config file content (merged over nothing:
    /// it replaces the shipped file).
    pub async fn start_with(
        db_url: &str,
        env: &[(&str, &str)],
        config_yaml: Option<&str>,
    ) -> Service {
        let dir = tempdir();
        let port = free_port();
        let log = dir.join("service.log");
        let config = match config_yaml {
            Some(text) => {
                let p = dir.join("config.yaml");
                std::fs::write(&p, text).unwrap();
                p
            }
            None => root().join("config/event-processing.yaml"),
        };
        let mut cmd = serve_command(env!("CARGO_BIN_EXE_hxp-events"), &config, db_url, port);
        cmd.env("EVENT_PROCESSING_PLUGIN_DIR", root().join("target/plugins"))
            .env("EVENT_PROCESSING_ADMIN_TOKEN", TOKEN)
            .env("RUST_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let tls = env
            .iter()
            .any(|(k, _)| *k == "EVENT_PROCESSING_TLS_CERT_FILE");
        let scheme = if tls { "https" } else { "http" };
        let svc = Service {
            child,
            base: format!("{scheme}://127.0.0.1:{port}"),
            dir,
            db_url: db_url.to_string(),
            log,
        };
        svc.wait_ready().await;
        svc
    }

    async fn wait_ready(&self) {
        let started = Instant::now();
        // Up is up: the HTTPS tests check the certificate themselves.
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        loop {
            if let Ok(r) = client.get(format!("{}/health", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "service did not start; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET /metrics, the text exposition.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Sum of a metric's samples whose labels contain every one of `labels`.
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let prefix = format!("{name}{{");
        self.metrics_text()
            .await
            .lines()
            .filter(|l| l.starts_with(&prefix) && labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// POST /analytics/recalculate with the admin token; its answer.
    pub async fn recalculate(&self) -> serde_json::Value {
        let r = reqwest::Client::new()
            .post(self.url("/analytics/recalculate"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let started = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no exit after SIGTERM; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- service log (last lines) ---");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// POST JSON, returning (status, body).
pub async fn post(url: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

pub async fn get(url: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// The rows of a query against a service's database (SQLite read-only).
pub async fn db_rows(db_url: &str, sql: &str) -> Vec<sqlx::any::AnyRow> {
    sqlx::any::install_default_drivers();
    let url = if db_url.starts_with("sqlite") {
        format!("{db_url}?mode=ro")
    } else {
        db_url.to_string()
    };
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let rows = sqlx::query(sql).fetch_all(&pool).await.unwrap();
    pool.close().await;
    rows
}

/// Every event id stored in a database, with how often (always once).
pub async fn stored_ids(db_url: &str) -> Vec<(u128, i64)> {
    use sqlx::Row;
    let rows = db_rows(
        db_url,
        "SELECT event_id, COUNT(*) FROM events GROUP BY event_id",
    )
    .await;
    rows.iter()
        .map(|r| {
            let b: Vec<u8> = r.get(0);
            (
                u128::from_be_bytes(b.try_into().unwrap()),
                r.get::<i64, _>(1),
            )
        })
        .collect()
}

/// The shipped config's Kafka topic per event type: (type, topic).
pub fn kafka_topics() -> Vec<(&'static str, String)> {
    hxp_events::sources::kafka::topics(&hxp_events::config::Config::default())
        .into_iter()
        .map(|(k, t)| (k.as_str(), t))
        .collect()
}

/// The topic an event (JSON text) is produced to: its type's.
pub fn topic_of(event: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(event).unwrap();
    let t = v["event_type"].as_str().unwrap();
    kafka_topics().into_iter().find(|(k, _)| *k == t).unwrap().1
}

/// The tansu broker (`make test` installs it with cargo install).
pub fn tansu_bin() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo_bin = PathBuf::from(home).join(".cargo/bin/tansu");
    if cargo_bin.exists() {
        return cargo_bin;
    }
    PathBuf::from("tansu")
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// "CPU model, N cores", for benchmark reports.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}

/// A bench's runtime: `workers` threads (the service under test shares the
/// machine's two cores with it).
pub fn bench_runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A bench setting from the environment, else `default`.
pub fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
