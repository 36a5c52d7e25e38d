//! Safe rule changes: a candidate version runs in the shadow of the live
//! one on the same batches, acts on nothing, and reports what it would
//! have done differently; promotion makes it live with its state.

mod common;

use common::*;
use serde_json::{Value, json};

/// Live: `high_latency` is `latency > 2000`; the candidate lowers it to
/// `latency > 1000`. Both alert at 5 occurrences, patterns off. Every
/// alert asks for a `page` (the `log` executor: nothing leaves the host);
/// `escalate` is a responses section that also asks for an `escalate`.
const CONFIG: &str = "\
event_correlation:
  pattern_detection_enabled: false
  correlation_rules:
    - {name: high_latency, condition: latency > 2000, action: alert}
automated_response:
  response_rules:
    - {name: page_on_alert, condition: finding_alert == true, action: page}
plugin_config:
  escalate:
    response_rules:
      - {name: page_on_alert, condition: finding_alert == true, action: page}
      - {name: escalate_on_alert, condition: finding_alert == true, action: escalate}
  lowered:
    pattern_detection_enabled: false
    correlation_rules:
      - {name: high_latency, condition: latency > 1000, action: alert}
  slowish:
    pattern_detection_enabled: false
    correlation_rules:
      - {name: high_latency, condition: latency > 2000, action: alert}
      - {name: slowish, condition: latency > 2400, action: alert}
  spin:
    mode: loop
";

/// A service on `config` (SQLite) with a plugin directory of the three
/// default plugins: the service, the directory, the database URL.
async fn service(config: &str) -> (Service, std::path::PathBuf, String) {
    let dir = plugin_dir();
    let (db_url, _) = sqlite_url();
    let env = [("EVENT_PROCESSING_PLUGIN_DIR", dir.to_str().unwrap())];
    let svc = Service::start_with(&db_url, &env, Some(config)).await;
    (svc, dir, db_url)
}

async fn admin(method: reqwest::Method, svc: &Service, path: &str, body: Vec<u8>) -> (u16, Value) {
    request_as(method, svc, path, TOKEN, body).await
}

async fn send_latency(svc: &Service, latency: u64) {
    let ev = json!({"event_type": "llm_request", "data": {"model": "m", "latency_ms": latency, "success": true}});
    let (status, body) = post(&svc.url("/process"), &ev).await;
    assert_eq!(status, 200, "{body}");
}

/// High-latency findings the live correlation plugin reports now.
async fn live_high_latency(svc: &Service) -> Option<Value> {
    let (_, c) = get(&svc.url("/correlations")).await;
    let findings = c["active_findings"].as_array().cloned().unwrap_or_default();
    findings.into_iter().find(|f| f["name"] == "high_latency")
}

