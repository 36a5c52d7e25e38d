//! Persistence with sqlx: one code path for SQLite (embedded, the default)
//! and PostgreSQL, through sqlx's `Any` driver. The SQL is the subset both
//! speak (`$n` parameters, `ON CONFLICT DO NOTHING`); the only difference is
//! the name of the binary column type.
//!
//! Layout: one row per event (`events`, keyed by its sequence number, unique
//! on event_id), one per batch (`batches`: the analytics, correlation and
//! response results every processing record of the batch shares), alerts,
//! action requests, analytics history and plugin checkpoints.

use anyhow::Context;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::time::Duration;

/// Rows per multi-row INSERT (10 parameters each; both backends allow more
/// than 30 000 parameters per statement).
const ROWS_PER_INSERT: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Schema versions; each runs once, in order, in a transaction.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (
    seq {SEQ_KEY},
    event_id {BLOB} NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    event_time BIGINT NOT NULL,
    ingested_at BIGINT NOT NULL,
    processed_at BIGINT NOT NULL,
    batch_seq BIGINT NOT NULL,
    source TEXT,
    data TEXT NOT NULL
);
CREATE TABLE batches (
    batch_seq {SEQ_KEY},
    processed_at BIGINT NOT NULL,
    size BIGINT NOT NULL,
    analytics TEXT,
    correlation TEXT,
    response TEXT
);
CREATE INDEX batches_processed_at ON batches (processed_at);
CREATE TABLE correlation_alerts (
    batch_seq BIGINT NOT NULL,
    n BIGINT NOT NULL,
    raised_at BIGINT NOT NULL,
    rule TEXT NOT NULL,
    source TEXT NOT NULL,
    subject TEXT NOT NULL,
    occurrences BIGINT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    message TEXT NOT NULL,
    evidence TEXT NOT NULL,
    PRIMARY KEY (batch_seq, n)
);
CREATE INDEX correlation_alerts_raised_at ON correlation_alerts (raised_at);
CREATE TABLE action_requests (
    batch_seq BIGINT NOT NULL,
    n BIGINT NOT NULL,
    requested_at BIGINT NOT NULL,
    rule TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    parameters TEXT NOT NULL,
    reason TEXT NOT NULL,
    findings TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (batch_seq, n)
);
CREATE INDEX action_requests_requested_at ON action_requests (requested_at);
CREATE TABLE analytics_snapshots (
    taken_at BIGINT PRIMARY KEY,
    snapshot TEXT NOT NULL
);
CREATE TABLE plugin_state (
    plugin TEXT PRIMARY KEY,
    plugin_version TEXT NOT NULL,
    state_version BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    saved_at BIGINT NOT NULL,
    state {BLOB} NOT NULL
)
"#,
    ),
    (
        2,
        r#"
ALTER TABLE batches ADD COLUMN plugins TEXT;
CREATE TABLE plugin_deployments (
    id BIGINT PRIMARY KEY,
    plugin TEXT NOT NULL,
    at BIGINT NOT NULL,
    stage TEXT,
    file TEXT NOT NULL,
    sha256 TEXT,
    version TEXT,
    result TEXT NOT NULL,
    reason TEXT NOT NULL,
    cause TEXT NOT NULL,
    after_seq BIGINT,
    compile_ms DOUBLE PRECISION,
    pause_us BIGINT
);
CREATE INDEX plugin_deployments_plugin ON plugin_deployments (plugin, id)
"#,
    ),
    (
        3,
        r#"
ALTER TABLE action_requests ADD COLUMN analytics TEXT;
ALTER TABLE action_requests ADD COLUMN executor TEXT;
ALTER TABLE action_requests ADD COLUMN dry_run BIGINT NOT NULL DEFAULT 0;
ALTER TABLE action_requests ADD COLUMN idempotency_key TEXT;
ALTER TABLE action_requests ADD COLUMN started_at BIGINT;
ALTER TABLE action_requests ADD COLUMN finished_at BIGINT;
ALTER TABLE action_requests ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE action_requests ADD COLUMN http_status BIGINT;
ALTER TABLE action_requests ADD COLUMN error TEXT;
CREATE INDEX action_requests_outcome ON action_requests (outcome)
"#,
    ),
];

