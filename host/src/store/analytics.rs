//! Analytics history snapshots.

use super::Store;
use sqlx::Row;

impl Store {
    pub async fn save_snapshot(
        &self,
        taken_at: i64,
        snapshot: &str,
        retention_ms: i64,
    ) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO analytics_snapshots (taken_at, snapshot) VALUES ($1, $2) ON CONFLICT (taken_at) DO NOTHING")
            .bind(taken_at)
            .bind(snapshot)
            .execute(&self.writer)
            .await?;
        sqlx::query("DELETE FROM analytics_snapshots WHERE taken_at < $1")
            .bind(taken_at - retention_ms)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Analytics history, oldest first: (taken_at, snapshot JSON).
    pub async fn snapshots_since(&self, since_ms: i64) -> anyhow::Result<Vec<(i64, String)>> {
        let rows = sqlx::query("SELECT taken_at, snapshot FROM analytics_snapshots WHERE taken_at >= $1 ORDER BY taken_at")
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}
