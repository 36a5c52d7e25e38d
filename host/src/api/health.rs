//! GET /health, GET /metrics (Prometheus text) and GET /config.

use super::views::{HealthChecksView, HealthStatus, HealthView};
use super::{AppState, St, rfc3339};
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// "ok", or why the database is not.
async fn database_check(state: &AppState) -> String {
    let counters = &state.pipeline.counters;
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) if !counters.db_failing.load(Relaxed) => "ok".to_string(),
        Ok(Ok(())) => format!(
            "writes failing: {}",
            counters
                .db_last_error
                .lock()
                .expect("lock")
                .clone()
                .unwrap_or_default()
        ),
        Ok(Err(e)) => format!("unreachable: {e}"),
        Err(_) => "unreachable: no answer within 2 s".to_string(),
    }
}

/// GET /health: the service and what it depends on.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses((status = 200, description = "Healthy or degraded, with each check", body = HealthView))
)]
pub(super) async fn health(State(state): St) -> Json<HealthView> {
    let db = database_check(&state).await;
    let live = state.live.read().expect("live lock");
    let failing: Vec<String> = live
        .plugins
        .iter()
        .filter_map(|p| {
            p.stats
                .last_error
                .as_ref()
                .map(|e| format!("{}: {e}", p.name))
        })
        .collect();
    let queued = state.pipeline.counters.queued.load(Relaxed);
    let queue = if queued >= state.pipeline.capacity() {
        "full"
    } else {
        "ok"
    };
    let kafka = match &state.kafka {
        None => "disabled".to_string(),
        Some(k) => k.problem().unwrap_or_else(|| "ok".into()),
    };
    let down = state.metrics.workers.problems();
    let now = crate::store::now_ms();
    let event_time = super::analytics::event_time_view(&state.config, &live, now);
    let healthy =
        db == "ok" && queue == "ok" && (kafka == "ok" || kafka == "disabled") && down.is_empty();
    Json(HealthView {
        status: if healthy {
            HealthStatus::Healthy
        } else {
            HealthStatus::Degraded
        },
        service: state.config.service.name.clone(),
        timestamp: rfc3339(now),
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started.elapsed().as_secs(),
        checks: HealthChecksView {
            database: db,
            queue: queue.to_string(),
            plugins: if failing.is_empty() {
                "ok".to_string()
            } else {
                format!("recent failures: {}", failing.join("; "))
            },
            kafka,
            workers: if down.is_empty() {
                "ok".to_string()
            } else {
                down.join("; ")
            },
        },
        event_time,
    })
}

/// GET /metrics: the Prometheus text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"))
)]
pub(super) async fn metrics(State(state): St) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// GET /config: the running configuration, secrets redacted.
#[utoipa::path(
    get,
    path = "/config",
    tag = "operations",
    responses((status = 200, description = "The running configuration (free-form; the admin token shows as \"(set)\")", body = Object))
)]
pub(super) async fn config(State(state): St) -> Json<Value> {
    Json(state.config.redacted())
}
