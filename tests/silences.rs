//! Silences and inhibition, against the real service: a silence made over
//! the API holds back one rule's alert (recorded with `suppressed_by`, no
//! action request) while another rule's alert acts; it survives a
//! restart; once deleted, the next occurrence alerts and acts. An inhibit
//! rule holds back its target the same way (on PostgreSQL), until a
//! reload of the config file takes it out.
//!
//! The rules (window 10 s, alert at 5 occurrences): `high_latency`
//! (latency > 2000) and `low_satisfaction` (user_satisfaction < 7.0); one
//! response rule per finding, asking for a notification when it alerts,
//! to a receiver inside the test. Events carry explicit timestamps: the
//! silence is judged at the batch's event time. A rule alerts again only
//! after it went inactive, so each later occurrence comes after a batch
//! whose event time has moved its first occurrences out of the window.
//! (A rule turns on at most three times per test: the plugin's flap
//! damping, more than 4 changes in 10 minutes by default, must not hold
//! it.)

mod common;

use common::*;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Records the JSON body of every request it gets; answers 200.
struct Receiver {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let kept = bodies.clone();
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
                kept.lock().unwrap().push(v);
                "ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, bodies, task }
    }

    /// The rules of the requests received so far, in order.
    fn rules(&self) -> Vec<String> {
        let bodies = self.bodies.lock().unwrap();
        bodies
            .iter()
            .map(|b| b["rule"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    /// Wait until `n` requests came, then a moment more: exactly `n`.
    async fn expect(&self, n: usize) -> Vec<String> {
        let t = Instant::now();
        while self.rules().len() < n {
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "{:?} of {n}",
                self.rules()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        let rules = self.rules();
        assert_eq!(rules.len(), n, "{rules:?}");
        rules
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The shipped config with the two rules, their response rules, open
/// guardrails and the notifications going to `receiver`; then `edit`.
fn config(receiver: &Receiver, edit: impl FnOnce(&mut serde_norway::Value)) -> String {
    let text = std::fs::read_to_string(root().join("config/event-processing.yaml")).unwrap();
    let mut v: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let yaml = |s: &str| -> serde_norway::Value { serde_norway::from_str(s).unwrap() };
    let ec = &mut v["event_correlation"];
    ec["window_size"] = 10.into();
    ec["alert_threshold"] = 5.into();
    ec["pattern_detection_enabled"] = false.into();
    ec["correlation_rules"] = yaml(
        "[{name: high_latency, condition: latency > 2000, action: alert},
          {name: low_satisfaction, condition: user_satisfaction < 7.0, action: alert}]",
    );
    let ar = &mut v["automated_response"];
    ar["response_rules"] = yaml(
        r#"[{name: page_latency, condition: 'finding == "high_latency" and finding_alert == true', action: send_notification},
            {name: page_feedback, condition: 'finding == "low_satisfaction" and finding_alert == true', action: send_notification}]"#,
    );
    ar["cooldown_secs"] = 0.into();
    ar["dedup_window_secs"] = 0.into();
    ar["rate_limit_per_minute"] = 0.into();
    ar["shutdown_grace_secs"] = 2.into();
    let notify = &mut ar["executors"]["notify"];
    notify["url"] = format!("http://{}/notify", receiver.addr).into();
    notify["retries"] = 0.into();
    edit(&mut v);
    serde_norway::to_string(&v).unwrap()
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// What an occurrence is made of, at event time `at` (one request: one
/// batch).
#[derive(Clone, Copy)]
enum Send {
    /// Five slow requests: high_latency alerts.
    Slow,
    /// Five slow requests and five unhappy users: both rules alert.
    SlowAndUnhappy,
    /// One business event: moves event time (the window) on.
    Tick,
}

async fn send(svc: &Service, what: Send, at: i64) {
    let ts = rfc3339(at);
    let slow = json!({"event_type": "llm_request", "timestamp": ts, "data": {"model": "m", "latency_ms": 5000, "success": true}});
    let unhappy =
        json!({"event_type": "user_feedback", "timestamp": ts, "data": {"satisfaction": 3}});
    let tick = json!({"event_type": "business_event", "timestamp": ts, "data": {"name": "tick", "value": 1}});
    let events: Vec<&Value> = match what {
        Send::Slow => vec![&slow; 5],
        Send::SlowAndUnhappy => [vec![&slow; 5], vec![&unhappy; 5]].concat(),
        Send::Tick => vec![&tick],
    };
    let (status, body) = post(&svc.url("/events"), &json!(events)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], events.len(), "{body}");
}

/// Every alert row, in order: (rule, suppressed_by).
async fn alert_rows(db: &str) -> Vec<(String, Option<String>)> {
    use sqlx::Row;
    // By rule within a batch: the order of the plugin's findings is its own.
    let sql = "SELECT rule, suppressed_by FROM correlation_alerts ORDER BY batch_seq, rule";
    let rows = db_rows(db, sql).await;
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// Wait until there are `n` alert rows.
async fn wait_alerts(db: &str, n: usize) -> Vec<(String, Option<String>)> {
    let t = Instant::now();
    loop {
        let rows = alert_rows(db).await;
        if rows.len() >= n {
            return rows;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "{rows:?} of {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Requests with the admin token (or without: `token` empty).
async fn call(
    svc: &Service,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, svc.url(path));
    if !token.is_empty() {
        req = req.bearer_auth(token);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The active finding of that name in GET /correlations.
async fn active_finding(svc: &Service, name: &str) -> Value {
    let (_, c) = get(&svc.url("/correlations")).await;
    let found = c["active_findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name);
    found
        .cloned()
        .unwrap_or_else(|| panic!("no active {name}: {c:#}"))
}

/// The next occurrence's event time: the window (10 s) past the last one,
/// and not before now (a silence deleted now must be over at it).
fn next_after(last: i64) -> i64 {
    (last + 12_000).max(now_ms() + 1_000)
}

/// Made with the admin token (without: refused, nothing made): its id
/// and answer.
async fn make_silence(svc: &Service) -> (String, Value) {
    let silence = json!({
        "matchers": [{"name": "rule", "op": "=", "value": "high_latency"}],
        "starts_at": rfc3339(now_ms() - 1_000),
        "duration": "1h",
        "creator": "silences test",
        "comment": "maintenance",
    });
    let post = reqwest::Method::POST;
    let (status, e) = call(svc, post.clone(), "/silences", "", Some(silence.clone())).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (401, Some("unauthorized")),
        "{e}"
    );
    let (_, none) = get(&svc.url("/silences?state=all")).await;
    assert_eq!(none["silences"], json!([]), "{none}");
    let (status, made) = call(svc, post, "/silences", TOKEN, Some(silence)).await;
    assert_eq!(
        (status, made["state"].as_str()),
        (201, Some("active")),
        "{made}"
    );
    (made["id"].as_str().unwrap().to_string(), made)
}

/// Both rules alert in one batch at `t0`: the silenced one is recorded
/// with why (`by`), acts on nothing, and is served held back; the other
/// acts.
async fn one_held_back_one_acting(svc: &Service, recv: &Receiver, by: &str, t0: i64) {
    send(svc, Send::SlowAndUnhappy, t0).await;
    let rows = wait_alerts(&svc.db_url, 2).await;
    let want = [
        ("high_latency".into(), Some(by.into())),
        ("low_satisfaction".into(), None),
    ];
    assert_eq!(rows, want);
    assert_eq!(recv.expect(1).await, vec!["page_feedback"]);
    let held = active_finding(svc, "high_latency").await;
    let why = (held["alert"].as_bool(), held["suppressed_by"].as_str());
    assert_eq!(why, (Some(false), Some(by)));
    let other = active_finding(svc, "low_satisfaction").await;
    assert_eq!(other["suppressed_by"], Value::Null);
    let (_, c) = get(&svc.url("/correlations")).await;
    let recent: Vec<(&str, &Value)> = (c["recent_alerts"].as_array().unwrap().iter())
        .map(|a| (a["rule"].as_str().unwrap(), &a["suppressed_by"]))
        .collect();
    assert!(recent.contains(&("high_latency", &json!(by))), "{c:#}");
    let (_, r) = get(&svc.url("/automated-responses")).await;
    let asked: Vec<&str> = (r["responses"].as_array().unwrap().iter())
        .map(|a| a["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        asked,
        ["page_feedback"],
        "no request from the held-back finding"
    );
    let counted = svc.metric(
        "correlation_findings_suppressed_total",
        &["reason=\"silence\""],
    );
    assert_eq!(counted.await, 1.0);
}

/// POST /correlations/test applies the live silences: five slow requests
/// now make `high_latency`, held back by the silence, not alerting.
async fn tried_held_back(svc: &Service, by: &str) {
    let body = json!({"events": [{"type": "slow_request", "count": 5}]});
    let (status, t) = call(
        svc,
        reqwest::Method::POST,
        "/correlations/test",
        "",
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    let found = (t["findings"].as_array().unwrap().iter())
        .find(|f| f["name"] == "high_latency")
        .unwrap_or_else(|| panic!("no high_latency: {t:#}"));
    let why = (found["alert"].as_bool(), found["suppressed_by"].as_str());
    assert_eq!(why, (Some(false), Some(by)), "{t:#}");
    assert_eq!(t["alert_triggered"], false, "{t:#}");
}

/// Deleted (without the admin token: refused): no longer current.
async fn delete_silence(svc: &Service, id: &str) {
    let (path, delete) = (format!("/silences/{id}"), reqwest::Method::DELETE);
    let (status, _) = call(svc, delete.clone(), &path, "", None).await;
    assert_eq!(status, 401);
    let (status, gone) = call(svc, delete, &path, TOKEN, None).await;
    assert_eq!(
        (status, gone["state"].as_str()),
        (200, Some("deleted")),
        "{gone}"
    );
    let (_, listed) = get(&svc.url("/silences")).await;
    assert_eq!(
        listed["silences"],
        json!([]),
        "a deleted silence is not current"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_holds_back_one_rule_until_deleted_and_survives_a_restart() {
    let recv = Receiver::start().await;
    let yaml = config(&recv, |_| {});
    let (db, _dir) = sqlite_url();
    let mut svc = Service::start_with(&db, &[], Some(&yaml)).await;
    let (id, made) = make_silence(&svc).await;
    let by_silence = format!("silence:{id}");
    tried_held_back(&svc, &by_silence).await;
    let t0 = now_ms();
    one_held_back_one_acting(&svc, &recv, &by_silence, t0).await;

    // After a restart the silence is there and still holds.
    assert!(svc.terminate().success());
    let svc = Service::start_with(&db, &[], Some(&yaml)).await;
    let (status, again) = get(&svc.url(&format!("/silences/{id}"))).await;
    assert_eq!(
        (status, again["state"].as_str()),
        (200, Some("active")),
        "{again}"
    );
    assert_eq!(again["matchers"], made["matchers"]);
    let t1 = next_after(t0);
    send(&svc, Send::Tick, t1).await;
    send(&svc, Send::Slow, t1 + 1_000).await;
    let rows = wait_alerts(&db, 3).await;
    assert_eq!(rows[2], ("high_latency".into(), Some(by_silence)));
    assert_eq!(recv.expect(1).await.len(), 1, "still no request");

    // Deleted: the next occurrence alerts and acts.
    delete_silence(&svc, &id).await;
    let t2 = next_after(t1 + 1_000);
    send(&svc, Send::Tick, t2).await;
    send(&svc, Send::Slow, t2 + 1_000).await;
    let rows = wait_alerts(&db, 4).await;
    assert_eq!(rows[3], ("high_latency".into(), None));
    assert_eq!(recv.expect(2).await, vec!["page_feedback", "page_latency"]);
}

/// The config file replaced by `yaml` and reloaded: the inhibit rules
/// went (the file watcher may take it first: the history says it was
/// taken).
async fn reload(svc: &Service, yaml: &str) {
    std::fs::write(svc.dir.join("config.yaml"), yaml).unwrap();
    let (status, r) = call(svc, reqwest::Method::POST, "/plugins/reload", TOKEN, None).await;
    assert_eq!(status, 200, "{r}");
    let (_, h) = get(&svc.url("/plugins/config/history")).await;
    let reasons: Vec<&str> = (h["deployments"].as_array().unwrap().iter())
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        ["event_correlation.inhibit_rules changed (0 rules)"],
        "{h}"
    );
}

/// `low_satisfaction` inhibits `high_latency`: both global findings, so
/// the target is held back whatever its subject. On PostgreSQL (the
/// migration and the alert column there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inhibit_rule_holds_back_its_target_on_postgres() {
    let recv = Receiver::start().await;
    let yaml = config(&recv, |v| {
        v["event_correlation"]["inhibit_rules"] =
            serde_norway::from_str("[{source: low_satisfaction, targets: [high_latency]}]")
                .unwrap();
    });
    let db = postgres_url().await;
    let svc = Service::start_with(&db, &[], Some(&yaml)).await;

    let t0 = now_ms();
    send(&svc, Send::SlowAndUnhappy, t0).await;
    let rows = wait_alerts(&db, 2).await;
    let by = "inhibited:low_satisfaction".to_string();
    assert_eq!(
        rows,
        vec![
            ("high_latency".into(), Some(by.clone())),
            ("low_satisfaction".into(), None)
        ]
    );
    assert_eq!(recv.expect(1).await, vec!["page_feedback"]);
    let held = active_finding(&svc, "high_latency").await;
    assert_eq!(held["suppressed_by"], json!(by));
    assert_eq!(
        svc.metric(
            "correlation_findings_suppressed_total",
            &["reason=\"inhibition\""]
        )
        .await,
        1.0
    );

    // Alone (no source in the batch's findings: low_satisfaction's
    // occurrences left the window), high_latency alerts and acts.
    let t1 = next_after(t0);
    send(&svc, Send::Tick, t1).await;
    send(&svc, Send::Slow, t1 + 1_000).await;
    let rows = wait_alerts(&db, 3).await;
    assert_eq!(rows[2], ("high_latency".into(), None));
    assert_eq!(recv.expect(2).await, vec!["page_feedback", "page_latency"]);

    // The rule taken out of the config file and reloaded: both alert
    // together, neither held back.
    reload(&svc, &config(&recv, |_| {})).await;
    let t2 = next_after(t1 + 1_000);
    send(&svc, Send::Tick, t2).await;
    send(&svc, Send::SlowAndUnhappy, t2 + 1_000).await;
    let rows = wait_alerts(&db, 5).await;
    let last: Vec<_> = rows[3..].to_vec();
    let raised = vec![
        ("high_latency".into(), None),
        ("low_satisfaction".into(), None),
    ];
    assert_eq!(last, raised);
    // Two executions at once: in either order.
    let mut both = recv.expect(4).await.split_off(2);
    both.sort();
    assert_eq!(both, ["page_feedback", "page_latency"]);
}
