//! The rule kinds end to end through `Correlation::process`, with
//! expectations worked out by hand in the comments.

use super::*;
use hxp_plugin_sdk::{EventKind, Health};

fn cfg(window: u32, rules: serde_json::Value) -> Correlation {
    let json = serde_json::json!({
        "window_size": window,
        "pattern_detection_enabled": false,
        "correlation_rules": rules,
        "flap_damping": {"max_toggles": 0},
    });
    let mut c = Correlation::new(Config::default()).unwrap();
    c.configure(&json.to_string()).unwrap();
    c
}

fn req(seq: u64, t_ms: i64, model: &str, ok: bool, latency: f64) -> Event {
    let mut e = Event::new(seq, EventKind::LlmRequest, t_ms);
    e.id = seq as u128;
    e.model = Some(model.into());
    e.success = Some(ok);
    e.latency_ms = Some(latency);
    e
}

fn health(seq: u64, t_ms: i64, service: &str, h: Health) -> Event {
    let mut e = Event::new(seq, EventKind::SystemMetric, t_ms);
    e.service = Some(service.into());
    e.health = Some(h);
    e
}

fn err(seq: u64, t_ms: i64, service: &str) -> Event {
    let mut e = Event::new(seq, EventKind::ErrorEvent, t_ms);
    e.service = Some(service.into());
    e.success = Some(false);
    e
}

fn batch(c: &mut Correlation, events: &[Event], now_ms: i64) -> CorrelationResult {
    c.process(&EventBatch::from_events(events), now_ms)
}

/// (name, subject, alert) of every finding.
fn seen(r: &CorrelationResult) -> Vec<(String, String, bool)> {
    r.findings
        .iter()
        .map(|f| (f.name.clone(), f.subject.clone(), f.alert))
        .collect()
}

fn f(name: &str, subject: &str, alert: bool) -> (String, String, bool) {
    (name.into(), subject.into(), alert)
}

#[test]
fn per_key_counts_thresholds_and_findings() {
    let mut c = cfg(
        60,
        serde_json::json!([
            {"name": "slow_model", "condition": "latency > 2000", "group_by": ["model"], "threshold": 3},
            {"name": "slow_any", "condition": "latency > 2000", "threshold": 3},
        ]),
    );
    // a: 2 slow, b: 1 slow, 1 fast: the global rule has 3 and fires; per
    // key nobody has 3.
    let r = batch(
        &mut c,
        &[
            req(1, 1000, "a", true, 2500.0),
            req(2, 1100, "b", true, 2600.0),
            req(3, 1200, "a", true, 3000.0),
            req(4, 1300, "b", true, 100.0),
        ],
        2000,
    );
    assert_eq!(seen(&r), [f("slow_any", "", true)]);
    // a's third: a fires alone, with a's events as evidence.
    let r = batch(&mut c, &[req(5, 2500, "a", true, 9000.0)], 3000);
    assert_eq!(
        seen(&r),
        [f("slow_any", "", false), f("slow_model", "a", true)]
    );
    let a = &r.findings[1];
    assert_eq!((a.occurrences, a.score), (3, 0.5));
    assert_eq!(a.evidence, [1, 3, 5]);
    assert_eq!(
        a.message,
        "3 occurrences of 'latency > 2000' for model 'a' in the last 60 s (threshold 3)"
    );
    // b reaches 3: b alerts, a stays without alerting again.
    let r = batch(
        &mut c,
        &[
            req(6, 3100, "b", true, 2100.0),
            req(7, 3200, "b", true, 2100.0),
        ],
        4000,
    );
    assert_eq!(
        seen(&r),
        [
            f("slow_any", "", false),
            f("slow_model", "a", false),
            f("slow_model", "b", true)
        ]
    );
    // At 62 s the window keeps seconds 3 to 62: a (seconds 1, 1, 2) is
    // gone and dropped, b keeps its 2 of second 3 (under 3), and the global
    // rule too; at 64 s nothing is tracked.
    let r = batch(&mut c, &[], 62_000);
    assert_eq!(seen(&r), []);
    assert_eq!(c.keyed[0].len(), 1);
    batch(&mut c, &[], 64_000);
    assert_eq!(
        c.keyed[0].len(),
        0,
        "keys with nothing in the window are dropped"
    );
}

