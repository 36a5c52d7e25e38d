//! Events and batches: group-committed writes, reads for replay and
//! recalculation, sequence numbers and recent ids.

use super::rows::{BatchRow, BatchWrite, EventRow, RecordRow, StoredEvent};
use super::{Store, id_from_bytes};
use anyhow::Context;
use sqlx::Row;
use sqlx::any::AnyRow;

/// Rows per multi-row INSERT (10 parameters each; both backends allow more
/// than 30 000 parameters per statement).
const ROWS_PER_INSERT: usize = 1000;

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

impl Store {
    /// Reserve `n` event sequence numbers for this instance: returns the
    /// first. Atomic in the database, so several instances sharing one
    /// database never hand out the same number.
    pub async fn reserve_seqs(&self, n: u64) -> anyhow::Result<u64> {
        let first_free = self.max_seq().await? + 1;
        let end: String = sqlx::query_scalar(
            "INSERT INTO meta (key, value) VALUES ('next_seq', $1) ON CONFLICT (key) DO UPDATE \
             SET value = CAST(CAST(meta.value AS BIGINT) + $2 AS TEXT) RETURNING value",
        )
        .bind((first_free + n).to_string())
        .bind(n as i64)
        .fetch_one(&self.writer)
        .await?;
        let end: u64 = end.parse().context("meta next_seq is not a number")?;
        Ok(end - n)
    }

    /// Highest event sequence number stored (0 when empty).
    pub async fn max_seq(&self) -> anyhow::Result<u64> {
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(v.unwrap_or(0) as u64)
    }