/// One stored event.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub seq: u64,
    pub event_id: u128,
    pub event_type: &'static str,
    pub event_time: i64,
    pub ingested_at: i64,
    pub processed_at: i64,
    pub batch_seq: u64,
    pub source: Option<std::sync::Arc<str>>,
    pub data: String,
}

/// The per-batch results shared by its events' processing records (JSON).
#[derive(Debug, Clone)]
pub struct BatchRow {
    pub batch_seq: u64,
    pub processed_at: i64,
    pub size: usize,
    pub analytics: Option<String>,
    pub correlation: Option<String>,
    pub response: Option<String>,
    /// JSON object: plugin name -> version that processed the batch.
    pub plugins: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AlertRow {
    pub raised_at: i64,
    pub rule: String,
    pub source: String,
    pub subject: String,
    pub occurrences: i64,
    pub score: f64,
    pub message: String,
    pub evidence: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ActionRow {
    pub requested_at: i64,
    pub rule: String,
    pub action: String,
    pub target: String,
    /// JSON object.
    pub parameters: String,
    pub reason: String,
    /// JSON array of the findings active when it was requested.
    pub findings: String,
    /// pending | executed | failed | suppressed_cooldown | deduplicated |
    /// rate_limited | dry_run | disabled (rows before migration 3: logged)
    pub outcome: String,
    pub detail: String,
    /// JSON object: the batch's analytics that the rule saw.
    pub analytics: Option<String>,
    pub executor: Option<String>,
    pub dry_run: bool,
    pub idempotency_key: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub attempts: i64,
    pub http_status: Option<i64>,
    pub error: Option<String>,
}

/// Everything one batch writes, in one transaction.
#[derive(Debug, Default)]
pub struct BatchWrite {
    pub events: Vec<EventRow>,
    pub batch: Option<BatchRow>,
    pub alerts: Vec<AlertRow>,
    pub actions: Vec<ActionRow>,
    /// Requests to carry out once this write committed (not stored; the
    /// writer hands them to the executor task).
    pub jobs: Vec<crate::executor::Job>,
}

/// A processing record's stored parts.
pub struct RecordRow {
    pub seq: u64,
    pub event_id: u128,
    pub event_type: String,
    pub processed_at: i64,
    pub analytics: Option<String>,
    pub correlation: Option<String>,
    pub response: Option<String>,
    pub plugins: Option<String>,
}

/// One deployment attempt of a plugin (or of its config section).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DeploymentRow {
    pub id: i64,
    pub plugin: String,
    /// Milliseconds since the epoch.
    pub at: i64,
    pub stage: Option<String>,
    pub file: String,
    pub sha256: Option<String>,
    pub version: Option<String>,
    /// accepted | rejected | unloaded | reconfigured | rolled_back
    pub result: String,
    pub reason: String,
    /// startup | watch | reload | rollback | config
    pub trigger: String,
    /// The new version processes the batches after this event sequence
    /// number.
    pub after_seq: Option<i64>,
    pub compile_ms: Option<f64>,
    /// Time the processing path spent swapping (state hand-over).
    pub pause_us: Option<i64>,
}

#[derive(Clone)]
pub struct Store {
    /// Reads.
    pool: AnyPool,
    /// Writes (for SQLite, one dedicated connection).
    writer: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connect (creating a SQLite file and its directory if needed) and
    /// migrate.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let url = match backend {
            Backend::Sqlite => sqlite_url(url)?,
            Backend::Postgres => url.to_string(),
        };
        let connect = |max: u32| {
            let opts = AnyPoolOptions::new()
                .acquire_timeout(Duration::from_secs(5))
                .max_connections(max);
            let opts = match backend {
                Backend::Sqlite => opts.after_connect(|conn, _| {
                    Box::pin(async move {
                        use sqlx::Executor;
                        // WAL: readers do not block the writer.
                        // synchronous=NORMAL: a commit survives the process
                        // being killed (a power cut needs FULL, at several
                        // times the cost per commit).
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        // 32 MiB of page cache, so index pages stay in memory.
                        conn.execute("PRAGMA cache_size = -32768").await?;
                        // Checkpoints (which fsync) run between the writer's
                        // transactions (`checkpoint`), not inside its commits.
                        conn.execute("PRAGMA wal_autocheckpoint = 0").await?;
                        Ok(())
                    })
                }),
                Backend::Postgres => opts,
            };
            let url = url.clone();
            async move {
                opts.connect(&url)
                    .await
                    .with_context(|| format!("connecting to {}", crate::config::redact_url(&url)))
            }
        };
        // SQLite has one writer: it gets a connection of its own, which keeps
        // its page cache warm; readers share a small pool.
        let (pool, writer) = match backend {
            Backend::Sqlite => (connect(3).await?, connect(1).await?),
            Backend::Postgres => {
                let p = connect(max_connections).await?;
                (p.clone(), p)
            }
        };
        let store = Store {
            pool,
            writer,
            backend,
        };
        store.migrate().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Parameter `n` (1-based) of a statement with many parameters. SQLite
    /// looks `$n` names up linearly, which makes binding thousands of them
    /// quadratic; its anonymous `?` binds by position. PostgreSQL needs `$n`.
    /// (Statements with a few parameters use `$n`, which both accept.)
    fn placeholder(&self, sql: &mut String, n: usize) {
        use std::fmt::Write;
        match self.backend {
            Backend::Sqlite => sql.push('?'),
            Backend::Postgres => write!(sql, "${n}").expect("writing to a String"),
        }
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .execute(&self.writer)
            .await
            .context("creating schema_migrations")?;
        // The two names that differ: binary columns, and the 64-bit key
        // (only SQLite's exact "INTEGER PRIMARY KEY" is the table's own row
        // id; "BIGINT PRIMARY KEY" would add a second index to every row).
        let (blob, seq_key) = match self.backend {
            Backend::Sqlite => ("BLOB", "INTEGER PRIMARY KEY"),
            Backend::Postgres => ("BYTEA", "BIGINT PRIMARY KEY"),
        };
        for (version, sql) in MIGRATIONS {
            let mut tx = self.writer.begin().await?;
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(*version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_some() {
                continue;
            }
            let sql = sql.replace("{BLOB}", blob).replace("{SEQ_KEY}", seq_key);
            for stmt in sql.split(';').filter(|s| !s.trim().is_empty()) {
                sqlx::query(stmt)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("migration {version}: {}", stmt.trim()))?;
            }
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(*version)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version, "database migrated");
        }
        Ok(())
    }

    /// A value of the `meta` table, set once on first use.
    pub async fn meta_or_insert(&self, key: &str, value: &str) -> anyhow::Result<String> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.writer)
            .await?;
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await?)
    }

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
            q.execute(&mut *tx).await?;
        }
        for w in batches {
            if let Some(b) = &w.batch {
                sqlx::query(
                    "INSERT INTO batches (batch_seq, processed_at, size, analytics, correlation, response, plugins) VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT (batch_seq) DO NOTHING",
                )
                .bind(b.batch_seq as i64)
                .bind(b.processed_at)
                .bind(b.size as i64)
                .bind(b.analytics.clone())
                .bind(b.correlation.clone())
                .bind(b.response.clone())
                .bind(b.plugins.clone())
                .execute(&mut *tx)
                .await?;
                for (n, a) in w.alerts.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO correlation_alerts (batch_seq, n, raised_at, rule, source, subject, occurrences, score, message, evidence) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) ON CONFLICT (batch_seq, n) DO NOTHING",
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
                    .execute(&mut *tx)
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
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        tx.commit().await?;
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

    /// Events with `seq > after`, in order, at most `limit`: (seq, type,
    /// processed_at, batch_seq, event_time, event_id, data).
    pub async fn events_after(&self, after: u64, limit: usize) -> anyhow::Result<Vec<StoredEvent>> {
        let rows = sqlx::query(
            "SELECT seq, event_type, processed_at, batch_seq, event_time, event_id, data FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_event).collect()
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
            "INSERT INTO plugin_deployments (id, plugin, at, stage, file, sha256, version, result, reason, cause, after_seq, compile_ms, pause_us) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
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
            "SELECT id, plugin, at, stage, file, sha256, version, result, reason, cause, after_seq, compile_ms, pause_us \
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
                    result: r.try_get(7)?,
                    reason: r.try_get(8)?,
                    trigger: r.try_get(9)?,
                    after_seq: r.try_get(10)?,
                    compile_ms: r.try_get(11)?,
                    pause_us: r.try_get(12)?,
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

    /// Recent alerts, newest first.
    pub async fn alerts(&self, since_ms: i64, limit: usize) -> anyhow::Result<Vec<AlertRow>> {
        let rows = sqlx::query(
            "SELECT raised_at, rule, source, subject, occurrences, score, message, evidence FROM correlation_alerts \
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
                })
            })
            .collect()
    }

    /// Alert counts per rule: (rule, total, since `since_ms`).
    pub async fn alert_counts(&self, since_ms: i64) -> anyhow::Result<Vec<(String, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT rule, COUNT(*), SUM(CASE WHEN raised_at >= $1 THEN 1 ELSE 0 END) FROM correlation_alerts GROUP BY rule ORDER BY rule",
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
        outcome: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> anyhow::Result<(Vec<ActionRow>, i64)> {
        let filter =
            "WHERE requested_at >= $1 AND ($2 = '' OR action = $2) AND ($3 = '' OR outcome = $3)";
        let total: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM action_requests {filter}"))
                .bind(since_ms)
                .bind(action.unwrap_or(""))
                .bind(outcome.unwrap_or(""))
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
        .bind(outcome.unwrap_or(""))
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
                    outcome: r.try_get(7)?,
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
    /// writer tripled the tail latency.) PostgreSQL checkpoints by itself.
    pub async fn checkpoint(&self) -> anyhow::Result<()> {
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_all(&self.writer)
                .await?;
        }
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        if self.backend == Backend::Sqlite {
            let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_all(&self.writer)
                .await;
        }
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// A stored event as read back for replay and recalculation.
pub struct StoredEvent {
    pub seq: u64,
    pub event_type: String,
    pub processed_at: i64,
    pub batch_seq: u64,
    pub event_time: i64,
    pub event_id: u128,
    pub data: String,
}

impl StoredEvent {
    /// The typed fields the plugins get, as at ingestion (`None` for a type
    /// this version does not know).
    pub fn typed(&self) -> Option<hxp_plugin_sdk::Event> {
        let kind = hxp_plugin_sdk::EventKind::parse(&self.event_type)?;
        let data: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&self.data).unwrap_or_default();
        let mut e = crate::event::typed(kind, &data, self.event_id, self.event_time);
        e.seq = self.seq;
        Some(e)
    }
}

fn stored_event(r: &AnyRow) -> anyhow::Result<StoredEvent> {
    Ok(StoredEvent {
        seq: r.try_get::<i64, _>(0)? as u64,
        event_type: r.try_get(1)?,
        processed_at: r.try_get(2)?,
        batch_seq: r.try_get::<i64, _>(3)? as u64,
        event_time: r.try_get(4)?,
        event_id: id_from_bytes(&r.try_get::<Vec<u8>, _>(5)?)?,
        data: r.try_get(6)?,
    })
}

fn id_from_bytes(b: &[u8]) -> anyhow::Result<u128> {
    let arr: [u8; 16] = b.try_into().context("event_id is not 16 bytes")?;
    Ok(u128::from_be_bytes(arr))
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `sqlite://path`, creating the file and its directory if needed.
fn sqlite_url(url: &str) -> anyhow::Result<String> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = rest.split_once('?').map(|(p, _)| p).unwrap_or(rest);
    if path.is_empty() || path == ":memory:" {
        anyhow::bail!(
            "database.url: an in-memory SQLite database would lose every event; give a file path"
        );
    }
    if let Some(dir) = std::path::Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(format!("sqlite://{path}?mode=rwc"))
}
// ── Paste into host/src/store.rs (see integration.md for the other store.rs
// ── edits: migration 3, ActionRow's new fields, the INSERT and the SELECT).
// An inherent impl may be split over several blocks: append this block after
// `impl Store { ... }` as it is.

/// How an executor finished one action request (see
/// [`Store::update_action_outcome`]).
#[derive(Debug, Clone)]
pub struct ActionUpdate {
    /// executed | failed
    pub outcome: &'static str,
    pub detail: String,
    pub started_at: Option<i64>,
    pub finished_at: i64,
    pub attempts: i64,
    pub http_status: Option<i64>,
    pub error: Option<String>,
}

impl Store {
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
        .bind(u.outcome)
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
    /// re-run; see crate::executor). Returns how many.
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
