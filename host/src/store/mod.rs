//! Persistence with sqlx: one code path for SQLite (embedded, the default)
//! and PostgreSQL, through sqlx's `Any` driver. The SQL is the subset both
//! speak (`$n` parameters, `ON CONFLICT DO NOTHING`); the only difference is
//! the name of the binary column type.
//!
//! Layout: one row per event (`events`, keyed by its sequence number, unique
//! on event_id), one per batch (`batches`: the analytics, correlation and
//! response results every processing record of the batch shares), alerts,
//! action requests, analytics history, plugin checkpoints and silences.

mod actions;
pub use actions::{Recorded, action_key};
mod analytics;
mod events;
mod migrations;
mod plugins;
pub mod retention;
mod rows;
mod scan;
mod silences;

pub use rows::{
    ActionRow, ActionUpdate, AlertRow, BatchRow, BatchWrite, DeploymentResult, DeploymentRow,
    EventRow, Outcome, RecordRow, SilenceRow, StoredEvent, Trigger,
};

use anyhow::Context;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    /// Reads.
    pool: AnyPool,
    /// Writes (for SQLite, one dedicated connection).
    writer: AnyPool,
    backend: Backend,
    /// The SQLite file.
    path: Option<std::path::PathBuf>,
}

/// How a database is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Created if missing, migrated: the service's.
    Create,
    /// As it is, read-only where the backend allows it.
    ReadOnly,
}

/// How far a checkpoint goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalCheckpoint {
    /// Copy what no reader needs; never waits (under load).
    Passive,
    /// Copy everything and shrink the log to nothing; waits for readers
    /// (at start, at shutdown, and when the log outgrew its bound).
    Truncate,
}

/// The write-ahead log is checkpointed when it passes this size, and cut
/// back to it when it restarts (`journal_size_limit`). A checkpoint holds
/// the writer (it runs between the writer's transactions): at 128 MiB each
/// took 100–250 ms, every ~5 s at 10,000 events/s, which was the p99 of
/// ingest-to-stored; at 32 MiB the stalls are a quarter as long and the
/// bulk throughput the same (BENCHMARKS.md, adaptive batching).
pub const WAL_LIMIT_BYTES: u64 = 32 << 20;

impl Store {
    /// Connect (creating a SQLite file and its directory if needed) and
    /// migrate.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Store> {
        let store = Store::open(url, max_connections, Access::Create).await?;
        store.migrate().await?;
        // A log left by a crash is folded into the database now, so that
        // neither restarts nor disk use grow with the number of crashes.
        store.checkpoint(WalCheckpoint::Truncate).await?;
        Ok(store)
    }

    /// A service's database as it is, to read from (what the command line's
    /// backtests use while the service may be writing it): nothing is
    /// created, migrated or checkpointed (a SQLite file is opened
    /// read-only), and a schema of another version is refused.
    pub async fn connect_existing(url: &str) -> anyhow::Result<Store> {
        let store = Store::open(url, 2, Access::ReadOnly).await?;
        store.check_schema().await?;
        Ok(store)
    }

    async fn open(url: &str, max_connections: u32, access: Access) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let (url, path) = match backend {
            Backend::Sqlite => {
                let path = sqlite_path(url)?;
                let mode = match access {
                    Access::Create => "rwc",
                    Access::ReadOnly => "ro",
                };
                (format!("sqlite://{path}?mode={mode}"), Some(path.into()))
            }
            Backend::Postgres => (url.to_string(), None),
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
                        // A log that grew past the bound (readers held a
                        // checkpoint back) shrinks back when it restarts.
                        let limit = format!("PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}");
                        conn.execute(limit.as_str()).await?;
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
        Ok(Store {
            pool,
            writer,
            backend,
            path,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Parameter `n` (1-based) of a statement with many parameters. SQLite
    /// looks `$n` names up linearly, which makes binding thousands of them
    /// quadratic; its anonymous `?` binds by position. PostgreSQL needs `$n`.
    /// (Statements with a few parameters use `$n`, which both accept.)
    pub(super) fn placeholder(&self, sql: &mut String, n: usize) {
        use std::fmt::Write;
        match self.backend {
            Backend::Sqlite => sql.push('?'),
            Backend::Postgres => write!(sql, "${n}").expect("writing to a String"),
        }
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

    /// Copy the SQLite write-ahead log into the database, on the writer's
    /// own connection between its transactions. (A separate checkpointing
    /// connection was measured: its lock contention with the writer tripled
    /// the tail latency.) PostgreSQL checkpoints by itself.
    pub async fn checkpoint(&self, mode: WalCheckpoint) -> anyhow::Result<()> {
        if self.backend == Backend::Sqlite {
            let sql = match mode {
                WalCheckpoint::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
                WalCheckpoint::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
            };
            sqlx::query(sql).fetch_all(&self.writer).await?;
        }
        Ok(())
    }

    /// The size of the SQLite write-ahead log file (0 for PostgreSQL).
    pub fn wal_bytes(&self) -> u64 {
        let wal = self.path.as_ref().map(|p| {
            let mut wal = p.clone().into_os_string();
            wal.push("-wal");
            wal
        });
        wal.and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        let _ = self.checkpoint(WalCheckpoint::Truncate).await;
        self.writer.close().await;
        self.pool.close().await;
    }
}

fn id_from_bytes(b: &[u8]) -> anyhow::Result<u128> {
    let arr: [u8; 16] = b.try_into().context("event_id is not 16 bytes")?;
    Ok(u128::from_be_bytes(arr))
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `sqlite://path`, creating the file and its directory if needed.
/// The file of a `sqlite:` URL (its directory created).
fn sqlite_path(url: &str) -> anyhow::Result<String> {
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
    Ok(path.to_string())
}

/// A store on a fresh SQLite file, for unit tests.
#[cfg(test)]
pub(crate) async fn temp_store() -> Store {
    let dir = std::env::temp_dir().join(format!("hxp-unit-{}", uuid::Uuid::new_v4()));
    let url = format!("sqlite://{}/events.db", dir.display());
    Store::connect(&url, 1)
        .await
        .expect("temporary SQLite store")
}

#[cfg(test)]
mod tests;