/// Hand-computed: of 8 events at 1500 ms then 2 at 2500 ms, one per batch,
/// the live rule (> 2000) counts 2 occurrences and never alerts; the
/// lowered one (> 1000) counts all 10 and alerts once, in the batch of the
/// fifth event. So the report has exactly one alert only the shadow
/// raised, none only the live version raised, and nothing is executed.
#[tokio::test(flavor = "multi_thread")]
async fn a_lowered_threshold_in_shadow_reports_exactly_the_extra_alert_then_is_promoted() {
    let (svc, dir, _) = service(CONFIG).await;
    let wasm = std::fs::read(dir.join("correlation.wasm")).unwrap();
    let path = "/plugins/correlation?mode=shadow&config=plugin_config.lowered";
    let (status, body) = admin(reqwest::Method::PUT, &svc, path, wasm.clone()).await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["deployment"]["result"], "shadow");
    for latency in [1500; 8].into_iter().chain([2500; 2]) {
        send_latency(&svc, latency).await;
    }
    let (status, report) = get(&svc.url("/plugins/correlation/shadow")).await;
    assert_eq!(status, 200, "{report:#}");
    assert_eq!(report["events"], 10, "{report:#}");
    assert_eq!(
        report["disagreements"],
        json!({"alert_only_shadow": {"high_latency": 1}}),
        "{report:#}"
    );
    let example = &report["examples"][0];
    assert_eq!(example["rule"], "high_latency");
    assert!(
        example["message"]
            .as_str()
            .unwrap()
            .contains("5 occurrences of 'latency > 1000'"),
        "{example}"
    );
    assert!(
        live_high_latency(&svc).await.is_none(),
        "the shadow's findings are not merged"
    );
    let (_, responses) = get(&svc.url("/automated-responses")).await;
    assert_eq!(
        responses["responses"],
        json!([]),
        "nothing executed: {responses:#}"
    );
    let metric = svc
        .metric(
            "plugin_shadow_disagreements_total",
            &["correlation", "alert_only_shadow"],
        )
        .await;
    assert_eq!(metric, 1.0);
    // GET /plugins (the dashboard) shows it: 9 of 10 batches agreed.
    let (_, plugins) = get(&svc.url("/plugins")).await;
    let shadow = &plugins["shadows"][0];
    let counts = (
        shadow["disagreeing_batches"].as_u64(),
        shadow["batches"].as_u64(),
    );
    assert_eq!(counts, (Some(1), Some(10)), "{shadow}");
    assert!(
        (shadow["agreement"].as_f64().unwrap() - 0.9).abs() < 1e-9,
        "{shadow}"
    );

    // Promotion: the shadow is live with its 10 occurrences; one more slow
    // event makes 11 (a fresh instance would have 1).
    let (status, body) = admin(
        reqwest::Method::POST,
        &svc,
        "/plugins/correlation/promote",
        vec![],
    )
    .await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["deployment"]["result"], "promoted");
    assert!(
        body["deployment"]["reason"]
            .as_str()
            .unwrap()
            .contains("10 events"),
        "{body:#}"
    );
    send_latency(&svc, 1500).await;
    let f = live_high_latency(&svc)
        .await
        .expect("the lowered rule is live");
    assert_eq!(f["occurrences"], 11, "{f}");
    let manifest = std::fs::read_to_string(dir.join("correlation.yaml")).unwrap();
    assert!(
        manifest.contains("config: plugin_config.lowered"),
        "{manifest}"
    );
    assert_eq!(get(&svc.url("/plugins/correlation/shadow")).await.0, 404);
}

/// A shadow can be stopped; the live version is untouched; a shadow needs
/// a live plugin of its name.
#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_is_dropped_without_touching_the_live_version() {
    let (svc, dir, _) = service(CONFIG).await;
    let wasm = std::fs::read(dir.join("correlation.wasm")).unwrap();
    let (status, _) = admin(
        reqwest::Method::PUT,
        &svc,
        "/plugins/nothing?mode=shadow",
        wasm,
    )
    .await;
    assert_eq!(status, 422);
    // From the command line, as a team would.
    let file = dir.join("correlation.wasm");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hxp-events"))
        .args([
            "plugin",
            "deploy",
            file.to_str().unwrap(),
            "--url",
            &svc.base,
        ])
        .args(["--shadow", "--config", "plugin_config.lowered"])
        .env("HXP_EVENTS_TOKEN", TOKEN)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("deployed correlation 0.1.0 as a shadow"),
        "{text}"
    );
    for _ in 0..6 {
        send_latency(&svc, 1500).await;
    }
    let (status, body) = admin(
        reqwest::Method::DELETE,
        &svc,
        "/plugins/correlation/shadow",
        vec![],
    )
    .await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["deployment"]["result"], "shadow_dropped");
    assert_eq!(get(&svc.url("/plugins/correlation/shadow")).await.0, 404);
    assert!(live_high_latency(&svc).await.is_none());
    assert!(
        !dir.join("correlation.yaml").exists(),
        "the live version's files stay as they were"
    );
}

