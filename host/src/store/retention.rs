//! Retention: rows older than `database.retention_secs` are deleted in
//! small transactions ([`CHUNK`] rows each), so the writer never waits long
//! for the database and disk use stays flat at a steady rate (SQLite reuses
//! the freed pages; PostgreSQL's autovacuum does).
//!
//! Events go by when they were stored (`ingested_at`), not by their own
//! timestamp: a replayed old event is kept like any other. Batches, alerts
//! and action requests go by when they were processed, raised or
//! requested. Silences go once they are over (deleted, or a one-off past
//! its end) before the cutoff: a backtest covers only stored events, so it
//! can no longer need them; recurring ones stay until deleted. Analytics
//! snapshots follow `performance_metrics.history_retention` (pruned as they
//! are written); plugin checkpoints and the deployment history are small
//! and kept.

use super::Store;
use crate::telemetry::Metrics;
use prometheus::IntCounterVec;
use std::time::Duration;

/// Rows deleted per transaction.
pub const CHUNK: i64 = 5_000;

/// A table with retention, and how its expired rows are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Events,
    Batches,
    Alerts,
    Actions,
    Silences,
}

impl Table {
    pub const ALL: [Table; 5] = [
        Table::Events,
        Table::Batches,
        Table::Alerts,
        Table::Actions,
        Table::Silences,
    ];

    /// The `table` label of `database_retention_deleted_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::Batches => "batches",
            Table::Alerts => "correlation_alerts",
            Table::Actions => "action_requests",
            Table::Silences => "silences",
        }
    }

    /// One chunk of expired rows (`$1`: the cutoff, `$2`: the chunk size).
    fn delete_chunk(self) -> &'static str {
        match self {
            // The oldest rows by the key, which follows ingestion: at most
            // a chunk is read, with no index on ingested_at.
            Table::Events => {
                "DELETE FROM events WHERE seq IN (SELECT seq FROM \
                 (SELECT seq, ingested_at FROM events ORDER BY seq LIMIT $2) oldest \
                 WHERE ingested_at < $1)"
            }
            Table::Batches => {
                "DELETE FROM batches WHERE batch_seq IN \
                 (SELECT batch_seq FROM batches WHERE processed_at < $1 ORDER BY batch_seq LIMIT $2)"
            }
            Table::Alerts => {
                "DELETE FROM correlation_alerts WHERE (batch_seq, n) IN \
                 (SELECT batch_seq, n FROM correlation_alerts WHERE raised_at < $1 ORDER BY raised_at LIMIT $2)"
            }
            Table::Actions => {
                "DELETE FROM action_requests WHERE (batch_seq, n) IN \
                 (SELECT batch_seq, n FROM action_requests WHERE requested_at < $1 ORDER BY requested_at LIMIT $2)"
            }
            Table::Silences => {
                "DELETE FROM silences WHERE id IN (SELECT id FROM silences \
                 WHERE deleted_at < $1 OR (repeat_every_secs IS NULL AND ends_at < $1) \
                 ORDER BY created_at LIMIT $2)"
            }
        }
    }
}

impl Store {
    /// Delete up to `chunk` rows of `table` older than `cutoff_ms` in one
    /// transaction; returns how many went.
    pub async fn delete_expired(
        &self,
        table: Table,
        cutoff_ms: i64,
        chunk: i64,
    ) -> anyhow::Result<u64> {
        let done = sqlx::query(table.delete_chunk())
            .bind(cutoff_ms)
            .bind(chunk)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }
}

/// Every `interval`, delete what is older than `keep`, chunk by chunk,
/// until the service stops (the task is aborted). Failures are logged and
/// retried the next round.
pub async fn run(store: Store, keep: Duration, metrics: std::sync::Arc<Metrics>) {
    let deleted = metrics.register(
        IntCounterVec::new(
            prometheus::Opts::new(
                "database_retention_deleted_total",
                "Rows deleted because they were older than database.retention_secs, by table",
            ),
            &["table"],
        )
        .expect("valid metric"),
    );
    let interval = (keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let cutoff = super::now_ms() - keep.as_millis() as i64;
        for table in Table::ALL {
            if let Err(e) = expire(&store, table, cutoff, &deleted).await {
                tracing::warn!(table = table.as_str(), error = %format!("{e:#}"), "retention: delete failed; retried next round");
            }
        }
    }
}

