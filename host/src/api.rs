//! The HTTP API (axum): every endpoint of the requirements, plus bulk
//! ingestion, processing records and plugin status.

use crate::config::Config;
use crate::event::{EventError, EventErrorKind, processing_id, seq_of_processing_id};
use crate::pipeline::{LiveView, PipelineHandle, Receipt, SubmitError};
use crate::plugin::{Clock, Plugin, PluginEngine, convert};
use crate::store::Store;
use crate::telemetry::{EventStatus, Metrics};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use hxp_plugin_sdk::{EventKind, Snapshot, Stats};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// What every handler can reach.
pub struct AppState {
    pub config: Arc<Config>,
    pub pipeline: Arc<PipelineHandle>,
    pub live: Arc<RwLock<LiveView>>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub engine: Arc<PluginEngine>,
    /// Hot deployment; also gives the current correlation component for
    /// scratch instances (POST /correlations/test).
    pub deployer: Arc<crate::deploy::Deployer>,
    pub validators: Arc<rayon::ThreadPool>,
    /// The Kafka consumer's status, when Kafka is configured.
    pub kafka: Option<Arc<crate::sources::kafka::KafkaStatus>>,
    /// Processing ids are UUIDs that carry this namespace and the event's
    /// sequence number.
    pub namespace: u64,
    pub started: Instant,
}

type St = State<Arc<AppState>>;

/// Every error answer: a status and a JSON body naming the problem.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    message: String,
    field: Option<String>,
    retry_after: Option<u64>,
    details: Option<Value>,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error,
            message: message.into(),
            field: None,
            retry_after: None,
            details: None,
        }
    }

    fn internal(e: anyhow::Error) -> ApiError {
        // Database internals are logged, not returned.
        tracing::error!(error = %format!("{e:#}"), "request failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service could not complete the request; try again",
        )
    }
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> ApiError {
        let (status, error) = match e.kind {
            EventErrorKind::MalformedJson => (StatusCode::BAD_REQUEST, "malformed_json"),
            EventErrorKind::Invalid | EventErrorKind::UnknownType => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_event")
            }
            EventErrorKind::Disabled => (StatusCode::UNPROCESSABLE_ENTITY, "event_type_disabled"),
        };
        ApiError {
            field: e.field.clone(),
            ..ApiError::new(status, error, e.message)
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> ApiError {
        match e {
            SubmitError::Busy { .. } => ApiError {
                retry_after: Some(1),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string())
            },
            SubmitError::TooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_events",
                e.to_string(),
            ),
            SubmitError::Disabled => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "disabled", e.to_string())
            }
            SubmitError::Closed => ApiError {
                retry_after: Some(5),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting_down",
                    e.to_string(),
                )
            },
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> ApiError {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is larger than service.max_body_bytes",
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                format!("could not read the request body: {r}"),
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "status": "error", "error": self.error, "message": self.message });
        if let Some(f) = self.field {
            body["field"] = json!(f);
        }
        if let Some(d) = self.details {
            body["details"] = d;
        }
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

type ApiResult<T> = Result<T, ApiError>;

pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.service.max_body_bytes;
    Router::new()
        .route("/", get(page_index))
        .route("/static/dashboard.js", get(page_js))
        .route("/static/dashboard.css", get(page_css))
        .route("/health", get(health))
        .route("/analytics", get(analytics))
        .route("/analytics/status", get(analytics_status))
        .route("/analytics/recalculate", post(recalculate))
        .route("/correlations", get(correlations))
        .route("/correlations/config", get(correlations_config))
        .route("/correlations/test", post(correlations_test))
        .route("/correlations/stats", get(correlations_stats))
        .route("/automated-responses", get(automated_responses))
        .route("/process", post(process))
        .route("/events", post(events))
        .route("/metrics", get(metrics))
        .route("/config", get(config))
        .route("/processing/pipeline", get(pipeline))
        .route("/processing/{processing_id}", get(processing_record))
        .route("/plugins", get(plugins))
        .route("/plugins/reload", post(plugins_reload))
        .route("/plugins/{name}/history", get(plugin_history))
        .route("/plugins/{name}/rollback", post(plugin_rollback))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// http_requests_total{route, status}: the route pattern, not the path (a