/// A shadow that traps on every batch is quarantined (after 5 failures
/// here); the live version it shadows runs on every batch throughout.
#[tokio::test(flavor = "multi_thread")]
async fn a_trapping_shadow_is_quarantined_and_the_live_version_runs_on() {
    let yaml = "plugin_config:\n  hostile:\n    mode: ok\nplugins:\n  quarantine:\n    failures: 5\n    window_secs: 60\n";
    let (svc, _, _) = service(yaml).await;
    let good = wasm_bytes("hostile_guest");
    let bad = std::fs::read(root().join("target/test-plugins/hostile-panic.wasm")).unwrap();
    let put = |mode: &'static str| format!("/plugins/rules?config=plugin_config.hostile{mode}");
    assert_eq!(
        admin(reqwest::Method::PUT, &svc, &put(""), good).await.0,
        200
    );
    assert_eq!(
        admin(reqwest::Method::PUT, &svc, &put("&mode=shadow"), bad)
            .await
            .0,
        200
    );
    let mut ids = Vec::new();
    for i in 0..12 {
        let ev = json!({"event_type": "llm_request", "data": {"model": "m", "latency_ms": i}});
        let (status, body) = post(&svc.url("/process"), &ev).await;
        assert_eq!(status, 200, "{body}");
        ids.push(body["processing_id"].as_str().unwrap().to_string());
    }
    // The live rule module (0.0.1) reported on every batch.
    for id in &ids {
        let (_, rec) = get(&svc.url(&format!("/processing/{id}"))).await;
        let names = rec["correlation_results"]["patterns_detected"].to_string();
        assert!(names.contains("call-"), "{rec}");
    }
    assert_eq!(
        get(&svc.url("/plugins/rules/shadow")).await.0,
        404,
        "the shadow is gone"
    );
    let (_, h) = get(&svc.url("/plugins/rules/history")).await;
    let last = &h["deployments"][0];
    assert_eq!(
        (last["result"].as_str(), last["trigger"].as_str()),
        (Some("quarantined"), Some("quarantine"))
    );
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .starts_with("shadow: 5 failures"),
        "{last}"
    );
    let (_, plugins) = get(&svc.url("/plugins")).await;
    let rules = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "rules")
        .unwrap()
        .clone();
    assert_eq!(
        (rules["version"].as_str(), rules["quarantined"].as_bool()),
        (Some("0.0.1"), Some(false))
    );
}