#[test]
fn per_key_window_aggregates() {
    // Model a fails twice among b's ten successes: the global error rate
    // is 2/12, a's own is 1/1 then 2/2.
    let mut c = cfg(
        60,
        serde_json::json!([
            {"name": "model_errors", "condition": "error_rate > 0.5", "group_by": ["model"], "threshold": 2},
            {"name": "errors", "condition": "error_rate > 0.5", "threshold": 2},
        ]),
    );
    let mut events: Vec<Event> = (0..10).map(|i| req(i, 1000, "b", true, 10.0)).collect();
    events.push(req(10, 1500, "a", false, 10.0));
    events.push(req(11, 1600, "a", false, 10.0));
    // a's success: 2/3 > 0.5 is a third occurrence.
    events.push(req(12, 1700, "a", true, 10.0));
    let r = batch(&mut c, &events, 2000);
    assert_eq!(seen(&r), [f("model_errors", "a", true)]);
    assert_eq!(r.findings[0].occurrences, 3);
}

#[test]
fn at_max_keys_the_least_recently_seen_key_is_evicted_and_counted() {
    let mut c = cfg(
        60,
        serde_json::json!([
            {"name": "slow_user", "condition": "latency > 1", "group_by": ["user_id"], "threshold": 1, "max_keys": 2},
        ]),
    );
    let user = |seq: u64, t: i64, u: &str| {
        let mut e = req(seq, t, "m", true, 5.0);
        e.user = Some(u.into());
        e
    };
    let r = batch(&mut c, &[user(1, 1000, "u1"), user(2, 2000, "u2")], 2000);
    assert_eq!(
        seen(&r),
        [f("slow_user", "u1", true), f("slow_user", "u2", true)]
    );
    // u3 evicts u1 (seen at second 1).
    let r = batch(&mut c, &[user(3, 3000, "u3")], 3000);
    assert_eq!(
        seen(&r),
        [
            f("slow_user", "u2", false),
            f("slow_user", "u3", true),
            f("key_limit", "slow_user", false)
        ]
    );
    assert_eq!(r.findings[2].occurrences, 1);
    // u2 seen again at 4 s, so u4 evicts u3 (last seen at 3 s).
    let r = batch(&mut c, &[user(4, 4000, "u2"), user(5, 5000, "u4")], 5000);
    assert_eq!(
        seen(&r),
        [
            f("slow_user", "u2", false),
            f("slow_user", "u4", true),
            f("key_limit", "slow_user", false)
        ]
    );
    assert_eq!(r.findings[2].occurrences, 2);
    assert_eq!(c.keyed[0].len(), 2);
}

fn sequence_rule() -> Correlation {
    cfg(
        60,
        serde_json::json!([{
            "name": "degraded_then_errors",
            "sequence": ["health == \"degraded\"", "success == false"],
            "within": "30s",
            "group_by": ["service"],
        }]),
    )
}

#[test]
fn a_sequence_fires_in_order_within_its_time_per_key() {
    let mut c = sequence_rule();
    use Health::Degraded;
    let r = batch(
        &mut c,
        &[
            // api: degraded at 10 s, error at 20 s: in order, in time.
            health(1, 10_000, "api", Degraded),
            err(2, 20_000, "api"),
            // db: the error comes first: no sequence.
            err(3, 5_000, "db"),
            health(4, 11_000, "db", Degraded),
            // cache: error 30.001 s after: too late.
            health(5, 12_000, "cache", Degraded),
            err(6, 42_001, "cache"),
            // web: exactly 30 s counts.
            health(7, 12_000, "web", Degraded),
            err(8, 42_000, "web"),
        ],
        45_000,
    );
    assert_eq!(
        seen(&r),
        [
            f("degraded_then_errors", "api", true),
            f("degraded_then_errors", "web", true)
        ]
    );
    assert_eq!(r.findings[0].evidence, [1, 2]);
    assert_eq!(
        r.findings[0].message,
        "sequence 'health == \"degraded\"' -> 'success == false' within 30 s for service 'api': 1 time(s) in the last 60 s"
    );
}

