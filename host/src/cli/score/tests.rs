//! The scorer on small hand-made labels and alerts, with the expected
//! figures worked out by hand in the comments.

use super::input::{Firings, active_names, alerts_from_file};
use super::*;
use crate::cli::labels::{Kind, Labels};

fn incident(id: &str, kind: Kind, key: &str, (start_ms, end_ms): (i64, i64)) -> Incident {
    Incident {
        id: id.into(),
        kind,
        key_field: kind.key_field(),
        key: key.into(),
        start_ms,
        end_ms,
    }
}

/// A: m1 over 100–200 s, B: s1 over 400–460 s, C: s2 over 700–800 s, in
/// a stream of 0–1000 s.
fn labels() -> Labels {
    Labels {
        seed: 1,
        start_ms: 0,
        end_ms: 1_000_000,
        events: None,
        incidents: vec![
            incident("A", Kind::ModelDegradation, "m1", (100_000, 200_000)),
            incident("B", Kind::ServiceRestart, "s1", (400_000, 460_000)),
            incident("C", Kind::ErrorLeak, "s2", (700_000, 800_000)),
        ],
    }
}

fn alert(rule: &str, subject: &str, at_ms: i64) -> Alert {
    Alert {
        rule: rule.into(),
        subject: subject.into(),
        at_ms,
    }
}

const GRACE: i64 = 120_000;

#[test]
fn alerts_match_by_key_and_time_with_grace() {
    let alerts = [
        alert("r1", "m1", 130_000),   // A, 30 s in: true
        alert("r1", "m1", 310_000),   // A's end + 110 s, within grace: true
        alert("r2", "", 150_000),     // unkeyed, during A: true
        alert("r2", "s9", 420_000),   // during B, another key: false
        alert("r3", "s1", 580_000),   // B's end + exactly the grace: true
        alert("r2", "", 600_000),     // unkeyed, between incidents: false
        alert("r1", "m1", 1_200_000), // after the stream: not counted
        alert("r3", "s2", 699_999),   // 1 ms before C: false
    ];
    let firings = Firings {
        batches: 10,
        firings: 28,
    };
    let r = score(&labels(), &alerts, Some(firings), GRACE);
    assert_eq!((r.alerts, r.true_positives, r.outside_span), (7, 4, 1));
    // s9 during B is false but during an incident; the unkeyed one at
    // 600 s and s2 before C are not.
    assert_eq!(r.wrong_key, 1);
    assert_eq!(r.precision, Some(4.0 / 7.0));
    assert_eq!(
        r.unkeyed,
        Unkeyed {
            alerts: 2,
            true_positives: 1
        }
    );
    assert_eq!((r.incidents, r.detected), (3, 2));
    assert_eq!(r.recall, 2.0 / 3.0);
    // A first at 130 s (30 s after its start), B at 580 s (180 s): the
    // median of two is their mean.
    assert_eq!(
        r.time_to_detect_s,
        Some(Spread {
            median: 105.0,
            max: 180.0
        })
    );
    // A matched by three alerts, B by one.
    assert_eq!(r.alerts_per_detected_incident, Some(2.0));
    assert_eq!(r.raw_firings_per_alert, Some(4.0));
    let a = &r.by_incident[0];
    assert_eq!((a.alerts, a.time_to_detect_s), (3, Some(30.0)));
    assert_eq!(a.rules, ["r1", "r2"]);
    assert_eq!(
        (r.by_incident[2].alerts, r.by_incident[2].time_to_detect_s),
        (0, None)
    );
    let rule = |n: &str| r.by_rule[n];
    assert_eq!(
        rule("r1"),
        RuleScore {
            alerts: 2,
            true_positives: 2
        }
    );
    assert_eq!(
        rule("r2"),
        RuleScore {
            alerts: 3,
            true_positives: 1
        }
    );
    assert_eq!(
        rule("r3"),
        RuleScore {
            alerts: 2,
            true_positives: 1
        }
    );
    assert_eq!(
        r.by_kind["error_leak"],
        KindScore {
            incidents: 1,
            detected: 0
        }
    );
    assert_eq!(
        r.by_kind["service_restart"],
        KindScore {
            incidents: 1,
            detected: 1
        }
    );
}

#[test]
fn no_alerts_is_no_recall_and_no_precision() {
    let r = score(&labels(), &[], None, GRACE);
    assert_eq!((r.detected, r.recall, r.precision), (0, 0.0, None));
    assert_eq!(r.time_to_detect_s, None);
    assert_eq!(r.alerts_per_detected_incident, None);
    assert_eq!((r.raw_firings, r.raw_firings_per_alert), (None, None));
    assert!(summary(&r).contains("0 detected of 3"));
}