/// processing id would make a series per event); unknown paths are "other".
async fn count_requests(
    State(state): St,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let resp = next.run(req).await;
    state
        .metrics
        .http_requests
        .with_label_values(&[&route, resp.status().as_str()])
        .inc();
    resp
}

/// The live dashboard page and its assets, served from the binary (works
/// offline: no CDN).
async fn page_index() -> impl IntoResponse {
    static_asset(
        "text/html; charset=utf-8",
        include_str!("../static/index.html"),
    )
}

async fn page_js() -> impl IntoResponse {
    static_asset(
        "text/javascript; charset=utf-8",
        include_str!("../static/dashboard.js"),
    )
}

async fn page_css() -> impl IntoResponse {
    static_asset(
        "text/css; charset=utf-8",
        include_str!("../static/dashboard.css"),
    )
}

fn static_asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no endpoint {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Admin endpoints need `Authorization: Bearer <service.admin_token>`.
fn require_admin(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let token = &state.config.service.admin_token;
    if token.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "admin endpoints are disabled: set EVENT_PROCESSING_ADMIN_TOKEN (service.admin_token)",
        ));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant-time comparison.
    let ok = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !ok {
        let mut e = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin bearer token is required",
        );
        e.details = Some(json!({ "hint": "Authorization: Bearer <token>" }));
        return Err(e);
    }
    Ok(())
}

fn require_json(headers: &HeaderMap, ndjson_ok: bool) -> ApiResult<bool> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if ct == "application/json" || (ct.starts_with("application/") && ct.ends_with("+json")) {
        return Ok(false);
    }
    if ndjson_ok
        && matches!(
            ct.as_str(),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl"
        )
    {
        return Ok(true);
    }
    let want = if ndjson_ok {
        "application/json (an array) or application/x-ndjson"
    } else {
        "application/json"
    };
    let got = if ct.is_empty() {
        "none".to_string()
    } else {
        ct
    };
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("Content-Type must be {want} (got {got})"),
    ))
}

fn receipt_json(state: &AppState, r: &Receipt) -> Value {
    json!({
        "event_id": uuid::Uuid::from_u128(r.event_id).hyphenated().to_string(),
        "processing_id": processing_id(state.namespace, r.seq).hyphenated().to_string(),
        "duplicate": r.duplicate,
    })
}

async fn wait_stored(
    state: &AppState,
    rx: tokio::sync::oneshot::Receiver<Vec<Receipt>>,
) -> ApiResult<Vec<Receipt>> {
    match tokio::time::timeout(Duration::from_secs(state.config.service.timeout), rx).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the service stopped before the events were stored",
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "the events were accepted but not stored within {} s (database slow or away); they will be stored, and re-sending them is safe",
                state.config.service.timeout
            ),
        )),
    }
}

/// POST /process: one event; answers once it is stored.
async fn process(
    State(state): St,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    require_json(&headers, false)?;
    let body = body?;
    let enabled = state.config.event_consumers.enabled();
    let ev = match crate::event::parse(&body, crate::store::now_ms(), &enabled) {
        Ok(ev) => ev,
        Err(e) => {
            let kind = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
                v.get("event_type")
                    .and_then(Value::as_str)
                    .and_then(EventKind::parse)
            });
            state.metrics.event(kind, EventStatus::Rejected).inc();
            return Err(e.into());
        }
    };
    let rx = state.pipeline.submit_and_wait(vec![ev], None).await?;
    let receipts = wait_stored(&state, rx).await?;
    let r = receipts
        .first()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no receipt")))?;
    let mut body = receipt_json(&state, r);
    body["status"] = json!("success");
    Ok(Json(body))
}

