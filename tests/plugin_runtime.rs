//! The plugin runtime against real components built from this repository
//! (`make build` builds them for wasm32-wasip2): the default plugins on
//! hand-computed inputs, hostile guests, incompatible files, state hand-over
//! and the compile cache.

mod common;

use common::{tempdir, wasm, wasm_bytes};
use hxp_events::plugin::{
    Clock, Failure, Limits, LoadError, Plugin, PluginEngine, PluginKind, convert, types,
};
use hxp_plugin_sdk::{Event, EventBatch, EventKind};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn engine() -> Arc<PluginEngine> {
    PluginEngine::new(None).unwrap()
}

fn plugin(engine: &Arc<PluginEngine>, file: &str, clock: &Clock, limits: Limits) -> Plugin {
    let loaded = engine.load_file(&wasm(file)).unwrap();
    Plugin::new(engine.clone(), loaded, limits, clock.clone()).unwrap()
}

/// A host-side batch, as the pipeline hands it to the plugins.
fn batch(events: &[Event]) -> types::EventBatch {
    convert::batch_to_wit(EventBatch::from_events(events))
}

/// The batch with every event at time `ms` (as on processing time).
fn batch_at(events: &[Event], ms: i64) -> types::EventBatch {
    let mut batch = EventBatch::from_events(events);
    batch.place_at(ms);
    convert::batch_to_wit(batch)
}

fn llm(seq: u64, latency: f64, ok: bool) -> Event {
    let mut e = Event::new(seq, EventKind::LlmRequest, 0);
    e.latency_ms = Some(latency);
    e.success = Some(ok);
    e.model = Some("mixtral-8x7b".into());
    e
}

fn error_event(seq: u64, service: &str) -> Event {
    let mut e = Event::new(seq, EventKind::ErrorEvent, 0);
    e.success = Some(false);
    e.service = Some(service.into());
    e
}

#[test]
fn analytics_ten_requests_by_hand() {
    let engine = engine();
    let clock = Clock::manual(1_000_000);
    let mut a = plugin(&engine, "hxp_analytics", &clock, Limits::default());
    assert_eq!(a.kind(), PluginKind::Analytics);
    assert_eq!(a.name(), "analytics");
    // Latencies 100, 200, ..., 1000 ms; requests 5 and 10 failed.
    let events: Vec<_> = (1..=10)
        .map(|i| llm(i, i as f64 * 100.0, i % 5 != 0))
        .collect();
    a.analytics_process(&batch_at(&events, 1_000_000)).unwrap();
    clock.set_ms(1_000_900);
    let s = convert::snapshot_to_sdk(a.analytics_snapshot().unwrap());
    let o = &s.overall;
    assert_eq!(o.count, 10);
    // mean = 5500 / 10
    assert_eq!(o.latency_avg, Some(550.0));
    // Linear interpolation between closest ranks: h = 9q.
    // p50: h = 4.5 -> 500 + 0.5 * 100 = 550
    assert_eq!(o.latency_p50, Some(550.0));
    // p95: h = 8.55 -> 900 + 0.55 * 100 = 955
    assert!(
        (o.latency_p95.unwrap() - 955.0).abs() < 1e-9,
        "{:?}",
        o.latency_p95
    );
    // p99: h = 8.91 -> 900 + 0.91 * 100 = 991
    assert!(
        (o.latency_p99.unwrap() - 991.0).abs() < 1e-9,
        "{:?}",
        o.latency_p99
    );
    assert!(o.latency_exact);
    assert_eq!(o.error_count, 2);
    assert_eq!(o.error_rate, 0.2);
    // All ten arrived in one second: 10 events/s over the covered second.
    assert_eq!(s.covered_secs, 1.0);
    assert_eq!(o.throughput, 10.0);
    assert_eq!(o.requests_per_second, 10.0);
    assert_eq!(s.per_kind.len(), 1);
    assert_eq!(s.per_kind[0].0, EventKind::LlmRequest);
}