#[test]
fn an_odd_count_of_detections_has_the_middle_one_as_median() {
    // 10 s, 60 s and 20 s after each start: median 20, max 60; the second
    // alert on A (at 150 s) does not change A's time.
    let alerts = [
        alert("r", "m1", 110_000),
        alert("r", "m1", 150_000),
        alert("r", "s1", 460_000),
        alert("r", "s2", 720_000),
    ];
    let r = score(&labels(), &alerts, None, GRACE);
    assert_eq!(
        r.time_to_detect_s,
        Some(Spread {
            median: 20.0,
            max: 60.0
        })
    );
    assert_eq!((r.recall, r.precision), (1.0, Some(1.0)));
    assert_eq!(r.alerts_per_detected_incident, Some(4.0 / 3.0));
}

#[test]
fn a_zero_grace_ends_matching_at_the_incident_end() {
    let alerts = [alert("r", "s1", 460_000), alert("r", "s1", 460_001)];
    let r = score(&labels(), &alerts, None, 0);
    assert_eq!((r.true_positives, r.alerts), (1, 2));
}

#[test]
fn alert_files_take_arrays_objects_and_both_time_forms() {
    let dir = std::env::temp_dir().join(format!("hxp-score-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("alerts.json");
    std::fs::write(
        &path,
        r#"[{"rule": "a", "subject": "s1", "at_ms": 5},
            {"rule": "b", "raised_at": 7},
            {"rule": "c", "subject": "m", "raised_at": "1970-01-01T00:00:01.5Z"}]"#,
    )
    .unwrap();
    let got = alerts_from_file(&path).unwrap();
    assert_eq!(
        got,
        [
            alert("a", "s1", 5),
            alert("b", "", 7),
            alert("c", "m", 1500)
        ]
    );
    // As GET /correlations lists them: a held-back alert is left out.
    let listed = r#"{"recent_alerts": [{"rule": "a", "at_ms": 1, "suppressed_by": null},
                                       {"rule": "b", "at_ms": 2, "suppressed_by": "silence:s-1"}]}"#;
    std::fs::write(&path, listed).unwrap();
    assert_eq!(alerts_from_file(&path).unwrap(), [alert("a", "", 1)]);
    std::fs::write(&path, r#"[{"rule": "a", "at_ms": 1}, {"rule": "b"}]"#).unwrap();
    let e = format!("{:#}", alerts_from_file(&path).unwrap_err());
    assert!(e.contains("alert 1") && e.contains("at_ms"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn raw_firings_count_the_active_names_of_a_batch() {
    let json =
        r#"{"patterns_detected": ["high_latency", "error_burst"], "alert_triggered": false}"#;
    assert_eq!(active_names(json), 2);
    assert_eq!(active_names(r#"{"patterns_detected": []}"#), 0);
    assert_eq!(active_names("not json"), 0);
}

#[tokio::test]
async fn stored_alerts_are_read_at_their_batch_watermark() {
    let dir = std::env::temp_dir().join(format!("hxp-score-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/events.db", dir.display());
    // The service's schema, then two batches processed long after their
    // events' time (a replay): the alerts' raised_at is the clock, the
    // watermark is event time.
    let store = crate::store::Store::connect(&url, 1).await.unwrap();
    store.close().await;
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    for sql in [
        r#"INSERT INTO batches (batch_seq, processed_at, size, correlation, watermark) VALUES
           (1, 9000000, 100, '{"patterns_detected": ["x"]}', 150000),
           (101, 9000001, 100, '{"patterns_detected": ["x", "y"]}', 450000),
           (201, 9000002, 100, '{"patterns_detected": ["x"]}', 2000000)"#,
        "INSERT INTO correlation_alerts (batch_seq, n, raised_at, rule, source, subject, occurrences, score, message, evidence) VALUES
           (1, 0, 9000000, 'r', 'rule', 'm1', 5, 0.5, '', '[]'),
           (101, 0, 9000001, 'p', 'pattern', 's1', 5, 0.5, '', '[]'),
           (201, 0, 9000002, 'p', 'pattern', 's1', 5, 0.5, '', '[]')",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;
    let (alerts, firings) = input::from_database(&url, (0, 1_000_000)).await.unwrap();
    assert_eq!(
        alerts,
        [alert("r", "m1", 150_000), alert("p", "s1", 450_000)]
    );
    assert_eq!(
        firings,
        Firings {
            batches: 2,
            firings: 3
        }
    );
    let r = score(&labels(), &alerts, Some(firings), GRACE);
    assert_eq!((r.detected, r.true_positives), (2, 2));
    // An alert a silence held back is left out; a schema from before
    // silences (no suppressed_by) is read whole.
    let run = |sql: &'static str| {
        let url = url.clone();
        async move {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
            input::from_database(&url, (0, 1_000_000)).await.unwrap().0
        }
    };
    let held = "UPDATE correlation_alerts SET suppressed_by = 'silence:s-1' WHERE batch_seq = 1";
    assert_eq!(run(held).await, [alert("p", "s1", 450_000)]);
    let old_schema = "ALTER TABLE correlation_alerts DROP COLUMN suppressed_by";
    assert_eq!(run(old_schema).await.len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}
