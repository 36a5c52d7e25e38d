//! GET /correlations, GET /correlations/config, POST /correlations/test,
//! GET /correlations/stats.

use super::views::{
    ActiveFindingView, AlertView, CorrelationStatsView, CorrelationTestView, CorrelationsView,
    RuleCountView,
};
use super::{ApiError, ApiResult, ErrorBody, St, require_json, rfc3339};
use crate::event::{EventError, EventErrorKind};
use crate::pipeline::suppress::Suppressor;
use crate::plugin::{Clock, Plugin, convert};
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

fn pattern_names(findings: &[hxp_plugin_sdk::Finding]) -> Vec<String> {
    crate::pipeline::pattern_names(findings)
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// GET /correlations: active findings and the alerts of the window.
#[utoipa::path(
    get,
    path = "/correlations",
    tag = "correlations",
    responses(
        (status = 200, description = "Patterns, findings and recent alerts", body = CorrelationsView),
        (status = 503, description = "The database could not answer", body = ErrorBody),
    )
)]
pub(super) async fn correlations(State(state): St) -> ApiResult<Json<CorrelationsView>> {
    let (findings, holds, score) = {
        let live = state.live.read().expect("live lock");
        (
            live.findings.clone(),
            live.holds.clone(),
            live.correlation_score,
        )
    };
    let window_ms = state.config.event_correlation.window_size as i64 * 1000;
    let recent = state
        .store
        .alerts(crate::store::now_ms() - window_ms, 50)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(CorrelationsView {
        patterns_detected: pattern_names(&findings),
        alert_triggered: recent.iter().any(|a| a.suppressed_by.is_none()),
        correlation_score: score,
        window_seconds: state.config.event_correlation.window_size,
        active_findings: (findings.into_iter().enumerate())
            .map(|(i, f)| ActiveFindingView::new(f, holds.get(i)))
            .collect(),
        recent_alerts: recent
            .into_iter()
            .map(|a| AlertView {
                raised_at: rfc3339(a.raised_at),
                evidence: serde_json::from_str::<Value>(&a.evidence).unwrap_or(Value::Null),
                rule: a.rule,
                source: a.source,
                subject: a.subject,
                occurrences: a.occurrences,
                score: a.score,
                message: a.message,
                suppressed_by: a.suppressed_by,
            })
            .collect(),
        timestamp: rfc3339(crate::store::now_ms()),
    }))
}

/// GET /correlations/config: the live `event_correlation` section.
#[utoipa::path(
    get,
    path = "/correlations/config",
    tag = "correlations",
    responses((status = 200, description = "The `event_correlation` config section, with the pattern settings (free-form)", body = Object))
)]
pub(super) async fn config(State(state): St) -> Json<Value> {
    let mut v = serde_json::to_value(&state.config.event_correlation).expect("config serializes");
    if v.get("patterns").is_none() {
        v["patterns"] = serde_json::to_value(hxp_plugin_sdk::patterns::PatternConfig::default())
            .expect("pattern settings serialize");
    }
    Json(v)
}

/// The body of POST /correlations/test.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CorrelationTest {
    /// Full events, or shorthand `{"type": "error", "count": 10, "data": {...}}`.
    #[schema(value_type = Vec<Object>)]
    events: Vec<Value>,
    /// Keys of `event_correlation` to try instead of the live ones.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    config: Option<serde_json::Map<String, Value>>,
}

fn invalid(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_event", message)
}

/// The test events validated at `now`, numbered from 1; an error names the
/// event.
fn validate_test_events(items: Vec<Value>, now: i64) -> ApiResult<Vec<hxp_plugin_sdk::Event>> {
    let mut events = Vec::with_capacity(items.len());
    for (i, v) in items.into_iter().enumerate() {
        let mut e =
            crate::event::validate(v, now, &crate::event::Acceptance::ALL).map_err(|e| {
                let mut err = ApiError::from(e);
                err.message = format!("event {i}: {}", err.message);
                err
            })?;
        e.typed.seq = i as u64 + 1;
        events.push(e.typed);
    }
    Ok(events)
}

/// The shorthand type names: (event type, default data).
fn shorthand(i: usize, t: &str) -> ApiResult<(&'static str, Value)> {
    Ok(match t {
        "error" | "error_event" => (
            "error_event",
            json!({"service": "test", "error_type": "test"}),
        ),
        "request" | "llm_request" => ("llm_request", json!({"model": "test"})),
        "slow_request" => ("llm_request", json!({"model": "test", "latency_ms": 5000})),
        "failed_request" => ("llm_request", json!({"model": "test", "success": false})),
        "feedback" | "user_feedback" => ("user_feedback", json!({"satisfaction": 5})),
        "metric" | "system_metric" => ("system_metric", json!({"service": "test"})),
        "business" | "business_event" => ("business_event", json!({"name": "test", "value": 0})),
        other => {
            return Err(invalid(format!(
                "events[{i}]: unknown type '{other}' (error, request, slow_request, failed_request, feedback, metric, business, or an event type)"
            )));
        }
    })
}

