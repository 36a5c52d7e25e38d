//! Schema versions, each run once, in order, in a transaction.

use super::{Backend, Store, now_ms};
use anyhow::Context;

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
    (
        4,
        r#"
ALTER TABLE batches ADD COLUMN watermark BIGINT;
CREATE INDEX events_event_time ON events (event_time)
"#,
    ),
    (
        5,
        r#"
ALTER TABLE plugin_deployments ADD COLUMN actor TEXT
"#,
    ),
    (
        6,
        r#"
CREATE TABLE silences (
    id TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    repeat_every_secs BIGINT,
    creator TEXT NOT NULL,
    comment TEXT NOT NULL,
    matchers TEXT NOT NULL,
    deleted_at BIGINT
);
ALTER TABLE correlation_alerts ADD COLUMN suppressed_by TEXT
"#,
    ),
];

/// The PostgreSQL advisory lock that migrations run under, so that
/// instances starting together on one database migrate one at a time
/// (any fixed number, the same in every version: "hxp-migr").
const MIGRATION_LOCK: i64 = 0x6878_702d_6d69_6772;

impl Store {
    /// Run the migrations not yet applied, on one connection; on PostgreSQL
    /// under [`MIGRATION_LOCK`] (the others wait, then find them done).
    pub(super) async fn migrate(&self) -> anyhow::Result<()> {
        let mut conn = self.writer.acquire().await?;
        let postgres = self.backend == Backend::Postgres;
        if postgres {
            advisory(&mut conn, "SELECT pg_advisory_lock($1)", "taking").await?;
        }
        let result = self.migrate_on(&mut conn).await;
        if postgres {
            // Released with the session too, should this fail.
            advisory(&mut conn, "SELECT pg_advisory_unlock($1)", "releasing").await?;
        }
        result
    }

    /// The database has exactly the migrations this version knows (for a
    /// store opened as it is).
    pub(super) async fn check_schema(&self) -> anyhow::Result<()> {
        let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&self.pool)
            .await
            .context("not a database of this service (no schema_migrations)")?;
        let known = MIGRATIONS.last().map(|(v, _)| *v);
        anyhow::ensure!(
            newest == known,
            "the database's schema is at migration {newest:?}, this hxp-events knows {known:?}: \
             use the hxp-events that runs against it (or start this one's service once to migrate)"
        );
        Ok(())
    }

    async fn migrate_on(&self, conn: &mut sqlx::AnyConnection) -> anyhow::Result<()> {
        use sqlx::Connection as _;
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .execute(&mut *conn)
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
            let mut tx = conn.begin().await?;
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
}

/// Take or release [`MIGRATION_LOCK`] on `conn` (`sql` is the call).
async fn advisory(conn: &mut sqlx::AnyConnection, sql: &str, doing: &str) -> anyhow::Result<()> {
    sqlx::query(sql)
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await
        .with_context(|| format!("{doing} the migration lock"))?;
    Ok(())
}
