//! Plugin checkpoints and the deployment history.

use super::rows::{DeploymentResult, DeploymentRow, Trigger, parse_stored};
use super::{Store, now_ms};
use sqlx::Row;

impl Store {
    pub async fn save_plugin_state(
        &self,
        plugin: &str,
        plugin_version: &str,
        state_version: u32,
        last_seq: u64,
        state: &[u8],
    ) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO plugin_state (plugin, plugin_version, state_version, last_seq, saved_at, state) VALUES ($1,$2,$3,$4,$5,$6) \
             ON CONFLICT (plugin) DO UPDATE SET plugin_version = excluded.plugin_version, state_version = excluded.state_version, \
             last_seq = excluded.last_seq, saved_at = excluded.saved_at, state = excluded.state",
        )
        .bind(plugin)
        .bind(plugin_version)
        .bind(state_version as i64)
        .bind(last_seq as i64)
        .bind(now_ms())
        .bind(state.to_vec())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn insert_deployment(&self, d: &DeploymentRow) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO plugin_deployments (id, plugin, at, stage, file, sha256, version, result, reason, cause, after_seq, compile_ms, pause_us, actor) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)",
        )
        .bind(d.id)
        .bind(d.plugin.as_str())
        .bind(d.at)
        .bind(d.stage.clone())
        .bind(d.file.as_str())
        .bind(d.sha256.clone())
        .bind(d.version.clone())
        .bind(d.result.as_str())
        .bind(d.reason.as_str())
        .bind(d.trigger.as_str())
        .bind(d.after_seq)
        .bind(d.compile_ms)
        .bind(d.pause_us)
        .bind(d.actor.clone())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// A plugin's deployments, newest first.
    pub async fn deployments(
        &self,
        plugin: &str,
        limit: i64,
    ) -> anyhow::Result<Vec<DeploymentRow>> {
        let rows = sqlx::query(
            "SELECT id, plugin, at, stage, file, sha256, version, result, reason, cause, after_seq, compile_ms, pause_us, actor \
             FROM plugin_deployments WHERE plugin = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(plugin)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeploymentRow {
                    id: r.try_get(0)?,
                    plugin: r.try_get(1)?,
                    at: r.try_get(2)?,
                    stage: r.try_get(3)?,
                    file: r.try_get(4)?,
                    sha256: r.try_get(5)?,
                    version: r.try_get(6)?,
                    result: parse_stored(
                        "plugin_deployments.result",
                        &r.try_get::<String, _>(7)?,
                        DeploymentResult::parse,
                    )?,
                    reason: r.try_get(8)?,
                    trigger: parse_stored(
                        "plugin_deployments.cause",
                        &r.try_get::<String, _>(9)?,
                        Trigger::parse,
                    )?,
                    after_seq: r.try_get(10)?,
                    compile_ms: r.try_get(11)?,
                    pause_us: r.try_get(12)?,
                    actor: r.try_get(13)?,
                })
            })
            .collect()
    }

    /// (state version, last seq, state) of a plugin's checkpoint.
    pub async fn plugin_state(&self, plugin: &str) -> anyhow::Result<Option<(u32, u64, Vec<u8>)>> {
        let row = sqlx::query(
            "SELECT state_version, last_seq, state FROM plugin_state WHERE plugin = $1",
        )
        .bind(plugin)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok((
                r.try_get::<i64, _>(0)? as u32,
                r.try_get::<i64, _>(1)? as u64,
                r.try_get::<Vec<u8>, _>(2)?,
            ))
        })
        .transpose()
    }
}
