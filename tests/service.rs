//! The service end to end: the real binary on a free port, a real HTTP
//! client, the real plugins, on SQLite and on the PostgreSQL at
//! 127.0.0.1:5432.

mod common;
mod hostile;

use common::{Service, TOKEN, db_rows, get, post, postgres_url, sqlite_url, stored_ids};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-9)
}

/// The nine events of the hand-computed scenario, in order.
fn scenario() -> Vec<Value> {
    vec![
        json!({"event_type": "llm_request", "data": {"model": "mixtral-8x7b", "service": "gw", "latency_ms": 100, "success": true, "cost_usd": 0.002}}),
        json!({"event_type": "llm_request", "data": {"model": "mixtral-8x7b", "latency_ms": 200, "cost_usd": 0.004}}),
        json!({"event_type": "llm_request", "data": {"model": "llama-3-8b", "latency_ms": 300, "success": false, "error": "timeout", "cost_usd": 0.001}}),
        json!({"event_type": "llm_request", "data": {"model": "llama-3-8b", "latency_ms": 400, "cost_usd": 0.001}}),
        json!({"event_type": "user_feedback", "data": {"satisfaction": 8.0, "user_id": "u1"}}),
        json!({"event_type": "user_feedback", "data": {"satisfaction": 6.0, "user_id": "u2"}}),
        json!({"event_type": "system_metric", "data": {"service": "vllm-llama", "health": "failed"}}),
        json!({"event_type": "business_event", "data": {"name": "renewal", "value": 250.5, "currency": "USD"}}),
        json!({"event_type": "error_event", "data": {"service": "gw", "error_type": "timeout"}}),
    ]
}

fn record_validator() -> jsonschema::Validator {
    let text =
        std::fs::read_to_string(common::root().join("config/schemas/processing-record.json"))
            .unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&serde_json::from_str(&text).unwrap())
        .unwrap()
}