#[derive(Deserialize)]
struct EventsQuery {
    /// Include each stored event's ids in the answer.
    #[serde(default)]
    receipts: bool,
}

/// POST /events: many events (JSON array or NDJSON); answers once the valid
/// ones are stored, with an error per invalid one.
async fn events(
    State(state): St,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let ndjson = require_json(&headers, true)?;
    let body = body?;
    let enabled = state.config.event_consumers.enabled();
    let pool = state.validators.clone();
    let now = crate::store::now_ms();
    let parsed = tokio::task::spawn_blocking(move || {
        crate::sources::validate::parse_bulk(&body, ndjson, now, &enabled, &pool)
    })
    .await
    .map_err(|e| ApiError::internal(e.into()))??;
    state
        .metrics
        .event(None, EventStatus::Rejected)
        .inc_by(parsed.errors.len() as u64);
    if parsed.valid.is_empty() {
        let mut e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_valid_events",
            if parsed.errors.is_empty() {
                "the body holds no events".to_string()
            } else {
                format!("none of the {} events is valid", parsed.errors.len())
            },
        );
        e.details = Some(json!({ "errors": parsed.errors.iter().take(100).collect::<Vec<_>>() }));
        return Err(e);
    }
    let total = parsed.valid.len() + parsed.errors.len();
    let rx = state.pipeline.submit_and_wait(parsed.valid, None).await?;
    let receipts = wait_stored(&state, rx).await?;
    let duplicates = receipts.iter().filter(|r| r.duplicate).count();
    let mut body = json!({
        "status": if parsed.errors.is_empty() { "success" } else { "partial" },
        "received": total,
        "accepted": receipts.len(),
        "duplicates": duplicates,
        "rejected": parsed.errors.len(),
        "errors": parsed.errors.iter().take(100).collect::<Vec<_>>(),
    });
    if q.receipts {
        body["receipts"] = receipts.iter().map(|r| receipt_json(&state, r)).collect();
    }
    Ok(Json(body))
}

/// GET /processing/{processing_id}: the requirements' processing record.
async fn processing_record(State(state): St, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let uuid = uuid::Uuid::parse_str(&id).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            format!("'{id}' is not a UUID: {e}"),
        )
    })?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no processing record {id}"),
        )
    };
    let seq = seq_of_processing_id(state.namespace, uuid).ok_or_else(not_found)?;
    let rec = state
        .store
        .record(seq)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    let mut body = json!({
        "processing_id": processing_id(state.namespace, rec.seq).hyphenated().to_string(),
        "event_id": uuid::Uuid::from_u128(rec.event_id).hyphenated().to_string(),
        "processing_type": rec.event_type,
        "processing_timestamp": rfc3339(rec.processed_at),
    });
    for (key, text) in [
        ("analytics_results", &rec.analytics),
        ("correlation_results", &rec.correlation),
        ("automated_response", &rec.response),
    ] {
        if let Some(v) = text
            .as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
        {
            body[key] = v;
        }
    }
    Ok(Json(body))
}

async fn health(State(state): St) -> Json<Value> {
    let db = match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(()))
            if !state
                .pipeline
                .counters
                .db_failing
                .load(std::sync::atomic::Ordering::Relaxed) =>
        {
            "ok".to_string()
        }
        Ok(Ok(())) => format!(
            "writes failing: {}",
            state
                .pipeline
                .counters
                .db_last_error
                .lock()
                .expect("lock")
                .clone()
                .unwrap_or_default()
        ),
        Ok(Err(e)) => format!("unreachable: {e}"),
        Err(_) => "unreachable: no answer within 2 s".to_string(),
    };
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
    let queued = state
        .pipeline
        .counters
        .queued
        .load(std::sync::atomic::Ordering::Relaxed);
    let queue = if queued >= state.pipeline.capacity() {
        "full"
    } else {
        "ok"
    };
    let kafka = match &state.kafka {
        None => "disabled".to_string(),
        Some(k) => k.problem().unwrap_or_else(|| "ok".into()),
    };
    let healthy = db == "ok" && queue == "ok" && (kafka == "ok" || kafka == "disabled");
    Json(json!({
        "status": if healthy { "healthy" } else { "degraded" },
        "service": state.config.service.name,
        "timestamp": rfc3339(crate::store::now_ms()),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "checks": {
            "database": db,
            "queue": queue,
            "plugins": if failing.is_empty() { "ok".to_string() } else { format!("recent failures: {}", failing.join("; ")) },
            "kafka": kafka,
        },
    }))
}

