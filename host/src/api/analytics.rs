//! GET /analytics, GET /analytics/status, POST /analytics/recalculate.

use super::extract::ApiQuery;
use super::views::{
    AnalyticsDisabledView, AnalyticsEmptyView, AnalyticsPluginView, AnalyticsSnapshotView,
    AnalyticsState, AnalyticsStatusView, AnalyticsView, Disabled, EventTimeState, EventTimeView,
    HistoryPointView, RecalculationView, ServiceHealthView, StatsView,
};
use super::{ApiError, ApiResult, ErrorBody, St, require_admin, rfc3339};
use crate::config::Config;
use crate::pipeline::LiveView;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hxp_plugin_sdk::{Snapshot, Stats};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

fn stats_view(s: &Stats) -> StatsView {
    StatsView {
        event_count: s.count,
        throughput: s.throughput,
        requests_per_second: s.requests_per_second,
        latency: s.latency_avg,
        latency_p50: s.latency_p50,
        latency_p95: s.latency_p95,
        latency_p99: s.latency_p99,
        latency_exact: s.latency_exact,
        error_rate: s.error_rate,
        error_percentage: s.error_rate * 100.0,
        user_satisfaction: s.user_satisfaction,
        business_value: s.business_value,
        cost_per_request: s.cost_per_request,
    }
}

/// The analytics answer: the requirements' fields at the top level.
pub fn snapshot_view(s: &Snapshot, by_type: bool) -> AnalyticsSnapshotView {
    AnalyticsSnapshotView {
        stats: stats_view(&s.overall),
        timestamp: rfc3339(s.time_ms),
        window_seconds: s.window_secs,
        covered_seconds: s.covered_secs,
        by_event_type: by_type.then(|| {
            s.per_kind
                .iter()
                .map(|(k, st)| (k.as_str().to_string(), stats_view(st)))
                .collect()
        }),
        services: s
            .services
            .iter()
            .map(|h| ServiceHealthView {
                service: h.service.clone(),
                health: h.health.as_str().to_string(),
                reported_at: rfc3339(h.time_ms),
            })
            .collect(),
        event_time: None,
        history: None,
    }
}

/// Where event time stands at wall time `now`.
pub fn event_time_view(config: &Config, live: &LiveView, now: i64) -> EventTimeView {
    let sp = &config.stream_processing;
    let max_staleness = config.automated_response.max_staleness_secs;
    let lag = live.watermark.map(|w| (now - w).max(0) as f64 / 1000.0);
    let recent = live
        .last_fresh_at
        .is_some_and(|t| now - t < (sp.idle_timeout_secs as i64).saturating_mul(1000));
    let state = match lag {
        None => EventTimeState::Waiting,
        Some(l) if l <= max_staleness as f64 => EventTimeState::Live,
        Some(_) if recent => EventTimeState::CatchingUp,
        Some(_) => EventTimeState::Idle,
    };
    EventTimeView {
        time: sp.time.as_str(),
        state,
        watermark: live.watermark.map(rfc3339),
        lag_seconds: lag,
        max_staleness_seconds: max_staleness,
    }
}

#[derive(Deserialize, IntoParams)]
pub(super) struct AnalyticsQuery {
    /// Seconds of stored history to include (at most 30 days).
    history: Option<u64>,
}

/// GET /analytics: the current analytics window.
#[utoipa::path(
    get,
    path = "/analytics",
    tag = "analytics",
    params(AnalyticsQuery),
    responses(
        (status = 200, description = "The current analytics (or why there are none)", body = AnalyticsView),
        (status = 503, description = "The database could not answer", body = ErrorBody),
    )
)]
pub(super) async fn analytics(
    State(state): St,
    ApiQuery(q): ApiQuery<AnalyticsQuery>,
) -> ApiResult<Json<AnalyticsView>> {
    let cfg = &state.config.real_time_analytics;
    if !cfg.enabled {
        return Ok(Json(AnalyticsView::Disabled(AnalyticsDisabledView {
            status: Disabled::Disabled,
            message: "real_time_analytics.enabled is false".into(),
        })));
    }
    let (snap, event_time) = {
        let live = state.live.read().expect("live lock");
        let now = crate::store::now_ms();
        (
            live.snapshot.clone(),
            event_time_view(&state.config, &live, now),
        )
    };
    let history = match q.history {
        None => None,
        Some(secs) => Some(history(&state, secs).await?),
    };
    Ok(Json(match &snap {
        Some(s) => AnalyticsView::Snapshot(Box::new(AnalyticsSnapshotView {
            history,
            event_time: Some(event_time),
            ..snapshot_view(s, cfg.aggregation_enabled)
        })),
        None => AnalyticsView::Empty(AnalyticsEmptyView {
            event_count: 0,
            throughput: 0.0,
            error_rate: 0.0,
            window_seconds: cfg.window_size,
            history,
        }),
    }))
}

