//! Property-based tests of the WIT conversions (`convert`, from
//! `hxp_plugin_sdk::wit_conversions!`): SDK values go to the generated WIT
//! types with every field where `wit/events.wit` says, and come back equal
//! (bit for bit for floats: NaN, infinities, -0 included).

use super::{convert, types as wit};
use hxp_plugin_sdk::{
    ActionRequest, Event, EventBatch, EventKind, Finding, Health, Metadata, NO_STRING,
    ResponseInput, ServiceHealth, Snapshot, Stats,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Generators.

/// Any f64, the special ones often (a NaN with a payload too).
fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => any::<f64>(),
        1 => prop::sample::select(vec![
            f64::NAN,
            -f64::NAN,
            f64::from_bits(0x7ff8_0000_0000_0001),
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
        ]),
    ]
}

fn opt_float() -> impl Strategy<Value = Option<f64>> {
    prop::option::of(float())
}

/// Strings: a few that repeat (the batch stores each once) and any text.
fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["", "gpt-4", "db", "u1", "é\u{0}\u{10ffff}"])
            .prop_map(String::from),
        any::<String>(),
    ]
}

fn kind() -> impl Strategy<Value = EventKind> {
    (0..5usize).prop_map(|i| EventKind::ALL[i])
}

fn health() -> impl Strategy<Value = Health> {
    prop::sample::select(vec![Health::Healthy, Health::Degraded, Health::Failed])
}

fn event(with_payload: bool) -> impl Strategy<Value = Event> {
    (
        (any::<u64>(), kind(), any::<u128>(), any::<i64>()),
        (opt_float(), opt_float(), opt_float(), opt_float()),
        any::<Option<bool>>(),
        (
            prop::option::of(string()),
            prop::option::of(string()),
            prop::option::of(string()),
        ),
        prop::option::of(health()),
        string(),
    )
        .prop_map(
            move |((seq, kind, id, time_ms), (lat, sat, bv, cost), success, (m, s, u), h, p)| {
                Event {
                    seq,
                    kind,
                    id,
                    time_ms,
                    latency_ms: lat,
                    success,
                    satisfaction: sat,
                    business_value: bv,
                    cost,
                    model: m,
                    service: s,
                    user: u,
                    health: h,
                    // The host sends payloads to all events of a batch or
                    // to none (`wants-payload`).
                    payload: with_payload.then_some(p),
                }
            },
        )
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    any::<bool>().prop_flat_map(|p| prop::collection::vec(event(p), 0..12))
}

/// Any columns, consistent or not: the conversion moves them as they are.
fn raw_batch() -> impl Strategy<Value = EventBatch> {
    let v = |n| 0..n;
    (
        (
            prop::collection::vec(any::<u64>(), v(4)),
            prop::collection::vec(any::<u8>(), v(4)),
            prop::collection::vec(any::<u64>(), v(4)),
            prop::collection::vec(any::<u64>(), v(4)),
            prop::collection::vec(any::<i64>(), v(4)),
        ),
        (
            prop::collection::vec(float(), v(4)),
            prop::collection::vec(any::<u8>(), v(4)),
            prop::collection::vec(float(), v(4)),
            prop::collection::vec(float(), v(4)),
            prop::collection::vec(float(), v(4)),
            prop::collection::vec(any::<u8>(), v(4)),
        ),
        (
            prop::collection::vec(string(), v(4)),
            prop::collection::vec(any::<u32>(), v(4)),
            prop::collection::vec(any::<u32>(), v(4)),
            prop::collection::vec(any::<u32>(), v(4)),
            prop::collection::vec(string(), v(4)),
        ),
    )
        .prop_map(
            |(
                (seq, kind, id_hi, id_lo, time_ms),
                (latency_ms, outcome, satisfaction, business_value, cost, health),
                (strings, model, service, user, payload),
            )| EventBatch {
                seq,
                kind,
                id_hi,
                id_lo,
                time_ms,
                latency_ms,
                outcome,
                satisfaction,
                business_value,
                cost,
                health,
                strings,
                model,
                service,
                user,
                payload,
            },
        )
}