fn stats_json(s: &Stats) -> Value {
    json!({
        "event_count": s.count,
        "throughput": s.throughput,
        "requests_per_second": s.requests_per_second,
        "latency": s.latency_avg,
        "latency_p50": s.latency_p50,
        "latency_p95": s.latency_p95,
        "latency_p99": s.latency_p99,
        "latency_exact": s.latency_exact,
        "error_rate": s.error_rate,
        "error_percentage": s.error_rate * 100.0,
        "user_satisfaction": s.user_satisfaction,
        "business_value": s.business_value,
        "cost_per_request": s.cost_per_request,
    })
}

/// The analytics answer: the requirements' fields at the top level.
pub fn analytics_json(s: &Snapshot, by_type: bool) -> Value {
    let mut body = stats_json(&s.overall);
    body["timestamp"] = json!(rfc3339(s.time_ms));
    body["window_seconds"] = json!(s.window_secs);
    body["covered_seconds"] = json!(s.covered_secs);
    if by_type {
        let mut m = serde_json::Map::new();
        for (k, st) in &s.per_kind {
            m.insert(k.as_str().to_string(), stats_json(st));
        }
        body["by_event_type"] = Value::Object(m);
    }
    body["services"] = s
        .services
        .iter()
        .map(|h| json!({"service": h.service, "health": h.health.as_str(), "reported_at": rfc3339(h.time_ms)}))
        .collect();
    body
}

#[derive(Deserialize)]
struct AnalyticsQuery {
    /// Seconds of stored history to include.
    history: Option<u64>,
}

async fn analytics(State(state): St, Query(q): Query<AnalyticsQuery>) -> ApiResult<Json<Value>> {
    if !state.config.real_time_analytics.enabled {
        return Ok(Json(
            json!({"status": "disabled", "message": "real_time_analytics.enabled is false"}),
        ));
    }
    let snap = state.live.read().expect("live lock").snapshot.clone();
    let mut body = match &snap {
        Some(s) => analytics_json(s, state.config.real_time_analytics.aggregation_enabled),
        None => {
            json!({"event_count": 0, "throughput": 0.0, "error_rate": 0.0, "window_seconds": state.config.real_time_analytics.window_size})
        }
    };
    if let Some(secs) = q.history {
        let since = crate::store::now_ms() - secs.min(86_400 * 30) as i64 * 1000;
        let rows = state
            .store
            .snapshots_since(since)
            .await
            .map_err(ApiError::internal)?;
        body["history"] = rows
            .into_iter()
            .filter_map(|(t, s)| {
                let s: Snapshot = serde_json::from_str(&s).ok()?;
                let mut v = stats_json(&s.overall);
                v["timestamp"] = json!(rfc3339(t));
                Some(v)
            })
            .collect();
    }
    Ok(Json(body))
}

