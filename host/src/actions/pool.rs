//! The executor task: a bounded queue, at most `max_concurrency` jobs at
//! once, each carried out by its executor and its result stored on its row.

use super::command::run_command;
use super::webhook;
use super::{Job, Resolved};
use crate::store::{ActionUpdate, Outcome, Store, now_ms};
use crate::telemetry::Metrics;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};

pub(super) struct Queued {
    pub(super) job: Job,
    pub(super) enqueued: Instant,
}

pub(super) struct Ctx {
    pub(super) store: Store,
    pub(super) metrics: Arc<Metrics>,
    pub(super) client: reqwest::Client,
    pub(super) executors: BTreeMap<String, Resolved>,
    pub(super) max_queue_wait: Duration,
    pub(super) queue_capacity: usize,
    pub(super) queue_depth: prometheus::IntGauge,
    pub(super) duration: prometheus::HistogramVec,
}

/// How one execution ended.
pub(super) struct Attempted {
    pub(super) ok: bool,
    pub(super) started_at: i64,
    pub(super) attempts: u32,
    pub(super) http_status: Option<u16>,
    pub(super) error: Option<String>,
    pub(super) detail: String,
}

impl Attempted {
    pub(super) fn failed(started_at: i64, attempts: u32, error: String) -> Attempted {
        Attempted {
            ok: false,
            started_at,
            attempts,
            http_status: None,
            error: Some(error.clone()),
            detail: error,
        }
    }

    /// A request that was never started (queue full, stale, shutdown).
    pub(super) fn not_started(error: String) -> Attempted {
        Attempted::failed(now_ms(), 0, error)
    }
}

/// The pool's task: takes queued jobs and runs up to `max_concurrency` of
/// them at once, until cancelled.
pub(super) async fn run(
    ctx: Arc<Ctx>,
    mut rx: mpsc::Receiver<Queued>,
    slots: Arc<Semaphore>,
    mut cancel: watch::Receiver<bool>,
) {
    let mut running = tokio::task::JoinSet::new();
    loop {
        // A free slot first: at most max_concurrency run, the rest wait in
        // the bounded queue.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = cancel.wait_for(|c| *c) => break,
        };
        let queued = tokio::select! {
            q = rx.recv() => q,
            _ = cancel.wait_for(|c| *c) => break,
        };
        let Some(queued) = queued else { break };
        ctx.queue_depth.dec();
        while running.try_join_next().is_some() {}
        let (ctx, cancel) = (ctx.clone(), cancel.clone());
        running.spawn(async move {
            let _permit = permit;
            let job = queued.job.clone();
            let run = execute(&ctx, queued, cancel);
            if let Err(panic) = crate::util::panic::catch_async(run).await {
                // A bug in the host, not the receiver's doing: the request
                // still gets a final outcome, and the pool goes on.
                ctx.metrics.workers.panicked("executor", &panic);
                let error = format!("internal error (a bug, logged): {panic}");
                finish(&ctx, &job, Attempted::failed(now_ms(), 0, error)).await;
            }
        });
    }
    // Cancelled (or every handle dropped): what is still queued is not
    // started.
    rx.close();
    while let Ok(q) = rx.try_recv() {
        ctx.queue_depth.dec();
        let error = "shutdown: not started before the service stopped".to_string();
        finish(&ctx, &q.job, Attempted::not_started(error)).await;
    }
    // Running ones finish, or see the cancel and record "shutdown".
    while running.join_next().await.is_some() {}
}

async fn execute(ctx: &Ctx, q: Queued, mut cancel: watch::Receiver<bool>) {
    let job = q.job;
    let waited = q.enqueued.elapsed();
    let started_at = now_ms();
    let failed = |error: String, attempts: u32| Attempted::failed(started_at, attempts, error);
    if waited > ctx.max_queue_wait {
        let e = format!(
            "expired: waited {} ms for a free executor slot (max_queue_wait_secs)",
            waited.as_millis()
        );
        finish(ctx, &job, failed(e, 0)).await;
        return;
    }
    let Some(exec) = ctx.executors.get(&job.executor) else {
        let e = format!("executor '{}' is not configured", job.executor);
        finish(ctx, &job, failed(e, 0)).await;
        return;
    };
    let attempts = AtomicU32::new(0);
    let t = Instant::now();
    let result = tokio::select! {
        r = run_executor(ctx, exec, &job, started_at, &attempts) => r,
        _ = cancel.wait_for(|c| *c) => failed(
            format!(
                "shutdown: cancelled while in flight (the receiver may have acted; idempotency key {})",
                job.idempotency_key
            ),
            attempts.load(Ordering::Relaxed),
        ),
    };
    ctx.duration
        .with_label_values(&[
            job.executor.as_str(),
            if result.ok { "executed" } else { "failed" },
        ])
        .observe(t.elapsed().as_secs_f64());
    finish(ctx, &job, result).await;
}

async fn run_executor(
    ctx: &Ctx,
    exec: &Resolved,
    job: &Job,
    started_at: i64,
    attempts: &AtomicU32,
) -> Attempted {
    match exec {
        Resolved::Webhook(target) => {
            webhook::post(&ctx.client, target, job, started_at, attempts).await
        }
        Resolved::Command(c) => {
            attempts.store(1, Ordering::Relaxed);
            run_command(c, job, started_at).await
        }
        Resolved::Log => {
            attempts.store(1, Ordering::Relaxed);
            tracing::info!(action = %job.action, target = %job.target, rule = %job.rule, "automated response (log executor)");
            Attempted {
                ok: true,
                started_at,
                attempts: 1,
                http_status: None,
                error: None,
                detail: "written to the log (log executor)".into(),
            }
        }
    }
}

/// Store the result (retrying while the database is away, for up to a
/// minute), count it, log it.
pub(super) async fn finish(ctx: &Ctx, job: &Job, r: Attempted) {
    let outcome = if r.ok {
        Outcome::Executed
    } else {
        Outcome::Failed
    };
    ctx.metrics
        .action_requests
        .with_label_values(&[job.action.as_str(), outcome.as_str()])
        .inc();
    if r.ok {
        tracing::info!(action = %job.action, target = %job.target, executor = %job.executor, attempts = r.attempts, detail = %r.detail, "automated response executed");
    } else {
        tracing::warn!(action = %job.action, target = %job.target, executor = %job.executor, attempts = r.attempts, error = r.error.as_deref().unwrap_or(""), "automated response failed");
    }
    let update = ActionUpdate {
        outcome,
        detail: r.detail,
        started_at: Some(r.started_at),
        finished_at: now_ms(),
        attempts: i64::from(r.attempts),
        http_status: r.http_status.map(i64::from),
        error: r.error,
    };
    let mut delay = Duration::from_millis(100);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match ctx
            .store
            .update_action_outcome(job.batch_seq, job.n, &update)
            .await
        {
            Ok(true) => return,
            Ok(false) => {
                // Already final (e.g. marked interrupted by a sweep).
                tracing::warn!(
                    batch_seq = job.batch_seq,
                    n = job.n,
                    "action request was no longer pending; result not stored"
                );
                return;
            }
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %format!("{e:#}"), "storing an action result failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), batch_seq = job.batch_seq, n = job.n, "action result not stored");
                return;
            }
        }
    }
}