/// `plugin backtest` of the directory's correlation plugin beside its
/// analytics and responses plugins, over the stored events of a range.
fn backtest(dir: &std::path::Path, db_url: &str, range: (i64, i64), config: &str) -> Value {
    let cfg = tempdir().join("config.yaml");
    std::fs::write(&cfg, config).unwrap();
    let file = |p: &str| dir.join(format!("{p}.wasm")).to_str().unwrap().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hxp-events"))
        .args([
            "plugin",
            "backtest",
            &file("correlation"),
            "--database",
            db_url,
        ])
        .args(["--with", &file("analytics"), "--with", &file("responses")])
        .args(["--from", &range.0.to_string(), "--to", &range.1.to_string()])
        .args(["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A service on CONFIG that stored six requests at 2500 ms, one per
/// batch (the live rule alerted once); its plugin directory, database and
/// an event-time range around the six.
async fn six_slow_requests() -> (Service, std::path::PathBuf, String, (i64, i64)) {
    let (svc, dir, db_url) = service(CONFIG).await;
    let from = chrono::Utc::now().timestamp_millis() - 1_000;
    for _ in 0..6 {
        send_latency(&svc, 2500).await;
    }
    let range = (from, chrono::Utc::now().timestamp_millis() + 60_000);
    (svc, dir, db_url, range)
}

/// Six events at 2500 ms, one per batch: the live rule (> 2000, 5
/// occurrences) alerted once, and that alert asked for one page. A
/// backtest of the live version over their range raises the same (empty
/// differences); a version with one more rule, `slowish: latency > 2400`,
/// raises exactly one more alert, for it, and so one more page.
#[tokio::test(flavor = "multi_thread")]
async fn backtests_of_the_live_version_and_of_a_changed_one() {
    let (_svc, dir, db_url, range) = six_slow_requests().await;
    let live = backtest(&dir, &db_url, range, CONFIG);
    assert_eq!(live["events"], 6, "{live:#}");
    assert_eq!(live["alerts"], json!({"high_latency": 1}), "{live:#}");
    assert_eq!(
        live["recorded_alerts"],
        json!({"high_latency": 1}),
        "{live:#}"
    );
    assert_eq!(live["difference"], json!({}), "{live:#}");
    let pages = json!({"page_on_alert: page": 1});
    assert_eq!(live["responses"], true, "{live:#}");
    assert_eq!(live["actions"], pages, "{live:#}");
    assert_eq!(live["recorded_actions"], pages, "{live:#}");
    assert_eq!(live["action_difference"], json!({}), "{live:#}");
    let changed = CONFIG.replacen(
        "    - {name: high_latency, condition: latency > 2000, action: alert}\n",
        "    - {name: high_latency, condition: latency > 2000, action: alert}\n    - {name: slowish, condition: latency > 2400, action: alert}\n",
        1,
    );
    let diff = backtest(&dir, &db_url, range, &changed);
    assert_eq!(
        diff["alerts"],
        json!({"high_latency": 1, "slowish": 1}),
        "{diff:#}"
    );
    assert_eq!(diff["difference"], json!({"slowish": 1}), "{diff:#}");
    let one_more_page = json!({"page_on_alert: page": 1});
    assert_eq!(diff["action_difference"], one_more_page, "{diff:#}");

    // A responses plugin alone is never called (no window without an
    // analytics plugin): an error, not an empty report.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hxp-events"))
        .args([
            "plugin",
            "backtest",
            dir.join("responses.wasm").to_str().unwrap(),
        ])
        .args(["--database", &db_url])
        .args(["--from", &range.0.to_string(), "--to", &range.1.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("never called"),
        "{stderr}"
    );
}

/// POST /plugins/backtest with `query`; the answer, still streaming.
async fn start_backtest(svc: &Service, query: &str, wasm: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(svc.url(&format!("/plugins/backtest?{query}")))
        .bearer_auth(TOKEN)
        .body(wasm)
        .send()
        .await
        .unwrap()
}

/// The next NDJSON line of a streaming answer (`None` at its end).
async fn next_line(resp: &mut reqwest::Response, buf: &mut Vec<u8>) -> Option<Value> {
    loop {
        if let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            return Some(serde_json::from_slice(&line).unwrap());
        }
        buf.extend_from_slice(&resp.chunk().await.unwrap()?);
    }
}

/// A backtest through the API to its end: progress first, then the
/// report.
async fn backtest_report(svc: &Service, query: &str, wasm: Vec<u8>) -> Value {
    let mut resp = start_backtest(svc, query, wasm).await;
    assert_eq!(resp.status(), 200);
    let mut buf = Vec::new();
    let first = next_line(&mut resp, &mut buf).await.unwrap();
    assert!(first["progress"]["events"].is_u64(), "{first}");
    let mut last = first;
    while let Some(line) = next_line(&mut resp, &mut buf).await {
        last = line;
    }
    last["report"].clone()
}

/// The same backtests as above through the API, where the live analytics
/// and responses plugins run beside the candidate: for the live version
/// (no difference), for a version configured with one more rule (exactly
/// that rule's alert and its page), and for a responses version with one
/// more rule (no other alert, exactly one `escalate` more).
#[tokio::test(flavor = "multi_thread")]
async fn backtests_over_the_api_stream_progress_then_the_report() {
    let (svc, dir, _, (from, to)) = six_slow_requests().await;
    let wasm = std::fs::read(dir.join("correlation.wasm")).unwrap();
    let responses = std::fs::read(dir.join("responses.wasm")).unwrap();
    let range = format!("from={from}&to={to}");
    let page = |n| json!({"page_on_alert: page": n});
    for (config, candidate, difference, action_difference) in [
        ("", &wasm, json!({}), json!({})),
        (
            "&config=plugin_config.slowish",
            &wasm,
            json!({"slowish": 1}),
            page(1),
        ),
        (
            "&config=plugin_config.escalate",
            &responses,
            json!({}),
            json!({"escalate_on_alert: escalate": 1}),
        ),
    ] {
        let query = format!("{range}{config}");
        let report = backtest_report(&svc, &query, candidate.clone()).await;
        assert_eq!(report["events"], 6, "{report:#}");
        let recorded = (&report["recorded_alerts"], &report["recorded_actions"]);
        assert_eq!(
            recorded,
            (&json!({"high_latency": 1}), &page(1)),
            "{report:#}"
        );
        assert_eq!(report["difference"], difference, "{report:#}");
        assert_eq!(report["action_difference"], action_difference, "{report:#}");
    }
    // Standing in for a plugin of another stage; an empty range; no token.
    let analytics = std::fs::read(dir.join("analytics.wasm")).unwrap();
    let resp = start_backtest(&svc, &format!("{range}&plugin=correlation"), analytics).await;
    assert_eq!(resp.status(), 422);
    let resp = start_backtest(&svc, &format!("from={to}&to={from}"), wasm.clone()).await;
    assert_eq!(resp.status(), 400);
    let resp = reqwest::Client::new()
        .post(svc.url(&format!("/plugins/backtest?{range}")))
        .body(wasm)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

/// A long backtest (a candidate that spins until its deadline, 1 s, on
/// every batch of one event: ten failed batches, ten seconds, before it
/// gives up) answers 409 to a second one while it runs; closing its
/// connection cancels it within a call, and the next one then starts.
#[tokio::test(flavor = "multi_thread")]
async fn closing_the_connection_cancels_a_backtest() {
    let (svc, dir, _) = service(CONFIG).await;
    let from = chrono::Utc::now().timestamp_millis() - 1_000;
    let events: Vec<Value> = (0..2_000)
        .map(|_| json!({"event_type": "llm_request", "data": {"model": "m", "latency_ms": 5}}))
        .collect();
    let (status, body) = post(&svc.url("/events"), &json!(events)).await;
    assert_eq!(status, 200, "{body}");
    let to = chrono::Utc::now().timestamp_millis() + 60_000;
    let range = format!("from={from}&to={to}");
    let hostile = wasm_bytes("hostile_guest");
    let query = format!("{range}&config=plugin_config.spin&batch_size=1");
    let mut resp = start_backtest(&svc, &query, hostile).await;
    assert_eq!(resp.status(), 200);
    let mut buf = Vec::new();
    // Two progress lines: it runs, and slowly.
    for _ in 0..2 {
        let line = next_line(&mut resp, &mut buf).await.unwrap();
        let done = line["progress"]["events"].as_u64().expect("progress");
        assert!(done < 2_000, "{line}");
    }
    let wasm = std::fs::read(dir.join("correlation.wasm")).unwrap();
    let again = start_backtest(&svc, &range, wasm.clone()).await;
    assert_eq!(again.status(), 409);
    drop(resp);
    let started = std::time::Instant::now();
    let mut next = start_backtest(&svc, &range, wasm.clone()).await;
    while next.status() == 409 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "the cancelled backtest still holds its place"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        next = start_backtest(&svc, &range, wasm.clone()).await;
    }
    assert_eq!(next.status(), 200);
    let mut buf = Vec::new();
    let mut last = Value::Null;
    while let Some(line) = next_line(&mut next, &mut buf).await {
        last = line;
    }
    assert_eq!(last["report"]["events"], 2_000, "{last:#}");
}

/// Warm-up: a range that starts after the third of six slow requests.
/// Fresh, the candidate counts three occurrences there and never alerts:
/// one alert (and one page) fewer than recorded. Warmed up on the minute
/// before the range, it has seen the first three (not counted) and alerts
/// at the fifth, as the live version did.
#[tokio::test(flavor = "multi_thread")]
async fn a_warmed_up_backtest_starts_with_the_state_the_live_version_had() {
    let (svc, dir, _) = service(CONFIG).await;
    let now = || chrono::Utc::now().timestamp_millis();
    let pause = || tokio::time::sleep(std::time::Duration::from_millis(5));
    for _ in 0..3 {
        send_latency(&svc, 2500).await;
    }
    pause().await;
    let from = now();
    pause().await;
    for _ in 0..3 {
        send_latency(&svc, 2500).await;
    }
    let range = format!("from={from}&to={}", now() + 60_000);
    let wasm = std::fs::read(dir.join("correlation.wasm")).unwrap();
    let fresh = backtest_report(&svc, &range, wasm.clone()).await;
    let counts = (&fresh["events"], &fresh["warmup_events"]);
    assert_eq!(counts, (&json!(3), &json!(0)), "{fresh:#}");
    assert_eq!(
        fresh["difference"],
        json!({"high_latency": -1}),
        "{fresh:#}"
    );
    let one_page_less = json!({"page_on_alert: page": -1});
    assert_eq!(fresh["action_difference"], one_page_less, "{fresh:#}");
    let warm = backtest_report(&svc, &format!("{range}&warmup=60"), wasm).await;
    let counts = (&warm["events"], &warm["warmup_events"]);
    assert_eq!(counts, (&json!(3), &json!(3)), "{warm:#}");
    assert_eq!(warm["alerts"], json!({"high_latency": 1}), "{warm:#}");
    assert_eq!(warm["difference"], json!({}), "{warm:#}");
    assert_eq!(warm["action_difference"], json!({}), "{warm:#}");
}

/// Polls `path` until it answers `status` (the plugin watcher acts after
/// its debounce).
async fn until_status(svc: &Service, path: &str, status: u16) {
    let started = std::time::Instant::now();
    while get(&svc.url(path)).await.0 != status {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{path} never answered {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A shadow from the plugin directory: `next.wasm` with a manifest saying
/// `name: correlation, mode: shadow` runs in the shadow of the live
/// correlation plugin (its own file name deploys nothing) and reports as
/// one deployed through the API; it stops when its file goes. Dropped in
/// again, its file cannot be taken by an upload, and a broken version of
/// it stops it. Dropped in once more and promoted, it is written over the
/// live plugin's file (its manifest without `mode`) and its own files are
/// removed.
#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_file_runs_beside_the_live_version_until_its_file_goes() {
    let (svc, dir, _) = service(CONFIG).await;
    let drop_in = || {
        // The manifest first: the component alone would deploy `next`.
        let manifest = "name: correlation\nmode: shadow\nconfig: plugin_config.lowered\n";
        std::fs::write(dir.join("next.yaml"), manifest).unwrap();
        std::fs::copy(dir.join("correlation.wasm"), dir.join("next.wasm")).unwrap();
    };
    drop_in();
    until_status(&svc, "/plugins/correlation/shadow", 200).await;
    for _ in 0..6 {
        send_latency(&svc, 1500).await;
    }
    let (_, report) = get(&svc.url("/plugins/correlation/shadow")).await;
    let extra = json!({"alert_only_shadow": {"high_latency": 1}});
    assert_eq!(report["disagreements"], extra, "{report:#}");
    let (_, plugins) = get(&svc.url("/plugins")).await;
    let names: Vec<&str> = (plugins["plugins"].as_array().unwrap().iter())
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(!names.contains(&"next"), "{names:?}");

    std::fs::remove_file(dir.join("next.wasm")).unwrap();
    std::fs::remove_file(dir.join("next.yaml")).unwrap();
    until_status(&svc, "/plugins/correlation/shadow", 404).await;
    let (_, h) = get(&svc.url("/plugins/correlation/history")).await;
    let last = &h["deployments"][0];
    assert_eq!(last["result"], "shadow_dropped", "{last}");
    let reason = last["reason"].as_str().unwrap();
    assert!(reason.contains("its file was removed"), "{reason}");

    drop_in();
    until_status(&svc, "/plugins/correlation/shadow", 200).await;
    // The shadow's file cannot be taken by an upload of its file name.
    let live = std::fs::read(dir.join("correlation.wasm")).unwrap();
    let (status, body) = admin(reqwest::Method::PUT, &svc, "/plugins/next", live).await;
    assert_eq!(status, 409, "{body:#}");
    // A changed file that is refused stops the shadow of the old one.
    std::fs::write(dir.join("next.wasm"), b"not a component").unwrap();
    until_status(&svc, "/plugins/correlation/shadow", 404).await;
    shadow_dropped(&svc, "its file changed and the new version was refused").await;

    drop_in();
    until_status(&svc, "/plugins/correlation/shadow", 200).await;
    let promote = "/plugins/correlation/promote";
    let (status, body) = admin(reqwest::Method::POST, &svc, promote, vec![]).await;
    assert_eq!(status, 200, "{body:#}");
    assert!(!dir.join("next.wasm").exists() && !dir.join("next.yaml").exists());
    let manifest = std::fs::read_to_string(dir.join("correlation.yaml")).unwrap();
    assert!(
        manifest.contains("config: plugin_config.lowered"),
        "{manifest}"
    );
    assert!(!manifest.contains("mode"), "{manifest}");
    // The directory as it is now deploys what runs: nothing more happens.
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    assert_eq!(get(&svc.url("/plugins/correlation/shadow")).await.0, 404);
    let (_, h) = get(&svc.url("/plugins/correlation/history")).await;
    assert_eq!(h["deployments"][0]["result"], "promoted", "{h:#}");
}

/// One of the last two deployments of `correlation` is its shadow
/// stopping for `why`.
async fn shadow_dropped(svc: &Service, why: &str) {
    let (_, h) = get(&svc.url("/plugins/correlation/history")).await;
    let recent = h["deployments"].as_array().unwrap()[..2].to_vec();
    let found = recent
        .iter()
        .any(|d| d["result"] == "shadow_dropped" && d["reason"].as_str().unwrap().contains(why));
    assert!(found, "{recent:#?}");
}

/// A new live version ends the shadow of its name (it was compared with,
/// and started from, the version before); replacing a shadow records the
/// one replaced, removing the live plugin records its shadow's end;
/// `backtest` and `reload` cannot be plugin names.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_live_version_ends_the_shadow_and_reserved_names_are_refused() {
    let (svc, dir, _) = service(CONFIG).await;
    let wasm = std::fs::read(dir.join("correlation.wasm")).unwrap();
    let put = |path: &'static str| admin(reqwest::Method::PUT, &svc, path, wasm.clone());
    let shadow = "/plugins/correlation?mode=shadow&config=plugin_config.lowered";
    assert_eq!(put(shadow).await.0, 200);
    assert_eq!(put(shadow).await.0, 200);
    shadow_dropped(&svc, "replaced by a newer shadow").await;

    let (status, body) = put("/plugins/correlation?config=plugin_config.slowish").await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(get(&svc.url("/plugins/correlation/shadow")).await.0, 404);
    shadow_dropped(&svc, "the live version changed").await;
    let promote = "/plugins/correlation/promote";
    assert_eq!(
        admin(reqwest::Method::POST, &svc, promote, vec![]).await.0,
        404
    );
    // Removing the live plugin ends its shadow, recorded too.
    assert_eq!(put(shadow).await.0, 200);
    let (status, body) = admin(
        reqwest::Method::DELETE,
        &svc,
        "/plugins/correlation",
        vec![],
    )
    .await;
    assert_eq!(status, 200, "{body:#}");
    shadow_dropped(&svc, "its live plugin was unloaded").await;

    for name in ["backtest", "reload"] {
        let path = format!("/plugins/{name}");
        let (status, body) = admin(reqwest::Method::PUT, &svc, &path, wasm.clone()).await;
        assert_eq!(status, 400, "{body:#}");
        assert!(body.to_string().contains("reserved"), "{body:#}");
        let anonymous = reqwest::Client::new()
            .put(svc.url(&path))
            .body(wasm.clone());
        assert_eq!(anonymous.send().await.unwrap().status(), 401);
    }
}