async fn analytics_status(State(state): St) -> Json<Value> {
    let cfg = &state.config.real_time_analytics;
    let live = state.live.read().expect("live lock");
    let now = crate::store::now_ms();
    let plugin = live
        .plugins
        .iter()
        .find(|p| p.stage == crate::plugin::PluginKind::Analytics);
    let last = live.snapshot.as_ref().map(|s| s.time_ms);
    let age = last.map(|t| (now - t) as f64 / 1000.0);
    let status = if !cfg.enabled {
        "disabled"
    } else if plugin.is_none() {
        "no_plugin"
    } else if age.is_some_and(|a| a > cfg.update_interval as f64 * 2.0 + 1.0) {
        "stale"
    } else {
        "running"
    };
    Json(json!({
        "status": status,
        "enabled": cfg.enabled,
        "window_size": cfg.window_size,
        "update_interval": cfg.update_interval,
        "last_update": last.map(rfc3339),
        "age_seconds": age,
        "events_in_window": live.snapshot.as_ref().map(|s| s.overall.count).unwrap_or(0),
        "events_processed": live.events,
        "replayed_at_start": live.replayed,
        "plugin": plugin.map(|p| json!({
            "name": p.name, "version": p.version, "calls": p.stats.calls, "errors": p.stats.errors,
            "traps": p.stats.traps, "last_error": p.stats.last_error,
        })),
    }))
}

/// POST /analytics/recalculate (admin): analytics recomputed from the stored
/// events, beside the real-time values.
async fn recalculate(State(state): St, headers: HeaderMap) -> ApiResult<Json<Value>> {
    require_admin(&state, &headers)?;
    let snap = state.live.read().expect("live lock").snapshot.clone();
    let Some(snap) = snap else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_analytics",
            "no events have been processed yet",
        ));
    };
    let r = crate::pipeline::recalc::recalculate(&state.store, &snap)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(r))
}

async fn correlations(State(state): St) -> ApiResult<Json<Value>> {
    let (findings, score) = {
        let live = state.live.read().expect("live lock");
        (live.findings.clone(), live.correlation_score)
    };
    let window_ms = state.config.event_correlation.window_size as i64 * 1000;
    let recent = state
        .store
        .alerts(crate::store::now_ms() - window_ms, 50)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({
        "patterns_detected": crate::pipeline::pattern_names(&findings),
        "alert_triggered": !recent.is_empty(),
        "correlation_score": score,
        "window_seconds": state.config.event_correlation.window_size,
        "active_findings": findings,
        "recent_alerts": recent.iter().map(|a| json!({
            "raised_at": rfc3339(a.raised_at), "rule": a.rule, "source": a.source, "subject": a.subject,
            "occurrences": a.occurrences, "score": a.score, "message": a.message,
            "evidence": serde_json::from_str::<Value>(&a.evidence).unwrap_or(Value::Null),
        })).collect::<Vec<_>>(),
        "timestamp": rfc3339(crate::store::now_ms()),
    })))
}

async fn correlations_config(State(state): St) -> Json<Value> {
    let mut v = serde_json::to_value(&state.config.event_correlation).expect("config serializes");
    if v.get("patterns").is_none() {
        v["patterns"] = serde_json::to_value(hxp_plugin_sdk::patterns::PatternConfig::default())
            .expect("pattern settings serialize");
    }
    Json(v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CorrelationTest {
    events: Vec<Value>,
    /// Keys of `event_correlation` to try instead of the live ones.
    #[serde(default)]
    config: Option<serde_json::Map<String, Value>>,
}

/// Expand the requirements' shorthand `{"type": "error", "count": 10}` into
/// events; full events pass through.
fn expand_test_events(items: Vec<Value>) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let Some(obj) = item.as_object() else {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_event",
                format!("events[{i}] must be an object"),
            ));
        };
        if obj.contains_key("event_type") {
            out.push(item);
            continue;
        }
        let Some(t) = obj.get("type").and_then(Value::as_str) else {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_event",
                format!(
                    "events[{i}] needs event_type (a full event) or type (shorthand, with optional count and data)"
                ),
            ));
        };
        let (kind, defaults) = match t {
            "error" | "error_event" => (
                "error_event",
                json!({"service": "test", "error_type": "test"}),
            ),
            "request" | "llm_request" => ("llm_request", json!({"model": "test"})),
            "slow_request" => ("llm_request", json!({"model": "test", "latency_ms": 5000})),
            "failed_request" => ("llm_request", json!({"model": "test", "success": false})),
            "feedback" | "user_feedback" => ("user_feedback", json!({"satisfaction": 5})),
            "metric" | "system_metric" => ("system_metric", json!({"service": "test"})),
            "business" | "business_event" => {
                ("business_event", json!({"name": "test", "value": 0}))
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_event",
                    format!(
                        "events[{i}]: unknown type '{other}' (error, request, slow_request, failed_request, feedback, metric, business, or an event type)"
                    ),
                ));
            }
        };
        let count = match obj.get("count") {
            None => 1,
            Some(c) => c
                .as_u64()
                .filter(|c| (1..=10_000).contains(c))
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_event",
                        format!("events[{i}].count must be 1 to 10000"),
                    )
                })?,
        };
        let mut data = defaults;
        if let Some(Value::Object(extra)) = obj.get("data") {
            for (k, v) in extra {
                data[k] = v.clone();
            }
        }
        for _ in 0..count {
            out.push(json!({"event_type": kind, "data": data}));
        }
    }
    if out.len() > 100_000 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_events",
            "at most 100000 test events",
        ));
    }
    Ok(out)
}

