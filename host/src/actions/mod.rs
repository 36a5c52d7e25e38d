//! Automated responses that act: the host carries out the response plugins'
//! action requests through configured executors, behind guardrails, with an
//! audit row per request.
//!
//! ```text
//! processor thread                    writer task              executor task
//! ───────────────                     ───────────              ─────────────
//! plugin asks ─▶ Guardrails::plan ─▶  stores the batch with ─▶ bounded queue ─▶ semaphore
//!   (sync, in memory: category,       its rows (outcome          (max_concurrency) ─▶ webhook /
//!    executor, dedup, cooldown,       pending / suppressed),     command ─▶ UPDATE the row
//!    rate limit, dry run)             then submits the jobs      (outcome, timings)
//! ```
//!
//! - The processor never waits for an executor: [`guardrails::Guardrails::plan`] decides
//!   every outcome from in-memory state. A request to act gets a row with
//!   outcome `pending`; the writer hands its job to the executor task only
//!   after the batch's transaction committed, so the executor's UPDATE always
//!   finds its row, and nothing is done for a batch that was never stored.
//! - Outcomes: `pending` → `executed` | `failed`; decided at once:
//!   `suppressed_cooldown`, `deduplicated`, `rate_limited`, `dry_run`,
//!   `disabled` (category switched off), `failed` (no executor for the
//!   action), `executed` (the `log` executor: the log line is the action).
//! - The executor task takes a job only when a slot is free, so at most
//!   `max_concurrency` run and at most `queue_capacity` wait; a job that
//!   finds the queue full, or waited longer than `max_queue_wait_secs`, is
//!   recorded `failed` (acting on stale analytics is worse than not acting;
//!   the plugin asks again while the condition holds).
//! - Shutdown ([`Executors::shutdown`]): after the pipeline drained, queued
//!   and running jobs get `shutdown_grace_secs`; then running ones are
//!   cancelled (a command is killed) and everything left is recorded
//!   `failed` with an error starting with "shutdown".
//! - Restart: rows still `pending` were interrupted (the process died). They
//!   are recorded `failed` ("interrupted by restart"), not re-run: the
//!   request was made on analytics that are now stale, the receiver may
//!   already have acted (the idempotency key lets it tell), and the plugin
//!   asks again if the condition still holds. With SQLite (one process per
//!   file) every pending row from before this start is marked at once; with
//!   PostgreSQL (possibly shared by several instances) only rows older than
//!   the longest time a request can take, and a sweep repeats that every
//!   minute.

mod command;
mod guardrails;
mod pool;
mod webhook;

pub use command::render_template;
pub use guardrails::{BatchContext, Decision, Guardrails, idempotency_key};

use crate::config::{AutomatedResponse, CommandSpec, Config, Executor, header_map, resolve_url};
use crate::store::{Backend, Store, now_ms};
use crate::telemetry::Metrics;
use pool::{Attempted, Ctx, Queued, finish};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};
use webhook::backoff_for;

/// A request the executor task carries out; (batch_seq, n) is its row.
#[derive(Debug, Clone)]
pub struct Job {
    pub batch_seq: u64,
    pub n: u32,
    pub requested_at: i64,
    pub rule: String,
    pub action: String,
    pub target: String,
    /// JSON object.
    pub parameters: String,
    pub reason: String,
    /// JSON array.
    pub findings: String,
    /// JSON object (the batch's analytics), when analytics ran.
    pub analytics: Option<String>,
    pub executor: String,
    pub idempotency_key: String,
}

impl Job {
    /// The webhook body.
    pub fn body(&self, attempt: u32) -> Value {
        let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
        json!({
            "idempotency_key": self.idempotency_key,
            "action": self.action,
            "target": self.target,
            "rule": self.rule,
            "reason": self.reason,
            "parameters": parse(&self.parameters),
            "findings": parse(&self.findings),
            "analytics": self.analytics.as_deref().map(parse).unwrap_or(Value::Null),
            "requested_at": chrono::DateTime::from_timestamp_millis(self.requested_at)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "attempt": attempt,
        })
    }
}

/// A configured executor, resolved once at start.
enum Resolved {
    Webhook(webhook::WebhookTarget),
    Command(CommandSpec),
    Log,
}

/// The writer's side: submits jobs without waiting.
#[derive(Clone)]
pub struct ExecutorHandle {
    tx: mpsc::Sender<Queued>,
    ctx: Arc<Ctx>,
}

impl ExecutorHandle {
    /// Queue a job whose row is stored. Never waits: a full queue records
    /// the request as failed.
    pub fn submit(&self, job: Job) {
        self.ctx.queue_depth.inc();
        let refused = match self.tx.try_send(Queued {
            job,
            enqueued: Instant::now(),
        }) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(q)) => (
                q.job,
                format!(
                    "executor queue full ({} waiting; automated_response.queue_capacity)",
                    self.ctx.queue_capacity
                ),
            ),
            Err(mpsc::error::TrySendError::Closed(q)) => {
                (q.job, "shutdown: executors already stopped".to_string())
            }
        };
        self.ctx.queue_depth.dec();
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            let (job, error) = refused;
            finish(&ctx, &job, Attempted::not_started(error)).await;
        });
    }
}

/// The running executor task (owned by the application).
pub struct Executors {
    handle: ExecutorHandle,
    cancel: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    sweeper: tokio::task::JoinHandle<()>,
}

