//! Automated responses that act (issue 6), against the real service: a real
//! HTTP receiver on 127.0.0.1 inside the test answers per a script; the
//! service's executors are pointed at it through the config.
//!
//! How a notification is triggered: the shipped rule `notify_admin`
//! (`error_rate > 0.2`) — error events alone make the window's error rate
//! 1.0. Ten error events in one request are one batch, so the correlation
//! findings (high_error_rate alerts at 5 occurrences) are already active
//! when the responses plugin asks. The plugin asks again every
//! `repeat_interval` seconds while the condition holds, and only when a
//! batch is processed; the host's guardrails decide what is acted on.
//!
//! (To become tests/responses.rs, with `[[test]] name = "responses"
//! path = "../tests/responses.rs"` in host/Cargo.toml.)

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use common::*;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ─────────────────────────── the test receiver ───────────────────────────

#[derive(Debug, Clone, Copy)]
enum Reply {
    Status(u16),
    /// Never answers (holds the connection).
    Hang,
}

#[derive(Debug, Clone)]
struct Call {
    path: String,
    key: Option<String>,
    body: Value,
    at: Instant,
}

struct Script {
    calls: Mutex<Vec<Call>>,
    replies: Mutex<VecDeque<Reply>>,
    /// Once `replies` is used up.
    then: Reply,
}

