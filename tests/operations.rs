//! Operating it: the service under the real monitoring tools of Debian's
//! packages. A real Prometheus scraping it (and loading the alert rules), a
//! real Pushgateway receiving its pushes, the Grafana dashboard's and the
//! alert rules' queries against its real /metrics, and the live dashboard
//! page in headless Chromium.
//!
//! Needs `prometheus`, `prometheus-pushgateway` and `chromium` (Debian
//! packages; tests/setup.sh installs them when missing).

mod common;

use common::{Service, TOKEN, free_port, get, post, root, sqlite_url, tempdir};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers

/// A Debian-packaged program: on PATH, else in /usr/bin.
fn program(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .chain([Path::new("/usr/bin").join(name)])
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("{name} is missing: apt-get install -y {package} (tests/setup.sh does it)")
    })
}

/// A child process killed when dropped, with its output in a log file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        Proc { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- {} ---\n{}",
                self.log.display(),
                tail(&self.log_text(), 30)
            );
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Wait until GET `url` answers 2xx.
async fn wait_ready(url: &str, what: &Proc) {
    let started = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{url} not ready after 60 s; log:\n{}",
            tail(&what.log_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Poll `check` every 250 ms until it returns Some, or fail after `secs`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// An instant query against Prometheus' HTTP API: (labels, value) per series.
async fn prom_query(base: &str, query: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let r: Value = reqwest::Client::new()
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", query)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "success", "{query}: {r}");
    r["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels = s["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let v = s["value"][1].as_str().unwrap().parse::<f64>().unwrap();
            (labels, v)
        })
        .collect()
}

/// The single value of a query, once it has one.
async fn prom_value(base: &str, query: &str) -> Option<f64> {
    let r = prom_query(base, query).await;
    (r.len() == 1).then(|| r[0].1)
}

/// Metric families of a text exposition: name -> type ("untyped" for
/// samples without a TYPE line).
fn families(text: &str) -> BTreeMap<String, String> {
    let mut fams = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                fams.insert(name.to_string(), kind.to_string());
            }
        } else if !line.is_empty() && !line.starts_with('#') {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            fams.entry(name).or_insert_with(|| "untyped".into());
        }
    }
    fams
}

/// Is a metric name (possibly NAME_bucket/_sum/_count) exported?
fn exported(name: &str, fams: &BTreeMap<String, String>) -> bool {
    fams.contains_key(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .and_then(|base| fams.get(base))
                .is_some_and(|t| t == "histogram" || t == "summary")
        })
}