/// POST /correlations/test: the correlation plugin on the given events, in
/// a scratch instance; live state is untouched.
async fn correlations_test(
    State(state): St,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    require_json(&headers, false)?;
    let body = body?;
    let req: CorrelationTest = serde_json::from_slice(&body).map_err(|e| {
        let kind = if e.is_syntax() || e.is_eof() {
            EventErrorKind::MalformedJson
        } else {
            EventErrorKind::Invalid
        };
        ApiError::from(EventError {
            kind,
            message: format!("expected {{\"events\": [...], \"config\": {{...}}}}: {e}"),
            field: None,
        })
    })?;
    let Some((component, limits)) = state
        .deployer
        .component(crate::plugin::PluginKind::Correlation)
    else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_plugin",
            "no correlation plugin is loaded",
        ));
    };
    let items = expand_test_events(req.events)?;
    let now = crate::store::now_ms();
    let mut events = Vec::with_capacity(items.len());
    for (i, v) in items.into_iter().enumerate() {
        let mut e = crate::event::validate(v, now, &[true; 5]).map_err(|e| {
            let mut err = ApiError::from(e);
            err.message = format!("event {i}: {}", err.message);
            err
        })?;
        e.typed.seq = i as u64 + 1;
        events.push(e.typed);
    }
    let mut section =
        serde_json::to_value(&state.config.event_correlation).expect("config serializes");
    if let Some(over) = req.config {
        for (k, v) in over {
            section[k] = v;
        }
    }
    let engine = state.engine.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        let mut p = Plugin::new(engine, component, limits, Clock::manual(now)).map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "plugin_failed",
                e.to_string(),
            )
        })?;
        p.configure(&section.to_string()).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_config",
                e.message.clone(),
            )
        })?;
        let batch = convert::batch_to_wit(hxp_plugin_sdk::EventBatch::from_events(&events));
        let r = p.correlation_process(&batch).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "plugin_failed",
                e.to_string(),
            )
        })?;
        let findings: Vec<_> = r
            .findings
            .into_iter()
            .map(convert::finding_to_sdk)
            .collect();
        Ok(json!({
            "events": events.len(),
            "patterns_detected": crate::pipeline::pattern_names(&findings),
            "alert_triggered": findings.iter().any(|f| f.alert),
            "correlation_score": r.correlation_score,
            "findings": findings,
        }))
    })
    .await
    .map_err(|e| ApiError::internal(e.into()))??;
    Ok(Json(result))
}