/// Delete `table`'s rows older than `cutoff_ms`, a chunk per transaction.
async fn expire(
    store: &Store,
    table: Table,
    cutoff_ms: i64,
    deleted: &IntCounterVec,
) -> anyhow::Result<()> {
    loop {
        let n = store.delete_expired(table, cutoff_ms, CHUNK).await?;
        deleted.with_label_values(&[table.as_str()]).inc_by(n);
        if n < CHUNK as u64 {
            return Ok(());
        }
        // Let the pipeline's writer in between chunks.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BatchRow, BatchWrite, EventRow, temp_store};

    fn batch(seq: u64, at: i64, events: usize) -> BatchWrite {
        BatchWrite {
            events: (0..events)
                .map(|i| EventRow {
                    seq: seq * 1000 + i as u64,
                    event_id: (seq as u128) << 32 | i as u128,
                    event_type: "llm_request",
                    event_time: at,
                    ingested_at: at,
                    processed_at: at,
                    batch_seq: seq,
                    source: None,
                    data: "{}".into(),
                })
                .collect(),
            batch: Some(BatchRow {
                batch_seq: seq,
                processed_at: at,
                size: events,
                analytics: None,
                correlation: None,
                response: None,
                plugins: None,
                watermark: None,
            }),
            alerts: vec![],
            actions: vec![],
        }
    }

    async fn count(store: &Store, table: &str) -> i64 {
        use sqlx::Row;
        sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&store.pool)
            .await
            .unwrap()
            .get(0)
    }

    #[tokio::test]
    async fn expired_rows_go_in_chunks_and_recent_ones_stay() {
        let store = temp_store().await;
        // 7 old batches of 300 events, 2 recent ones.
        let mut writes: Vec<BatchWrite> = (1..=7).map(|s| batch(s, 1_000, 300)).collect();
        writes.extend((8..=9).map(|s| batch(s, 9_000, 300)));
        store.write_batches(&writes).await.unwrap();
        let mut rounds = Vec::new();
        loop {
            let n = store
                .delete_expired(Table::Events, 5_000, 500)
                .await
                .unwrap();
            rounds.push(n);
            if n < 500 {
                break;
            }
        }
        assert_eq!(rounds, vec![500, 500, 500, 500, 100]);
        assert_eq!(count(&store, "events").await, 600);
        let gone = store
            .delete_expired(Table::Batches, 5_000, CHUNK)
            .await
            .unwrap();
        assert_eq!(gone, 7);
        assert_eq!(count(&store, "batches").await, 2);
        // Nothing else has expired.
        for t in Table::ALL {
            assert_eq!(store.delete_expired(t, 5_000, CHUNK).await.unwrap(), 0);
        }
    }

    #[tokio::test]
    async fn silences_go_once_over_before_the_cutoff() {
        let store = temp_store().await;
        let silence = |id: &str, ends_at: i64, repeat: Option<i64>, deleted_at: Option<i64>| {
            crate::store::SilenceRow {
                id: id.into(),
                created_at: 1,
                starts_at: 100,
                ends_at,
                repeat_every_secs: repeat,
                creator: "ops".into(),
                comment: String::new(),
                matchers: "[]".into(),
                deleted_at,
            }
        };
        for s in [
            silence("ended", 4_000, None, None),
            silence("ends-later", 6_000, None, None),
            silence("recurring", 200, Some(86_400), None),
            silence("recurring-deleted", 200, Some(86_400), Some(4_500)),
            silence("deleted-after-cutoff", 9_000, None, Some(5_500)),
        ] {
            store.insert_silence(&s).await.unwrap();
        }
        let gone = store
            .delete_expired(Table::Silences, 5_000, CHUNK)
            .await
            .unwrap();
        assert_eq!(gone, 2);
        let mut left: Vec<String> = store
            .silences()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        left.sort();
        assert_eq!(left, ["deleted-after-cutoff", "ends-later", "recurring"]);
    }
}
