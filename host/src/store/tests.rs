//! Rows written and read back on SQLite: every column and every enum keeps
//! its value.

use super::*;

fn action_row(outcome: Outcome) -> ActionRow {
    ActionRow {
        requested_at: 1_000,
        rule: "notify_admin".into(),
        action: "send_notification".into(),
        target: "all".into(),
        parameters: r#"{"category":"error"}"#.into(),
        reason: "error_rate > 0.2".into(),
        findings: "[]".into(),
        outcome,
        detail: "queued".into(),
        analytics: Some(r#"{"error_rate":0.3}"#.into()),
        executor: Some("notify".into()),
        dry_run: false,
        idempotency_key: Some("k1".into()),
        started_at: None,
        finished_at: None,
        attempts: 0,
        http_status: None,
        error: None,
    }
}

fn batch_write() -> BatchWrite {
    BatchWrite {
        events: vec![EventRow {
            seq: 7,
            event_id: 0x1234,
            event_type: "llm_request",
            event_time: 500,
            ingested_at: 600,
            processed_at: 700,
            batch_seq: 7,
            source: Some(std::sync::Arc::from("kafka")),
            data: r#"{"model":"m"}"#.into(),
        }],
        batch: Some(BatchRow {
            batch_seq: 7,
            processed_at: 700,
            size: 1,
            analytics: Some(r#"{"throughput":1.0}"#.into()),
            correlation: None,
            response: Some(r#"{"response_triggered":true}"#.into()),
            plugins: Some(r#"{"analytics":"0.1.0"}"#.into()),
            watermark: None,
        }),
        alerts: vec![AlertRow {
            raised_at: 700,
            rule: "burst".into(),
            source: "rule".into(),
            subject: "api".into(),
            occurrences: 5,
            score: 0.75,
            message: "5 errors".into(),
            evidence: "[7]".into(),
            suppressed_by: None,
        }],
        actions: vec![action_row(Outcome::Pending), action_row(Outcome::DryRun)],
    }
}

#[tokio::test]
async fn events_batches_alerts_and_actions_round_trip() {
    let store = temp_store().await;
    store.write_batches(&[batch_write()]).await.unwrap();
    // A resend of the same event id is skipped, not an error.
    store.write_batches(&[batch_write()]).await.unwrap();
    let events = store.events_after(0, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(
        (e.seq, e.event_id, e.event_time, e.processed_at, e.batch_seq),
        (7, 0x1234, 500, 700, 7)
    );
    assert_eq!(
        (e.event_type.as_str(), e.data.as_str()),
        ("llm_request", r#"{"model":"m"}"#)
    );
    let typed = e.typed().unwrap();
    assert_eq!((typed.seq, typed.model.as_deref()), (7, Some("m")));
    let rec = store.record(7).await.unwrap().unwrap();
    assert_eq!(rec.analytics.as_deref(), Some(r#"{"throughput":1.0}"#));
    assert_eq!(rec.plugins.as_deref(), Some(r#"{"analytics":"0.1.0"}"#));
    assert!(rec.correlation.is_none());
    let alerts = store.alerts(0, 10).await.unwrap();
    assert_eq!(
        (
            alerts[0].rule.as_str(),
            alerts[0].occurrences,
            alerts[0].score
        ),
        ("burst", 5, 0.75)
    );
    let (rows, total) = store.actions(0, None, None, 10, 0).await.unwrap();
    assert_eq!(total, 2);
    let mut outcomes: Vec<Outcome> = rows.iter().map(|r| r.outcome).collect();
    outcomes.sort_by_key(|o| o.as_str());
    assert_eq!(outcomes, vec![Outcome::DryRun, Outcome::Pending]);
    let (pending, n) = store
        .actions(0, Some("send_notification"), Some(Outcome::Pending), 10, 0)
        .await
        .unwrap();
    assert_eq!((n, pending[0].idempotency_key.as_deref()), (1, Some("k1")));
    assert_eq!(store.max_seq().await.unwrap(), 7);
    assert_eq!(store.recent_ids(5).await.unwrap(), vec![(0x1234, 7)]);
}

#[tokio::test]
async fn an_outcome_is_updated_only_while_pending() {
    let store = temp_store().await;
    store.write_batches(&[batch_write()]).await.unwrap();
    let done = ActionUpdate {
        outcome: Outcome::Executed,
        detail: "POST: HTTP 200".into(),
        started_at: Some(710),
        finished_at: 720,
        attempts: 1,
        http_status: Some(200),
        error: None,
    };
    assert!(store.update_action_outcome(7, 0, &done).await.unwrap());
    assert!(
        !store.update_action_outcome(7, 0, &done).await.unwrap(),
        "final already"
    );
    assert!(
        !store.update_action_outcome(7, 1, &done).await.unwrap(),
        "a dry run is final"
    );
    let (rows, _) = store
        .actions(0, None, Some(Outcome::Executed), 10, 0)
        .await
        .unwrap();
    assert_eq!((rows[0].http_status, rows[0].attempts), (Some(200), 1));
}

#[tokio::test]
async fn deployments_and_checkpoints_round_trip() {
    let store = temp_store().await;
    let row = DeploymentRow {
        id: 42,
        plugin: "analytics".into(),
        at: 1_000,
        stage: Some("analytics".into()),
        file: "/plugins/analytics.wasm".into(),
        sha256: Some("ab".into()),
        version: Some("0.1.0".into()),
        result: DeploymentResult::RolledBack,
        reason: "back".into(),
        trigger: Trigger::Rollback,
        after_seq: Some(9),
        compile_ms: Some(1.5),
        pause_us: Some(300),
        actor: Some("token ci from 127.0.0.1:50000".into()),
    };
    store.insert_deployment(&row).await.unwrap();
    let back = store.deployments("analytics", 10).await.unwrap();
    assert_eq!(back.len(), 1);
    let b = &back[0];
    assert_eq!(
        (b.result, b.trigger),
        (DeploymentResult::RolledBack, Trigger::Rollback)
    );
    assert_eq!(
        (b.after_seq, b.compile_ms, b.pause_us),
        (Some(9), Some(1.5), Some(300))
    );
    assert_eq!(b.actor.as_deref(), Some("token ci from 127.0.0.1:50000"));
    store
        .save_plugin_state("analytics", "0.1.0", 3, 99, b"state")
        .await
        .unwrap();
    store
        .save_plugin_state("analytics", "0.1.1", 4, 100, b"newer")
        .await
        .unwrap();
    let (version, last_seq, state) = store.plugin_state("analytics").await.unwrap().unwrap();
    assert_eq!(
        (version, last_seq, state.as_slice()),
        (4, 100, b"newer".as_slice())
    );
}

#[tokio::test]
async fn an_unknown_stored_name_is_an_error_naming_the_column() {
    let store = temp_store().await;
    store.write_batches(&[batch_write()]).await.unwrap();
    sqlx::query("UPDATE action_requests SET outcome = 'exploded' WHERE n = 0")
        .execute(&store.writer)
        .await
        .unwrap();
    let e = store.actions(0, None, None, 10, 0).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("outcome: unknown stored value 'exploded'"),
        "{e}"
    );
}

#[test]
fn stored_names_are_stable() {
    for o in Outcome::ALL {
        assert_eq!(Outcome::parse(o.as_str()), Some(*o));
        assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
    }
    assert_eq!(Outcome::SuppressedCooldown.as_str(), "suppressed_cooldown");
    assert_eq!(DeploymentResult::RolledBack.as_str(), "rolled_back");
    assert_eq!(Trigger::parse("watch"), Some(Trigger::Watch));
    assert_eq!(Outcome::parse("nonsense"), None);
}

/// Opened as it is: a missing file is not created, what the service wrote
/// is read, nothing can be written, and a schema of another version is
/// refused with what to do.
#[tokio::test]
async fn an_existing_database_is_opened_read_only_and_its_schema_checked() {
    let dir = std::env::temp_dir().join(format!("hxp-unit-{}", uuid::Uuid::new_v4()));
    let url = format!("sqlite://{}/events.db", dir.display());
    std::fs::create_dir_all(&dir).unwrap();
    assert!(Store::connect_existing(&url).await.is_err());
    assert!(!dir.join("events.db").exists(), "not created");

    let service = Store::connect(&url, 1).await.unwrap();
    service.write_batches(&[batch_write()]).await.unwrap();
    let reader = Store::connect_existing(&url).await.unwrap();
    assert_eq!(reader.max_seq().await.unwrap(), 7);
    let write = sqlx::query("DELETE FROM events")
        .execute(&reader.writer)
        .await;
    assert!(write.is_err(), "a read-only store wrote");

    sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (999999, 0)")
        .execute(&service.writer)
        .await
        .unwrap();
    let e = Store::connect_existing(&url).await.err().unwrap();
    assert!(format!("{e:#}").contains("999999"), "{e:#}");
}

/// An alert a silence held back is stored with why, and is not counted as
/// raised (GET /correlations/stats, backtests).
#[tokio::test]
async fn a_held_back_alert_keeps_why_and_is_not_counted_as_raised() {
    let store = temp_store().await;
    let mut w = batch_write();
    let mut held = w.alerts[0].clone();
    held.rule = "slow".into();
    held.suppressed_by = Some("silence:0f1e".into());
    w.alerts.push(held);
    store.write_batches(&[w]).await.unwrap();
    let alerts = store.alerts(0, 10).await.unwrap();
    let why: Vec<(&str, Option<&str>)> = alerts
        .iter()
        .map(|a| (a.rule.as_str(), a.suppressed_by.as_deref()))
        .collect();
    assert_eq!(why, vec![("slow", Some("silence:0f1e")), ("burst", None)]);
    let counts = store.alert_counts(0).await.unwrap();
    assert_eq!(counts, vec![("burst".to_string(), 1, 1)]);
    let recorded = store
        .recorded_in_batches(Recorded::Alerts, (7, 7))
        .await
        .unwrap();
    assert_eq!(recorded, vec![(7, "burst".to_string(), 1)]);
}