/// An HTTP server on a free loopback port that records every request and
/// answers with the next scripted reply.
struct Receiver {
    addr: SocketAddr,
    script: Arc<Script>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(replies: Vec<Reply>, then: Reply) -> Receiver {
        let script = Arc::new(Script {
            calls: Mutex::new(Vec::new()),
            replies: Mutex::new(replies.into()),
            then,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(hook)
            .with_state(script.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, script, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn calls(&self) -> Vec<Call> {
        self.script.calls.lock().unwrap().clone()
    }

    /// Wait until at least `n` calls arrived.
    async fn wait_calls(&self, n: usize, secs: u64) -> Vec<Call> {
        let t = Instant::now();
        loop {
            let calls = self.calls();
            if calls.len() >= n {
                return calls;
            }
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "{} of {n} calls after {secs} s: {calls:#?}",
                calls.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn hook(
    State(script): State<Arc<Script>>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let reply = script
        .replies
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(script.then);
    script.calls.lock().unwrap().push(Call {
        path: uri.path().to_string(),
        key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: Instant::now(),
    });
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code).unwrap(),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK
        }
    }
}

// ─────────────────────────────── helpers ───────────────────────────────

/// The shipped config with `edit` applied.
fn config_yaml(edit: impl FnOnce(&mut serde_norway::Value)) -> String {
    let text = std::fs::read_to_string(root().join("config/event-processing.yaml")).unwrap();
    let mut v: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    edit(&mut v);
    serde_norway::to_string(&v).unwrap()
}

/// Guardrails that let every request through (tests narrow them).
fn open_guardrails(v: &mut serde_norway::Value) {
    let ar = &mut v["automated_response"];
    ar["cooldown_secs"] = 0.into();
    ar["dedup_window_secs"] = 0.into();
    ar["rate_limit_per_minute"] = 0.into();
    ar["shutdown_grace_secs"] = 2.into();
}

fn notify_at(
    v: &mut serde_norway::Value,
    url: String,
    timeout_ms: u64,
    retries: u32,
    backoff_ms: u64,
) {
    let n = &mut v["automated_response"]["executors"]["notify"];
    n["url"] = serde_norway::Value::from(url);
    n["timeout_ms"] = serde_norway::Value::from(timeout_ms);
    n["retries"] = serde_norway::Value::from(retries);
    n["backoff_ms"] = serde_norway::Value::from(backoff_ms);
}

/// The shipped response rule `name`, to edit.
fn response_rule<'a>(v: &'a mut serde_norway::Value, name: &str) -> &'a mut serde_norway::Value {
    v["automated_response"]["response_rules"]
        .as_sequence_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["name"].as_str() == Some(name))
        .unwrap()
}

/// POST `n` error events as one NDJSON request (one batch); returns once
/// they are stored.
async fn send_errors(svc: &Service, n: usize) {
    let body: String = (0..n)
        .map(|_| {
            json!({"event_type": "error_event", "data": {"service": "api", "error_type": "timeout", "severity": "error"}})
                .to_string()
                + "\n"
        })
        .collect();
    let r = reqwest::Client::new()
        .post(svc.url("/events"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert!(
        status.is_success(),
        "{status}: {}",
        r.text().await.unwrap_or_default()
    );
}

/// One error event every 200 ms for `d`: the condition keeps holding and
/// batches keep coming, so the plugin keeps asking.
async fn keep_erroring(svc: &Service, d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        send_errors(svc, 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GET /automated-responses rows (newest first) for a query.
async fn rows(svc: &Service, query: &str) -> Vec<Value> {
    let (status, body) = get(&svc.url(&format!("/automated-responses?limit=1000&{query}"))).await;
    assert_eq!(status, 200, "{body}");
    body["responses"].as_array().unwrap().clone()
}

/// Wait until the query has at least `n` rows, none of them pending.
async fn wait_rows(svc: &Service, query: &str, n: usize, secs: u64) -> Vec<Value> {
    let t = Instant::now();
    loop {
        let r = rows(svc, query).await;
        if r.len() >= n && r.iter().all(|x| x["outcome"] != "pending") {
            return r;
        }
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "rows for {query:?} after {secs} s: {r:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An executable script in `dir` (no shell runs it: the kernel reads the
/// shebang).
fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// (outcome, error) of every stored action request, read from the database.
async fn stored_outcomes(db_url: &str) -> Vec<(String, Option<String>)> {
    use sqlx::Row;
    db_rows(
        db_url,
        "SELECT outcome, error FROM action_requests ORDER BY batch_seq, n",
    )
    .await
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

// ──────────────────────────────── tests ────────────────────────────────

/// (a) An error burst: exactly one notification within the cooldown, and
/// one more after it; the body carries the findings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_burst_notifies_once_per_cooldown_with_its_findings() {
    let recv = Receiver::start(vec![], Reply::Status(200)).await;
    let yaml = config_yaml(|v| {
        open_guardrails(v);
        v["automated_response"]["repeat_interval"] = 1.into();
        v["automated_response"]["cooldown_secs"] = 2.into();
        notify_at(v, recv.url("/notify"), 2000, 0, 100);
    });
    let (url, _dir) = sqlite_url();
    let svc = Service::start_with(&url, &[], Some(&yaml)).await;

    send_errors(&svc, 10).await;
    let first = recv.wait_calls(1, 10).await;
    let call = &first[0];
    assert_eq!(call.path, "/notify");
    let b = &call.body;
    assert_eq!(b["action"], "send_notification", "{b}");
    assert_eq!(b["target"], "all");
    assert_eq!(b["rule"], "notify_admin");
    assert_eq!(b["attempt"], 1);
    assert!(b["reason"].as_str().unwrap().contains("error_rate"), "{b}");
    assert!(b["analytics"]["error_rate"].as_f64().unwrap() > 0.2, "{b}");
    let findings = b["findings"].as_array().expect("findings array");
    assert!(
        findings
            .iter()
            .any(|f| f["name"] == "high_error_rate" || f["name"] == "error_burst"),
        "the findings that caused it: {b:#}"
    );
    assert_eq!(call.key.as_deref(), b["idempotency_key"].as_str());

    // The condition holds; the plugin asks again after 1 s: suppressed.
    keep_erroring(&svc, Duration::from_millis(1500)).await;
    assert_eq!(recv.calls().len(), 1, "{:#?}", recv.calls());
    let r = rows(&svc, "action=send_notification").await;
    assert!(
        r.iter().any(|x| x["outcome"] == "suppressed_cooldown"),
        "{r:#?}"
    );

    // The cooldown (2 s) expires while it still holds: acts again.
    keep_erroring(&svc, Duration::from_millis(1800)).await;
    let calls = recv.wait_calls(2, 10).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls_later = recv.calls();
    assert_eq!(calls_later.len(), 2, "{calls_later:#?}");
    assert_ne!(calls[0].key, calls[1].key);
    assert!(
        calls[1].at - calls[0].at >= Duration::from_millis(1500),
        "second call {:?} after the first",
        calls[1].at - calls[0].at
    );

    // The audit trail: both executed, with timings; newest first.
    let executed = wait_rows(&svc, "action=send_notification&outcome=executed", 2, 10).await;
    assert_eq!(executed.len(), 2, "{executed:#?}");
    for x in &executed {
        assert_eq!(x["executor"], "notify");
        assert_eq!(x["attempts"], 1);
        assert_eq!(x["http_status"], 200);
        assert_eq!(x["dry_run"], false);
        assert!(
            x["started_at"].is_string() && x["finished_at"].is_string(),
            "{x}"
        );
        assert!(x["duration_ms"].as_i64().unwrap() >= 0);
        assert!(
            x["findings"].as_array().is_some_and(|f| !f.is_empty()),
            "{x}"
        );
        assert!(x["analytics"]["error_rate"].is_number(), "{x}");
    }
    assert!(executed[0]["requested_at"].as_str() > executed[1]["requested_at"].as_str());
    let keys: Vec<&str> = executed
        .iter()
        .map(|x| x["idempotency_key"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&calls[0].key.as_deref().unwrap()));
    assert_eq!(
        svc.metric(
            "automated_response_requests_total",
            &["action=\"send_notification\"", "outcome=\"executed\""]
        )
        .await,
        2.0
    );
    assert!(
        svc.metric(
            "automated_response_requests_total",
            &["outcome=\"suppressed_cooldown\""]
        )
        .await
            >= 1.0
    );
}

/// (b) 500 then 200: exactly one retry, with the same idempotency key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_is_retried_once_then_succeeds() {
    let recv = Receiver::start(vec![Reply::Status(500)], Reply::Status(200)).await;
    let yaml = config_yaml(|v| {
        open_guardrails(v);
        notify_at(v, recv.url("/notify"), 2000, 3, 150);
    });
    let (url, _dir) = sqlite_url();
    let svc = Service::start_with(&url, &[], Some(&yaml)).await;
    send_errors(&svc, 10).await;

    let r = wait_rows(&svc, "action=send_notification", 1, 15).await;
    assert_eq!(r.len(), 1, "{r:#?}");
    assert_eq!(r[0]["outcome"], "executed", "{:#}", r[0]);
    assert_eq!(r[0]["attempts"], 2);
    assert_eq!(r[0]["http_status"], 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = recv.calls();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(calls[0].key, calls[1].key);
    assert!(calls[0].key.is_some());
    assert_eq!(calls[0].body["attempt"], 1);
    assert_eq!(calls[1].body["attempt"], 2);
    assert!(calls[1].at - calls[0].at >= Duration::from_millis(150));
}

/// (b) A receiver that never answers: each attempt times out, then the
/// request is recorded failed — and events were stored meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_times_out_and_fails() {
    let recv = Receiver::start(vec![], Reply::Hang).await;
    let yaml = config_yaml(|v| {
        open_guardrails(v);
        notify_at(v, recv.url("/notify"), 500, 1, 100);
    });
    let (url, _dir) = sqlite_url();
    let svc = Service::start_with(&url, &[], Some(&yaml)).await;
    let t = Instant::now();
    send_errors(&svc, 10).await;
    // Stored at once: ingestion never waits for an executor.
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let r = rows(&svc, "action=send_notification").await;
    assert_eq!(r.len(), 1);

    let r = wait_rows(&svc, "action=send_notification", 1, 15).await;
    let x = &r[0];
    assert_eq!(x["outcome"], "failed", "{x:#}");
    assert_eq!(x["attempts"], 2);
    assert!(x["http_status"].is_null());
    assert!(x["error"].as_str().unwrap().contains("timed out"), "{x:#}");
    // Two attempts of 500 ms and a 100 ms backoff.
    assert!(x["duration_ms"].as_i64().unwrap() >= 1000, "{x:#}");
    assert_eq!(recv.calls().len(), 2);
    assert_eq!(
        svc.metric(
            "automated_response_requests_total",
            &["action=\"send_notification\"", "outcome=\"failed\""]
        )
        .await,
        1.0
    );
}

/// (c) Dry run, global (by its environment variable) and per rule: the
/// request is recorded, nothing is called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_records_the_request_and_calls_nothing() {
    let recv = Receiver::start(vec![], Reply::Status(200)).await;
    let global = config_yaml(|v| {
        open_guardrails(v);
        notify_at(v, recv.url("/notify"), 2000, 0, 100);
    });
    let per_rule = config_yaml(|v| {
        open_guardrails(v);
        notify_at(v, recv.url("/notify"), 2000, 0, 100);
        v["automated_response"]["dry_run_rules"] =
            serde_norway::from_str("[notify_admin]").unwrap();
    });
    for (env, yaml, why) in [
        (
            vec![("AUTOMATED_RESPONSE_DRY_RUN", "true")],
            &global,
            "automated_response.dry_run",
        ),
        (vec![], &per_rule, "dry_run_rules"),
    ] {
        let (url, _dir) = sqlite_url();
        let svc = Service::start_with(&url, &env, Some(yaml.as_str())).await;
        send_errors(&svc, 10).await;
        let r = wait_rows(&svc, "action=send_notification", 1, 10).await;
        let x = &r[0];
        assert_eq!(x["outcome"], "dry_run", "{x:#}");
        assert_eq!(x["dry_run"], true);
        assert_eq!(x["executor"], "notify");
        assert_eq!(x["attempts"], 0);
        let detail = x["detail"].as_str().unwrap();
        assert!(
            detail.contains(why) && detail.contains("not called"),
            "{detail}"
        );
        assert!(
            x["findings"].as_array().is_some_and(|f| !f.is_empty()),
            "{x}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(recv.calls().is_empty(), "{:#?}", recv.calls());
        let dry = rows(&svc, "outcome=dry_run").await;
        assert_eq!(dry.len(), 1, "{dry:#?}");
    }
}

/// (d) The command executor runs an allowlisted program, without a shell,
/// with templated arguments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_executor_runs_an_allowlisted_program_with_templated_arguments() {
    let dir = tempdir();
    let out = dir.join("argv.txt");
    let program = script(
        &dir,
        "record-argv",
        "#!/bin/sh\n# Appends each argument after the first to the file named by the first.\nout=\"$1\"\nshift\nfor a in \"$@\"; do printf '%s\\n' \"$a\" >> \"$out\"; done\n",
    );
    let program_s = program.to_str().unwrap().to_string();
    let yaml = config_yaml(|v| {
        open_guardrails(v);
        let ar = &mut v["automated_response"];
        ar["command_allowlist"] = serde_norway::Value::Sequence(vec![program_s.clone().into()]);
        ar["executors"]["record"] = serde_norway::from_str(&format!(
            "{{kind: command, program: '{program_s}', timeout_ms: 5000, args: ['{}', '{{action}}', '{{target}}', '--replicas={{parameters.replicas}}', '{{rule}}', '{{parameters.category}}', 'a b; $(touch {}/pwned)']}}",
            out.display(),
            dir.display(),
        ))
        .unwrap();
        ar["actions"]["send_notification"] = "record".into();
        response_rule(v, "notify_admin")["parameters"] =
            serde_norway::from_str("{replicas: 3}").unwrap();
    });
    let (url, _dir) = sqlite_url();
    let svc = Service::start_with(&url, &[], Some(&yaml)).await;
    send_errors(&svc, 10).await;

    let r = wait_rows(&svc, "action=send_notification", 1, 15).await;
    let x = &r[0];
    assert_eq!(x["outcome"], "executed", "{x:#}");
    assert_eq!(x["executor"], "record");
    assert_eq!(x["attempts"], 1);
    let argv = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = argv.lines().collect();
    assert_eq!(
        lines,
        vec![
            "send_notification",
            "all",
            "--replicas=3",
            "notify_admin",
            "error",
            &format!("a b; $(touch {}/pwned)", dir.display()),
        ]
    );
    // One argument each, never interpreted by a shell.
    assert!(!dir.join("pwned").exists());
}

/// (d) A program outside the allowlist: refused when the config loads (a
/// clear message naming the key), by the library and by the binary, and
/// never run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_outside_the_allowlist_is_refused_at_config_load_and_never_runs() {
    let dir = tempdir();
    let marker = dir.join("ran");
    let program = script(&dir, "mark", "#!/bin/sh\necho ran > \"$1\"\n");
    let yaml = config_yaml(|v| {
        let ar = &mut v["automated_response"];
        ar["executors"]["mark"] = serde_norway::from_str(&format!(
            "{{kind: command, program: '{}', args: ['{}']}}",
            program.display(),
            marker.display()
        ))
        .unwrap();
        ar["actions"]["send_notification"] = "mark".into();
    });
    let e = hxp_events::config::Config::from_yaml(&yaml, "test.yaml", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("automated_response.executors.mark.program")
            && e.contains("command_allowlist")
            && e.contains(&program.display().to_string()),
        "{e}"
    );

    let config = dir.join("config.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let (url, _db) = sqlite_url();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_hxp-events"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .current_dir(root())
        .env("DATABASE_URL", &url)
        .env("EVENT_PROCESSING_API_PORT", free_port().to_string())
        .env("EVENT_PROCESSING_PLUGIN_DIR", root().join("target/plugins"))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the service must refuse to start, not run")
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("command_allowlist") && stderr.contains("executors.mark.program"),
        "{stderr}"
    );
    assert!(!marker.exists(), "the program ran");
}

/// (e) While a webhook hangs, events are processed at the same rate as
/// with an answering one; at shutdown the hung requests are recorded as
/// failed ("shutdown"), none stays pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_never_slows_event_processing() {
    const RATE: u64 = 2000;
    let mut rates = Vec::new();
    for hang in [false, true] {
        let recv = Receiver::start(
            vec![],
            if hang {
                Reply::Hang
            } else {
                Reply::Status(200)
            },
        )
        .await;
        let yaml = config_yaml(|v| {
            open_guardrails(v);
            let ar = &mut v["automated_response"];
            ar["repeat_interval"] = 1.into();
            ar["max_concurrency"] = 2.into();
            ar["queue_capacity"] = 4.into();
            // The load's throughput asks to scale: keep that off the slots.
            ar["actions"]["scale_models"] = "log".into();
            notify_at(v, recv.url("/notify"), 60_000, 0, 100);
            // The load's error rate (about 12 %) keeps this true: a request
            // every second, each hanging for a minute.
            response_rule(v, "notify_admin")["condition"] = "error_rate > 0.01".into();
        });
        let (url, _dir) = sqlite_url();
        let mut svc = Service::start_with(&url, &[], Some(&yaml)).await;
        let summary = hxp_events::cli::loadgen::run(hxp_events::cli::loadgen::Options {
            target: svc.base.clone(),
            rate: RATE,
            duration: Duration::from_secs(6),
            batch: 100,
            concurrency: 8,
            seed: 7,
            quiet: true,
        })
        .await
        .unwrap();
        let achieved = summary["achieved_rate"].as_f64().unwrap();
        assert_eq!(summary["busy"], 0, "{summary}");
        assert_eq!(summary["failed"], 0, "{summary}");
        // Everything accepted was processed and stored.
        let accepted = summary["accepted"].as_u64().unwrap();
        let t = Instant::now();
        loop {
            let (_, s) = get(&svc.url("/analytics/status")).await;
            if s["events_processed"].as_u64() >= Some(accepted) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "{s}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let calls = recv.calls().len();
        assert!(calls >= 2, "the webhook was called {calls} times");
        if hang {
            // Both slots hang; the rest waited or found the queue full.
            let pending = rows(&svc, "action=send_notification&outcome=pending").await;
            assert!(!pending.is_empty(), "nothing in flight");
            assert_eq!(calls, 2, "more than max_concurrency calls in flight");
            let failed = rows(&svc, "action=send_notification&outcome=failed").await;
            assert!(
                failed
                    .iter()
                    .all(|x| x["error"].as_str().unwrap_or("").contains("queue full")),
                "{failed:#?}"
            );
            // Shutdown: 2 s of grace, then recorded as failed.
            let status = tokio::task::block_in_place(|| svc.terminate());
            assert!(status.success(), "{}", svc.log_text());
            let stored = stored_outcomes(&url).await;
            assert!(!stored.is_empty());
            assert!(
                stored.iter().all(|(o, _)| o != "pending"),
                "pending after shutdown: {stored:?}"
            );
            assert!(
                stored.iter().any(|(o, e)| o == "failed"
                    && e.as_deref().is_some_and(|e| e.starts_with("shutdown"))),
                "{stored:?}"
            );
        }
        eprintln!("hang = {hang}: {achieved:.0} events/s ({calls} webhook calls)");
        rates.push(achieved);
    }
    let (answering, hanging) = (rates[0], rates[1]);
    assert!(
        hanging >= 0.8 * answering,
        "a hanging webhook slowed processing: {hanging:.0} vs {answering:.0} events/s"
    );
    assert!(
        hanging >= 0.8 * RATE as f64,
        "{hanging:.0} of {RATE} events/s"
    );
}

/// Restart: a request left pending by a killed process is recorded as
/// failed ("interrupted by restart"), not re-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_pending_at_a_crash_are_recorded_as_interrupted_not_rerun() {
    let recv = Receiver::start(vec![], Reply::Hang).await;
    let yaml = config_yaml(|v| {
        open_guardrails(v);
        notify_at(v, recv.url("/notify"), 60_000, 0, 100);
    });
    let (url, _dir) = sqlite_url();
    let mut svc = Service::start_with(&url, &[], Some(&yaml)).await;
    send_errors(&svc, 10).await;
    recv.wait_calls(1, 10).await;
    assert_eq!(rows(&svc, "outcome=pending").await.len(), 1);
    svc.child.kill().unwrap();
    svc.child.wait().unwrap();
    drop(svc);

    let svc = Service::start_with(&url, &[], Some(&yaml)).await;
    let r = rows(&svc, "action=send_notification").await;
    assert_eq!(r.len(), 1, "{r:#?}");
    assert_eq!(r[0]["outcome"], "failed", "{:#}", r[0]);
    assert_eq!(r[0]["error"], "interrupted by restart");
    // Not re-run: still the one call from before the crash.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(recv.calls().len(), 1);
}

/// (TLS) An https webhook reaches a receiver whose certificate comes from a
/// private CA (`tls.client.ca_file`) and that only lets clients with a
/// certificate of that CA in (`tls.client.cert_file`/`key_file`; stunnel4
/// terminates TLS in front of the test's receiver). A receiver whose CA is
/// not trusted is never called: the request fails on its certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_webhook_reaches_a_private_ca_receiver_with_a_client_certificate() {
    let pki = tls::Pki::new();
    let stranger = tls::Pki::new();
    let recv = Receiver::start(vec![], Reply::Status(200)).await;
    let mutual = tls::Stunnel::start(&pki, &recv.addr.to_string(), true).await;
    let untrusted = tls::Stunnel::start(&stranger, &recv.addr.to_string(), false).await;
    let yaml = config_yaml(|v| {
        open_guardrails(v);
        let url = format!("https://127.0.0.1:{}/notify", mutual.port);
        notify_at(v, url, 5000, 0, 100);
        let page = format!(
            "{{kind: webhook, url: 'https://127.0.0.1:{}/page', retries: 0}}",
            untrusted.port
        );
        let ar = &mut v["automated_response"];
        ar["executors"]["page"] = serde_norway::from_str(&page).unwrap();
        ar["actions"]["page_oncall"] = "page".into();
        let rules = ar["response_rules"].as_sequence_mut().unwrap();
        rules.push(
            serde_norway::from_str(
                "{name: page_oncall, condition: error_rate > 0.2, action: page_oncall}",
            )
            .unwrap(),
        );
        v["tls"] = serde_norway::from_str(&format!(
            "client: {{ca_file: '{}', cert_file: '{}', key_file: '{}'}}",
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ))
        .unwrap();
    });
    let (url, _dir) = sqlite_url();
    let svc = Service::start_with(&url, &[], Some(yaml.as_str())).await;
    send_errors(&svc, 10).await;

    let calls = recv.wait_calls(1, 20).await;
    assert_eq!(calls[0].path, "/notify");
    assert!(calls[0].key.is_some(), "{:?}", calls[0]);
    let done = wait_rows(&svc, "action=send_notification", 1, 20).await;
    assert_eq!(done[0]["outcome"], "executed", "{:#}", done[0]);
    assert_eq!(done[0]["http_status"], 200, "{:#}", done[0]);
    let log = mutual.log_text();
    assert!(log.contains("Certificate accepted"), "stunnel log:\n{log}");

    let refused = wait_rows(&svc, "action=page_oncall", 1, 20).await;
    assert_eq!(refused[0]["outcome"], "failed", "{:#}", refused[0]);
    let error = refused[0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(error.contains("certificate"), "{error}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        recv.calls().iter().all(|c| c.path != "/page"),
        "{:#?}",
        recv.calls()
    );
}

/// (Secrets) A response plugin sees the rules and the category switches of
/// `automated_response`, never the executors: the `config-echo` guest
/// reports the section it was configured with as the parameters of its
/// requests. A manifest naming a section of the host's is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_sees_its_rules_and_never_the_executors_secrets() {
    let plugins = tempdir().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for p in ["analytics", "correlation", "responses"] {
        std::fs::copy(wasm(&format!("hxp_{p}")), plugins.join(format!("{p}.wasm"))).unwrap();
    }
    std::fs::copy(wasm("config_echo_guest"), plugins.join("echo.wasm")).unwrap();
    std::fs::copy(wasm("config_echo_guest"), plugins.join("spy.wasm")).unwrap();
    std::fs::write(plugins.join("spy.yaml"), "config: database\n").unwrap();
    let yaml = config_yaml(|v| {
        let n = &mut v["automated_response"]["executors"]["notify"];
        n["url"] = "http://127.0.0.1:1/notify?key=url-s3cr3t".into();
        n["headers"] = serde_norway::from_str("{Authorization: Bearer header-s3cr3t}").unwrap();
    });
    let (url, _dir) = sqlite_url();
    let env = [
        ("EVENT_PROCESSING_PLUGIN_DIR", plugins.to_str().unwrap()),
        ("AUTOMATED_RESPONSE_DRY_RUN", "true"),
    ];
    let svc = Service::start_with(&url, &env, Some(yaml.as_str())).await;
    send_errors(&svc, 1).await;
    let echoed = wait_rows(&svc, "action=report_config", 1, 20).await;
    let seen: Value = echoed[0]["parameters"]["config"].clone();
    let keys: Vec<&str> = seen
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    // serde_json's map is sorted.
    assert_eq!(
        keys,
        [
            "business_events_enabled",
            "critical_events_enabled",
            "enabled",
            "error_events_enabled",
            "repeat_interval",
            "response_rules"
        ]
    );
    assert_eq!(
        seen["response_rules"].as_array().unwrap().len(),
        3,
        "{seen}"
    );
    let text = seen.to_string();
    for secret in ["s3cr3t", "127.0.0.1", "executors", "Authorization"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }

    let (_, listed) = get(&svc.url("/plugins")).await;
    let rejected = listed.to_string();
    assert!(
        rejected.contains("spy") && rejected.contains("config section 'database'"),
        "{listed:#}"
    );
}