fn stats() -> impl Strategy<Value = Stats> {
    (
        (any::<u64>(), float(), float(), any::<u64>()),
        (
            opt_float(),
            opt_float(),
            opt_float(),
            opt_float(),
            any::<bool>(),
        ),
        (
            any::<u64>(),
            any::<u64>(),
            float(),
            opt_float(),
            any::<u64>(),
        ),
        (float(), opt_float()),
    )
        .prop_map(|(a, b, c, d)| Stats {
            count: a.0,
            throughput: a.1,
            requests_per_second: a.2,
            latency_count: a.3,
            latency_avg: b.0,
            latency_p50: b.1,
            latency_p95: b.2,
            latency_p99: b.3,
            latency_exact: b.4,
            outcome_count: c.0,
            error_count: c.1,
            error_rate: c.2,
            user_satisfaction: c.3,
            satisfaction_count: c.4,
            business_value: d.0,
            cost_per_request: d.1,
        })
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (
        any::<i64>(),
        any::<u32>(),
        float(),
        stats(),
        prop::collection::vec((kind(), stats()), 0..6),
        prop::collection::vec(
            (string(), health(), any::<i64>()).prop_map(|(service, health, time_ms)| {
                ServiceHealth {
                    service,
                    health,
                    time_ms,
                }
            }),
            0..4,
        ),
    )
        .prop_map(
            |(time_ms, window_secs, covered_secs, overall, per_kind, services)| Snapshot {
                time_ms,
                window_secs,
                covered_secs,
                overall,
                per_kind,
                services,
            },
        )
}

fn finding() -> impl Strategy<Value = Finding> {
    (
        (string(), string(), string()),
        any::<bool>(),
        any::<u32>(),
        float(),
        string(),
        prop::collection::vec(any::<u64>(), 0..6),
    )
        .prop_map(
            |((name, source, subject), alert, occurrences, score, message, evidence)| Finding {
                name,
                source,
                subject,
                alert,
                occurrences,
                score,
                message,
                evidence,
            },
        )
}

fn action() -> impl Strategy<Value = ActionRequest> {
    (string(), string(), string(), string(), string()).prop_map(
        |(rule, action, target, parameters, reason)| ActionRequest {
            rule,
            action,
            target,
            parameters,
            reason,
        },
    )
}

// ---------------------------------------------------------------------------
// Comparisons: floats bit for bit (so NaN equals itself, -0 differs from 0).

fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits()
}

fn same_opt(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same(a, b),
        (None, None) => true,
        _ => false,
    }
}

fn same_vec(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(*x, *y))
}

/// The bits of every field of a stats value, to compare whole values. A
/// macro because the SDK's `Stats` and the WIT's have the same fields and
/// neither may be converted into the other here: the conversions are what
/// these tests check.
macro_rules! field_bits {
    ($s:expr) => {{
        let s = $s;
        let o = |x: Option<f64>| x.map_or(u64::MAX - 1, f64::to_bits);
        vec![
            s.count,
            s.throughput.to_bits(),
            s.requests_per_second.to_bits(),
            s.latency_count,
            o(s.latency_avg),
            o(s.latency_p50),
            o(s.latency_p95),
            o(s.latency_p99),
            s.latency_exact as u64,
            s.outcome_count,
            s.error_count,
            s.error_rate.to_bits(),
            o(s.user_satisfaction),
            s.satisfaction_count,
            s.business_value.to_bits(),
            o(s.cost_per_request),
        ]
    }};
}

fn stats_bits(s: &Stats) -> Vec<u64> {
    field_bits!(s)
}

fn wit_stats_bits(s: &wit::Stats) -> Vec<u64> {
    field_bits!(s)
}

fn same_finding(a: &Finding, b: &Finding) -> bool {
    a.name == b.name
        && a.source == b.source
        && a.subject == b.subject
        && a.alert == b.alert
        && a.occurrences == b.occurrences
        && same(a.score, b.score)
        && a.message == b.message
        && a.evidence == b.evidence
}