/// Not metric names: operators, modifiers, and the aggregations (which may
/// stand before a `by (...)` clause instead of their parenthesis).
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "le",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// The metric names a PromQL expression (with Grafana variables) selects:
/// the port of tests/ops/check_dashboard_metrics.py.
fn metric_names(expr: &str) -> Vec<String> {
    let c: Vec<char> = expr.chars().collect();
    let ident_start = |ch: char| ch.is_ascii_alphabetic() || ch == '_' || ch == ':';
    let ident_char = |ch: char| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':';
    let skip_to = |from: usize, close: char| {
        let mut j = from;
        while j < c.len() && c[j] != close {
            if c[j] == '\\' {
                j += 1;
            }
            j += 1;
        }
        (j + 1).min(c.len())
    };
    let mut names = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        match ch {
            // Grafana variables: ${...}, $name, $__rate_interval.
            '$' => {
                i += 1;
                if i < c.len() && c[i] == '{' {
                    i = skip_to(i + 1, '}');
                } else {
                    while i < c.len() && ident_char(c[i]) {
                        i += 1;
                    }
                }
            }
            '"' | '\'' | '`' => i = skip_to(i + 1, ch),
            '{' => i = skip_to(i + 1, '}'),
            '[' => i = skip_to(i + 1, ']'),
            _ if ch.is_ascii_digit()
                || (ch == '.' && c.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                // A number, or a duration such as 5m or 1h30m.
                while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '.') {
                    i += 1;
                }
            }
            _ if ident_start(ch) => {
                let start = i;
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
                let word: String = c[start..i].iter().collect();
                let mut j = i;
                while j < c.len() && c[j].is_whitespace() {
                    j += 1;
                }
                let call = j < c.len() && c[j] == '(';
                let lower = word.to_ascii_lowercase();
                if call
                    && matches!(
                        lower.as_str(),
                        "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                    )
                {
                    // A grouping clause: its parentheses hold label names.
                    i = skip_to(j + 1, ')');
                } else if lower == "offset" {
                    while i < c.len() && c[i].is_whitespace() {
                        i += 1;
                    }
                    while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '-') {
                        i += 1;
                    }
                } else if !call && !KEYWORDS.contains(&lower.as_str()) {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn metric_name_extraction() {
    let names = |e: &str| metric_names(e);
    assert_eq!(
        names(
            r#"histogram_quantile(0.95, sum by (le) (rate(foo_bucket{job=~"$job", a="b(c"}[$__rate_interval] offset 1h)))"#
        ),
        ["foo_bucket"]
    );
    assert_eq!(
        names("sum(rate(x_total[1h30m])) / ignoring(code) group_left(instance) y * 1e3"),
        ["x_total", "y"]
    );
    assert_eq!(
        names("topk(5, z) > bool 0.5 and on(instance) w"),
        ["z", "w"]
    );
    assert_eq!(
        names(r#"label_replace(up, "a", "$1", "b", "(.*)")"#),
        ["up"]
    );
    assert_eq!(
        names("sum without (status) (rate(a[5m])) / max by (x) (b)"),
        ["a", "b"]
    );
}

/// Metric names of every panel query of the Grafana dashboard.
fn dashboard_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let text =
        std::fs::read_to_string(root().join("config/grafana/event-processing-dashboard.json"))
            .unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    fn walk(panels: &Value, used: &mut BTreeMap<String, BTreeSet<String>>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    for n in metric_names(e) {
                        used.entry(n).or_default().insert(title.clone());
                    }
                }
            }
            walk(&p["panels"], used);
        }
    }
    walk(&dash["panels"], &mut used);
    used
}

/// Metric names of every alert rule.
fn alert_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let text =
        std::fs::read_to_string(root().join("config/prometheus/event_processing_alerts.yml"))
            .unwrap();
    let rules: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for g in rules["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            let name = r["alert"].as_str().unwrap_or("?").to_string();
            for n in metric_names(r["expr"].as_str().unwrap()) {
                used.entry(n).or_default().insert(name.clone());
            }
        }
    }
    used
}

/// Families that are absent until their first sample, or without Kafka, or
/// that Prometheus itself makes (`up`).
fn optional_metric(name: &str) -> bool {
    name.starts_with("kafka_")
        || matches!(
            name,
            "plugin_failures_total" | "plugin_deployments_total" | "up"
        )
}