    /// The most recent `limit` (event_id, seq), newest first.
    pub async fn recent_ids(&self, limit: usize) -> anyhow::Result<Vec<(u128, u64)>> {
        let rows = sqlx::query("SELECT event_id, seq FROM events ORDER BY seq DESC LIMIT $1")
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    id_from_bytes(&r.try_get::<Vec<u8>, _>(0)?)?,
                    r.try_get::<i64, _>(1)? as u64,
                ))
            })
            .collect()
    }

    /// Write several batches in one transaction (group commit: under load
    /// the writer takes every batch waiting and pays for one commit).
    pub async fn write_batches(&self, batches: &[BatchWrite]) -> anyhow::Result<()> {
        let mut tx = self.writer.begin().await?;
        let rows: Vec<&EventRow> = batches.iter().flat_map(|b| &b.events).collect();
        self.insert_events(&mut tx, &rows).await?;
        for w in batches {
            if let Some(b) = &w.batch {
                insert_batch(&mut tx, b, w).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The events, a multi-row INSERT per [`ROWS_PER_INSERT`]; a duplicate
    /// event id (a resend) is skipped.
    async fn insert_events(&self, tx: &mut Tx<'_>, rows: &[&EventRow]) -> anyhow::Result<()> {
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut sql = String::with_capacity(120 + chunk.len() * 48);
            sql.push_str(
                "INSERT INTO events (seq, event_id, event_type, event_time, ingested_at, processed_at, batch_seq, source, data) VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for c in 0..9 {
                    if c > 0 {
                        sql.push(',');
                    }
                    self.placeholder(&mut sql, i * 9 + c + 1);
                }
                sql.push(')');
            }
            sql.push_str(" ON CONFLICT (event_id) DO NOTHING");
            let mut q = sqlx::query(&sql);
            for e in chunk {
                q = q
                    .bind(e.seq as i64)
                    .bind(e.event_id.to_be_bytes().to_vec())
                    .bind(e.event_type)
                    .bind(e.event_time)
                    .bind(e.ingested_at)
                    .bind(e.processed_at)
                    .bind(e.batch_seq as i64)
                    .bind(e.source.as_deref())
                    .bind(e.data.as_str());
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// The stored parts of one processing record, by event sequence number.
    pub async fn record(&self, seq: u64) -> anyhow::Result<Option<RecordRow>> {
        let row = sqlx::query(
            "SELECT e.seq, e.event_id, e.event_type, e.processed_at, b.analytics, b.correlation, b.response, b.plugins \
             FROM events e LEFT JOIN batches b ON b.batch_seq = e.batch_seq WHERE e.seq = $1",
        )
        .bind(seq as i64)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(RecordRow {
                seq: r.try_get::<i64, _>(0)? as u64,
                event_id: id_from_bytes(&r.try_get::<Vec<u8>, _>(1)?)?,
                event_type: r.try_get(2)?,
                processed_at: r.try_get(3)?,
                analytics: r.try_get(4)?,
                correlation: r.try_get(5)?,
                response: r.try_get(6)?,
                plugins: r.try_get(7)?,
            })
        })
        .transpose()
    }

    /// Events with `seq > after`, in order, at most `limit`, with their
    /// batch's watermark.
    pub async fn events_after(&self, after: u64, limit: usize) -> anyhow::Result<Vec<StoredEvent>> {
        let rows = sqlx::query(&format!(
            "{STORED_EVENT} WHERE e.seq > $1 ORDER BY e.seq LIMIT $2"
        ))
        .bind(after as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_event).collect()
    }

    /// Events with `seq > after` whose event time is in `[from_ms,
    /// until_ms)`, in order, at most `limit` (recalculating an event-time
    /// window).
    pub async fn events_in_time(
        &self,
        from_ms: i64,
        until_ms: i64,
        after: u64,
        limit: usize,
    ) -> anyhow::Result<Vec<StoredEvent>> {
        let rows = sqlx::query(&format!(
            "{STORED_EVENT} WHERE e.event_time >= $1 AND e.event_time < $2 AND e.seq > $3 ORDER BY e.seq LIMIT $4"
        ))
        .bind(from_ms)
        .bind(until_ms)
        .bind(after as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_event).collect()
    }

    /// Events whose event time is in `[from_ms, until_ms)`, in (event time,
    /// seq) order after `after` = (event time, seq), at most `limit`
    /// (a page of [`Store::scan_by_time`] on PostgreSQL).
    pub async fn events_by_time(
        &self,
        from_ms: i64,
        until_ms: i64,
        after: (i64, u64),
        limit: usize,
    ) -> anyhow::Result<Vec<StoredEvent>> {
        let rows = sqlx::query(&format!("{STORED_EVENT} {}", super::scan::BY_TIME_PAGE))
            .bind(from_ms)
            .bind(until_ms)
            .bind(after.0)
            .bind(after.1 as i64)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(stored_event).collect()
    }

    /// The watermark of the last stored batch (where a restart resumes).
    pub async fn last_watermark(&self) -> anyhow::Result<Option<i64>> {
        let v: Option<Option<i64>> =
            sqlx::query_scalar("SELECT watermark FROM batches ORDER BY batch_seq DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        Ok(v.flatten())
    }

    /// First event sequence number of the batches processed at or after
    /// `since_ms`.
    pub async fn first_seq_since(&self, since_ms: i64) -> anyhow::Result<Option<u64>> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT MIN(batch_seq) FROM batches WHERE processed_at >= $1")
                .bind(since_ms)
                .fetch_one(&self.pool)
                .await?;
        Ok(v.map(|v| v as u64))
    }
}

/// The columns [`stored_event`] reads: an event and its batch's
/// watermark (its processing time for batches stored before event time).
const STORED_EVENT: &str = "SELECT e.seq, e.event_type, e.processed_at, e.batch_seq, e.event_time, e.event_id, e.data, \
     COALESCE(b.watermark, e.processed_at) FROM events e LEFT JOIN batches b ON b.batch_seq = e.batch_seq";

fn stored_event(r: &AnyRow) -> anyhow::Result<StoredEvent> {
    Ok(StoredEvent {
        seq: r.try_get::<i64, _>(0)? as u64,
        event_type: r.try_get(1)?,
        processed_at: r.try_get(2)?,
        watermark: r.try_get(7)?,
        batch_seq: r.try_get::<i64, _>(3)? as u64,
        event_time: r.try_get(4)?,
        event_id: id_from_bytes(&r.try_get::<Vec<u8>, _>(5)?)?,
        data: r.try_get(6)?,
    })
}

/// A batch's row, its alerts and its action requests.
async fn insert_batch(tx: &mut Tx<'_>, b: &BatchRow, w: &BatchWrite) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO batches (batch_seq, processed_at, size, analytics, correlation, response, plugins, watermark) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT (batch_seq) DO NOTHING",
    )
    .bind(b.batch_seq as i64)
    .bind(b.processed_at)
    .bind(b.size as i64)
    .bind(b.analytics.clone())
    .bind(b.correlation.clone())
    .bind(b.response.clone())
    .bind(b.plugins.clone())
    .bind(b.watermark)
    .execute(&mut **tx)
    .await?;
    for (n, a) in w.alerts.iter().enumerate() {
        sqlx::query(
            "INSERT INTO correlation_alerts (batch_seq, n, raised_at, rule, source, subject, occurrences, score, message, evidence, suppressed_by) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) ON CONFLICT (batch_seq, n) DO NOTHING",
        )
        .bind(b.batch_seq as i64)
        .bind(n as i64)
        .bind(a.raised_at)
        .bind(a.rule.as_str())
        .bind(a.source.as_str())
        .bind(a.subject.as_str())
        .bind(a.occurrences)
        .bind(a.score)
        .bind(a.message.as_str())
        .bind(a.evidence.as_str())
        .bind(a.suppressed_by.clone())
        .execute(&mut **tx)
        .await?;
    }
    for (n, a) in w.actions.iter().enumerate() {
        sqlx::query(
            "INSERT INTO action_requests (batch_seq, n, requested_at, rule, action, target, parameters, reason, findings, outcome, detail, \
             analytics, executor, dry_run, idempotency_key, started_at, finished_at, attempts, http_status, error) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20) ON CONFLICT (batch_seq, n) DO NOTHING",
        )
        .bind(b.batch_seq as i64)
        .bind(n as i64)
        .bind(a.requested_at)
        .bind(a.rule.as_str())
        .bind(a.action.as_str())
        .bind(a.target.as_str())
        .bind(a.parameters.as_str())
        .bind(a.reason.as_str())
        .bind(a.findings.as_str())
        .bind(a.outcome.as_str())
        .bind(a.detail.as_str())
        .bind(a.analytics.clone())
        .bind(a.executor.clone())
        .bind(i64::from(a.dry_run))
        .bind(a.idempotency_key.clone())
        .bind(a.started_at)
        .bind(a.finished_at)
        .bind(a.attempts)
        .bind(a.http_status)
        .bind(a.error.clone())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