fn check_wit_finding(f: &Finding, w: &wit::Finding) -> Result<(), TestCaseError> {
    prop_assert_eq!(&w.name, &f.name);
    prop_assert_eq!(&w.source, &f.source);
    prop_assert_eq!(&w.subject, &f.subject);
    prop_assert_eq!(w.alert, f.alert);
    prop_assert_eq!(w.occurrences, f.occurrences);
    prop_assert!(same(w.score, f.score));
    prop_assert_eq!(&w.message, &f.message);
    prop_assert_eq!(&w.evidence, &f.evidence);
    Ok(())
}

/// The WIT snapshot holds the SDK snapshot's values, field by field.
fn check_wit_snapshot(s: &Snapshot, w: &wit::WindowSnapshot) -> Result<(), TestCaseError> {
    prop_assert_eq!(w.time_ms, s.time_ms);
    prop_assert_eq!(w.window_secs, s.window_secs);
    prop_assert!(same(w.covered_secs, s.covered_secs));
    prop_assert_eq!(wit_stats_bits(&w.overall), stats_bits(&s.overall));
    prop_assert_eq!(w.per_kind.len(), s.per_kind.len());
    for ((wk, ws), (k, st)) in w.per_kind.iter().zip(&s.per_kind) {
        prop_assert!(*wk == kind_wit(*k));
        prop_assert_eq!(wit_stats_bits(ws), stats_bits(st));
    }
    prop_assert_eq!(w.services.len(), s.services.len());
    for (wh, h) in w.services.iter().zip(&s.services) {
        prop_assert_eq!(&wh.service, &h.service);
        prop_assert!(wh.health == health_wit(h.health));
        prop_assert_eq!(wh.time_ms, h.time_ms);
    }
    Ok(())
}

fn same_snapshot(a: &Snapshot, b: &Snapshot) -> bool {
    a.time_ms == b.time_ms
        && a.window_secs == b.window_secs
        && same(a.covered_secs, b.covered_secs)
        && stats_bits(&a.overall) == stats_bits(&b.overall)
        && a.per_kind.len() == b.per_kind.len()
        && a.per_kind
            .iter()
            .zip(&b.per_kind)
            .all(|((ka, sa), (kb, sb))| ka == kb && stats_bits(sa) == stats_bits(sb))
        && a.services == b.services
}

/// The WIT enum case of the same name (written out here, independently of
/// the conversion).
fn kind_wit(k: EventKind) -> wit::EventKind {
    match k {
        EventKind::LlmRequest => wit::EventKind::LlmRequest,
        EventKind::UserFeedback => wit::EventKind::UserFeedback,
        EventKind::SystemMetric => wit::EventKind::SystemMetric,
        EventKind::BusinessEvent => wit::EventKind::BusinessEvent,
        EventKind::ErrorEvent => wit::EventKind::ErrorEvent,
    }
}

fn health_wit(h: Health) -> wit::Health {
    match h {
        Health::Healthy => wit::Health::Healthy,
        Health::Degraded => wit::Health::Degraded,
        Health::Failed => wit::Health::Failed,
    }
}

fn same_batch(a: &EventBatch, b: &EventBatch) -> bool {
    a.seq == b.seq
        && a.kind == b.kind
        && a.id_hi == b.id_hi
        && a.id_lo == b.id_lo
        && a.time_ms == b.time_ms
        && same_vec(&a.latency_ms, &b.latency_ms)
        && a.outcome == b.outcome
        && same_vec(&a.satisfaction, &b.satisfaction)
        && same_vec(&a.business_value, &b.business_value)
        && same_vec(&a.cost, &b.cost)
        && a.health == b.health
        && a.strings == b.strings
        && a.model == b.model
        && a.service == b.service
        && a.user == b.user
        && a.payload == b.payload
}

// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Events → columnar batch → WIT: every column holds what
    /// `wit/events.wit` documents (kind and health codes, NaN for absent
    /// numbers, UUID halves big endian, strings by index); and back to the
    /// SDK, each row reads as the event (a NaN number reads as absent).
    #[test]
    fn events_cross_as_documented_and_come_back(events in events()) {
        let sdk = EventBatch::from_events(&events);
        prop_assert_eq!(sdk.check(), Ok(()));
        let w = convert::batch_to_wit(sdk.clone());
        let n = events.len();
        let kind_code = |k: EventKind| EventKind::ALL.iter().position(|x| *x == k).unwrap() as u8;
        let health_code = |h: Option<Health>| match h {
            None => 0,
            Some(Health::Healthy) => 1,
            Some(Health::Degraded) => 2,
            Some(Health::Failed) => 3,
        };
        let num = |x: Option<f64>| x.unwrap_or(f64::NAN);
        let string = |i: u32| (i != NO_STRING).then(|| w.strings[i as usize].clone());
        for col in [w.seq.len(), w.kind.len(), w.id_hi.len(), w.id_lo.len(), w.time_ms.len(),
                    w.latency_ms.len(), w.outcome.len(), w.satisfaction.len(),
                    w.business_value.len(), w.cost.len(), w.health.len(), w.model.len(),
                    w.service.len(), w.user.len()] {
            prop_assert_eq!(col, n);
        }
        let with_payload = events.first().is_some_and(|e| e.payload.is_some());
        prop_assert_eq!(w.payload.len(), if with_payload { n } else { 0 });
        for (i, e) in events.iter().enumerate() {
            prop_assert_eq!(w.seq[i], e.seq);
            prop_assert_eq!(w.kind[i], kind_code(e.kind));
            let bytes = e.id.to_be_bytes();
            prop_assert_eq!(w.id_hi[i], u64::from_be_bytes(bytes[..8].try_into().unwrap()));
            prop_assert_eq!(w.id_lo[i], u64::from_be_bytes(bytes[8..].try_into().unwrap()));
            prop_assert_eq!(w.time_ms[i], e.time_ms);
            // NaN stands for absent; any NaN sent reads as absent too.
            prop_assert!(same(w.latency_ms[i], num(e.latency_ms)) || e.latency_ms.is_some_and(f64::is_nan) && w.latency_ms[i].is_nan());
            prop_assert!(same(w.satisfaction[i], num(e.satisfaction)) || e.satisfaction.is_some_and(f64::is_nan) && w.satisfaction[i].is_nan());
            prop_assert!(same(w.business_value[i], num(e.business_value)) || e.business_value.is_some_and(f64::is_nan) && w.business_value[i].is_nan());
            prop_assert!(same(w.cost[i], num(e.cost)) || e.cost.is_some_and(f64::is_nan) && w.cost[i].is_nan());
            prop_assert_eq!(w.outcome[i], match e.success { None => 0, Some(true) => 1, Some(false) => 2 });
            prop_assert_eq!(w.health[i], health_code(e.health));
            prop_assert_eq!(string(w.model[i]), e.model.clone());
            prop_assert_eq!(string(w.service[i]), e.service.clone());
            prop_assert_eq!(string(w.user[i]), e.user.clone());
            if with_payload {
                prop_assert_eq!(Some(&w.payload[i]), e.payload.as_ref());
            }
        }
        // Each distinct string once.
        let mut distinct = w.strings.clone();
        distinct.sort();
        distinct.dedup();
        prop_assert_eq!(distinct.len(), w.strings.len());

        let back = convert::batch(w);
        prop_assert!(same_batch(&back, &sdk), "{:?}\n!=\n{:?}", back, sdk);
        prop_assert_eq!(back.check(), Ok(()));
        let nan_is_none = |x: Option<f64>| x.filter(|v| !v.is_nan());
        for (i, e) in events.iter().enumerate() {
            let r = back.get(i);
            prop_assert_eq!(r.seq, e.seq);
            prop_assert_eq!(r.kind, e.kind);
            prop_assert_eq!(r.id, e.id);
            prop_assert_eq!(r.time_ms, e.time_ms);
            prop_assert!(same_opt(r.latency_ms, nan_is_none(e.latency_ms)));
            prop_assert!(same_opt(r.satisfaction, nan_is_none(e.satisfaction)));
            prop_assert!(same_opt(r.business_value, nan_is_none(e.business_value)));
            prop_assert!(same_opt(r.cost, nan_is_none(e.cost)));
            prop_assert_eq!(r.success, e.success);
            prop_assert_eq!(r.health, e.health);
            prop_assert_eq!(r.model, e.model.as_deref());
            prop_assert_eq!(r.service, e.service.as_deref());
            prop_assert_eq!(r.user, e.user.as_deref());
            prop_assert_eq!(r.payload, e.payload.as_deref());
        }
    }

    /// Any batch, consistent or not, goes to WIT and back unchanged.
    #[test]
    fn any_batch_round_trips(b in raw_batch()) {
        let back = convert::batch(convert::batch_to_wit(b.clone()));
        prop_assert!(same_batch(&back, &b), "{:?}\n!=\n{:?}", back, b);
    }

    /// Metadata, kinds and health: to WIT and back, each field in place.
    #[test]
    fn metadata_kinds_and_health_round_trip(
        name in string(), version in string(), state_version in any::<u32>(),
        wants_payload in any::<bool>(), fresh_start_ok in any::<bool>(),
        k in kind(), h in health(),
    ) {
        let m = Metadata { name, version, state_version, wants_payload, fresh_start_ok };
        let w = convert::metadata(m.clone());
        prop_assert_eq!(&w.name, &m.name);
        prop_assert_eq!(&w.version, &m.version);
        prop_assert_eq!(w.state_version, m.state_version);
        prop_assert_eq!(w.wants_payload, m.wants_payload);
        prop_assert_eq!(w.fresh_start_ok, m.fresh_start_ok);
        prop_assert_eq!(convert::metadata_to_sdk(w), m);
        prop_assert!(convert::kind_to_wit(k) == kind_wit(k));
        prop_assert_eq!(convert::kind_to_sdk(convert::kind_to_wit(k)), k);
        prop_assert!(convert::health_to_wit(h) == health_wit(h));
        prop_assert_eq!(convert::health_to_sdk(convert::health_to_wit(h)), h);
    }

    /// Stats and snapshots (NaN, infinities, -0 in every float field).
    #[test]
    fn snapshots_round_trip(s in snapshot()) {
        let w = convert::snapshot_to_wit(s.clone());
        check_wit_snapshot(&s, &w)?;
        let back = convert::snapshot_to_sdk(w);
        prop_assert!(same_snapshot(&back, &s), "{:?}\n!=\n{:?}", back, s);
        let st = convert::stats_to_wit(s.overall.clone());
        prop_assert_eq!(wit_stats_bits(&st), stats_bits(&s.overall));
        prop_assert_eq!(stats_bits(&convert::stats_to_sdk(st)), stats_bits(&s.overall));
    }

    /// Findings and action requests.
    #[test]
    fn findings_and_actions_round_trip(f in finding(), a in action()) {
        let w = convert::finding_to_wit(f.clone());
        check_wit_finding(&f, &w)?;
        let back = convert::finding_to_sdk(w);
        prop_assert!(same_finding(&back, &f), "{:?}\n!=\n{:?}", back, f);
        let w = convert::action_to_wit(a.clone());
        prop_assert_eq!(&w.rule, &a.rule);
        prop_assert_eq!(&w.action, &a.action);
        prop_assert_eq!(&w.target, &a.target);
        prop_assert_eq!(&w.parameters, &a.parameters);
        prop_assert_eq!(&w.reason, &a.reason);
        prop_assert_eq!(convert::action_to_sdk(w), a);
    }

    /// What a response plugin gets: snapshot and findings together.
    #[test]
    fn response_inputs_round_trip(
        time_ms in any::<i64>(),
        analytics in snapshot(),
        findings in prop::collection::vec(finding(), 0..4),
    ) {
        let i = ResponseInput { time_ms, analytics, findings };
        let w = convert::response_input_to_wit(i.clone());
        prop_assert_eq!(w.time_ms, i.time_ms);
        check_wit_snapshot(&i.analytics, &w.analytics)?;
        prop_assert_eq!(w.findings.len(), i.findings.len());
        for (wf, f) in w.findings.iter().zip(&i.findings) {
            check_wit_finding(f, wf)?;
        }
        let back = convert::response_input(w);
        prop_assert_eq!(back.time_ms, i.time_ms);
        prop_assert!(same_snapshot(&back.analytics, &i.analytics));
        prop_assert_eq!(back.findings.len(), i.findings.len());
        for (b, f) in back.findings.iter().zip(&i.findings) {
            prop_assert!(same_finding(b, f));
        }
    }
}