#[test]
fn correlation_error_burst_alerts_on_the_fifth_occurrence_and_not_before() {
    let engine = engine();
    let clock = Clock::manual(2_000_000);
    let mut c = plugin(&engine, "hxp_correlation", &clock, Limits::default());
    c.configure(r#"{"alert_threshold": 5, "window_size": 60}"#)
        .unwrap();
    for i in 1..=4u64 {
        clock.set_ms(2_000_000 + i as i64 * 100);
        let r = c
            .correlation_process(&batch_at(&[error_event(i, "gateway")], clock.now_ms()))
            .unwrap();
        assert!(
            !r.findings.iter().any(|f| f.name == "high_error_rate"),
            "alert before the threshold, after {i} errors"
        );
    }
    clock.set_ms(2_000_500);
    let r = c
        .correlation_process(&batch_at(&[error_event(5, "gateway")], clock.now_ms()))
        .unwrap();
    let f = r
        .findings
        .iter()
        .find(|f| f.name == "high_error_rate")
        .expect("alert on the fifth");
    assert!(f.alert);
    assert_eq!(f.occurrences, 5);
    assert_eq!(f.evidence, vec![1, 2, 3, 4, 5]);
    let burst = r
        .findings
        .iter()
        .find(|f| f.name == "error_burst")
        .expect("burst pattern");
    assert_eq!(burst.subject, "gateway");
    assert!(r.correlation_score > 0.7);
    // The sixth keeps it active without alerting again.
    clock.set_ms(2_000_600);
    let r = c
        .correlation_process(&batch_at(&[error_event(6, "gateway")], clock.now_ms()))
        .unwrap();
    let f = r
        .findings
        .iter()
        .find(|f| f.name == "high_error_rate")
        .unwrap();
    assert!(!f.alert);
}

#[test]
fn correlation_rules_come_from_config_and_bad_rules_are_named() {
    let engine = engine();
    let clock = Clock::manual(0);
    let mut c = plugin(&engine, "hxp_correlation", &clock, Limits::default());
    let e = c
        .configure(r#"{"correlation_rules": [{"name": "bad_one", "condition": "latency >> 5", "action": "alert"}]}"#)
        .unwrap_err();
    assert_eq!(e.failure, Failure::Rejected);
    assert!(
        e.to_string()
            .contains("rule 'bad_one': cannot parse condition"),
        "{e}"
    );
    // The plugin keeps its previous rules and keeps working.
    c.configure(r#"{"alert_threshold": 2, "correlation_rules": [{"name": "slow", "condition": "latency > 500"}], "pattern_detection_enabled": false}"#)
        .unwrap();
    let r = c
        .correlation_process(&batch(&[
            llm(1, 600.0, true),
            llm(2, 100.0, true),
            llm(3, 700.0, true),
        ]))
        .unwrap();
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].name, "slow");
    assert_eq!(r.findings[0].occurrences, 2);
}

#[test]
fn throughput_above_1000_gives_one_scale_models_request() {
    let engine = engine();
    let clock = Clock::manual(3_000_000);
    let mut a = plugin(&engine, "hxp_analytics", &clock, Limits::default());
    let mut r = plugin(&engine, "hxp_responses", &clock, Limits::default());
    let decide = |a: &mut Plugin, r: &mut Plugin, now: i64| {
        clock.set_ms(now);
        let input = types::ResponseInput {
            time_ms: now,
            analytics: a.analytics_snapshot().unwrap(),
            findings: vec![],
        };
        r.responses_decide(&input).unwrap()
    };
    // 1000 events in one second: exactly 1000/s, not above.
    let events: Vec<_> = (0..1000).map(|i| llm(i, 20.0, true)).collect();
    a.analytics_process(&batch_at(&events, 3_000_000)).unwrap();
    assert!(decide(&mut a, &mut r, 3_000_500).is_empty());
    // Five more in the same second: 1005/s.
    a.analytics_process(&batch_at(&events[..5], 3_000_000))
        .unwrap();
    let out = decide(&mut a, &mut r, 3_000_600);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].action, "scale_models");
    assert_eq!(out[0].rule, "scale_up_models");
    let p: serde_json::Value = serde_json::from_str(&out[0].parameters).unwrap();
    assert_eq!(p["observed"]["throughput"], 1005.0);
    // Still above on the next call: no second request.
    assert!(decide(&mut a, &mut r, 3_000_700).is_empty());
}