/// Expand the requirements' shorthand `{"type": "error", "count": 10}` into
/// events; full events pass through.
fn expand_test_events(items: Vec<Value>) -> ApiResult<Vec<Value>> {
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let Some(obj) = item.as_object() else {
            return Err(invalid(format!("events[{i}] must be an object")));
        };
        if obj.contains_key("event_type") {
            out.push(item);
            continue;
        }
        let Some(t) = obj.get("type").and_then(Value::as_str) else {
            return Err(invalid(format!(
                "events[{i}] needs event_type (a full event) or type (shorthand, with optional count and data)"
            )));
        };
        let (kind, mut data) = shorthand(i, t)?;
        let count = match obj.get("count") {
            None => 1,
            Some(c) => c
                .as_u64()
                .filter(|c| (1..=10_000).contains(c))
                .ok_or_else(|| invalid(format!("events[{i}].count must be 1 to 10000")))?,
        };
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

fn parse_test_body(body: &[u8]) -> ApiResult<CorrelationTest> {
    serde_json::from_slice(body).map_err(|e| {
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
    })
}

/// POST /correlations/test: the correlation plugin on the given events, in
/// a scratch instance; live state is untouched. The live silences and the
/// section's inhibit rules (as overridden) apply as they would live, at the
/// test batch's event time: a held-back finding says why and does not
/// alert.
#[utoipa::path(
    post,
    path = "/correlations/test",
    tag = "correlations",
    request_body(content = CorrelationTest, content_type = "application/json"),
    responses(
        (status = 200, description = "What the correlation plugin found", body = CorrelationTestView),
        (status = 400, description = "Malformed JSON or unreadable body", body = ErrorBody),
        (status = 413, description = "Body too large, or too many test events", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "An invalid event or config, or the plugin failed", body = ErrorBody),
        (status = 503, description = "No correlation plugin is loaded, or it could not start", body = ErrorBody),
    )
)]
pub(super) async fn test(
    State(state): St,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<CorrelationTestView>> {
    require_json(&headers, false)?;
    let req = parse_test_body(&body?)?;
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
    let now = crate::store::now_ms();
    let events = validate_test_events(expand_test_events(req.events)?, now)?;
    let mut section =
        serde_json::to_value(&state.config.event_correlation).expect("config serializes");
    if let Some(over) = req.config {
        for (k, v) in over {
            section[k] = v;
        }
    }
    let inhibit = inhibit_rules(&section)?;
    let suppressor = Suppressor::new(state.silences.clone(), inhibit);
    let engine = state.engine.clone();
    // The clock: the test batch's watermark, its newest event.
    let watermark = events.iter().map(|e| e.time_ms).max().unwrap_or(now);
    let clock = Clock::manual(watermark);
    let run = move || -> ApiResult<CorrelationTestView> {
        let mut p = Plugin::new(engine, component, limits, clock).map_err(|e| {
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
        let mut r = p.correlation_process(&batch).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "plugin_failed",
                e.to_string(),
            )
        })?;
        let holds = suppressor.apply(&mut r.findings, &[], watermark);
        let findings: Vec<_> = r
            .findings
            .into_iter()
            .map(convert::finding_to_sdk)
            .collect();
        Ok(CorrelationTestView {
            events: events.len(),
            patterns_detected: pattern_names(&findings),
            alert_triggered: findings.iter().any(|f| f.alert),
            correlation_score: r.correlation_score,
            findings: (findings.into_iter().enumerate())
                .map(|(i, f)| ActiveFindingView::new(f, holds.get(i)))
                .collect(),
        })
    };
    let result = tokio::task::spawn_blocking(run)
        .await
        .map_err(|e| ApiError::internal(e.into()))??;
    Ok(Json(result))
}

/// The `inhibit_rules` of the section the test runs with; a bad override
/// is the caller's mistake (422).
fn inhibit_rules(section: &Value) -> ApiResult<Vec<crate::config::InhibitRule>> {
    match section.get("inhibit_rules") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_config",
                format!("inhibit_rules: {e}"),
            )
        }),
    }
}

/// GET /correlations/stats: alert counts per rule and the live state.
#[utoipa::path(
    get,
    path = "/correlations/stats",
    tag = "correlations",
    responses(
        (status = 200, description = "Alert counts and the live correlation state", body = CorrelationStatsView),
        (status = 503, description = "The database could not answer", body = ErrorBody),
    )
)]
pub(super) async fn stats(State(state): St) -> ApiResult<Json<CorrelationStatsView>> {
    let hour_ago = crate::store::now_ms() - 3_600_000;
    let counts = state
        .store
        .alert_counts(hour_ago)
        .await
        .map_err(ApiError::internal)?;
    let live = state.live.read().expect("live lock");
    let cfg = &state.config.event_correlation;
    Ok(Json(CorrelationStatsView {
        alerts_total: counts.iter().map(|c| c.1).sum::<i64>(),
        alerts_last_hour: counts.iter().map(|c| c.2).sum::<i64>(),
        by_rule: counts
            .into_iter()
            .map(|(rule, total, last_hour)| RuleCountView {
                rule,
                total,
                last_hour,
            })
            .collect(),
        active_findings: live.findings.len(),
        correlation_score: live.correlation_score,
        events_evaluated: live.events,
        rules: cfg.correlation_rules.len(),
        window_seconds: cfg.window_size,
        alert_threshold: cfg.alert_threshold,
    }))
}