/// Stored snapshots of the last `secs` seconds.
async fn history(state: &super::AppState, secs: u64) -> ApiResult<Vec<HistoryPointView>> {
    let since = crate::store::now_ms() - secs.min(86_400 * 30) as i64 * 1000;
    let rows = state
        .store
        .snapshots_since(since)
        .await
        .map_err(ApiError::internal)?;
    Ok(rows
        .into_iter()
        .filter_map(|(t, s)| {
            let s: Snapshot = serde_json::from_str(&s).ok()?;
            Some(HistoryPointView {
                stats: stats_view(&s.overall),
                timestamp: rfc3339(t),
            })
        })
        .collect())
}

/// GET /analytics/status: is the analytics stage running and current.
#[utoipa::path(
    get,
    path = "/analytics/status",
    tag = "analytics",
    responses((status = 200, description = "The analytics stage's state", body = AnalyticsStatusView))
)]
pub(super) async fn status(State(state): St) -> Json<AnalyticsStatusView> {
    let cfg = &state.config.real_time_analytics;
    let live = state.live.read().expect("live lock");
    let now = crate::store::now_ms();
    let plugin = live
        .plugins
        .iter()
        .find(|p| p.stage == crate::plugin::PluginKind::Analytics);
    let last = live.snapshot_at;
    let age = last.map(|t| (now - t) as f64 / 1000.0);
    let status = if !cfg.enabled {
        AnalyticsState::Disabled
    } else if plugin.is_none() {
        AnalyticsState::NoPlugin
    } else if age.is_some_and(|a| a > cfg.update_interval as f64 * 2.0 + 1.0) {
        AnalyticsState::Stale
    } else {
        AnalyticsState::Running
    };
    Json(AnalyticsStatusView {
        status,
        enabled: cfg.enabled,
        window_size: cfg.window_size,
        update_interval: cfg.update_interval,
        last_update: last.map(rfc3339),
        age_seconds: age,
        events_in_window: live.snapshot.as_ref().map(|s| s.overall.count).unwrap_or(0),
        events_processed: live.events,
        replayed_at_start: live.replayed,
        plugin: plugin.map(|p| AnalyticsPluginView {
            name: p.name.clone(),
            version: p.version.clone(),
            calls: p.stats.calls,
            errors: p.stats.errors,
            traps: p.stats.traps,
            last_error: p.stats.last_error.clone(),
        }),
    })
}

/// POST /analytics/recalculate (admin): analytics recomputed from the stored
/// events, beside the real-time values.
#[utoipa::path(
    post,
    path = "/analytics/recalculate",
    tag = "analytics",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Real-time and recomputed figures side by side", body = RecalculationView),
        (status = 401, description = "No valid admin token", body = ErrorBody),
        (status = 403, description = "Admin endpoints are disabled", body = ErrorBody),
        (status = 409, description = "No events processed yet", body = ErrorBody),
        (status = 503, description = "The database could not answer", body = ErrorBody),
    )
)]
pub(super) async fn recalculate(State(state): St, headers: HeaderMap) -> ApiResult<Json<Value>> {
    require_admin(&state, &headers)?;
    let snap = state.live.read().expect("live lock").snapshot.clone();
    let Some(snap) = snap else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_analytics",
            "no events have been processed yet",
        ));
    };
    let r = crate::pipeline::recalc::recalculate(
        &state.store,
        &snap,
        state.config.stream_processing.time,
    )
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(r))
}