#[test]
fn failed_service_health_asks_for_a_restart_of_that_service() {
    let engine = engine();
    let clock = Clock::manual(4_000_000);
    let mut a = plugin(&engine, "hxp_analytics", &clock, Limits::default());
    let mut r = plugin(&engine, "hxp_responses", &clock, Limits::default());
    let mut m = Event::new(1, EventKind::SystemMetric, 4_000_000);
    m.service = Some("vllm-7b".into());
    m.health = Some(hxp_plugin_sdk::Health::Failed);
    a.analytics_process(&batch(&[m])).unwrap();
    let input = types::ResponseInput {
        time_ms: 4_000_000,
        analytics: a.analytics_snapshot().unwrap(),
        findings: vec![],
    };
    let out = r.responses_decide(&input).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].action.as_str(), out[0].target.as_str()),
        ("restart_service", "vllm-7b")
    );
}

fn hostile(engine: &Arc<PluginEngine>, mode: &str, limits: Limits) -> Plugin {
    let mut p = plugin(engine, "hostile_guest", &Clock::manual(0), limits);
    p.configure(&format!(r#"{{"mode": "{mode}"}}"#)).unwrap();
    p
}

/// After any failure a healthy plugin on the same engine still works, and
/// the failed one recovers once given a sane config.
fn assert_recovers(engine: &Arc<PluginEngine>, bad: &mut Plugin) {
    let clock = Clock::manual(0);
    let mut healthy = plugin(engine, "hxp_correlation", &clock, Limits::default());
    healthy
        .correlation_process(&batch(&[error_event(1, "x")]))
        .unwrap();
    bad.configure(r#"{"mode": "ok"}"#).unwrap();
    let r = bad
        .correlation_process(&batch(&[error_event(1, "x")]))
        .unwrap();
    assert_eq!(r.findings.len(), 1);
    assert!(bad.stats().restarts >= 1);
}

#[test]
fn infinite_loop_is_stopped_at_the_deadline() {
    let engine = engine();
    let limits = Limits {
        deadline_ms: 100,
        ..Limits::default()
    };
    let mut p = hostile(&engine, "loop", limits);
    let started = Instant::now();
    let e = p.correlation_process(&batch(&[])).unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.failure, Failure::Timeout, "{e}");
    assert_eq!(e.plugin, "hostile");
    assert_eq!(e.call, "process");
    assert!(e.to_string().contains("100 ms deadline"), "{e}");
    assert!(
        took >= Duration::from_millis(100),
        "stopped early: {took:?}"
    );
    assert!(
        took < Duration::from_millis(600),
        "deadline overrun: {took:?}"
    );
    assert_eq!(p.stats().timeouts, 1);
    assert_recovers(&engine, &mut p);
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let engine = engine();
    let limits = Limits {
        memory_mb: 32,
        ..Limits::default()
    };
    let mut p = hostile(&engine, "memory", limits);
    let e = p.correlation_process(&batch(&[])).unwrap_err();
    assert_eq!(e.failure, Failure::MemoryLimit, "{e}");
    assert!(e.to_string().contains("32 MiB"), "{e}");
    assert_recovers(&engine, &mut p);
}

#[test]
fn panic_is_a_trap_with_the_guest_message() {
    let engine = engine();
    let mut p = hostile(&engine, "panic", Limits::default());
    let e = p.correlation_process(&batch(&[])).unwrap_err();
    assert_eq!(e.failure, Failure::Trap, "{e}");
    assert!(
        e.to_string().contains("hostile guest: panic in process"),
        "{e}"
    );
    assert_eq!(p.stats().traps, 1);
    assert_recovers(&engine, &mut p);
}

#[test]
fn huge_output_is_refused() {
    let engine = engine();
    let mut p = hostile(&engine, "huge", Limits::default());
    let e = p.correlation_process(&batch(&[])).unwrap_err();
    assert_eq!(e.failure, Failure::BadOutput, "{e}");
    assert!(e.to_string().contains("200000 findings"), "{e}");
    assert_recovers(&engine, &mut p);
}

#[test]
fn panics_in_configure_and_load_state_are_traps() {
    let engine = engine();
    let mut p = plugin(
        &engine,
        "hostile_guest",
        &Clock::manual(0),
        Limits::default(),
    );
    let e = p
        .configure(r#"{"mode": "panic-in-configure"}"#)
        .unwrap_err();
    assert_eq!(e.failure, Failure::Trap);
    assert_eq!(e.call, "configure");
    assert!(e.to_string().contains("panic in configure"), "{e}");
    p.configure(r#"{"mode": "panic-in-load-state"}"#).unwrap();
    let e = p.load_state(1, &[0; 8]).unwrap_err();
    assert_eq!((e.failure, e.call), (Failure::Trap, "load-state"));
    // A refusal (not a trap) keeps the instance.
    p.configure(r#"{"mode": "ok"}"#).unwrap();
    let restarts = p.stats().restarts;
    let e = p.load_state(1, &[1, 2, 3]).unwrap_err();
    assert_eq!(e.failure, Failure::Rejected);
    assert!(e.to_string().contains("state must be 8 bytes"), "{e}");
    p.correlation_process(&batch(&[])).unwrap();
    assert_eq!(p.stats().restarts, restarts);
}

#[test]
fn a_restarted_instance_resumes_from_its_checkpoint() {
    let engine = engine();
    let mut p = hostile(&engine, "ok", Limits::default());
    for _ in 0..3 {
        p.correlation_process(&batch(&[])).unwrap();
    }
    p.checkpoint().unwrap(); // 3 calls
    p.correlation_process(&batch(&[])).unwrap(); // 4, not checkpointed
    p.configure(r#"{"mode": "panic"}"#).unwrap();
    p.correlation_process(&batch(&[])).unwrap_err(); // call 5 traps
    p.configure(r#"{"mode": "ok"}"#).unwrap();
    let r = p.correlation_process(&batch(&[])).unwrap();
    // Back at the checkpoint (3 calls), plus this one.
    assert_eq!(r.findings[0].name, "call-4");
}

#[test]
fn incompatible_files_are_refused_with_a_reason() {
    let engine = engine();
    let dir = tempdir();
    let check = |name: &str, bytes: &[u8]| -> LoadError {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        match engine.load_file(&path) {
            Ok(_) => panic!("{name} was accepted"),
            Err(e) => e,
        }
    };
    match engine.load_file(&wasm("future_wit_guest")) {
        Err(LoadError::WrongVersion {
            found, supported, ..
        }) => {
            assert_eq!(found, "hxp:events@0.2.0");
            assert_eq!(supported, "hxp:events@0.1.0");
        }
        other => panic!("future WIT: {:?}", other.err()),
    }
    match engine.load_file(&wasm("not-a-plugin")) {
        Err(e @ LoadError::WrongWorld { .. }) => {
            assert!(e.to_string().contains("wasi:cli/run"), "{e}")
        }
        other => panic!("command: {:?}", other.err()),
    }
    assert!(matches!(
        check("text.wasm", b"hello world, not wasm"),
        LoadError::NotWasm { .. }
    ));
    // The smallest valid core module.
    let e = check("core.wasm", b"\0asm\x01\0\0\0");
    assert!(matches!(e, LoadError::CoreModule { .. }), "{e}");
    assert!(e.to_string().contains("not a component"));
    let full = wasm_bytes("hxp_analytics");
    let e = check("truncated.wasm", &full[..full.len() / 2]);
    assert!(matches!(e, LoadError::Invalid { .. }), "{e}");
    let e = check("empty.wasm", b"");
    assert!(matches!(e, LoadError::NotWasm { .. }), "{e}");
}

#[test]
fn save_then_load_into_a_fresh_instance_continues_exactly() {
    let engine = engine();
    let clock = Clock::manual(10_000_000);
    let mut a1 = plugin(&engine, "hxp_analytics", &clock, Limits::default());
    let mut c1 = plugin(&engine, "hxp_correlation", &clock, Limits::default());
    let mut r1 = plugin(&engine, "hxp_responses", &clock, Limits::default());
    let events_at = |sec: i64| -> Vec<Event> {
        (0..50)
            .map(|i| {
                if i % 7 == 0 {
                    error_event(sec as u64 * 100 + i, if sec % 2 == 0 { "a" } else { "b" })
                } else {
                    llm(
                        sec as u64 * 100 + i,
                        (i * 13 % 400) as f64 + sec as f64,
                        i % 11 != 0,
                    )
                }
            })
            .collect()
    };
    let step = |a: &mut Plugin, c: &mut Plugin, r: &mut Plugin, sec: i64| {
        clock.set_ms(10_000_000 + sec * 1000);
        let b = batch_at(&events_at(sec), 10_000_000 + sec * 1000);
        a.analytics_process(&b).unwrap();
        let findings = c.correlation_process(&b).unwrap();
        let snap = a.analytics_snapshot().unwrap();
        let actions = r
            .responses_decide(&types::ResponseInput {
                time_ms: 10_000_000 + sec * 1000,
                analytics: snap.clone(),
                findings: findings.findings.clone(),
            })
            .unwrap();
        (
            convert::snapshot_to_sdk(snap),
            findings
                .findings
                .into_iter()
                .map(convert::finding_to_sdk)
                .collect::<Vec<_>>(),
            actions
                .into_iter()
                .map(convert::action_to_sdk)
                .collect::<Vec<_>>(),
        )
    };
    for sec in 0..90 {
        step(&mut a1, &mut c1, &mut r1, sec);
    }
    let mut a2 = plugin(&engine, "hxp_analytics", &clock, Limits::default());
    let mut c2 = plugin(&engine, "hxp_correlation", &clock, Limits::default());
    let mut r2 = plugin(&engine, "hxp_responses", &clock, Limits::default());
    for (from, to) in [(&mut a1, &mut a2), (&mut c1, &mut c2), (&mut r1, &mut r2)] {
        let (v, s) = from.save_state().unwrap();
        to.load_state(v, &s).unwrap();
    }
    for sec in 90..400 {
        let one = step(&mut a1, &mut c1, &mut r1, sec);
        let two = step(&mut a2, &mut c2, &mut r2, sec);
        assert_eq!(one, two, "diverged at second {sec}");
    }
}

#[test]
fn compiled_components_are_cached_by_content_hash() {
    let dir = tempdir();
    let engine = PluginEngine::new(Some(dir.clone())).unwrap();
    let first = engine.load_file(&wasm("hxp_correlation")).unwrap();
    assert!(!first.from_cache);
    let cached: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(cached.len(), 1);
    assert!(cached[0].to_string_lossy().starts_with(&first.hash));
    // A new engine (a restart) loads it without compiling.
    drop(engine);
    let engine = PluginEngine::new(Some(dir.clone())).unwrap();
    let second = engine.load_file(&wasm("hxp_correlation")).unwrap();
    assert!(second.from_cache);
    assert_eq!(first.hash, second.hash);
    let mut p = Plugin::new(engine.clone(), second, Limits::default(), Clock::manual(0)).unwrap();
    p.correlation_process(&batch(&[error_event(1, "x")]))
        .unwrap();
    // A corrupt cache entry is recompiled, not trusted.
    let entry = dir.join(&cached[0]);
    std::fs::write(&entry, b"garbage").unwrap();
    let third = engine.load_file(&wasm("hxp_correlation")).unwrap();
    assert!(!third.from_cache);
}

/// What ships carries no DWARF (it was ~91% of each plugin): the release
/// profile strips debug information. A wasm custom section's name is in
/// the file as plain text, so a `.debug_*` section shows as its name.
#[test]
fn shipped_plugins_carry_no_debug_information() {
    for name in ["hxp_analytics", "hxp_correlation", "hxp_responses"] {
        let bytes = wasm_bytes(name);
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(!has(b".debug_info"), "{name}.wasm has DWARF");
        assert!(!has(b".debug_line"), "{name}.wasm has DWARF line tables");
        // Still a component (the layer byte after the version), which the
        // other tests of this file load and run.
        assert_eq!(
            bytes[..8],
            *b"\0asm\x0d\0\x01\0",
            "{name}.wasm is no component"
        );
    }
}
