//! Alerts and action requests: the audit rows and their outcomes.

use super::rows::{ActionRow, ActionUpdate, AlertRow, Outcome, parse_stored};
use super::{Store, now_ms};
use sqlx::Row;

/// How action requests are counted and compared (backtests): per rule and
/// action.
pub fn action_key(rule: &str, action: &str) -> String {
    format!("{rule}: {action}")
}

/// What a backtest compares with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Alerts, per rule.
    Alerts,
    /// Action requests, per `rule: action`.
    Actions,
}

impl Store {
    /// What the batches `first..=last` recorded, counted per batch and
    /// rule (alerts raised: not those a silence or inhibition held back)
    /// or per batch and `rule: action` (action requests).
    pub async fn recorded_in_batches(
        &self,
        kind: Recorded,
        (first, last): (u64, u64),
    ) -> anyhow::Result<Vec<(u64, String, u64)>> {
        let (columns, table, raised) = match kind {
            Recorded::Alerts => ("rule", "correlation_alerts", "AND suppressed_by IS NULL"),
            Recorded::Actions => ("rule, action", "action_requests", ""),
        };
        let sql = format!(
            "SELECT batch_seq, COUNT(*), {columns} FROM {table} \
             WHERE batch_seq >= $1 AND batch_seq <= $2 {raised} GROUP BY batch_seq, {columns}"
        );
        let rows = sqlx::query(&sql)
            .bind(first as i64)
            .bind(last as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let (batch, n) = (r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?);
                let rule: String = r.try_get(2)?;
                let key = match kind {
                    Recorded::Alerts => rule,
                    Recorded::Actions => action_key(&rule, &r.try_get::<String, _>(3)?),
                };
                Ok((batch as u64, key, n as u64))
            })
            .collect()
    }

    /// Recent alerts, newest first.
    pub async fn alerts(&self, since_ms: i64, limit: usize) -> anyhow::Result<Vec<AlertRow>> {
        let rows = sqlx::query(
            "SELECT raised_at, rule, source, subject, occurrences, score, message, evidence, suppressed_by FROM correlation_alerts \
             WHERE raised_at >= $1 ORDER BY raised_at DESC, batch_seq DESC, n DESC LIMIT $2",
        )
        .bind(since_ms)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AlertRow {
                    raised_at: r.try_get(0)?,
                    rule: r.try_get(1)?,
                    source: r.try_get(2)?,
                    subject: r.try_get(3)?,
                    occurrences: r.try_get(4)?,
                    score: r.try_get(5)?,
                    message: r.try_get(6)?,
                    evidence: r.try_get(7)?,
                    suppressed_by: r.try_get(8)?,
                })
            })
            .collect()
    }

    /// Alert counts per rule: (rule, total, since `since_ms`); alerts
    /// raised, not those held back.
    pub async fn alert_counts(&self, since_ms: i64) -> anyhow::Result<Vec<(String, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT rule, COUNT(*), SUM(CASE WHEN raised_at >= $1 THEN 1 ELSE 0 END) FROM correlation_alerts \
             WHERE suppressed_by IS NULL GROUP BY rule ORDER BY rule",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get::<Option<i64>, _>(2)?.unwrap_or(0),
                ))
            })
            .collect()
    }

    /// Action requests, newest first, filtered.
    pub async fn actions(
        &self,
        since_ms: i64,
        action: Option<&str>,
        outcome: Option<Outcome>,
        limit: usize,
        offset: usize,
    ) -> anyhow::Result<(Vec<ActionRow>, i64)> {
        let filter =
            "WHERE requested_at >= $1 AND ($2 = '' OR action = $2) AND ($3 = '' OR outcome = $3)";
        let total: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM action_requests {filter}"))
                .bind(since_ms)
                .bind(action.unwrap_or(""))
                .bind(outcome.map(Outcome::as_str).unwrap_or(""))
                .fetch_one(&self.pool)
                .await?;
        let rows = sqlx::query(&format!(
            "SELECT requested_at, rule, action, target, parameters, reason, findings, outcome, detail, \
             analytics, executor, dry_run, idempotency_key, started_at, finished_at, attempts, http_status, error \
             FROM action_requests {filter} \
             ORDER BY requested_at DESC, batch_seq DESC, n DESC LIMIT $4 OFFSET $5"
        ))
        .bind(since_ms)
        .bind(action.unwrap_or(""))
        .bind(outcome.map(Outcome::as_str).unwrap_or(""))
        .bind(limit as i64)
        .bind(offset as i64)
        .fetch_all(&self.pool)
        .await?;
        let rows = rows
            .iter()
            .map(|r| {
                Ok(ActionRow {
                    requested_at: r.try_get(0)?,
                    rule: r.try_get(1)?,
                    action: r.try_get(2)?,
                    target: r.try_get(3)?,
                    parameters: r.try_get(4)?,
                    reason: r.try_get(5)?,
                    findings: r.try_get(6)?,
                    outcome: parse_stored("outcome", &r.try_get::<String, _>(7)?, Outcome::parse)?,
                    detail: r.try_get(8)?,
                    analytics: r.try_get(9)?,
                    executor: r.try_get(10)?,
                    dry_run: r.try_get::<i64, _>(11)? != 0,
                    idempotency_key: r.try_get(12)?,
                    started_at: r.try_get(13)?,
                    finished_at: r.try_get(14)?,
                    attempts: r.try_get(15)?,
                    http_status: r.try_get(16)?,
                    error: r.try_get(17)?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((rows, total))
    }

    /// SQLite: copy the write-ahead log into the database file. The writer
    /// calls this between its own transactions (when idle, or after a lot
    /// was written), on its own connection, so no commit waits for a
    /// checkpoint and its fsync, and nothing contends with it. (A separate
    /// checkpointing connection was measured: its lock contention with the
    /// Record an executor's result on the request's row, if it is still
    /// pending (a row already marked interrupted keeps that). True when the
    /// row was updated.
    pub async fn update_action_outcome(
        &self,
        batch_seq: u64,
        n: u32,
        u: &ActionUpdate,
    ) -> anyhow::Result<bool> {
        let r = sqlx::query(
            "UPDATE action_requests SET outcome = $1, detail = $2, started_at = $3, finished_at = $4, \
             attempts = $5, http_status = $6, error = $7 \
             WHERE batch_seq = $8 AND n = $9 AND outcome = 'pending'",
        )
        .bind(u.outcome.as_str())
        .bind(u.detail.as_str())
        .bind(u.started_at)
        .bind(u.finished_at)
        .bind(u.attempts)
        .bind(u.http_status)
        .bind(u.error.clone())
        .bind(batch_seq as i64)
        .bind(n as i64)
        .execute(&self.writer)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Requests still pending that were requested before `before_ms`: their
    /// process stopped without finishing them. Recorded as failed (not
    /// re-run; see crate::actions). Returns how many.
    pub async fn mark_interrupted(&self, before_ms: i64) -> anyhow::Result<u64> {
        let r = sqlx::query(
            "UPDATE action_requests SET outcome = 'failed', error = 'interrupted by restart', \
             detail = 'the service stopped before this request finished; not re-run', finished_at = $1 \
             WHERE outcome = 'pending' AND requested_at < $2",
        )
        .bind(now_ms())
        .bind(before_ms)
        .execute(&self.writer)
        .await?;
        Ok(r.rows_affected())
    }
}