async fn end_to_end(db_url: &str) {
    let svc = Service::start(db_url, &[]).await;
    let validator = record_validator();

    // One event per request: each is its own batch, in this order.
    let mut ids = Vec::new();
    for (i, e) in scenario().iter().enumerate() {
        let (status, body) = post(&svc.url("/process"), e).await;
        assert_eq!(status, 200, "event {i}: {body}");
        assert_eq!(body["status"], "success");
        ids.push((
            body["processing_id"].as_str().unwrap().to_string(),
            body["event_id"].as_str().unwrap().to_string(),
        ));
    }

    // Analytics over the 300 s window, by hand:
    // latencies 100 200 300 400 -> mean 250; p50 h=1.5 -> 250; p95 h=2.85 -> 385; p99 h=2.97 -> 397
    // outcomes: 4 llm_request (one failed) + 1 error_event -> 2 / 5 = 0.4
    // satisfaction (8 + 6) / 2 = 7; business value 250.5; cost (0.002+0.004+0.001+0.001)/4 = 0.002
    let (_, a) = get(&svc.url("/analytics")).await;
    assert_eq!(a["event_count"], 9, "{a}");
    assert!(close(&a["latency"], 250.0), "{a}");
    assert!(close(&a["latency_p50"], 250.0), "{a}");
    assert!(close(&a["latency_p95"], 385.0), "{a}");
    assert!(close(&a["latency_p99"], 397.0), "{a}");
    assert_eq!(a["latency_exact"], true);
    assert!(close(&a["error_rate"], 0.4), "{a}");
    assert!(close(&a["error_percentage"], 40.0), "{a}");
    assert!(close(&a["user_satisfaction"], 7.0), "{a}");
    assert!(close(&a["business_value"], 250.5), "{a}");
    assert!(close(&a["cost_per_request"], 0.002), "{a}");
    let covered = a["covered_seconds"].as_f64().unwrap();
    assert!(covered >= 1.0);
    assert!(close(&a["throughput"], 9.0 / covered), "{a}");
    assert!(close(&a["requests_per_second"], 4.0 / covered), "{a}");
    let llm = &a["by_event_type"]["llm_request"];
    assert_eq!(llm["event_count"], 4);
    assert!(close(&llm["error_rate"], 0.25));
    assert_eq!(a["services"][0]["service"], "vllm-llama");
    assert_eq!(a["services"][0]["health"], "failed");

    // Correlation: high_error_rate has 3 occurrences (events 3, 4 and 9 saw
    // a window error rate above 0.1), below the threshold of 5.
    let (_, c) = get(&svc.url("/correlations")).await;
    assert_eq!(c["patterns_detected"], json!([]), "{c}");
    assert_eq!(c["alert_triggered"], false);
    // Two more errors: occurrences 4 and 5 -> alert.
    for _ in 0..2 {
        let (s, _) = post(&svc.url("/process"), &scenario()[8]).await;
        assert_eq!(s, 200);
    }
    let (_, c) = get(&svc.url("/correlations")).await;
    assert_eq!(c["patterns_detected"], json!(["high_error_rate"]), "{c}");
    assert_eq!(c["alert_triggered"], true);
    assert_eq!(c["recent_alerts"][0]["rule"], "high_error_rate");
    assert_eq!(c["recent_alerts"][0]["occurrences"], 5);
    let (_, stats) = get(&svc.url("/correlations/stats")).await;
    assert_eq!(stats["alerts_total"], 1, "{stats}");
    assert_eq!(stats["by_rule"][0]["rule"], "high_error_rate");

    // Responses: error rate 1/3 > 0.2 after event 3 -> one notification
    // (not repeated within 60 s); health failed at event 7 -> one restart.
    let (_, r) = get(&svc.url("/automated-responses")).await;
    assert_eq!(r["total"], 2, "{r}");
    let actions: Vec<(&str, &str)> = r["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["action"].as_str().unwrap(), x["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("restart_service", "vllm-llama"),
            ("send_notification", "all")
        ]
    );
    let (_, only) = get(&svc.url("/automated-responses?action=restart_service")).await;
    assert_eq!(only["total"], 1);
    assert_eq!(
        only["responses"][0]["parameters"]["observed"]["service_health"],
        "failed"
    );

    // Processing records, against the requirements' schema.
    let types = [
        "llm_request",
        "llm_request",
        "llm_request",
        "llm_request",
        "user_feedback",
        "user_feedback",
        "system_metric",
        "business_event",
        "error_event",
    ];
    for (i, (pid, eid)) in ids.iter().enumerate() {
        let (status, rec) = get(&svc.url(&format!("/processing/{pid}"))).await;
        assert_eq!(status, 200, "{rec}");
        let errors: Vec<String> = validator.iter_errors(&rec).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "record {i} violates the schema: {errors:?}\n{rec}"
        );
        assert_eq!(rec["processing_id"], pid.as_str());
        assert_eq!(rec["event_id"], eid.as_str());
        assert_eq!(rec["processing_type"], types[i]);
    }
    let rec = |i: usize| {
        let url = svc.url(&format!("/processing/{}", ids[i].0));
        async move { get(&url).await.1 }
    };
    let r3 = rec(2).await;
    assert_eq!(r3["automated_response"]["response_triggered"], true, "{r3}");
    assert_eq!(
        r3["automated_response"]["response_type"],
        "send_notification"
    );
    assert!(
        close(&r3["analytics_results"]["error_rate"], 1.0 / 3.0),
        "{r3}"
    );
    let r7 = rec(6).await;
    assert_eq!(r7["automated_response"]["response_type"], "restart_service");
    let r1 = rec(0).await;
    assert_eq!(r1["automated_response"]["response_triggered"], false);
    assert!(close(&r1["analytics_results"]["latency"], 100.0));

    // Metrics with the requirements' names.
    let text = svc.metrics_text().await;
    for want in [
        "event_processing_total{event_type=\"llm_request\",status=\"processed\"} 4",
        "event_processing_total{event_type=\"error_event\",status=\"processed\"} 3",
        "event_correlation_alerts_total{rule=\"high_error_rate\"} 1",
        "event_processing_duration_seconds_count 11",
        "real_time_analytics_business_value 250.5",
        "real_time_analytics_user_satisfaction 7",
        "event_correlation_patterns{pattern=\"high_error_rate\"} 1",
        "real_time_analytics_throughput",
        "real_time_analytics_latency",
        "real_time_analytics_error_rate",
        "event_processing_throughput",
        "event_processing_batch_size_bucket",
        // Adaptive batching at low load: the base size.
        "event_processing_batch_limit 100",
        "event_processing_queue_depth",
        "plugin_call_duration_seconds_bucket",
        "database_write_duration_seconds_bucket",
    ] {
        assert!(text.contains(want), "/metrics lacks {want}");
    }

    // Recalculate: batch analytics from the stored events agree.
    let r = svc.recalculate().await;
    assert_eq!(
        r["batch"]["event_count"], r["real_time"]["event_count"],
        "{r}"
    );
    assert_eq!(r["batch"]["event_count"], 11);
    for k in [
        "latency",
        "latency_p50",
        "latency_p95",
        "error_rate",
        "business_value",
        "throughput",
    ] {
        assert!(close(&r["difference"][k]["absolute"], 0.0), "{k}: {r}");
    }

    curl_examples(&svc);
}

