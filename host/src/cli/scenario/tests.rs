//! The scenario: the same for a seed and start, incidents inside the span
//! and apart, a background without incident-sized anomalies, and each
//! incident visible where its label says.

use super::events::{BACKENDS, MODELS, SERVICES, backend};
use super::plan::{MIN_GAP_MS, WARMUP_MS};
use super::*;
use crate::cli::labels::{Incident, KeyField, Kind};
use serde_json::Value;

const TWO_HOURS: i64 = 7_200_000;
/// 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600_000;

/// The fields the checks read, from an event as sent.
struct Ev {
    t: i64,
    kind: String,
    model: String,
    service: String,
    ok: bool,
    latency: f64,
    satisfaction: f64,
    health: String,
}

fn parsed(v: &Value) -> Ev {
    let d = &v["data"];
    let text = |x: &Value| x.as_str().unwrap_or("").to_string();
    let ts = v["timestamp"].as_str().unwrap();
    Ev {
        t: chrono::DateTime::parse_from_rfc3339(ts)
            .unwrap()
            .timestamp_millis(),
        kind: text(&v["event_type"]),
        model: text(&d["model"]),
        service: text(&d["service"]),
        ok: d["success"].as_bool().unwrap_or(true) && v["event_type"] != "error_event",
        latency: d["latency_ms"].as_f64().unwrap_or(0.0),
        satisfaction: d["satisfaction"].as_f64().unwrap_or(0.0),
        health: text(&d["health"]),
    }
}

fn stream(seed: u64) -> (Scenario, Vec<Ev>) {
    let s = Scenario::new(seed, START, TWO_HOURS).unwrap();
    let evs = s.events().map(|v| parsed(&v)).collect();
    (s, evs)
}

#[test]
fn a_seed_and_start_give_the_same_stream() {
    let a = Scenario::new(7, START, 900_000).unwrap();
    let b = Scenario::new(7, START, 900_000).unwrap();
    assert_eq!(a.labels, b.labels);
    assert!(a.events().eq(b.events()));
    let other = Scenario::new(8, START, 900_000).unwrap();
    assert!(!a.events().eq(other.events()));
    // Another start: the same incidents shifted, new event ids.
    let later = Scenario::new(7, START + 60_000, 900_000).unwrap();
    let shift = |i: &Incident| (i.kind, i.key.clone(), i.start_ms + 60_000);
    let shifted: Vec<_> = a.labels.incidents.iter().map(shift).collect();
    let got: Vec<_> = later
        .labels
        .incidents
        .iter()
        .map(|i| (i.kind, i.key.clone(), i.start_ms))
        .collect();
    assert_eq!(shifted, got);
    let id = |s: &Scenario| s.events().next().unwrap()["event_id"].clone();
    assert_ne!(id(&a), id(&later));
}

#[test]
fn events_are_in_time_order_at_about_twenty_a_second() {
    let (s, evs) = stream(42);
    assert!(evs.windows(2).all(|w| w[0].t <= w[1].t));
    assert!(
        evs.iter()
            .all(|e| s.labels.start_ms <= e.t && e.t <= s.labels.end_ms)
    );
    let per_sec = evs.len() as f64 / 7200.0;
    assert!((20.0..21.0).contains(&per_sec), "{per_sec} events/s");
}

#[test]
fn incidents_lie_inside_the_span_and_apart() {
    for seed in 1..=30 {
        let s = Scenario::new(seed, START, TWO_HOURS).unwrap();
        let inc = &s.labels.incidents;
        assert!(inc.len() >= 12, "seed {seed}: {} incidents", inc.len());
        for k in Kind::ALL {
            assert!(
                inc.iter().filter(|i| i.kind == k).count() >= 3,
                "seed {seed}: {k:?}"
            );
        }
        assert!(inc[0].start_ms >= START + WARMUP_MS);
        for w in inc.windows(2) {
            assert!(
                w[1].start_ms - w[0].end_ms >= MIN_GAP_MS,
                "seed {seed}: {w:?}"
            );
        }
        let last = inc.last().unwrap();
        assert!(last.end_ms + MIN_GAP_MS <= s.labels.end_ms);
        for i in inc {
            let len_s = (i.end_ms - i.start_ms) / 1000;
            let (lo, hi, names): (i64, i64, &[&str]) = match i.kind {
                Kind::ModelDegradation => (180, 300, &MODELS),
                Kind::ServiceRestart => (60, 180, &SERVICES),
                Kind::ErrorLeak => (600, 720, &BACKENDS),
                Kind::Flapping => (180, 300, &SERVICES),
            };
            assert!((lo..=hi).contains(&len_s), "{i:?}");
            assert!(names.contains(&i.key.as_str()), "{i:?}");
            let field = if i.kind == Kind::ModelDegradation {
                KeyField::Model
            } else {
                KeyField::Service
            };
            assert_eq!(i.key_field, field);
        }
    }
}

#[test]
fn a_short_stream_holds_the_incidents_that_fit() {
    let s = Scenario::new(3, START, 1_200_000).unwrap();
    let inc = &s.labels.incidents;
    assert!(!inc.is_empty() && inc.len() < 4, "{inc:?}");
    assert!(inc.last().unwrap().end_ms + MIN_GAP_MS <= s.labels.end_ms);
    assert!(
        Scenario::new(3, START, 60_000)
            .unwrap()
            .labels
            .incidents
            .is_empty()
    );
}