/// Where the tests leave what a person may want to look at.
fn output_dir() -> PathBuf {
    let d = root().join("target/test-output/ops");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn llm(latency_ms: u64) -> Value {
    json!({"event_type": "llm_request", "data": {"model": "mixtral-8x7b", "service": "gw", "latency_ms": latency_ms, "success": true, "cost_usd": 0.002}})
}

// ---------------------------------------------------------------------------
// Tests

/// promtool checks the rules and runs their unit tests.
#[test]
fn alert_rules_check_and_unit_tests() {
    let out = Command::new("bash")
        .arg(root().join("tests/ops/check-alerts.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check-alerts.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real Prometheus scrapes the service every second (with the alert rules
/// loaded); its answers agree with what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_service() {
    let (db, _dir) = sqlite_url();
    let svc = Service::start(&db, &[]).await;
    let target = svc.base.trim_start_matches("http://").to_string();

    let dir = tempdir();
    let port = free_port();
    let rules = root().join("config/prometheus/event_processing_alerts.yml");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: event-processing-api\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['{target}']\n",
        rules.display()
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let prom = Proc::spawn(
        Command::new(program("prometheus", "prometheus")).args([
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".into(),
        ]),
        dir.join("prometheus.log"),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/-/ready"), &prom).await;

    // The rules are loaded.
    let (_, rules) = get(&format!("{base}/api/v1/rules")).await;
    let groups: Vec<&str> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert!(groups.contains(&"event_processing_alerts"), "{rules}");

    // A first scrape before any event, so that increase() sees them all.
    let job = r#"job="event-processing-api""#;
    eventually(30, "a first scrape of the service", || {
        let base = base.clone();
        async move {
            prom_value(&base, &format!("up{{{job}}}"))
                .await
                .filter(|v| *v == 1.0)
        }
    })
    .await;

    // 40 requests with latencies 100..=139 ms (mean 119.5), 10 feedbacks of 8.
    let mut events: Vec<Value> = (100..140).map(llm).collect();
    events.extend(
        (0..10).map(|_| json!({"event_type": "user_feedback", "data": {"satisfaction": 8.0}})),
    );
    let (status, body) = post(&svc.url("/events"), &json!(events)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 50);

    let total = eventually(30, "event_processing_total = 50 in Prometheus", || {
        let base = base.clone();
        async move {
            prom_value(
                &base,
                &format!(r#"sum(event_processing_total{{{job}, status="processed"}})"#),
            )
            .await
            .filter(|v| *v == 50.0)
        }
    })
    .await;
    assert_eq!(total, 50.0);
    let by_type = prom_query(
        &base,
        &format!(r#"sum by (event_type) (event_processing_total{{{job}, status="processed"}})"#),
    )
    .await;
    let by_type: BTreeMap<String, f64> = by_type
        .into_iter()
        .map(|(l, v)| (l["event_type"].clone(), v))
        .collect();
    assert_eq!(by_type["llm_request"], 40.0, "{by_type:?}");
    assert_eq!(by_type["user_feedback"], 10.0, "{by_type:?}");

    // The 5-second throughput gauge saw them: at most 50 events / 5 s.
    let peak = eventually(15, "a non-zero event_processing_throughput", || {
        let base = base.clone();
        async move {
            prom_value(
                &base,
                &format!("max_over_time(event_processing_throughput{{{job}}}[1m])"),
            )
            .await
            .filter(|v| *v > 0.0)
        }
    })
    .await;
    assert!(
        peak <= 10.0 + 1e-9,
        "throughput peak {peak} > 50 events / 5 s"
    );

    // Latency histogram: 50 observations, a finite p95 within the request timeout.
    let count = prom_value(
        &base,
        &format!("event_processing_duration_seconds_count{{{job}}}"),
    )
    .await
    .unwrap();
    assert_eq!(count, 50.0);
    let p95 = prom_value(
        &base,
        &format!("histogram_quantile(0.95, sum by (le) (increase(event_processing_duration_seconds_bucket{{{job}}}[1m])))"),
    )
    .await
    .expect("a p95");
    assert!(p95.is_finite() && p95 > 0.0 && p95 < 30.0, "p95 {p95}");

    // Analytics gauges, as /analytics says.
    let (_, a) = get(&svc.url("/analytics")).await;
    assert_eq!(a["latency"], 119.5, "{a}");
    assert_eq!(a["user_satisfaction"], 8.0, "{a}");
    for (metric, want) in [
        ("real_time_analytics_latency", 119.5),
        ("real_time_analytics_user_satisfaction", 8.0),
        ("real_time_analytics_error_rate", 0.0),
    ] {
        let got = eventually(15, metric, || {
            let base = base.clone();
            async move {
                prom_value(&base, &format!("{metric}{{{job}}}"))
                    .await
                    .filter(|v| *v == want)
            }
        })
        .await;
        assert_eq!(got, want, "{metric}");
    }
    // The requirements' query.
    let r = prom_query(&base, "event_processing_throughput").await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].0["instance"], target);
    drop(prom);
}

/// With CUSTOM_METRICS_ENDPOINT set, the service pushes its registry to a
/// real Pushgateway every PERFORMANCE_METRICS_UPDATE_INTERVAL seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushgateway_receives_pushed_metrics() {
    let dir = tempdir();
    let port = free_port();
    let gw = Proc::spawn(
        Command::new(program("prometheus-pushgateway", "prometheus-pushgateway")).args([
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".into(),
        ]),
        dir.join("pushgateway.log"),
    );
    let gw_base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{gw_base}/-/ready"), &gw).await;

    let (db, _dbdir) = sqlite_url();
    let svc = Service::start(
        &db,
        &[
            ("CUSTOM_METRICS_ENDPOINT", gw_base.as_str()),
            ("PERFORMANCE_METRICS_UPDATE_INTERVAL", "1"),
        ],
    )
    .await;
    let instance = svc.base.trim_start_matches("http://").to_string();
    for latency in [100, 200, 300] {
        let (status, body) = post(&svc.url("/process"), &llm(latency)).await;
        assert_eq!(status, 200, "{body}");
    }

    // The pushed group carries job and instance; values follow the service.
    let want = [
        r#"event_type="llm_request""#.to_string(),
        format!(r#"instance="{instance}""#),
        r#"job="event-processing-api""#.to_string(),
        r#"status="processed""#.to_string(),
    ];
    let line = wait_pushed(&gw_base, &want, 3).await;
    assert!(line.ends_with(" 3"), "{line}");
    let text = reqwest::get(format!("{gw_base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "event_processing_duration_seconds_bucket{",
        "real_time_analytics_latency{",
        "push_time_seconds{",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(family) && l.contains(&format!(r#"instance="{instance}""#))),
            "the Pushgateway lacks {family}…instance=\"{instance}\"; service log:\n{}",
            tail(&svc.log_text(), 20)
        );
    }
    // Pushes go on: a later push carries a later event.
    let (status, _) = post(&svc.url("/process"), &llm(400)).await;
    assert_eq!(status, 200);
    wait_pushed(&gw_base, &want, 4).await;
    drop(gw);
}

/// Wait until the Pushgateway holds event_processing_total with all of
/// `want` among its labels and the value `count`; that line.
async fn wait_pushed(gw_base: &str, want: &[String], count: u64) -> String {
    let suffix = format!(" {count}");
    eventually(
        20,
        &format!("event_processing_total {count} pushed"),
        || {
            let url = format!("{gw_base}/metrics");
            let suffix = suffix.clone();
            async move {
                let text = reqwest::get(url).await.ok()?.text().await.ok()?;
                text.lines()
                    .find(|l| {
                        l.starts_with("event_processing_total{")
                            && want.iter().all(|w| l.contains(w.as_str()))
                            && l.ends_with(&suffix)
                    })
                    .map(str::to_string)
            }
        },
    )
    .await
}

/// Every metric that the Grafana dashboard and the alert rules query is in
/// the service's /metrics, once it has seen one event of each type, a
/// correlation alert and an automated response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alert_queries_use_exported_metrics() {
    let (db, _dir) = sqlite_url();
    // Dry run: the action request is counted when decided (an executed one
    // is counted when its webhook call ends).
    let svc = Service::start(&db, &[("AUTOMATED_RESPONSE_DRY_RUN", "true")]).await;
    let events = [
        json!({"event_type": "llm_request", "data": {"model": "mixtral-8x7b", "latency_ms": 300, "success": false, "error": "timeout"}}),
        json!({"event_type": "user_feedback", "data": {"satisfaction": 6.0}}),
        json!({"event_type": "system_metric", "data": {"service": "vllm-llama", "health": "failed"}}),
        json!({"event_type": "business_event", "data": {"name": "renewal", "value": 250.5}}),
        json!({"event_type": "error_event", "data": {"service": "gw", "error_type": "timeout"}}),
    ];
    for e in &events {
        let (status, body) = post(&svc.url("/process"), e).await;
        assert_eq!(status, 200, "{body}");
    }
    // More errors, one per batch: high_error_rate reaches alert_threshold (5).
    for _ in 0..5 {
        let (status, _) = post(&svc.url("/process"), &events[4]).await;
        assert_eq!(status, 200);
    }
    let (_, c) = get(&svc.url("/correlations")).await;
    assert_eq!(c["alert_triggered"], true, "{c}");
    let (_, r) = get(&svc.url("/automated-responses")).await;
    assert!(r["total"].as_u64().unwrap() >= 1, "{r}");

    let text = svc.metrics_text().await;
    std::fs::write(output_dir().join("metrics.txt"), &text).unwrap();
    let fams = families(&text);
    let mut missing = Vec::new();
    for (source, used) in [
        ("dashboard", dashboard_metrics()),
        ("alert rules", alert_metrics()),
    ] {
        assert!(used.len() > 10, "{source}: only {used:?}");
        for (name, places) in used {
            if !exported(&name, &fams) && !optional_metric(&name) {
                missing.push(format!("{source}: {name} (in {places:?})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "queried but not exported:\n{}",
        missing.join("\n")
    );
    // The Python checker agrees (the one operators run by hand).
    let out = Command::new("python3")
        .arg(root().join("tests/ops/check_dashboard_metrics.py"))
        .arg(root().join("config/grafana/event-processing-dashboard.json"))
        .arg(output_dir().join("metrics.txt"))
        .args([
            "--optional",
            "kafka_.*",
            "--optional",
            "plugin_failures_total|plugin_deployments_total",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Standard base64 (the WebDriver screenshot encoding), decoded.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    };
    let sextets: Vec<u8> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(sextets.len() * 3 / 4);
    for chunk in sextets.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &v)| acc | (u32::from(v) << (18 - 6 * i)));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}

#[test]
fn base64_decoding() {
    assert_eq!(base64_decode("Zm9vYmFy"), b"foobar");
    assert_eq!(base64_decode("Zm9vYg=="), b"foob");
    assert_eq!(base64_decode("Zm9vYmE="), b"fooba");
}

/// A WebDriver session on chromedriver (the W3C HTTP protocol, by hand).
struct Browser {
    client: reqwest::Client,
    session: String,
    _driver: Proc,
}

impl Browser {
    async fn start(dir: &Path) -> Browser {
        let port = free_port();
        let driver = Proc::spawn(
            Command::new(program("chromedriver", "chromium-driver")).arg(format!("--port={port}")),
            dir.join("chromedriver.log"),
        );
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(&format!("{base}/status"), &driver).await;
        let client = reqwest::Client::new();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": program("chromium", "chromium"),
                // Root in a container: no sandbox. A profile of its own.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1600",
                         format!("--user-data-dir={}", dir.join("profile").display())],
            },
        }}});
        let r: Value = client
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        Browser {
            client,
            session: format!("{base}/session/{session}"),
            _driver: driver,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.session));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r: Value = req.send().await.unwrap().json().await.unwrap();
        assert!(r["value"].get("error").is_none(), "WebDriver {path}: {r}");
        r["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn script(&self, js: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
        .await
    }

    async fn screenshot(&self) -> Vec<u8> {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64_decode(v.as_str().unwrap())
    }

    async fn close(self) {
        let _ = self.client.delete(&self.session).send().await;
    }
}

/// What the page shows, read in the browser.
const PAGE_STATE: &str = r##"
const attr = (id, a) => document.getElementById(id).getAttribute(a);
const charts = window.hxpDashboard.charts;
const last = (s) => s.points.length ? s.points[s.points.length - 1][1] : null;
return {
  throughput: Number(attr("chart-throughput", "data-points")),
  latency: Number(attr("chart-latency", "data-points")),
  window_latency: Number(attr("chart-window-latency", "data-points")),
  status: document.getElementById("status").textContent,
  updated: attr("status", "data-updated"),
  failures: attr("status", "data-failures"),
  stored_rate: last(charts.throughput.series[0]),
  window_rate: last(charts.throughput.series[1]),
  plugins: Array.from(document.querySelectorAll("#plugins-table tbody tr")).map((r) => r.cells[0].textContent + " " + r.cells[2].textContent),
  shadow: Array.from(document.querySelectorAll("#plugins-table tbody tr")).filter((r) => r.cells[0].textContent.endsWith("(shadow)")).map((r) => r.cells[8].textContent).join(),
};
"##;

/// The live page, served by the service at /, in headless Chromium (driven
/// through chromedriver) while events flow: the charts fill in real time,
/// the rates agree with what is sent, the status shows the update, and a
/// screenshot is left in target/test-output/ops/dashboard.png.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_dashboard_page_in_headless_chromium() {
    let (db, _dir) = sqlite_url();
    let svc = Service::start(&db, &[]).await;

    // The page and its assets are served.
    for (path, kind) in [
        ("/", "text/html"),
        ("/static/dashboard.js", "javascript"),
        ("/static/dashboard.css", "text/css"),
    ] {
        let r = reqwest::get(svc.url(path)).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let ct = r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        assert!(ct.contains(kind), "{path}: {ct}");
    }

    // A shadow of the correlation plugin (the same version: it agrees),
    // which the page shows with its agreement.
    let wasm = std::fs::read(root().join("target/plugins/correlation.wasm")).unwrap();
    let resp = reqwest::Client::new()
        .put(svc.url("/plugins/correlation?mode=shadow"))
        .bearer_auth(TOKEN)
        .body(wasm)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // About 200 events/s for at most 40 s while the browser polls.
    let feeding = {
        let url = svc.url("/events");
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let started = Instant::now();
            let mut n = 0u64;
            while started.elapsed() < Duration::from_secs(40) {
                let batch: Vec<Value> = (0..20).map(|i| llm(100 + (n * 20 + i) % 400)).collect();
                n += 1;
                let _ = client.post(&url).json(&batch).send().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let dir = tempdir();
    let browser = Browser::start(&dir).await;
    browser.goto(&svc.url("/?interval=500")).await;
    let state = eventually(30, "5 points on every chart", || {
        let browser = &browser;
        async move {
            let s = browser.script(PAGE_STATE).await;
            (s["throughput"].as_u64()? >= 5
                && s["window_latency"].as_u64()? >= 5
                && s["latency"].as_u64()? >= 3)
                .then_some(s)
        }
    })
    .await;
    let png = browser.screenshot().await;
    browser.close().await;
    feeding.abort();
    let shot = output_dir().join("dashboard.png");
    std::fs::write(&shot, &png).unwrap();
    eprintln!("screenshot: {}", shot.display());

    assert!(
        state["status"].as_str().unwrap().starts_with("Updated "),
        "{state}"
    );
    assert_eq!(state["failures"], "0", "{state}");
    assert!(
        !state["updated"].as_str().unwrap_or("").is_empty(),
        "{state}"
    );
    // Events flow at about 200/s: both rates see them.
    let stored = state["stored_rate"].as_f64().unwrap_or(0.0);
    let window = state["window_rate"].as_f64().unwrap_or(0.0);
    assert!(
        stored > 0.0 && stored < 1000.0,
        "stored rate {stored}: {state}"
    );
    assert!(window > 0.0, "window rate {window}: {state}");
    // The plugins with their versions.
    let plugins: Vec<&str> = state["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for p in [
        "analytics 0.1.0",
        "correlation 0.1.0",
        "responses 0.1.0",
        "correlation (shadow) 0.1.0",
    ] {
        assert!(plugins.contains(&p), "{plugins:?}");
    }
    let shadow = state["shadow"].as_str().unwrap();
    assert!(
        shadow.starts_with("shadow: agreement 100.0% (0 of "),
        "{shadow}"
    );
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot"
    );
}
