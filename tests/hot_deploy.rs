//! Hot deployment against the real service: plugin files swapped, broken,
//! added and removed in a watched directory while events flow; config rule
//! changes; rollback; restart with a rejected file in the directory.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const A_VERSION: &str = "0.1.0";
const B_VERSION: &str = "0.1.0+b";

fn sha(bytes: &[u8]) -> String {
    sha256_hex(bytes)
}

fn analytics_b() -> Vec<u8> {
    let p = root().join("target/test-plugins/analytics-b.wasm");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}; run `make build`", p.display()))
}

/// The shipped config with a long analytics window (everything sent stays
/// in it), checkpoints every second, and `edit` applied.
fn config_yaml(edit: impl FnOnce(&mut serde_norway::Value)) -> String {
    let text = std::fs::read_to_string(root().join("config/event-processing.yaml")).unwrap();
    let mut v: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    v["real_time_analytics"]["window_size"] = 3600.into();
    v["real_time_analytics"]["update_interval"] = 1.into();
    edit(&mut v);
    serde_norway::to_string(&v).unwrap()
}

async fn start(db_url: &str, dir: &Path, yaml: &str) -> Service {
    Service::start_with(
        db_url,
        &[("EVENT_PROCESSING_PLUGIN_DIR", dir.to_str().unwrap())],
        Some(yaml),
    )
    .await
}

