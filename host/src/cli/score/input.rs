//! Where the scorer's alerts come from: a JSON file, or the database of the
//! service that processed the scenario (which also holds the per-batch
//! results the raw firings are counted from).
//!
//! An alert's time must be event time. A stored alert's `raised_at` is the
//! service's clock when its batch was processed, which for a replay sent
//! as fast as the service takes it says nothing about the events; the
//! batch's watermark (`batches.watermark`, the plugins' clock when the
//! alert was raised) does, so that is the time read from a database.
//! Alerts recorded as held back by a silence or an inhibit rule (where the
//! schema has `suppressed_by`) were sent to no one and are left out.

use super::Alert;
use anyhow::Context;
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use std::path::Path;

/// Rule firings of a system that would page on every evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Firings {
    /// Stored batches in the span (one correlation evaluation each).
    pub batches: u64,
    /// Their active findings, counted as below.
    pub firings: u64,
}

/// The alerts of a JSON file: an array, or an object with `alerts` (or
/// `recent_alerts`, as GET /correlations answers). Each has `rule`,
/// `subject` (absent: unkeyed) and its event time, `at_ms` (ms) or
/// `raised_at` (ms, or RFC 3339); one with a `suppressed_by` was held back
/// and is left out.
pub fn alerts_from_file(path: &Path) -> anyhow::Result<Vec<Alert>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let list = match &v {
        Value::Array(a) => a,
        Value::Object(o) => o
            .get("alerts")
            .or_else(|| o.get("recent_alerts"))
            .and_then(Value::as_array)
            .with_context(|| format!("{}: no `alerts` array", path.display()))?,
        _ => anyhow::bail!("{}: expected an array of alerts", path.display()),
    };
    list.iter()
        .enumerate()
        .filter(|(_, a)| a["suppressed_by"].is_null())
        .map(|(i, a)| alert(a).with_context(|| format!("{}: alert {i}", path.display())))
        .collect()
}

fn alert(v: &Value) -> anyhow::Result<Alert> {
    let rule = v["rule"].as_str().context("`rule` must be a string")?;
    let subject = v["subject"].as_str().unwrap_or("");
    let at_ms = match (&v["at_ms"], &v["raised_at"]) {
        (Value::Number(n), _) | (Value::Null, Value::Number(n)) => n.as_i64(),
        (Value::Null, Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.timestamp_millis()),
        _ => None,
    }
    .context("needs `at_ms` (ms) or `raised_at` (ms or RFC 3339)")?;
    Ok(Alert {
        rule: rule.to_string(),
        subject: subject.to_string(),
        at_ms,
    })
}

/// The alerts, and the raw firings, stored in a service's database for
/// event times in `[from_ms, to_ms]`.
pub async fn from_database(
    url: &str,
    (from_ms, to_ms): (i64, i64),
) -> anyhow::Result<(Vec<Alert>, Firings)> {
    sqlx::any::install_default_drivers();
    // Read-only: the service may still be running on it.
    let url = if url.starts_with("sqlite:") && !url.contains('?') {
        format!("{url}?mode=ro")
    } else {
        url.to_string()
    };
    let pool = sqlx::AnyPool::connect(&url)
        .await
        .with_context(|| format!("opening {}", crate::config::redact_url(&url)))?;
    let alerts = stored_alerts(&pool, (from_ms, to_ms)).await?;
    let firings = firings(&pool, (from_ms, to_ms)).await?;
    pool.close().await;
    Ok((alerts, firings))
}

/// The alerts raised at event times in `[from_ms, to_ms]` (their batch's
/// watermark; `raised_at` where the batch stored no row).
async fn stored_alerts(
    pool: &sqlx::AnyPool,
    (from_ms, to_ms): (i64, i64),
) -> anyhow::Result<Vec<Alert>> {
    // Alerts a silence or an inhibit rule held back (recorded with what
    // did, where the schema has `suppressed_by`) were sent to no one.
    let unheld = if has_suppression(pool).await {
        "AND a.suppressed_by IS NULL"
    } else {
        ""
    };
    let rows = sqlx::query(&format!(
        "SELECT a.rule, a.subject, COALESCE(b.watermark, a.raised_at) AS at_ms \
         FROM correlation_alerts a LEFT JOIN batches b ON b.batch_seq = a.batch_seq \
         WHERE COALESCE(b.watermark, a.raised_at) BETWEEN $1 AND $2 {unheld} ORDER BY a.batch_seq, a.n"
    ))
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(pool)
    .await
    .context("reading correlation_alerts")?;
    rows.iter()
        .map(|r| {
            Ok(Alert {
                rule: r.try_get(0)?,
                subject: r.try_get(1)?,
                at_ms: r.try_get(2)?,
            })
        })
        .collect()
}

/// Whether the alerts record what held them back (a database from before
/// silences does not): a query of the column that fails only where it is
/// missing.
async fn has_suppression(pool: &sqlx::AnyPool) -> bool {
    sqlx::query("SELECT suppressed_by FROM correlation_alerts WHERE 1 = 0")
        .fetch_all(pool)
        .await
        .is_ok()
}

/// Raw firings. `batches.correlation` stores, per batch, the names of the
/// active findings (`patterns_detected`, each name once whatever its
/// subjects; the findings themselves are not kept), so a firing is one
/// name active in one batch: what a notifier that evaluates every batch
/// and pages per active rule would send. It undercounts a pattern active
/// on several subjects at once, so it is a lower bound of such a system's
/// pages, and it grows with the number of batches (the service's batch
/// size and how fast events came): compare it between runs fed alike.
async fn firings(pool: &sqlx::AnyPool, (from_ms, to_ms): (i64, i64)) -> anyhow::Result<Firings> {
    let rows = sqlx::query(
        "SELECT correlation FROM batches WHERE correlation IS NOT NULL \
         AND COALESCE(watermark, processed_at) BETWEEN $1 AND $2",
    )
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(pool)
    .await
    .context("reading batches")?;
    let mut out = Firings {
        batches: 0,
        firings: 0,
    };
    for r in &rows {
        let text: String = r.try_get(0)?;
        out.batches += 1;
        out.firings += active_names(&text);
    }
    Ok(out)
}

/// The number of `patterns_detected` in a batch's correlation JSON (0 when
/// it does not parse: the batch ran no correlation worth counting).
pub fn active_names(correlation_json: &str) -> u64 {
    serde_json::from_str::<Value>(correlation_json)
        .ok()
        .and_then(|v| v["patterns_detected"].as_array().map(|a| a.len() as u64))
        .unwrap_or(0)
}
