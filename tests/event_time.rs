//! Event time against the real service (issue 14): windows follow the
//! events' own timestamps, so a backlog is not a traffic spike; arrival
//! order does not change the analytics or the findings; no automated
//! action runs on stale data; a recalculation and a restart give back the
//! real-time window exactly.

mod common;

use chrono::{DateTime, SecondsFormat, Utc};
use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// POST /events with `events` as a JSON array; asserts every one stored.
async fn send(svc: &Service, events: &[Value]) {
    let (status, body) = post(&svc.url("/events"), &json!(events)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], events.len(), "{body}");
}

/// A metric without labels, from GET /metrics.
async fn gauge(svc: &Service, name: &str) -> f64 {
    let text = svc.metrics_text().await;
    let line = text
        .lines()
        .find(|l| l.split(' ').next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// The analytics answer without what depends on the wall clock.
async fn analytics(svc: &Service) -> Value {
    let (status, mut body) = get(&svc.url("/analytics")).await;
    assert_eq!(status, 200, "{body}");
    body.as_object_mut().unwrap().remove("event_time");
    body
}

/// The active findings, without the sequence numbers of their evidence
/// (they follow arrival) and the alert flag (it marks the batch that
/// crossed).
async fn findings(svc: &Service) -> Vec<Value> {
    let (status, body) = get(&svc.url("/correlations")).await;
    assert_eq!(status, 200, "{body}");
    let mut f: Vec<Value> = body["active_findings"].as_array().unwrap().clone();
    for x in &mut f {
        let o = x.as_object_mut().unwrap();
        o.remove("evidence");
        o.remove("alert");
    }
    f.sort_by_key(|x| x.to_string());
    f
}

/// The real-time window recomputed from the stored events: every field's
/// absolute difference.
async fn recalculation_differences(svc: &Service) -> Vec<(String, f64)> {
    svc.recalculate().await["difference"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v["absolute"].as_f64()?)))
        .collect()
}