/// Replace a file the way deployment tools should: write aside, rename.
fn put(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

async fn plugins(svc: &Service) -> Value {
    get(&svc.url("/plugins")).await.1
}

async fn running(svc: &Service, name: &str) -> Option<Value> {
    plugins(svc).await["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

/// Wait until `name` runs the file with hash `sha`.
async fn wait_sha(svc: &Service, name: &str, sha: &str) -> Duration {
    let t = Instant::now();
    loop {
        if running(svc, name)
            .await
            .is_some_and(|p| p["sha256"].as_str() == Some(sha))
        {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{name} never ran {sha}: {:#}",
            plugins(svc).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_metric(svc: &Service, name: &str, label: &str, at_least: f64) {
    let t = Instant::now();
    while svc.metric(name, &[label]).await < at_least {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{name}{{{label}}} stayed below {at_least}: {:#}",
            plugins(svc).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GET /correlations, and the names of its active findings.
async fn active_findings(svc: &Service) -> (Value, Vec<String>) {
    let (_, c) = get(&svc.url("/correlations")).await;
    let names = c["active_findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    (c, names)
}

async fn history(svc: &Service, name: &str) -> Vec<Value> {
    let (status, body) = get(&svc.url(&format!("/plugins/{name}/history?limit=1000"))).await;
    assert_eq!(status, 200, "{body}");
    body["deployments"].as_array().unwrap().clone()
}

/// (batch_seq, analytics version) of every stored batch, in order.
async fn batch_versions(db_url: &str) -> Vec<(i64, String)> {
    use sqlx::Row;
    db_rows(
        db_url,
        "SELECT batch_seq, plugins FROM batches ORDER BY batch_seq",
    )
    .await
    .iter()
    .map(|r| {
        let plugins: Value = serde_json::from_str(&r.get::<String, _>(1)).unwrap();
        (
            r.get::<i64, _>(0),
            plugins["analytics"].as_str().unwrap_or("").to_string(),
        )
    })
    .collect()
}

/// Wait until `n` events are processed and stored.
async fn wait_processed(svc: &Service, n: u64) {
    let t = Instant::now();
    loop {
        let (_, s) = get(&svc.url("/analytics/status")).await;
        if s["events_processed"].as_u64() == Some(n)
            && stored_ids(&svc.db_url).await.len() as u64 == n
        {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "processed {} of {n}",
            s["events_processed"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Files that must never take effect: (file name, bytes, manifest).
fn broken_files(a: &[u8], b: &[u8]) -> Vec<(&'static str, Vec<u8>, Option<&'static str>)> {
    let wasm = |n: &str| std::fs::read(wasm(n)).unwrap();
    vec![
        ("analytics.wasm", b[..b.len() / 2].to_vec(), None),
        ("analytics.wasm", a[..1000].to_vec(), None),
        ("analytics.wasm", b"not a component at all".to_vec(), None),
        ("analytics.wasm", Vec::new(), None),
        // A core module, not a component.
        ("analytics.wasm", b"\0asm\x01\0\0\0".to_vec(), None),
        // A component of no plugin world.
        ("analytics.wasm", wasm("not-a-plugin"), None),
        // Built against a future version of the WIT package.
        ("analytics.wasm", wasm("future_wit_guest"), None),
        // A correlation plugin where the analytics plugin runs.
        ("analytics.wasm", wasm("hostile_guest"), None),
        // Traps in configure (its config section asks it to).
        (
            "hostile.wasm",
            wasm("hostile_guest"),
            Some("config: plugin_config.hostile\n"),
        ),
        // Its manifest claims another stage than the component's world.
        (
            "liar.wasm",
            wasm("hostile_guest"),
            Some("stage: analytics\n"),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_swaps_under_load_lose_nothing_and_broken_files_never_take_effect() {
    let (db_url, _) = sqlite_url();
    let dir = plugin_dir();
    let yaml = config_yaml(|v| {
        v["plugin_config"] =
            serde_norway::from_str("{hostile: {mode: panic-in-configure}}").unwrap();
    });
    let svc = start(&db_url, &dir, &yaml).await;
    let a = std::fs::read(dir.join("analytics.wasm")).unwrap();
    let b = analytics_b();
    let (sha_a, sha_b) = (sha(&a), sha(&b));
    assert_ne!(sha_a, sha_b);
    assert_eq!(
        running(&svc, "analytics").await.unwrap()["version"],
        A_VERSION
    );

    // Steady load from the load generator while files change.
    let load = tokio::spawn(hxp_events::cli::loadgen::run(
        hxp_events::cli::loadgen::Options {
            target: svc.base.clone(),
            rate: 2000,
            duration: Duration::from_secs(40),
            batch: 20,
            concurrency: 4,
            seed: 11,
            quiet: true,
        },
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let broken = broken_files(&a, &b);
    let mut swap_times = Vec::new();
    for i in 0..50 {
        let (bytes, want) = if i % 2 == 0 {
            (&b, &sha_b)
        } else {
            (&a, &sha_a)
        };
        put(&dir, "analytics.wasm", bytes);
        swap_times.push(wait_sha(&svc, "analytics", want).await);
        // Let batches run on this version.
        tokio::time::sleep(Duration::from_millis(120)).await;
        if i % 5 == 4 {
            let (name, bytes, manifest) = &broken[i / 5];
            let before = svc
                .metric("plugin_deployments_total", &["result=\"rejected\""])
                .await;
            if let Some(m) = manifest {
                std::fs::write(dir.join(name).with_extension("yaml"), m).unwrap();
            }
            put(&dir, name, bytes);
            wait_metric(
                &svc,
                "plugin_deployments_total",
                "result=\"rejected\"",
                before + 1.0,
            )
            .await;
            // Shown in GET /plugins, and the running version is untouched.
            let p = plugins(&svc).await;
            let file = dir.join(name).display().to_string();
            let entry = p["rejected"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["file"] == file.as_str())
                .unwrap_or_else(|| panic!("{name} not shown as rejected: {p:#}"));
            assert!(!entry["reason"].as_str().unwrap().is_empty());
            assert_eq!(running(&svc, "analytics").await.unwrap()["sha256"], *want);
            assert!(running(&svc, "hostile").await.is_none());
            assert!(running(&svc, "liar").await.is_none());
        }
    }
    let summary = load.await.unwrap().unwrap();
    let sent = summary["accepted"].as_u64().unwrap();
    assert!(sent > 20_000, "{summary}");
    assert_eq!(summary["failed"].as_u64(), Some(0), "{summary}");

    // Nothing lost or counted twice: the database and the analytics window
    // hold exactly what was accepted.
    wait_processed(&svc, sent).await;
    let ids = stored_ids(&db_url).await;
    assert_eq!(ids.len() as u64, sent);
    assert!(ids.iter().all(|(_, n)| *n == 1));
    let (_, status) = get(&svc.url("/analytics/status")).await;
    assert_eq!(status["events_in_window"].as_u64(), Some(sent), "{status}");
    let (_, analytics) = get(&svc.url("/analytics")).await;
    assert_eq!(analytics["event_count"].as_u64(), Some(sent));
    let per_type: u64 = analytics["by_event_type"]
        .as_object()
        .unwrap()
        .values()
        .map(|t| t["event_count"].as_u64().unwrap())
        .sum();
    assert_eq!(per_type, sent);

    // Every swap recorded, every broken file rejected and counted.
    let h = history(&svc, "analytics").await;
    let accepted: Vec<&Value> = h
        .iter()
        .filter(|d| d["result"] == "accepted" && d["trigger"] == "watch")
        .collect();
    assert_eq!(accepted.len(), 50, "{h:#?}");
    let rejected = svc
        .metric("plugin_deployments_total", &["result=\"rejected\""])
        .await;
    assert_eq!(rejected, 10.0);
    assert_eq!(
        h.iter().filter(|d| d["result"] == "rejected").count(),
        8,
        "eight of the broken files replaced analytics.wasm"
    );

    // The visible change follows each swap exactly: every batch after a
    // deployment's `after_seq` (and up to the next one) ran on its version.
    let mut deployments: Vec<(i64, String)> = h
        .iter()
        .filter(|d| d["result"] == "accepted")
        .map(|d| {
            (
                d["after_seq"].as_i64().unwrap_or(0),
                d["version"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    deployments.sort();
    let batches = batch_versions(&db_url).await;
    let mut changes = 0;
    let mut prev = "";
    for (batch_seq, version) in &batches {
        let want = deployments
            .iter()
            .rev()
            .find(|(after, _)| after < batch_seq)
            .map(|(_, v)| v.as_str())
            .unwrap_or(A_VERSION);
        assert_eq!(version, want, "batch {batch_seq}");
        assert!(version == A_VERSION || version == B_VERSION);
        if version != prev && !prev.is_empty() {
            changes += 1;
        }
        prev = version;
    }
    assert_eq!(changes, 50, "each swap is visible in the batches after it");
    swap_times.sort();
    eprintln!(
        "50 swaps, file written to version live: median {:?}, max {:?}",
        swap_times[25], swap_times[49]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_counts_just_before_and_after_a_swap_agree() {
    let (db_url, _) = sqlite_url();
    let dir = plugin_dir();
    let svc = start(&db_url, &dir, &config_yaml(|_| {})).await;
    let summary = hxp_events::cli::loadgen::run(hxp_events::cli::loadgen::Options {
        target: svc.base.clone(),
        rate: 3000,
        duration: Duration::from_secs(2),
        batch: 50,
        concurrency: 2,
        seed: 5,
        quiet: true,
    })
    .await
    .unwrap();
    let sent = summary["accepted"].as_u64().unwrap();
    wait_processed(&svc, sent).await;
    let counts = |a: &Value| {
        let mut v = vec![
            a["event_count"].clone(),
            a["error_rate"].clone(),
            a["latency_p95"].clone(),
            a["business_value"].clone(),
        ];
        for (k, t) in a["by_event_type"].as_object().unwrap() {
            v.push(json!([
                k,
                t["event_count"],
                t["latency"],
                t["user_satisfaction"]
            ]));
        }
        v
    };
    let (_, before) = get(&svc.url("/analytics")).await;
    assert_eq!(before["event_count"].as_u64(), Some(sent));
    let taken = |svc: &Service| {
        let url = svc.url("/analytics/status");
        async move { get(&url).await.1["last_update"].clone() }
    };
    let taken_before = taken(&svc).await;

    put(&dir, "analytics.wasm", &analytics_b());
    wait_sha(&svc, "analytics", &sha(&analytics_b())).await;
    // The window served after the swap comes from the new version (the
    // idle refresh runs every second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        running(&svc, "analytics").await.unwrap()["version"],
        B_VERSION
    );
    let (_, after) = get(&svc.url("/analytics")).await;
    // A new snapshot, at the same watermark (no event came).
    assert_ne!(taken(&svc).await, taken_before, "a new snapshot");
    assert_eq!(before["timestamp"], after["timestamp"]);
    assert_eq!(counts(&before), counts(&after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_threshold_changed_in_the_config_file_applies_within_two_seconds() {
    let (db_url, _) = sqlite_url();
    let dir = plugin_dir();
    let with_min_errors = |n: u32| {
        config_yaml(move |v| {
            v["event_correlation"]["patterns"]["error_burst"]["min_errors"] = n.into();
        })
    };
    let svc = start(&db_url, &dir, &with_min_errors(1000)).await;
    let config = svc.dir.join("config.yaml");
    let error = || json!({"event_type": "error_event", "data": {"service": "payments", "error_type": "timeout"}});
    let bursts = |c: &Value| {
        c["active_findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "error_burst" && f["subject"] == "payments")
    };
    for _ in 0..3 {
        assert_eq!(post(&svc.url("/process"), &error()).await.0, 200);
    }
    assert!(!bursts(&get(&svc.url("/correlations")).await.1));

    // Lower the threshold in the file; errors keep coming.
    std::fs::write(&config, with_min_errors(3)).unwrap();
    let written = Instant::now();
    loop {
        assert_eq!(post(&svc.url("/process"), &error()).await.0, 200);
        if bursts(&get(&svc.url("/correlations")).await.1) {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(2),
            "the new threshold did not apply within 2 s: {:#}",
            plugins(&svc).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = written.elapsed();
    let h = history(&svc, "correlation").await;
    assert_eq!(h[0]["result"], "reconfigured", "{h:#?}");
    eprintln!("threshold change effective after {took:?}");

    // An invalid change is refused; the previous rules stay.
    let invalid = config_yaml(|v| {
        v["event_correlation"]["patterns"]["error_burst"]["min_errors"] = 1000.into();
        v["event_correlation"]["correlation_rules"][0]["condition"] = "error_rate >>> 0.1".into();
    });
    std::fs::write(&config, invalid).unwrap();
    let t = Instant::now();
    let error_shown = loop {
        let p = plugins(&svc).await;
        if !p["config_error"].is_null() {
            break p["config_error"].clone();
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{p:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        error_shown["reason"]
            .as_str()
            .unwrap()
            .contains("cannot parse condition"),
        "{error_shown}"
    );
    assert!(
        svc.metric(
            "plugin_deployments_total",
            &["plugin=\"config\",result=\"rejected\""]
        )
        .await
            >= 1.0
    );
    assert_eq!(post(&svc.url("/process"), &error()).await.0, 200);
    assert!(
        bursts(&get(&svc.url("/correlations")).await.1),
        "min_errors 3 still applies"
    );
    assert_eq!(history(&svc, "correlation").await.len(), h.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_the_previous_version_and_its_behaviour() {
    let (db_url, _) = sqlite_url();
    let dir = plugin_dir();
    let svc = start(&db_url, &dir, &config_yaml(|_| {})).await;
    let a = std::fs::read(dir.join("analytics.wasm")).unwrap();
    let b = analytics_b();
    let event = || json!({"event_type": "llm_request", "data": {"model": "m1", "latency_ms": 120}});
    assert_eq!(post(&svc.url("/process"), &event()).await.0, 200);

    put(&dir, "analytics.wasm", &b);
    wait_sha(&svc, "analytics", &sha(&b)).await;
    assert_eq!(post(&svc.url("/process"), &event()).await.0, 200);

    let client = reqwest::Client::new();
    let url = svc.url("/plugins/analytics/rollback");
    let r = client.post(&url).send().await.unwrap();
    assert_eq!(r.status(), 401, "admin only");
    let r = client.post(&url).bearer_auth(TOKEN).send().await.unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deployment"]["result"], "rolled_back");
    let p = running(&svc, "analytics").await.unwrap();
    assert_eq!(
        (p["sha256"].as_str(), p["version"].as_str()),
        (Some(sha(&a).as_str()), Some(A_VERSION))
    );
    // The directory holds the version that runs (a restart keeps it), and
    // the watcher does not deploy it a second time.
    assert_eq!(
        sha(&std::fs::read(dir.join("analytics.wasm")).unwrap()),
        sha(&a)
    );
    assert_eq!(post(&svc.url("/process"), &event()).await.0, 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    wait_processed(&svc, 3).await;
    let versions: Vec<String> = batch_versions(&db_url)
        .await
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(versions, [A_VERSION, B_VERSION, A_VERSION]);
    // No window lost on the way: all three events are counted.
    assert_eq!(get(&svc.url("/analytics")).await.1["event_count"], 3);
    let h = history(&svc, "analytics").await;
    let results: Vec<&str> = h.iter().map(|d| d["result"].as_str().unwrap()).collect();
    assert_eq!(results, ["rolled_back", "accepted", "accepted"], "{h:#?}");

    // A second rollback goes back to B; a plugin that is not loaded has none.
    let r = client.post(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        running(&svc, "analytics").await.unwrap()["version"],
        B_VERSION
    );
    let r = client
        .post(svc.url("/plugins/nothing/rollback"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_modules_run_beside_the_default_plugin_and_unload_when_removed() {
    let (db_url, _) = sqlite_url();
    let dir = plugin_dir();
    let yaml = config_yaml(|v| {
        v["plugin_config"] = serde_norway::from_str(
            "{custom_rules: {pattern_detection_enabled: false, alert_threshold: 1, \
              correlation_rules: [{name: payments_down, condition: 'error_rate > 0.5', action: alert}]}}",
        )
        .unwrap();
    });
    let svc = start(&db_url, &dir, &yaml).await;
    std::fs::write(
        dir.join("custom-rules.yaml"),
        "stage: correlation\norder: 10\nconfig: plugin_config.custom_rules\nlimits: {deadline_ms: 200, memory_mb: 64}\n",
    )
    .unwrap();
    put(
        &dir,
        "custom-rules.wasm",
        &std::fs::read(dir.join("correlation.wasm")).unwrap(),
    );
    let t = Instant::now();
    while running(&svc, "custom-rules").await.is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{:#}",
            plugins(&svc).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let p = plugins(&svc).await;
    let names: Vec<&str> = p["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["analytics", "custom-rules", "correlation", "responses"]
    );
    let custom = running(&svc, "custom-rules").await.unwrap();
    assert_eq!(custom["limits"]["deadline_ms"], 200);
    assert_eq!(custom["config_section"], "plugin_config.custom_rules");

    // One error event: the module's rule alerts at once (its threshold is
    // 1); the default plugin's rules need five.
    let error = json!({"event_type": "error_event", "data": {"service": "payments", "error_type": "timeout"}});
    assert_eq!(post(&svc.url("/process"), &error).await.0, 200);
    let (c, names) = active_findings(&svc).await;
    assert!(names.iter().any(|n| n == "payments_down"), "{c:#}");
    assert!(!names.iter().any(|n| n == "high_error_rate"), "{c:#}");
    for _ in 0..4 {
        assert_eq!(post(&svc.url("/process"), &error).await.0, 200);
    }
    let (c, names) = active_findings(&svc).await;
    assert!(
        names.iter().any(|n| n == "payments_down") && names.iter().any(|n| n == "high_error_rate"),
        "merged: {c:#}"
    );

    // Removing the file unloads it; the default plugin carries on.
    std::fs::remove_file(dir.join("custom-rules.wasm")).unwrap();
    let t = Instant::now();
    while running(&svc, "custom-rules").await.is_some() {
        assert!(t.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(history(&svc, "custom-rules").await[0]["result"], "unloaded");
    assert_eq!(post(&svc.url("/process"), &error).await.0, 200);
    let (c, names) = active_findings(&svc).await;
    assert!(
        !names.iter().any(|n| n == "payments_down") && names.iter().any(|n| n == "high_error_rate"),
        "{c:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_rejected_file_runs_the_last_accepted_version() {
    let (db_url, _) = sqlite_url();
    let dir = plugin_dir();
    let yaml = config_yaml(|_| {});
    let mut svc = start(&db_url, &dir, &yaml).await;
    let b = analytics_b();
    put(&dir, "analytics.wasm", &b);
    wait_sha(&svc, "analytics", &sha(&b)).await;
    let event = json!({"event_type": "llm_request", "data": {"model": "m1", "latency_ms": 80}});
    assert_eq!(post(&svc.url("/process"), &event).await.0, 200);
    put(&dir, "analytics.wasm", b"garbage");
    wait_metric(&svc, "plugin_deployments_total", "result=\"rejected\"", 1.0).await;
    assert!(svc.terminate().success());

    let svc = start(&db_url, &dir, &yaml).await;
    let p = running(&svc, "analytics").await.unwrap();
    assert_eq!(
        (p["sha256"].as_str(), p["version"].as_str()),
        (Some(sha(&b).as_str()), Some(B_VERSION))
    );
    // Its state came back too.
    assert_eq!(get(&svc.url("/analytics")).await.1["event_count"], 1);
    let h = history(&svc, "analytics").await;
    assert_eq!(
        (h[0]["result"].as_str(), h[0]["trigger"].as_str()),
        (Some("accepted"), Some("startup"))
    );
    assert!(
        h[0]["reason"].as_str().unwrap().contains("archive"),
        "{h:#?}"
    );
    assert_eq!(
        (h[1]["result"].as_str(), h[1]["trigger"].as_str()),
        (Some("rejected"), Some("startup"))
    );
    let shown = plugins(&svc).await;
    assert_eq!(shown["rejected"].as_array().unwrap().len(), 1, "{shown:#}");
}

/// The SDK's promise: a response plugin in at most 15 lines of Rust,
/// built by `make build`, dropped into a running service, acting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifteen_line_sdk_plugin_is_hot_deployed_and_acts() {
    let source = root().join("tests/guests/minimal-responses/src/lib.rs");
    let lines = std::fs::read_to_string(&source).unwrap().lines().count();
    assert!(lines <= 15, "{}: {lines} lines", source.display());
    let (db_url, _) = sqlite_url();
    let dir = plugin_dir();
    let svc = start(&db_url, &dir, &config_yaml(|_| {})).await;
    put(&dir, "pager.wasm", &wasm_bytes("minimal_responses_guest"));
    let t = Instant::now();
    while running(&svc, "pager").await.is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{:#}",
            plugins(&svc).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pager = running(&svc, "pager").await.unwrap();
    assert_eq!(pager["stage"], "responses");
    assert_eq!(pager["version"], "0.1.0");
    // Every request fails: the window's error rate is 1 > 0.5. The action
    // has no executor of its own, so the catch-all `log` executor acts.
    let failed = json!({"event_type": "llm_request", "data": {"model": "m", "success": false}});
    for _ in 0..3 {
        assert_eq!(post(&svc.url("/process"), &failed).await.0, 200);
    }
    let t = Instant::now();
    loop {
        let (status, body) = get(&svc.url("/automated-responses?action=page_oncall")).await;
        assert_eq!(status, 200, "{body:#}");
        // Each batch asks again; the guardrails run the first request and
        // deduplicate the rest, so exactly one of them is executed.
        let responses = body["responses"].as_array().cloned().unwrap_or_default();
        let executed: Vec<_> = responses
            .iter()
            .filter(|r| r["outcome"] == "executed")
            .collect();
        if let [r] = executed.as_slice() {
            assert_eq!(r["rule"], "minimal");
            assert_eq!(r["target"], "team");
            assert_eq!(r["executor"], "log");
            for other in responses.iter().filter(|r| r["outcome"] != "executed") {
                assert_eq!(other["outcome"], "deduplicated", "{body:#}");
            }
            break;
        }
        assert!(executed.len() <= 1, "{body:#}");
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no page_oncall request: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