/// The requirements' curl commands, as written, against 127.0.0.1.
fn curl_examples(svc: &Service) {
    let curl = |args: &[&str]| -> (String, Value) {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (
            code.to_string(),
            serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
        )
    };
    let (code, h) = curl(&["-X", "GET", &svc.url("/health")]);
    assert_eq!(code, "200");
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["service"], "event-processing-api");
    assert!(h["timestamp"].is_string());
    let (_, a) = curl(&["-X", "GET", &svc.url("/analytics")]);
    for k in ["throughput", "latency", "error_rate", "user_satisfaction"] {
        assert!(a.get(k).is_some(), "/analytics lacks {k}");
    }
    let (_, c) = curl(&["-X", "GET", &svc.url("/correlations")]);
    assert!(c["patterns_detected"].is_array() && c["alert_triggered"].is_boolean());
    let (code, p) = curl(&[
        "-X",
        "POST",
        &svc.url("/process"),
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"event_type": "llm_request", "data": {"model": "mixtral-8x7b"}}"#,
    ]);
    assert_eq!(code, "200");
    assert_eq!(p["status"], "success");
    assert!(p["processing_id"].is_string());
    let (code, m) = curl(&["-X", "GET", &svc.url("/metrics")]);
    assert_eq!(code, "200");
    assert!(m.as_str().unwrap().contains("event_processing_total"));
    for path in [
        "/automated-responses",
        "/config",
        "/analytics/status",
        "/processing/pipeline",
        "/correlations/config",
        "/correlations/stats",
        "/plugins",
    ] {
        let (code, v) = curl(&["-X", "GET", &svc.url(path)]);
        assert_eq!(code, "200", "{path}: {v}");
        assert!(v.is_object(), "{path}");
    }
    let (code, t) = curl(&[
        "-X",
        "POST",
        &svc.url("/correlations/test"),
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"events": [{"type": "error", "count": 10}]}"#,
    ]);
    assert_eq!(code, "200", "{t}");
    assert_eq!(t["events"], 10);
    assert!(
        t["patterns_detected"]
            .as_array()
            .unwrap()
            .contains(&json!("high_error_rate"))
    );
    assert_eq!(t["alert_triggered"], true);
    // The maintenance command needs the admin token here; without it the
    // answer says so.
    let (code, r) = curl(&["-X", "POST", &svc.url("/analytics/recalculate")]);
    assert_eq!(code, "401", "{r}");
    assert!(r["message"].as_str().unwrap().contains("bearer token"));
    let auth = format!("Authorization: Bearer {TOKEN}");
    let (code, r) = curl(&[
        "-X",
        "POST",
        &svc.url("/analytics/recalculate"),
        "-H",
        &auth,
    ]);
    assert_eq!(code, "200", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_sqlite() {
    let (url, _dir) = sqlite_url();
    end_to_end(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_postgres() {
    end_to_end(&postgres_url().await).await;
}

/// Live correlation state is untouched by POST /correlations/test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlation_test_uses_a_scratch_instance() {
    let (url, _dir) = sqlite_url();
    let svc = Service::start(&url, &[]).await;
    let body = json!({"events": [{"type": "error", "count": 20, "data": {"service": "db"}}, {"type": "slow_request", "count": 6}],
                      "config": {"alert_threshold": 3}});
    let (s, t) = post(&svc.url("/correlations/test"), &body).await;
    assert_eq!(s, 200, "{t}");
    let names: HashSet<&str> = t["patterns_detected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        HashSet::from(["high_error_rate", "high_latency", "error_burst"])
    );
    let (_, live) = get(&svc.url("/correlations")).await;
    assert_eq!(live["patterns_detected"], json!([]));
    assert_eq!(live["active_findings"], json!([]));
    let (_, stats) = get(&svc.url("/correlations/stats")).await;
    assert_eq!(stats["alerts_total"], 0);
    // A rule that does not parse is refused with its name.
    let bad = json!({"events": [{"type": "error"}], "config": {"correlation_rules": [{"name": "oops", "condition": "error_rate >>", "action": "alert"}]}});
    let (s, e) = post(&svc.url("/correlations/test"), &bad).await;
    assert_eq!(s, 422);
    assert!(
        e["message"].as_str().unwrap().contains("rule 'oops'"),
        "{e}"
    );
}

/// (method, url, content type, body, status, error code, message fragment)
type Case<'a> = (
    &'a str,
    String,
    Option<&'a str>,
    Vec<u8>,
    u16,
    &'a str,
    &'a str,
);

/// At least 20 kinds of bad input, each with its status and message; the
/// service stays healthy and keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_clear_errors() {
    let (url, _dir) = sqlite_url();
    let config = "service:\n  max_body_bytes: 65536\nstream_processing:\n  queue_capacity: 500\nevent_consumers:\n  business_events_enabled: false\n";
    let svc = Service::start_with(&url, &[], Some(config)).await;
    let client = reqwest::Client::new();
    let process = svc.url("/process");
    let events = svc.url("/events");
    let ok_event = r#"{"event_type":"llm_request","data":{"model":"m"}}"#;
    let big = format!(
        r#"{{"event_type":"llm_request","data":{{"model":"m","pad":"{}"}}}}"#,
        "x".repeat(70_000)
    );
    let many = (0..600).map(|_| ok_event).collect::<Vec<_>>().join("\n");
    let deep = "[".repeat(5000);
    // (method, url, content type, body, status, error code, message fragment)
    let cases: Vec<Case> = vec![
        (
            "POST",
            process.clone(),
            Some("application/json"),
            b"{".to_vec(),
            400,
            "malformed_json",
            "malformed JSON",
        ),
        (
            "POST",
            process.clone(),
            Some("application/json"),
            b"".to_vec(),
            400,
            "malformed_json",
            "EOF",
        ),
        (
            "POST",
            process.clone(),
            Some("application/json"),
            b"\xff\xfe{}".to_vec(),
            400,
            "malformed_json",
            "malformed JSON",
        ),
        (
            "POST",
            process.clone(),
            Some("application/json"),
            deep.clone().into_bytes(),
            400,
            "malformed_json",
            "recursion limit",
        ),
        (
            "POST",
            process.clone(),
            Some("application/json"),
            br#"{"event_type":"llm_requests","data":{}}"#.to_vec(),
            422,
            "invalid_event",
            "unknown event_type 'llm_requests'",
        ),
        (
            "POST",
            process.clone(),
            Some("application/json"),
            br#"{"data":{"model":"m"}}"#.to_vec(),
            422,
            "invalid_event",
            "missing required field 'event_type'",
        ),
        (
            "POST",
            process.clone(),
            Some("application/json"),
            br#"{"event_type":7,"data":{}}"#.to_vec(),
            422,
            "invalid_event",
            "event_type must be a string",
        ),
        (
            "POST",
            process.clone(),
            Some("application/json"),
            br#"{"event_type":"llm_request"}"#.to_vec(),
            422,
            "invalid_event",
            "\"data\" is a required property",
        ),
        (
            "POST",
            process.clone(),
            Some("application/json"),
            br#"{"event_type":"llm_request","data":[1]}"#.to_vec(),
            422,
            "invalid_event",
            "not of type \"object\"",
        ),
        (
            "POST",
            process.clone(),
            Some("application/json"),
            br#"{"event_type":"llm_request","data":{}}"#.to_vec(),
            422,
            "invalid_event",
            "\"model\" is a required property",
        ),
        (
            "POST",
            process.clone(),
            Some("application/json"),
            br#"{"event_type":"llm_request","data":{"model":"m","latency_ms":"fast"}}"#.to_vec(),
            422,
            "invalid_event",
            "/data/latency_ms",
        ),
        (
            "POST",
            process.clone(),
            Some("application/json"),
            br#"{"event_type":"llm_request","data":{"model":"m","latency_ms":-1}}"#.to_vec(),
            422,
            "invalid_event",
            "less than the minimum of 0",
        ),
        (
            "POST",
            process.clone(),
            Some("application/json"),
            br#"{"event_type":"user_feedback","data":{"satisfaction":11}}"#.to_vec(),
            422,
            "invalid_event",
            "greater than the maximum of 10",
        ),
        (
            "POST",
            process.clone(),
            Some("application/json"),
            br#"{"event_type":"system_metric","data":{"service":"s","health":"dead"}}"#.to_vec(),
            422,
            "invalid_event",
            "/data/health",
        ),
        (
            "POST",
            process.clone(),
            Some("application/json"),
            br#"{"event_type":"llm_request","data":{"model":"m"},"event_id":"42"}"#.to_vec(),
            422,
            "invalid_event",
            "/event_id",
        ),
        (
            "POST",
            process.clone(),
            Some("application/json"),
            br#"{"event_type":"llm_request","data":{"model":"m"},"timestamp":"yesterday"}"#
                .to_vec(),
            422,
            "invalid_event",
            "/timestamp",
        ),
        (
            "POST",
            process.clone(),
            Some("application/json"),
            br#"{"event_type":"llm_request","data":{"model":"m"},"timestamp":"9999-12-31T23:59:59Z"}"#
                .to_vec(),
            422,
            "invalid_event",
            "max_clock_skew_secs",
        ),
        (
            "POST",
            process.clone(),
            Some("application/json"),
            br#"{"event_type":"llm_request","data":{"model":"m"},"colour":"red"}"#.to_vec(),
            422,
            "invalid_event",
            "colour",
        ),
        (
            "POST",
            process.clone(),
            Some("application/json"),
            br#"[{"event_type":"llm_request","data":{"model":"m"}}]"#.to_vec(),
            422,
            "invalid_event",
            "must be a JSON object, not an array",
        ),
        (
            "POST",
            process.clone(),
            Some("application/json"),
            br#"{"event_type":"business_event","data":{"name":"n","value":1}}"#.to_vec(),
            422,
            "event_type_disabled",
            "business_events_enabled is false",
        ),
        (
            "POST",
            process.clone(),
            None,
            ok_event.as_bytes().to_vec(),
            415,
            "unsupported_media_type",
            "Content-Type must be application/json",
        ),
        (
            "POST",
            process.clone(),
            Some("text/plain"),
            ok_event.as_bytes().to_vec(),
            415,
            "unsupported_media_type",
            "got text/plain",
        ),
        (
            "POST",
            process.clone(),
            Some("application/json"),
            big.clone().into_bytes(),
            413,
            "body_too_large",
            "max_body_bytes",
        ),
        (
            "POST",
            events.clone(),
            Some("application/json"),
            br#"{"event_type":"llm_request","data":{"model":"m"}}"#.to_vec(),
            422,
            "invalid_event",
            "must be a JSON array",
        ),
        (
            "POST",
            events.clone(),
            Some("application/json"),
            b"[]".to_vec(),
            422,
            "no_valid_events",
            "holds no events",
        ),
        (
            "POST",
            events.clone(),
            Some("application/x-ndjson"),
            b"{\n[]\n".to_vec(),
            422,
            "no_valid_events",
            "none of the 2 events",
        ),
        (
            "POST",
            events.clone(),
            Some("application/x-ndjson"),
            many.into_bytes(),
            413,
            "too_many_events",
            "more than the queue holds",
        ),
        (
            "GET",
            svc.url("/processing/not-a-uuid"),
            None,
            vec![],
            400,
            "invalid_id",
            "not a UUID",
        ),
        (
            "GET",
            svc.url("/processing/00000000-0000-4000-8000-000000000000"),
            None,
            vec![],
            404,
            "not_found",
            "no processing record",
        ),
        (
            "GET",
            svc.url("/nope"),
            None,
            vec![],
            404,
            "not_found",
            "no endpoint GET /nope",
        ),
        (
            "DELETE",
            svc.url("/analytics"),
            None,
            vec![],
            405,
            "method_not_allowed",
            "DELETE is not allowed",
        ),
        (
            "POST",
            svc.url("/analytics/recalculate"),
            None,
            vec![],
            401,
            "unauthorized",
            "bearer token",
        ),
        (
            "POST",
            svc.url("/correlations/test"),
            Some("application/json"),
            br#"{"evnts":[]}"#.to_vec(),
            422,
            "invalid_event",
            "unknown field `evnts`",
        ),
        (
            "POST",
            svc.url("/correlations/test"),
            Some("application/json"),
            br#"{"events":[{"type":"meteor"}]}"#.to_vec(),
            422,
            "invalid_event",
            "unknown type 'meteor'",
        ),
        (
            "GET",
            svc.url("/automated-responses?limit=0"),
            None,
            vec![],
            400,
            "invalid_query",
            "limit must be",
        ),
        (
            "GET",
            svc.url("/automated-responses?since=soon"),
            None,
            vec![],
            400,
            "invalid_query",
            "since",
        ),
    ];
    assert!(cases.len() >= 20);
    for (method, url, ct, body, status, code, fragment) in cases {
        let mut req = client.request(method.parse().unwrap(), url.as_str());
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let r = req.body(body).send().await.unwrap();
        let got = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        let msg = format!("{} {}", v["message"].as_str().unwrap_or(""), v["details"]);
        assert_eq!(got, status, "{method} {url}: {v}");
        assert_eq!(v["error"], code, "{method} {url}: {v}");
        assert!(
            msg.contains(fragment),
            "{method} {url}: expected '{fragment}' in: {v}"
        );
        assert_ne!(got, 500);
    }
    // A wrong token is refused like a missing one.
    let r = client
        .post(svc.url("/analytics/recalculate"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Partial acceptance: the good lines are stored, the bad ones named.
    let body =
        format!("{ok_event}\n{{\"event_type\":\"llm_request\",\"data\":{{}}}}\n\n{ok_event}\n");
    let r = client
        .post(&events)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "partial", "{v}");
    assert_eq!(
        (v["accepted"].as_u64(), v["rejected"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(v["errors"][0]["index"], 1);
    // Still healthy, still working.
    let (_, h) = get(&svc.url("/health")).await;
    assert_eq!(h["status"], "healthy", "{h}");
    let (s, _) = post(&process, &serde_json::from_str(ok_event).unwrap()).await;
    assert_eq!(s, 200);
    assert!(!svc.log_text().contains("panicked"));
}

/// Sending an event twice (same event_id) stores it once and answers with
/// the same processing id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_events_are_stored_once() {
    let (url, _dir) = sqlite_url();
    let svc = Service::start(&url, &[]).await;
    let e = json!({"event_type": "llm_request", "event_id": "7d444840-9dc0-11d1-b245-5ffdce74fad2", "data": {"model": "m", "latency_ms": 5}});
    let (_, a) = post(&svc.url("/process"), &e).await;
    let (_, b) = post(&svc.url("/process"), &e).await;
    assert_eq!(a["processing_id"], b["processing_id"]);
    assert_eq!(
        (a["duplicate"].as_bool(), b["duplicate"].as_bool()),
        (Some(false), Some(true))
    );
    let (_, an) = get(&svc.url("/analytics")).await;
    assert_eq!(
        an["event_count"], 1,
        "a duplicate must not be counted twice"
    );
    drop(svc);
    assert_eq!(stored_ids(&url).await.len(), 1);
}

/// SIGTERM while events flow: the service drains and exits 0; every
/// acknowledged event is stored exactly once; after a restart the analytics
/// window continues where it was.
async fn sigterm_mid_stream(db_url: &str) {
    let mut svc = Service::start(db_url, &[("STREAM_PROCESSING_BATCH_SIZE", "50")]).await;
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for t in 0..4 {
        let (acked, stop, url) = (
            acked.clone(),
            stop.clone(),
            svc.url("/events?receipts=true"),
        );
        senders.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut rng = hxp_events::cli::loadgen::Rng(1 + t);
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body: String = (0..40)
                    .map(|_| {
                        hxp_events::cli::loadgen::event(&mut rng, Duration::from_secs(1)) + "\n"
                    })
                    .collect();
                match client
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap();
                        let mut set = acked.lock().unwrap();
                        for rc in v["receipts"].as_array().unwrap() {
                            set.insert(rc["event_id"].as_str().unwrap().to_string());
                        }
                        n += 1;
                    }
                    // Refused (shutting down) or connection closed: stop.
                    _ => break,
                }
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = tokio::task::spawn_blocking(move || {
        let s = svc.terminate();
        (s, svc)
    })
    .await
    .unwrap();
    let (status, svc) = status;
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        svc.log_text()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 200,
        "only {} events acknowledged before SIGTERM",
        acked.len()
    );
    assert!(svc.log_text().contains("stopped cleanly"));
    drop(svc);

    let stored = stored_ids(db_url).await;
    assert!(
        stored.iter().all(|(_, n)| *n == 1),
        "an event is stored twice"
    );
    let stored: HashSet<String> = stored
        .iter()
        .map(|(id, _)| uuid::Uuid::from_u128(*id).to_string())
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events are not stored, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );

    // Restart: the window holds everything stored so far, then continues.
    let svc = Service::start(db_url, &[]).await;
    let (_, a) = get(&svc.url("/analytics")).await;
    assert_eq!(
        a["event_count"].as_u64().unwrap() as usize,
        stored.len(),
        "{a}"
    );
    let (_, st) = get(&svc.url("/analytics/status")).await;
    assert_eq!(st["status"], "running");
    for e in scenario() {
        post(&svc.url("/process"), &e).await;
    }
    let (_, a) = get(&svc.url("/analytics")).await;
    assert_eq!(
        a["event_count"].as_u64().unwrap() as usize,
        stored.len() + 9
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_sqlite() {
    let (url, _dir) = sqlite_url();
    sigterm_mid_stream(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_postgres() {
    sigterm_mid_stream(&postgres_url().await).await;
}

/// The database stalls: intake pushes back with 503 + Retry-After instead of
/// growing, /health says why, and once the database is back everything that
/// was acknowledged is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_database_pushes_back_and_loses_nothing() {
    use sqlx::Executor;
    let db = postgres_url().await;
    let svc = Service::start(
        &db,
        &[
            ("STREAM_PROCESSING_QUEUE_CAPACITY", "300"),
            ("STREAM_PROCESSING_BATCH_SIZE", "50"),
        ],
    )
    .await;
    // Hold a lock on the events table from another session.
    let locker = sqlx::AnyPool::connect(&db).await.unwrap();
    let mut conn = locker.acquire().await.unwrap();
    conn.execute("BEGIN").await.unwrap();
    conn.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut pending = Vec::new();
    let mut busy = None;
    for i in 0..20 {
        let body: String = (0..50)
            .map(|_| r#"{"event_type":"llm_request","data":{"model":"m"}}"#.to_string() + "\n")
            .collect();
        let req = client
            .post(svc.url("/events?receipts=true"))
            .header("content-type", "application/x-ndjson")
            .body(body);
        let handle = tokio::spawn(req.send());
        tokio::time::sleep(Duration::from_millis(100)).await;
        if handle.is_finished() {
            let r = handle.await.unwrap().unwrap();
            if r.status() == 503 {
                assert_eq!(r.headers()["retry-after"], "1");
                busy = Some((i, r.json::<Value>().await.unwrap()));
                break;
            }
            panic!(
                "request {i} finished while the database is locked: {}",
                r.status()
            );
        }
        pending.push(handle);
    }
    let (after, body) = busy.expect("no 503 while the database was stalled");
    let (_, h) = get(&svc.url("/health")).await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["checks"]["queue"], "full");
    assert_eq!(
        after, 6,
        "300 events of capacity = 6 requests of 50 held, the 7th refused"
    );
    assert_eq!(body["error"], "busy");
    // Release the database: every held request completes and is stored.
    conn.execute("ROLLBACK").await.unwrap();
    drop(conn);
    let mut acked = 0;
    for h in pending {
        let r = h.await.unwrap().unwrap();
        assert_eq!(r.status(), 200);
        acked += r.json::<Value>().await.unwrap()["accepted"]
            .as_u64()
            .unwrap();
    }
    assert_eq!(acked, 300);
    locker.close().await;
    let (_, h) = get(&svc.url("/health")).await;
    assert_eq!(h["status"], "healthy", "{h}");
    drop(svc);
    assert_eq!(stored_ids(&db).await.len(), 300);
}

/// 10,000 generated hostile requests against the real binary (deep
/// nesting, huge numbers, bad UTF-8, wrong types, truncated bodies, bad
/// query strings, ids and paths, wrong methods and content types): no 5xx
/// but 503, no dropped connection, every error answer is JSON with an
/// error code, and the service is healthy and takes events afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_hostile_requests_get_json_errors_and_stop_nothing() {
    use futures::StreamExt;
    const N: usize = 10_000;
    const SEED: u64 = 0x005e_ed0f_bad1;
    let (db, _dir) = sqlite_url();
    let svc = Service::start(&db, &[]).await;
    let client = reqwest::Client::new();
    let mut rng = hxp_events::cli::loadgen::Rng(SEED);
    let requests: Vec<hostile::Hostile> = (0..N).map(|_| hostile::request(&mut rng)).collect();
    let answers = futures::stream::iter(requests.iter().enumerate())
        .map(|(i, h)| {
            let client = &client;
            let url = svc.url(&h.path);
            async move {
                let method = reqwest::Method::from_bytes(h.method.as_bytes()).unwrap();
                let mut req = client.request(method, &url).body(h.body.clone());
                if let Some(ct) = h.content_type {
                    req = req.header("content-type", ct);
                }
                let r = req.send().await.unwrap_or_else(|e| {
                    panic!(
                        "case {i} (seed {SEED:#x}) {} {} ({:?}, {} bytes): connection failed: {e:?}",
                        h.method,
                        h.path,
                        h.content_type,
                        h.body.len()
                    )
                });
                let status = r.status().as_u16();
                let ct = r
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let body = r.bytes().await.unwrap_or_else(|e| {
                    panic!("case {i} {} {}: answer cut off: {e}", h.method, h.path)
                });
                (i, status, ct, body)
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for (i, status, ct, body) in answers {
        let h = &requests[i];
        let what = || {
            format!(
                "case {i} (seed {SEED:#x}): {} {} -> {status}",
                h.method, h.path
            )
        };
        *by_status.entry(status).or_default() += 1;
        assert!(
            status < 500 || status == 503,
            "{}: {}",
            what(),
            String::from_utf8_lossy(&body)
        );
        if status >= 400 {
            assert!(
                ct.starts_with("application/json"),
                "{}: content-type {ct:?}",
                what()
            );
            let v: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", what()));
            assert_eq!(v["status"], "error", "{}: {v}", what());
            assert!(
                v["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{}: {v}",
                what()
            );
        }
    }
    eprintln!("answers by status: {by_status:?}");
    let errors: usize = by_status.range(400..).map(|(_, n)| n).sum();
    assert!(
        errors > N / 2,
        "most hostile requests are refused: {by_status:?}"
    );
    let (status, health) = get(&svc.url("/health")).await;
    assert_eq!(
        (status, health["status"].as_str()),
        (200, Some("healthy")),
        "{health:#}"
    );
    let ok = json!({"event_type": "llm_request", "data": {"model": "m", "latency_ms": 5}});
    assert_eq!(post(&svc.url("/process"), &ok).await.0, 200);
}

/// Crash loop: 100 times, start on one SQLite file, load it over HTTP, kill
/// -9 mid-load. Every acknowledged event is stored once; the write-ahead
/// log stays under a fixed bound (it is folded in at each start, and the
/// writer checkpoints it by size); each start replays at most what the run
/// before it stored (plugins are checkpointed right after a replay), and
/// the last start is as quick as the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_kill_9_restarts_lose_nothing_and_recovery_stays_bounded() {
    const CYCLES: usize = 100;
    /// The writer's checkpoint threshold, plus what one group commit adds.
    const WAL_BOUND: u64 = hxp_events::store::WAL_LIMIT_BYTES + (16 << 20);
    let (db, dir) = sqlite_url();
    let wal = dir.join("events.db-wal");
    let acked = Arc::new(Mutex::new(Vec::<u128>::new()));
    let (mut startups, mut replays, mut sent_before) = (Vec::new(), Vec::new(), Vec::new());
    let mut max_wal = 0u64;
    for cycle in 0..CYCLES {
        let t = Instant::now();
        let svc = Service::start(&db, &[]).await;
        startups.push(t.elapsed());
        let (_, p) = get(&svc.url("/processing/pipeline")).await;
        replays.push(p["events"]["replayed_at_start"].as_u64().unwrap());
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let loaders: Vec<_> = (0..2)
            .map(|_| {
                tokio::spawn(load_until_killed(
                    svc.url("/events"),
                    acked.clone(),
                    sent.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300 + 7 * (cycle as u64 % 10))).await;
        drop(svc); // SIGKILL, mid-load
        for l in loaders {
            let _ = l.await;
        }
        sent_before.push(sent.load(std::sync::atomic::Ordering::Relaxed));
        max_wal = max_wal.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    let svc = Service::start(&db, &[]).await;
    let stored = stored_ids(&db).await;
    assert!(stored.iter().all(|(_, n)| *n == 1), "an event stored twice");
    let stored: HashSet<u128> = stored.into_iter().map(|(id, _)| id).collect();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 10 * CYCLES,
        "the runs were loaded: {} acked",
        acked.len()
    );
    let lost = acked.iter().filter(|id| !stored.contains(id)).count();
    assert_eq!(
        lost,
        0,
        "acknowledged events lost ({} acknowledged)",
        acked.len()
    );
    assert!(max_wal < WAL_BOUND, "the WAL reached {max_wal} bytes");
    for (i, r) in replays.iter().enumerate().skip(1) {
        assert!(
            *r <= sent_before[i - 1],
            "start {i} replayed {r}, more than the run before it sent ({})",
            sent_before[i - 1]
        );
    }
    let (first, last) = (startups[0], startups[CYCLES - 1]);
    eprintln!(
        "crash loop: {} acknowledged, WAL max {max_wal} B, start 1 {first:?}, start {CYCLES} {last:?}, replays {:?}",
        acked.len(),
        &replays[replays.len() - 5..]
    );
    assert!(
        last <= Duration::from_secs(2),
        "start {CYCLES} took {last:?} (start 1: {first:?})"
    );
    drop(svc);
}

/// POST bulks of 50 new events until the service dies; the ids of every
/// bulk answered 200 go to `acked`.
async fn load_until_killed(
    url: String,
    acked: Arc<Mutex<Vec<u128>>>,
    sent: Arc<std::sync::atomic::AtomicU64>,
) {
    let client = reqwest::Client::new();
    loop {
        let ids: Vec<u128> = (0..50).map(|_| uuid::Uuid::new_v4().as_u128()).collect();
        let body: String = ids
            .iter()
            .map(|id| {
                let e = json!({"event_type": "llm_request", "event_id": uuid::Uuid::from_u128(*id).to_string(),
                    "data": {"model": "m", "latency_ms": 10, "success": true}});
                format!("{e}\n")
            })
            .collect();
        sent.fetch_add(50, std::sync::atomic::Ordering::Relaxed);
        let r = client
            .post(&url)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 200 => acked.lock().unwrap().extend(ids),
            Ok(_) => {}
            Err(_) => return, // killed
        }
    }
}

/// Retention: with `DATABASE_RETENTION_SECS=3`, stored events and their
/// batches are deleted in the background once older than that; what is
/// stored later is kept until its own time comes.
async fn retention(db_url: &str) {
    let svc = Service::start(db_url, &[("DATABASE_RETENTION_SECS", "3")]).await;
    let batch = |n: usize| -> Value {
        (0..n)
            .map(|i| json!({"event_type": "llm_request", "data": {"model": "m", "latency_ms": i % 500}}))
            .collect()
    };
    let (status, body) = post(&svc.url("/events"), &batch(1000)).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(1000)),
        "{body}"
    );
    let count = |table: &'static str| async move {
        use sqlx::Row;
        db_rows(db_url, &format!("SELECT COUNT(*) FROM {table}")).await[0].get::<i64, _>(0)
    };
    assert_eq!(count("events").await, 1000);
    let t = Instant::now();
    while count("events").await > 0 || count("batches").await > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{} events, {} batches still stored\nlog:\n{}",
            count("events").await,
            count("batches").await,
            svc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Newly stored events stay until they are 3 s old.
    let (status, _) = post(&svc.url("/events"), &batch(10)).await;
    assert_eq!(status, 200);
    assert_eq!(count("events").await, 10);
    let deleted: f64 = svc
        .metrics_text()
        .await
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"database_retention_deleted_total{table="events"} "#)?
                .parse()
                .ok()
        })
        .expect("database_retention_deleted_total on /metrics");
    assert_eq!(deleted, 1000.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_rows_sqlite() {
    let (url, _dir) = sqlite_url();
    retention(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_rows_postgres() {
    retention(&postgres_url().await).await;
}

/// Several instances share one PostgreSQL database: two started at once on
/// an empty one both come up (migrations run under an advisory lock; the
/// second finds them done), and both take events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_started_at_once_on_an_empty_database_both_come_up() {
    let db = postgres_url().await;
    let (a, b) = tokio::join!(Service::start(&db, &[]), Service::start(&db, &[]));
    for svc in [&a, &b] {
        let (status, h) = get(&svc.url("/health")).await;
        assert_eq!(
            (status, h["status"].as_str()),
            (200, Some("healthy")),
            "{h}"
        );
        let e = json!({"event_type": "llm_request", "data": {"model": "m", "latency_ms": 5}});
        let (status, body) = post(&svc.url("/process"), &e).await;
        assert_eq!(status, 200, "{body}");
    }
    use sqlx::Row;
    // Each migration applied once: as many rows as versions.
    let row = &db_rows(&db, "SELECT COUNT(*), MAX(version) FROM schema_migrations").await[0];
    let (rows, newest): (i64, i64) = (row.get(0), row.get(1));
    assert!(
        newest >= 5,
        "migration 5 (deployment actor) applied: {newest}"
    );
    assert_eq!(rows, newest, "each migration applied once");
    assert_eq!(stored_ids(&db).await.len(), 2);
}