/// 1,500 `llm_request` events over the last 20 minutes, one every 0.8 s
/// (1.25 per second), sent at once to a fresh service: the case.
fn twenty_minutes(now: i64) -> Vec<(i64, Value)> {
    (0..1500i64)
        .map(|i| {
            let t = now - 1_200_000 + i * 800;
            let model = ["m-a", "m-b"][i as usize % 2];
            let e = json!({
                "event_id": uuid::Uuid::from_u128(0x14_0000 + i as u128).to_string(),
                "event_type": "llm_request",
                "timestamp": rfc3339(t),
                "data": {"model": model, "latency_ms": 100 + i % 300,
                         "success": i % 25 != 0, "cost_usd": 0.002},
            });
            (t, e)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_not_a_traffic_spike_and_replays_to_the_same_window() {
    let (db, _dir) = sqlite_url();
    let mut svc = Service::start(&db, &[]).await;
    let now = chrono::Utc::now().timestamp_millis();
    let events = twenty_minutes(now);
    let bodies: Vec<Value> = events.iter().map(|(_, e)| e.clone()).collect();
    send(&svc, &bodies).await;

    // By hand: the watermark is the newest timestamp (no lateness by
    // default); the window is the 300 whole seconds ending at its second.
    let newest_sec = events
        .iter()
        .map(|(t, _)| t.div_euclid(1000))
        .max()
        .unwrap();
    let in_window = events
        .iter()
        .filter(|(t, _)| t.div_euclid(1000) > newest_sec - 300)
        .count() as u64;
    assert!((374..=376).contains(&in_window), "{in_window}");
    let a = analytics(&svc).await;
    assert_eq!(a["event_count"], in_window, "{a}");
    assert_eq!(a["window_seconds"], 300);
    assert_eq!(a["covered_seconds"], 300.0);
    let throughput = a["throughput"].as_f64().unwrap();
    assert_eq!(throughput, in_window as f64 / 300.0);
    assert!((throughput - 1.25).abs() < 0.01, "{throughput}");
    println!("1,500 events over 20 minutes: {in_window} in the window, {throughput} events/s");
    // No automated response: 1.25 events/s is nowhere near 1000.
    let (_, r) = get(&svc.url("/automated-responses?action=scale_models")).await;
    assert_eq!(r["responses"], json!([]), "{r}");
    // Where event time stands.
    let (_, h) = get(&svc.url("/health")).await;
    assert_eq!(h["event_time"]["time"], "event");
    assert_eq!(h["event_time"]["state"], "live", "{h}");
    assert_eq!(
        h["event_time"]["watermark"],
        rfc3339(events.last().unwrap().0)
    );
    assert_eq!(
        svc.metric("event_processing_late_events_total", &[]).await,
        0.0
    );

    // Batch analytics over the stored events: the same window.
    for (field, d) in recalculation_differences(&svc).await {
        assert_eq!(d, 0.0, "{field}");
    }
    // A restart replays to exactly the window it left.
    assert!(svc.terminate().success());
    let svc = Service::start(&db, &[]).await;
    assert_eq!(analytics(&svc).await, a);
}

/// 30 minutes of a realistic mix ending `end` ms: requests to three
/// models (one failing more from minute 20), feedback, health reports,
/// business events, and a burst of errors from one service at minute 25.
fn half_hour(end: i64) -> Vec<(i64, Value)> {
    let start = end - 1_800_000;
    let mut out = Vec::new();
    let id = |n: u128| uuid::Uuid::from_u128(0x30_0000_0000 + n).to_string();
    for i in 0..3600i64 {
        let t = start + i * 500;
        let model = ["gpt-small", "llama-3-8b", "mixtral-8x7b"][(i % 3) as usize];
        let failing = model == "mixtral-8x7b" && i > 2400 && i % 4 != 3;
        let service = ["gw", "vllm"][(i / 10 % 2) as usize];
        let health = ["healthy", "degraded", "healthy", "failed"][(i / 20 % 4) as usize];
        let data = match i % 10 {
            0..=5 => json!({"model": model, "latency_ms": 80 + (i * 37) % 400,
                           "success": !failing && i % 41 != 0, "cost_usd": 0.001 * (1 + i % 4) as f64}),
            6 | 7 => {
                json!({"satisfaction": (i % 11) as f64 * 0.5 + 4.0, "user_id": format!("u{}", i % 50)})
            }
            8 => json!({"service": service, "health": health}),
            _ => json!({"name": "renewal", "value": (i % 7) as f64 * 12.5, "currency": "USD"}),
        };
        let event_type = match i % 10 {
            0..=5 => "llm_request",
            6 | 7 => "user_feedback",
            8 => "system_metric",
            _ => "business_event",
        };
        out.push((
            t,
            json!({"event_id": id(i as u128), "event_type": event_type,
                            "timestamp": rfc3339(t), "data": data}),
        ));
    }
    for j in 0..8i64 {
        let t = start + 1_500_000 + j * 600;
        out.push((
            t,
            json!({"event_id": id(10_000 + j as u128), "event_type": "error_event",
                            "timestamp": rfc3339(t),
                            "data": {"service": "db", "error_type": "timeout"}}),
        ));
    }
    out.sort_by_key(|(t, _)| *t);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_backlog_and_shuffled_give_the_same_windows_and_findings() {
    // Shuffled within 20 s: a lateness of 25 s makes the order irrelevant.
    let env = [("STREAM_PROCESSING_ALLOWED_LATENESS_SECS", "25")];
    let end = chrono::Utc::now().timestamp_millis() - 60_000;
    let events = half_hour(end);
    let bodies = |v: &[(i64, Value)]| v.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>();

    // (a) paced: each second's events in their own request, in order, as a
    // live producer sends them (the clock compressed).
    let (db, _d1) = sqlite_url();
    let paced = Service::start(&db, &env).await;
    for second in events.chunk_by(|a, b| a.0 / 1000 == b.0 / 1000) {
        send(&paced, &bodies(second)).await;
    }
    // (b) one backlog.
    let (db, _d2) = sqlite_url();
    let backlog = Service::start(&db, &env).await;
    send(&backlog, &bodies(&events)).await;
    // (c) shuffled: each event moved by up to 20 s, sent 97 at a time.
    let mut shuffled = events.clone();
    let mut key = |i: usize| shuffled[i].0 + ((i as i64 * 7919) % 20_000);
    let keys: Vec<i64> = (0..events.len()).map(&mut key).collect();
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|&i| keys[i]);
    shuffled = order.into_iter().map(|i| events[i].clone()).collect();
    assert_ne!(shuffled, events);
    let (db, _d3) = sqlite_url();
    let late = Service::start(&db, &env).await;
    for chunk in shuffled.chunks(97) {
        send(&late, &bodies(chunk)).await;
    }

    let a = analytics(&paced).await;
    assert_eq!(a["timestamp"], rfc3339(events.last().unwrap().0 - 25_000));
    assert!(a["event_count"].as_u64().unwrap() > 500, "{a}");
    assert_eq!(analytics(&backlog).await, a);
    assert_eq!(analytics(&late).await, a);
    let f = findings(&paced).await;
    assert!(
        f.iter().any(|x| x["name"] == "model_divergence"),
        "mixtral diverges: {f:#?}"
    );
    assert_eq!(findings(&backlog).await, f);
    assert_eq!(findings(&late).await, f);
    // The error burst of minute 25 was alerted once in each run.
    for svc in [&paced, &backlog, &late] {
        let rows = db_rows(
            &svc.db_url,
            "SELECT COUNT(*) FROM correlation_alerts WHERE rule = 'error_burst' AND subject = 'db'",
        )
        .await;
        let n: i64 = sqlx::Row::get(&rows[0], 0);
        assert_eq!(n, 1);
        assert_eq!(
            svc.metric("event_processing_late_events_total", &[]).await,
            0.0
        );
        for (field, d) in recalculation_differences(svc).await {
            assert_eq!(d, 0.0, "{field}");
        }
    }
}

/// The status and outcome of every `send_notification` request, waiting
/// until `n` are decided.
async fn notifications(svc: &Service, n: usize) -> Vec<(String, Value)> {
    let t = Instant::now();
    loop {
        let (_, r) = get(&svc.url("/automated-responses?action=send_notification")).await;
        let rows = r["responses"].as_array().cloned().unwrap_or_default();
        if rows.len() >= n && rows.iter().all(|x| x["outcome"] != "pending") {
            return rows
                .iter()
                .map(|x| (x["outcome"].as_str().unwrap().to_string(), x.clone()))
                .collect();
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn errors_at(t: i64, n: usize, tag: u128) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({"event_id": uuid::Uuid::from_u128(0x5a1e_0000 + tag * 1000 + i as u128).to_string(),
                   "event_type": "error_event", "timestamp": rfc3339(t),
                   "data": {"service": "api", "error_type": "timeout"}})
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_automated_action_runs_on_stale_data() {
    let (db, _dir) = sqlite_url();
    let svc = Service::start(&db, &[]).await;
    let now = chrono::Utc::now().timestamp_millis();
    // Errors from 30 minutes ago: the window's error rate is 1.0, so the
    // shipped rule notify_admin asks, but the data is 30 minutes old.
    send(&svc, &errors_at(now - 1_800_000, 10, 1)).await;
    let rows = notifications(&svc, 1).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "stale", "{:?}", rows[0].1);
    let detail = rows[0].1["detail"].as_str().unwrap();
    assert!(detail.contains("max_staleness_secs"), "{detail}");
    let (_, h) = get(&svc.url("/health")).await;
    assert_eq!(h["event_time"]["state"], "catching_up", "{h}");
    assert!(h["event_time"]["lag_seconds"].as_f64().unwrap() > 1790.0);
    assert!(gauge(&svc, "event_processing_watermark_lag_seconds").await > 1790.0);
    // Current errors: asked again (30 minutes of event time passed) and
    // acted on (the notify webhook's outcome, whatever it is, is not stale).
    send(&svc, &errors_at(now, 10, 2)).await;
    let rows = notifications(&svc, 2).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().any(|(o, _)| o != "stale"), "{rows:?}");
    let (_, h) = get(&svc.url("/health")).await;
    assert_eq!(h["event_time"]["state"], "live", "{h}");
}
