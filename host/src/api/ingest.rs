//! POST /process (one event) and POST /events (many).

use super::extract::ApiQuery;
use super::views::{BulkStatus, EventsView, ProcessView, ReceiptView, Success};
use super::{ApiError, ApiResult, AppState, ErrorBody, St, require_json};
use crate::pipeline::Receipt;
use crate::telemetry::EventStatus;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use hxp_plugin_sdk::EventKind;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;
use utoipa::IntoParams;

fn receipt_view(state: &AppState, r: &Receipt) -> ReceiptView {
    ReceiptView {
        event_id: uuid::Uuid::from_u128(r.event_id).hyphenated().to_string(),
        processing_id: super::processing_id(state.namespace, r.seq)
            .hyphenated()
            .to_string(),
        duplicate: r.duplicate,
    }
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
#[utoipa::path(
    post,
    path = "/process",
    tag = "ingestion",
    request_body(content = Object, description = "One event: `{event_type, data, ...}`", content_type = "application/json"),
    responses(
        (status = 200, description = "Stored (or a duplicate of a stored event)", body = ProcessView),
        (status = 400, description = "Malformed JSON or unreadable body", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Not a valid event, or its type is disabled", body = ErrorBody),
        (status = 503, description = "Busy, disabled or shutting down (Retry-After)", body = ErrorBody),
        (status = 504, description = "Accepted but not stored in time", body = ErrorBody),
    )
)]
pub(super) async fn process(
    State(state): St,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<ProcessView>> {
    require_json(&headers, false)?;
    let body = body?;
    let accept = state.config.acceptance();
    let ev = match crate::event::parse(&body, crate::store::now_ms(), &accept) {
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
    let ReceiptView {
        event_id,
        processing_id,
        duplicate,
    } = receipt_view(&state, r);
    Ok(Json(ProcessView {
        status: Success::Success,
        event_id,
        processing_id,
        duplicate,
    }))
}

#[derive(Deserialize, IntoParams)]
pub(super) struct EventsQuery {
    /// Include each stored event's ids in the answer.
    #[serde(default)]
    receipts: bool,
}

/// POST /events: many events (JSON array or NDJSON); answers once the valid
/// ones are stored, with an error per invalid one.
#[utoipa::path(
    post,
    path = "/events",
    tag = "ingestion",
    params(EventsQuery),
    request_body(
        description = "A JSON array of events, or NDJSON (one event a line)",
        content(
            (Vec<Object> = "application/json"),
            (String = "application/x-ndjson"),
        )
    ),
    responses(
        (status = 200, description = "The valid events are stored", body = EventsView),
        (status = 400, description = "Malformed JSON or unreadable body", body = ErrorBody),
        (status = 413, description = "Body too large, or too many events", body = ErrorBody),
        (status = 415, description = "Neither JSON nor NDJSON", body = ErrorBody),
        (status = 422, description = "No valid event (`details.errors` says why)", body = ErrorBody),
        (status = 503, description = "Busy, disabled or shutting down (Retry-After)", body = ErrorBody),
        (status = 504, description = "Accepted but not stored in time", body = ErrorBody),
    )
)]
pub(super) async fn events(
    State(state): St,
    ApiQuery(q): ApiQuery<EventsQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<EventsView>> {
    let ndjson = require_json(&headers, true)?;
    let body = body?;
    let accept = state.config.acceptance();
    let pool = state.validators.clone();
    let now = crate::store::now_ms();
    let parsed = tokio::task::spawn_blocking(move || {
        crate::sources::validate::parse_bulk(&body, ndjson, now, &accept, &pool)
    })
    .await
    .map_err(|e| ApiError::internal(e.into()))??;
    state
        .metrics
        .event(None, EventStatus::Rejected)
        .inc_by(parsed.errors.len() as u64);
    let errors: Vec<_> = parsed.errors.iter().take(100).cloned().collect();
    if parsed.valid.is_empty() {
        let message = if parsed.errors.is_empty() {
            "the body holds no events".to_string()
        } else {
            format!("none of the {} events is valid", parsed.errors.len())
        };
        return Err(
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "no_valid_events", message)
                .with_details(json!({ "errors": errors })),
        );
    }
    let total = parsed.valid.len() + parsed.errors.len();
    let rx = state.pipeline.submit_and_wait(parsed.valid, None).await?;
    let receipts = wait_stored(&state, rx).await?;
    Ok(Json(EventsView {
        status: if parsed.errors.is_empty() {
            BulkStatus::Success
        } else {
            BulkStatus::Partial
        },
        received: total,
        accepted: receipts.len(),
        duplicates: receipts.iter().filter(|r| r.duplicate).count(),
        rejected: parsed.errors.len(),
        errors,
        receipts: q
            .receipts
            .then(|| receipts.iter().map(|r| receipt_view(&state, r)).collect()),
    }))
}