async fn correlations_stats(State(state): St) -> ApiResult<Json<Value>> {
    let hour_ago = crate::store::now_ms() - 3_600_000;
    let counts = state
        .store
        .alert_counts(hour_ago)
        .await
        .map_err(ApiError::internal)?;
    let live = state.live.read().expect("live lock");
    Ok(Json(json!({
        "alerts_total": counts.iter().map(|c| c.1).sum::<i64>(),
        "alerts_last_hour": counts.iter().map(|c| c.2).sum::<i64>(),
        "by_rule": counts.iter().map(|(r, t, h)| json!({"rule": r, "total": t, "last_hour": h})).collect::<Vec<_>>(),
        "active_findings": live.findings.len(),
        "correlation_score": live.correlation_score,
        "events_evaluated": live.events,
        "rules": state.config.event_correlation.correlation_rules.len(),
        "window_seconds": state.config.event_correlation.window_size,
        "alert_threshold": state.config.event_correlation.alert_threshold,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponsesQuery {
    /// RFC 3339 time, or seconds ago.
    since: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn automated_responses(
    State(state): St,
    q: Result<Query<ResponsesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let since = match q.since.as_deref() {
        None => 0,
        Some(s) => match s.parse::<u64>() {
            Ok(secs) => crate::store::now_ms() - secs as i64 * 1000,
            Err(_) => chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_query",
                        format!("since: '{s}' is neither seconds nor an RFC 3339 time"),
                    )
                })?
                .timestamp_millis(),
        },
    };
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "limit must be 1 to 1000",
        ));
    }
    let offset = q.offset.unwrap_or(0);
    let outcome = match q.outcome.as_deref() {
        None | Some("") => None,
        Some(o) => Some(crate::store::Outcome::parse(o).ok_or_else(|| {
            let known: Vec<&str> = crate::store::Outcome::ALL
                .iter()
                .map(|o| o.as_str())
                .collect();
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("outcome: '{o}' is not one of {}", known.join(", ")),
            )
        })?),
    };
    let (rows, total) = state
        .store
        .actions(since, q.action.as_deref(), outcome, limit, offset)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({
        "total": total,
        "limit": limit,
        "offset": offset,
        "responses": rows.iter().map(|a| json!({
            "requested_at": rfc3339(a.requested_at),
            "rule": a.rule, "action": a.action, "target": a.target,
            "parameters": serde_json::from_str::<Value>(&a.parameters).unwrap_or(Value::Null),
            "reason": a.reason,
            "findings": serde_json::from_str::<Value>(&a.findings).unwrap_or(Value::Null),
            "analytics": a.analytics.as_deref()
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
                .unwrap_or(Value::Null),
            "outcome": a.outcome, "detail": a.detail,
            "executor": a.executor,
            "dry_run": a.dry_run,
            "idempotency_key": a.idempotency_key,
            "started_at": a.started_at.map(rfc3339),
            "finished_at": a.finished_at.map(rfc3339),
            "duration_ms": a.started_at.zip(a.finished_at).map(|(s, f)| f - s),
            "attempts": a.attempts,
            "http_status": a.http_status,
            "error": a.error,
        })).collect::<Vec<_>>(),
    })))
}

async fn metrics(State(state): St) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn config(State(state): St) -> Json<Value> {
    Json(state.config.redacted())
}