#[test]
fn a_sequence_follows_event_time_not_arrival_order() {
    use Health::Degraded;
    // Ahead of the watermark, the error arrives first but happened after:
    // the events wait and are taken in time order.
    let mut c = sequence_rule();
    let r = batch(
        &mut c,
        &[err(2, 20_000, "api"), health(1, 10_000, "api", Degraded)],
        25_000,
    );
    assert_eq!(seen(&r), [f("degraded_then_errors", "api", true)]);
    // Behind the watermark (folded as they come, late but in the window):
    // an error that happened before the degraded reading does not
    // complete it, whatever the arrival order.
    let mut c = sequence_rule();
    batch(&mut c, &[], 100_000);
    let r = batch(
        &mut c,
        &[health(1, 60_000, "api", Degraded), err(2, 50_000, "api")],
        100_000,
    );
    assert_eq!(seen(&r), []);
}

#[test]
fn a_three_step_sequence_uses_each_event_once() {
    let mut c = cfg(
        60,
        serde_json::json!([{
            "name": "triple",
            "sequence": ["latency > 100", "latency > 100", "success == false"],
            "within": 10,
            "group_by": ["model"],
        }]),
    );
    // One slow request is step 1 only; the second slow one is step 2; the
    // failure completes. A failure after a single slow request does not.
    let r = batch(
        &mut c,
        &[
            req(1, 1000, "a", true, 500.0),
            req(2, 2000, "b", true, 500.0),
            req(3, 2500, "b", false, 1.0),
            req(4, 3000, "a", true, 500.0),
            req(5, 4000, "a", false, 1.0),
        ],
        5000,
    );
    assert_eq!(seen(&r), [f("triple", "a", true)]);
    assert_eq!(r.findings[0].evidence, [1, 5]);
}

fn absence_rule() -> Correlation {
    cfg(
        60,
        serde_json::json!([{
            "name": "no_recovery",
            "absence": {"after": "health == \"failed\"", "expect": "health == \"healthy\"", "within": "60s"},
            "group_by": ["service"],
        }]),
    )
}

#[test]
fn an_absence_fires_when_the_watermark_passes_its_deadline() {
    use Health::{Failed, Healthy};
    let mut c = absence_rule();
    let r = batch(
        &mut c,
        &[
            // a recovers in time, b never does; c's healthy reading came
            // before its failure, so it does not count.
            health(1, 100_000, "a", Failed),
            health(2, 100_000, "b", Failed),
            health(3, 99_000, "c", Healthy),
            health(4, 100_000, "c", Failed),
            health(5, 150_000, "a", Healthy),
            // d recovers exactly at the deadline: in time.
            health(6, 100_000, "d", Failed),
            health(7, 160_000, "d", Healthy),
        ],
        155_000,
    );
    assert_eq!(seen(&r), []);
    // Deadline 160,000: a watermark at it is not past it.
    let r = batch(&mut c, &[], 160_000);
    assert_eq!(seen(&r), []);
    let r = batch(&mut c, &[], 160_001);
    assert_eq!(
        seen(&r),
        [f("no_recovery", "b", true), f("no_recovery", "c", true)]
    );
    assert_eq!(r.findings[0].evidence, [2]);
    // The occurrence (second 160) stays 60 s in the window.
    let r = batch(&mut c, &[], 219_999);
    assert_eq!(r.findings.len(), 2);
    let r = batch(&mut c, &[], 220_000);
    assert_eq!(seen(&r), []);
}

#[test]
fn an_absence_waits_for_events_ahead_of_the_watermark() {
    use Health::{Failed, Healthy};
    let mut c = absence_rule();
    // The healthy reading is in a batch that arrives with the watermark
    // already past the deadline: it is folded (in time order) before the
    // deadline is checked.
    batch(&mut c, &[health(1, 100_000, "a", Failed)], 100_000);
    let r = batch(&mut c, &[health(2, 159_000, "a", Healthy)], 200_000);
    assert_eq!(seen(&r), []);
}