impl Executors {
    /// Record the previous run's interrupted requests, then start the
    /// executor task. The handle goes to the pipeline's writer.
    pub async fn start(
        config: &Config,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<(Executors, ExecutorHandle)> {
        let a = &config.automated_response;
        let executors = resolve(config)?;
        let client = crate::tls::http_client(&config.tls.client)?
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hxp-events/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let (queue_depth, duration) = register_metrics(&metrics)?;
        let sweeper = sweep_interrupted(&store, budget_ms(a)).await?;
        let ctx = Arc::new(Ctx {
            store,
            metrics,
            client,
            executors,
            max_queue_wait: Duration::from_secs(a.max_queue_wait_secs),
            queue_capacity: a.queue_capacity,
            queue_depth,
            duration,
        });
        let (tx, rx) = mpsc::channel(a.queue_capacity);
        let (cancel, cancel_rx) = watch::channel(false);
        let slots = Arc::new(Semaphore::new(a.max_concurrency));
        let task = tokio::spawn(pool::run(ctx.clone(), rx, slots, cancel_rx));
        let handle = ExecutorHandle { tx, ctx };
        let executors = Executors {
            handle: handle.clone(),
            cancel,
            task,
            sweeper,
        };
        Ok((executors, handle))
    }

    /// Call after the pipeline drained (its writer, which held the other
    /// handle, has finished): queued and running jobs get `grace`; then the
    /// running ones are cancelled and the rest recorded failed ("shutdown").
    pub async fn shutdown(self, grace: Duration) {
        let Executors {
            handle,
            cancel,
            mut task,
            sweeper,
        } = self;
        sweeper.abort();
        drop(handle);
        if tokio::time::timeout(grace, &mut task).await.is_ok() {
            return;
        }
        tracing::warn!(
            "action requests still running after {grace:?}; cancelling them (recorded as failed: shutdown)"
        );
        let _ = cancel.send(true);
        // Recording the cancelled ones is quick; bounded all the same.
        if tokio::time::timeout(Duration::from_secs(10), &mut task)
            .await
            .is_err()
        {
            task.abort();
            tracing::error!("executor task did not stop; some action requests stay pending");
        }
    }
}

/// The configured executors, by name, ready to act.
fn resolve(config: &Config) -> anyhow::Result<BTreeMap<String, Resolved>> {
    let mut executors = BTreeMap::new();
    for (name, e) in &config.automated_response.executors {
        let r = match e {
            Executor::Webhook(w) => Resolved::Webhook(webhook::WebhookTarget {
                url: resolve_url(&w.url, &config.monitoring),
                timeout: Duration::from_millis(w.timeout_ms),
                retries: w.retries,
                backoff: Duration::from_millis(w.backoff_ms),
                headers: header_map(&w.headers).map_err(anyhow::Error::msg)?,
            }),
            Executor::Command(c) => Resolved::Command(c.clone()),
            Executor::Log => Resolved::Log,
        };
        executors.insert(name.clone(), r);
    }
    Ok(executors)
}

fn register_metrics(
    metrics: &Metrics,
) -> anyhow::Result<(prometheus::IntGauge, prometheus::HistogramVec)> {
    let queue_depth = metrics.register(prometheus::IntGauge::new(
        "automated_response_queue_depth",
        "Action requests waiting for a free executor slot",
    )?);
    let duration = metrics.register(prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new(
            "automated_response_execution_seconds",
            "Time from the start of an execution to its result, retries included",
        )
        .buckets(vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ]),
        &["executor", "outcome"],
    )?);
    Ok((queue_depth, duration))
}

/// Record the interrupted requests of a previous run (see the module docs),
/// and, on PostgreSQL, start the sweep that repeats it every minute.
async fn sweep_interrupted(
    store: &Store,
    budget: i64,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let cutoff = match store.backend() {
        Backend::Sqlite => now_ms(),
        Backend::Postgres => now_ms() - budget,
    };
    let marked = store.mark_interrupted(cutoff).await?;
    if marked > 0 {
        tracing::warn!(
            requests = marked,
            "action requests left pending by the previous run recorded as failed (interrupted by restart)"
        );
    }
    let store = store.clone();
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            tick.tick().await;
            match store.mark_interrupted(now_ms() - budget).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    requests = n,
                    "stale pending action requests recorded as failed"
                ),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "sweeping stale action requests failed")
                }
            }
        }
    }))
}

/// Longest time a request may stay pending in a live process: queue wait,
/// the slowest executor with all its retries and backoffs, and a margin
/// (shutdown grace and database retries).
fn budget_ms(a: &AutomatedResponse) -> i64 {
    let slowest = a
        .executors
        .values()
        .map(|e| match e {
            Executor::Webhook(w) => {
                let backoffs: u64 = (0..w.retries)
                    .map(|i| backoff_for(Duration::from_millis(w.backoff_ms), i).as_millis() as u64)
                    .sum();
                w.timeout_ms * (u64::from(w.retries) + 1) + backoffs
            }
            Executor::Command(c) => c.timeout_ms,
            Executor::Log => 0,
        })
        .max()
        .unwrap_or(0);
    let total = a.max_queue_wait_secs * 1000 + slowest + a.shutdown_grace_secs * 1000 + 60_000;
    i64::try_from(total).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let b = Duration::from_millis(500);
        assert_eq!(backoff_for(b, 0), Duration::from_millis(500));
        assert_eq!(backoff_for(b, 1), Duration::from_millis(1000));
        assert_eq!(backoff_for(b, 3), Duration::from_millis(4000));
        assert_eq!(backoff_for(b, 12), Duration::from_secs(30));
        assert_eq!(backoff_for(b, 40), Duration::from_secs(30));
    }
}