async fn pipeline(State(state): St) -> Json<Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let c = &state.pipeline.counters;
    let live = state.live.read().expect("live lock");
    let per_batch = |ns: u64| {
        if live.batches > 0 {
            ns as f64 / live.batches as f64 / 1e6
        } else {
            0.0
        }
    };
    let sp = &state.config.stream_processing;
    Json(json!({
        "mode": sp.processing_mode,
        "enabled": sp.enabled,
        "stages": ["sources", "validation", "batcher", "analytics", "correlation", "responses", "persistence", "acknowledgement"],
        "queue": {"depth": c.queued.load(Relaxed), "capacity": state.pipeline.capacity()},
        "batching": {
            "batch_size": sp.batch_size, "flush_interval": sp.flush_interval, "parallel_workers": sp.parallel_workers,
            "batches": live.batches,
            "average_batch_size": if live.batches > 0 { (live.events + live.duplicates) as f64 / live.batches as f64 } else { 0.0 },
            "last_batch_size": live.last_batch_size,
            "last_batch_at": live.last_batch_at.map(rfc3339),
        },
        "events": {"processed": live.events, "duplicates": live.duplicates, "stored": c.stored.load(Relaxed), "replayed_at_start": live.replayed},
        // End of the last batch on an old plugin version to the start of the
        // first on the new one (swaps made while a batch was waiting).
        "plugin_swap_gaps_us": live.swap_gaps_us,
        "batch_gaps_us": live.batch_gaps_us,
        "stage_ms_per_batch": {
            "analytics": per_batch(live.stage_ns[0]),
            "correlation": per_batch(live.stage_ns[1]),
            "responses": per_batch(live.stage_ns[2]),
        },
        "database": {
            "backend": format!("{:?}", state.store.backend()).to_lowercase(),
            "failing": c.db_failing.load(Relaxed),
            "last_error": c.db_last_error.lock().expect("lock").clone(),
            "batches_written": c.writer_batches.load(Relaxed),
        },
        "kafka": match &state.kafka {
            None => json!({"enabled": false}),
            Some(k) => k.json(),
        },
    }))
}

/// GET /plugins: what runs (stage, version, hash, calls, errors, traps,
/// p99 call time, last error, last deployment), and what was refused.
async fn plugins(State(state): St) -> Json<Value> {
    let list: Vec<Value> = {
        let live = state.live.read().expect("live lock");
        live.plugins
            .iter()
            .map(|p| {
                let mut v = serde_json::to_value(p).expect("status serializes");
                v["mean_call_ms"] =
                    json!(crate::plugin::instance::mean_call_time(&p.stats).as_secs_f64() * 1000.0);
                v
            })
            .collect()
    };
    let problems = state.deployer.problems();
    Json(json!({
        "plugins": list,
        "rejected": problems.rejected,
        "config_error": problems.config,
        "directory": state.deployer.directory(),
        "watching": state.config.plugins.watch,
    }))
}

/// GET /plugins/{name}/history: deployments, newest first (`limit`,
/// default 100).
async fn plugin_history(
    State(state): St,
    Path(name): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=10_000).contains(l))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_parameter",
                    "limit must be a number from 1 to 10000",
                )
            })?,
    };
    let rows = state
        .deployer
        .history(&name, limit)
        .await
        .map_err(ApiError::internal)?;
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let at = rfc3339(r.at);
            let mut v = serde_json::to_value(r).expect("row serializes");
            v["at"] = json!(at);
            v
        })
        .collect();
    Ok(Json(json!({ "plugin": name, "deployments": rows })))
}

/// POST /plugins/{name}/rollback (admin): back to the version before the
/// current one.
async fn plugin_rollback(
    State(state): St,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    require_admin(&state, &headers)?;
    match state.deployer.rollback(&name).await {
        Ok(row) => Ok(Json(json!({ "rolled_back": true, "deployment": row }))),
        Err(e) => Err(ApiError::new(
            rollback_status(&e),
            "rollback_failed",
            e.to_string(),
        )),
    }
}

fn rollback_status(e: &crate::deploy::DeployError) -> StatusCode {
    use crate::deploy::DeployError as E;
    match e {
        E::NotLoaded(_) => StatusCode::NOT_FOUND,
        E::NoEarlierVersion(_) | E::NotArchived(_) => StatusCode::CONFLICT,
        E::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        E::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// POST /plugins/reload (admin): rescan the plugin directory (retrying
/// files rejected before) and re-read the config file.
async fn plugins_reload(State(state): St, headers: HeaderMap) -> ApiResult<Json<Value>> {
    require_admin(&state, &headers)?;
    let mut rows = state
        .deployer
        .reload_config(crate::store::Trigger::Reload)
        .await;
    rows.extend(
        state
            .deployer
            .rescan(true, crate::store::Trigger::Reload)
            .await,
    );
    Ok(Json(json!({ "deployments": rows })))
}