#[test]
fn events_that_start_nothing_leave_no_key() {
    use Health::{Failed, Healthy};
    // Healthy readings with no failure to answer, errors with no degraded
    // reading before them: thousands of services, none tracked.
    let mut c = absence_rule();
    let healthy: Vec<Event> = (0..2000)
        .map(|i| health(i, 1000, &format!("s{i}"), Healthy))
        .collect();
    batch(&mut c, &healthy, 2000);
    assert_eq!(c.keys_tracked(), 0);
    let mut c = sequence_rule();
    let errors: Vec<Event> = (0..2000).map(|i| err(i, 1000, &format!("s{i}"))).collect();
    batch(&mut c, &errors, 2000);
    assert_eq!(c.keys_tracked(), 0);
    // A failure is a wait (one key) until its healthy reading ends it.
    let mut c = absence_rule();
    batch(&mut c, &[health(1, 1000, "a", Failed)], 2000);
    assert_eq!(c.keys_tracked(), 1);
    batch(&mut c, &[health(2, 3000, "a", Healthy)], 4000);
    assert_eq!(c.keys_tracked(), 0);
}

#[test]
fn flapping_findings_are_held_and_alert_once() {
    // A 5 s window and a reading per 10 s: on for 5 s, off for 5 s.
    let rules = serde_json::json!([
        {"name": "degraded", "condition": "health == \"degraded\"", "group_by": ["service"], "threshold": 1},
    ]);
    let alerts = |damping: serde_json::Value| {
        let mut c = cfg(5, rules.clone());
        let json = serde_json::json!({
            "window_size": 5, "pattern_detection_enabled": false,
            "correlation_rules": rules, "flap_damping": damping,
        });
        c.configure(&json.to_string()).unwrap();
        let mut alerts = Vec::new();
        let mut shown = 0;
        for sec in 0..60i64 {
            let events = if sec % 10 == 0 && sec < 40 {
                vec![health(sec as u64, sec * 1000, "api", Health::Degraded)]
            } else {
                vec![]
            };
            let r = batch(&mut c, &events, sec * 1000);
            if r.findings.iter().any(|f| f.alert) {
                alerts.push(sec);
            }
            shown += usize::from(!r.findings.is_empty());
        }
        (alerts, shown)
    };
    // Without damping: an alert per reading, shown 5 s each.
    assert_eq!(
        alerts(serde_json::json!({"max_toggles": 0})),
        (vec![0, 10, 20, 30], 20)
    );
    // At most 2 changes in 100 s: on@0, off@5, on@10 is the third: held
    // from 10 s (the alert at 10 s is already out), so 20 and 30 do not
    // alert; the last change is off@35, quiet 20 s: held until 54 s.
    assert_eq!(
        alerts(serde_json::json!({"max_toggles": 2, "period_secs": 100, "quiet_secs": 20})),
        (vec![0, 10], 5 + 45)
    );
}

#[test]
fn keyed_state_survives_a_round_trip_and_a_version_2_state_is_read() {
    let rules = serde_json::json!([
        {"name": "model_errors", "condition": "error_rate > 0.3", "group_by": ["model"], "threshold": 2},
        {"name": "seq", "sequence": ["latency > 100", "success == false"], "within": "20s", "group_by": ["model"]},
        {"name": "gone", "absence": {"after": "latency > 500", "expect": "latency < 50", "within": 15}, "group_by": ["model"]},
    ]);
    let mut a = cfg(30, rules.clone());
    let timeline = |i: u64| {
        let model = ["m1", "m2", "m3"][(i % 3) as usize];
        let lat = [20.0, 150.0, 700.0, 60.0][(i % 4) as usize];
        req(i, i as i64 * 700, model, !i.is_multiple_of(5), lat)
    };
    for i in 0..60u64 {
        batch(&mut a, &[timeline(i)], i as i64 * 700);
    }
    let mut b = cfg(30, rules);
    b.load_state(STATE_VERSION, &a.save_state()).unwrap();
    for i in 60..200u64 {
        let e = [timeline(i)];
        assert_eq!(
            batch(&mut a, &e, i as i64 * 700),
            batch(&mut b, &e, i as i64 * 700),
            "at {i}"
        );
    }
    // A version-2 state (no keyed part) is read: the window carries over,
    // the keyed rules start empty.
    let v2 = State {
        window: WindowState {
            head_sec: 5,
            first_sec: Some(1),
            slots: vec![],
            active: BTreeSet::new(),
            evidence: BTreeMap::new(),
        },
        pending: vec![],
    };
    let mut c = Correlation::default();
    c.load_state(2, &postcard::to_allocvec(&v2).unwrap())
        .unwrap();
    assert_eq!(c.head_sec, 5);
}