/// Minutes that overlap no incident: (minute start, its events).
fn quiet_minutes<'a>(s: &Scenario, evs: &'a [Ev]) -> Vec<(i64, Vec<&'a Ev>)> {
    let mut out = Vec::new();
    let mut m = s.labels.start_ms;
    while m + 60_000 <= s.labels.end_ms {
        let busy = s
            .labels
            .incidents
            .iter()
            .any(|i| i.start_ms < m + 60_000 && m < i.end_ms);
        if !busy {
            out.push((
                m,
                evs.iter()
                    .filter(|e| m <= e.t && e.t < m + 60_000)
                    .collect(),
            ));
        }
        m += 60_000;
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn the_background_has_no_incident_sized_anomaly() {
    for seed in [1, 42, 1234] {
        let (s, evs) = stream(seed);
        let minutes = quiet_minutes(&s, &evs);
        assert!(
            minutes.len() > 30,
            "seed {seed}: {} quiet minutes",
            minutes.len()
        );
        for (m, es) in &minutes {
            for model in MODELS {
                let reqs: Vec<_> = es
                    .iter()
                    .filter(|e| e.kind == "llm_request" && e.model == model)
                    .collect();
                let failed = reqs.iter().filter(|e| !e.ok).count();
                assert!(
                    reqs.len() >= 100 && failed * 10 <= reqs.len(),
                    "seed {seed} {m} {model}: {failed}/{}",
                    reqs.len()
                );
                let med = median(reqs.iter().map(|e| e.latency).collect());
                let base = median(
                    evs.iter()
                        .filter(|e| e.model == model && e.kind == "llm_request")
                        .map(|e| e.latency)
                        .collect(),
                );
                assert!(med < 1.3 * base, "seed {seed} {m} {model}: median {med} ms");
                let sat: Vec<f64> = es
                    .iter()
                    .filter(|e| e.kind == "user_feedback" && e.model == model)
                    .map(|e| e.satisfaction)
                    .collect();
                let low = sat.iter().filter(|&&x| x < 7.0).count();
                assert!(low <= 4, "seed {seed} {m} {model}: {low} low ratings");
            }
            for service in SERVICES {
                let unhealthy = es
                    .iter()
                    .filter(|e| {
                        e.kind == "system_metric" && e.service == service && e.health != "healthy"
                    })
                    .count();
                assert!(
                    unhealthy <= 1,
                    "seed {seed} {m} {service}: {unhealthy} unhealthy readings"
                );
                let errors = es.iter().filter(|e| e.service == service && !e.ok).count();
                assert!(errors <= 15, "seed {seed} {m} {service}: {errors} errors");
            }
        }
    }
}

/// The events of `i`'s span whose time is in its last `tail` fraction.
fn during<'a>(evs: &'a [Ev], i: &Incident, tail: f64) -> impl Iterator<Item = &'a Ev> {
    let from = i.end_ms - ((i.end_ms - i.start_ms) as f64 * tail) as i64;
    evs.iter().filter(move |e| from <= e.t && e.t < i.end_ms)
}

#[test]
fn each_incident_shows_where_its_label_says() {
    let (s, evs) = stream(42);
    for i in &s.labels.incidents {
        let key = i.key.as_str();
        match i.kind {
            Kind::ModelDegradation => {
                let reqs: Vec<_> = during(&evs, i, 1.0)
                    .filter(|e| e.kind == "llm_request" && e.model == key)
                    .collect();
                assert!(
                    median(reqs.iter().map(|e| e.latency).collect()) > 2000.0,
                    "{i:?}"
                );
                let failed = reqs.iter().filter(|e| !e.ok).count() as f64;
                assert!(failed / reqs.len() as f64 > 0.05, "{i:?}");
                let sat: Vec<f64> = during(&evs, i, 1.0)
                    .filter(|e| e.kind == "user_feedback" && e.model == key)
                    .map(|e| e.satisfaction)
                    .collect();
                assert!(sat.iter().sum::<f64>() / (sat.len() as f64) < 6.0, "{i:?}");
            }
            Kind::ServiceRestart => {
                let metrics: Vec<_> = during(&evs, i, 1.0)
                    .filter(|e| e.kind == "system_metric" && e.service == key)
                    .collect();
                assert!(
                    !metrics.is_empty() && metrics.iter().all(|e| e.health == "failed"),
                    "{i:?}"
                );
                let errors = during(&evs, i, 1.0)
                    .filter(|e| e.kind == "error_event" && e.service == key)
                    .count() as f64;
                assert!(
                    errors / ((i.end_ms - i.start_ms) as f64 / 1000.0) > 0.5,
                    "{i:?}"
                );
            }
            Kind::ErrorLeak => {
                let reqs: Vec<_> = during(&evs, i, 0.3)
                    .filter(|e| e.kind == "llm_request" && backend(&e.model) == key)
                    .collect();
                let rate = reqs.iter().filter(|e| !e.ok).count() as f64 / reqs.len() as f64;
                assert!((0.04..0.10).contains(&rate), "{i:?}: {rate}");
            }
            Kind::Flapping => {
                let health: Vec<_> = during(&evs, i, 1.0)
                    .filter(|e| e.kind == "system_metric" && e.service == key)
                    .map(|e| e.health.as_str())
                    .collect();
                let flips = health.windows(2).filter(|w| w[0] != w[1]).count();
                assert!(
                    flips >= 5 && health.iter().all(|h| *h != "failed"),
                    "{i:?}: {flips} flips"
                );
            }
        }
    }
}

#[test]
fn the_default_start_ends_the_stream_near_now() {
    let now = START + 12_345;
    let start = default_start(now, TWO_HOURS);
    assert_eq!(start % 60_000, 0);
    assert!(now - TWO_HOURS - 60_000 < start && start <= now - TWO_HOURS);
}
