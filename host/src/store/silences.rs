//! Silences: written once, then only marked deleted, so that a backtest
//! over a past range finds the silences of that time; retention removes
//! those over before its cutoff (see `retention`).

use super::Store;
use super::rows::SilenceRow;
use sqlx::Row;

const COLUMNS: &str =
    "id, created_at, starts_at, ends_at, repeat_every_secs, creator, comment, matchers, deleted_at";

impl Store {
    pub async fn insert_silence(&self, s: &SilenceRow) -> anyhow::Result<()> {
        sqlx::query(&format!(
            "INSERT INTO silences ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)"
        ))
        .bind(s.id.as_str())
        .bind(s.created_at)
        .bind(s.starts_at)
        .bind(s.ends_at)
        .bind(s.repeat_every_secs)
        .bind(s.creator.as_str())
        .bind(s.comment.as_str())
        .bind(s.matchers.as_str())
        .bind(s.deleted_at)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Every silence, deleted ones too, oldest first.
    pub async fn silences(&self) -> anyhow::Result<Vec<SilenceRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM silences ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(silence_row).collect()
    }

    pub async fn silence(&self, id: &str) -> anyhow::Result<Option<SilenceRow>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM silences WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(silence_row).transpose()
    }

    /// Mark a silence deleted at `at` (once: a second delete keeps the
    /// first time). The silence as it is now; `None` if there is none.
    pub async fn delete_silence(&self, id: &str, at: i64) -> anyhow::Result<Option<SilenceRow>> {
        sqlx::query("UPDATE silences SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL")
            .bind(id)
            .bind(at)
            .execute(&self.writer)
            .await?;
        // Read on the writer: a reader connection may not see the update yet.
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM silences WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.writer)
            .await?;
        row.as_ref().map(silence_row).transpose()
    }
}

fn silence_row(r: &sqlx::any::AnyRow) -> anyhow::Result<SilenceRow> {
    Ok(SilenceRow {
        id: r.try_get(0)?,
        created_at: r.try_get(1)?,
        starts_at: r.try_get(2)?,
        ends_at: r.try_get(3)?,
        repeat_every_secs: r.try_get(4)?,
        creator: r.try_get(5)?,
        comment: r.try_get(6)?,
        matchers: r.try_get(7)?,
        deleted_at: r.try_get(8)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, created_at: i64) -> SilenceRow {
        SilenceRow {
            id: id.into(),
            created_at,
            starts_at: 1_000,
            ends_at: 2_000,
            repeat_every_secs: Some(86_400),
            creator: "ops".into(),
            comment: "nightly backup".into(),
            matchers: r#"[{"name":"rule","op":"=","value":"high_latency"}]"#.into(),
            deleted_at: None,
        }
    }

    #[tokio::test]
    async fn silences_are_kept_and_deleted_once() {
        let store = crate::store::temp_store().await;
        store.insert_silence(&row("b", 20)).await.unwrap();
        store.insert_silence(&row("a", 10)).await.unwrap();
        let all = store.silences().await.unwrap();
        let ids: Vec<&str> = all.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, vec!["a", "b"], "oldest first");
        assert_eq!(all[0], row("a", 10), "every column as written");

        let gone = store.delete_silence("a", 5_000).await.unwrap().unwrap();
        assert_eq!(gone.deleted_at, Some(5_000));
        let again = store.delete_silence("a", 9_000).await.unwrap().unwrap();
        assert_eq!(again.deleted_at, Some(5_000), "the first deletion stands");
        assert!(store.delete_silence("nope", 1).await.unwrap().is_none());
        assert_eq!(
            store.silence("a").await.unwrap().unwrap().deleted_at,
            Some(5_000)
        );
        assert!(store.silence("nope").await.unwrap().is_none());
        assert_eq!(store.silences().await.unwrap().len(), 2, "never removed");
    }
}
