//! GET /automated-responses: the audit of requested actions.

use super::extract::ApiQuery;
use super::views::{ActionView, ResponsesView};
use super::{ApiError, ApiResult, ErrorBody, St, rfc3339};
use crate::store::ActionRow;
use crate::store::Outcome;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct ResponsesQuery {
    /// RFC 3339 time, or seconds ago.
    since: Option<String>,
    /// Only this action.
    action: Option<String>,
    /// Only this outcome.
    outcome: Option<String>,
    /// 1 to 1000 (default 50).
    limit: Option<usize>,
    offset: Option<usize>,
}

fn bad_query(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
}

/// `since` as milliseconds since the epoch (0 when absent).
fn since_ms(since: Option<&str>) -> ApiResult<i64> {
    Ok(match since {
        None => 0,
        Some(s) => match s.parse::<u64>() {
            Ok(secs) => crate::store::now_ms() - secs as i64 * 1000,
            Err(_) => chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|_| {
                    bad_query(format!(
                        "since: '{s}' is neither seconds nor an RFC 3339 time"
                    ))
                })?
                .timestamp_millis(),
        },
    })
}

fn json_or_null(text: Option<&str>) -> Value {
    text.and_then(|s| serde_json::from_str::<Value>(s).ok())
        .unwrap_or(Value::Null)
}

fn action_view(a: ActionRow) -> ActionView {
    ActionView {
        requested_at: rfc3339(a.requested_at),
        parameters: json_or_null(Some(&a.parameters)),
        findings: json_or_null(Some(&a.findings)),
        analytics: json_or_null(a.analytics.as_deref()),
        started_at: a.started_at.map(rfc3339),
        finished_at: a.finished_at.map(rfc3339),
        duration_ms: a.started_at.zip(a.finished_at).map(|(s, f)| f - s),
        rule: a.rule,
        action: a.action,
        target: a.target,
        reason: a.reason,
        outcome: a.outcome,
        detail: a.detail,
        executor: a.executor,
        dry_run: a.dry_run,
        idempotency_key: a.idempotency_key,
        attempts: a.attempts,
        http_status: a.http_status,
        error: a.error,
    }
}

/// GET /automated-responses: requested actions, newest first, with outcomes.
#[utoipa::path(
    get,
    path = "/automated-responses",
    tag = "responses",
    params(ResponsesQuery),
    responses(
        (status = 200, description = "A page of the action audit", body = ResponsesView),
        (status = 400, description = "An invalid or unknown query parameter", body = ErrorBody),
        (status = 503, description = "The database could not answer", body = ErrorBody),
    )
)]
pub(super) async fn automated_responses(
    State(state): St,
    ApiQuery(q): ApiQuery<ResponsesQuery>,
) -> ApiResult<Json<ResponsesView>> {
    let since = since_ms(q.since.as_deref())?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(bad_query("limit must be 1 to 1000"));
    }
    let offset = q.offset.unwrap_or(0);
    let outcome = outcome_filter(q.outcome.as_deref())?;
    let (rows, total) = state
        .store
        .actions(since, q.action.as_deref(), outcome, limit, offset)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(ResponsesView {
        total,
        limit,
        offset,
        responses: rows.into_iter().map(action_view).collect(),
    }))
}

/// The `outcome` filter: one of the stored outcomes, or none.
fn outcome_filter(text: Option<&str>) -> ApiResult<Option<Outcome>> {
    match text {
        None | Some("") => Ok(None),
        Some(o) => Outcome::parse(o).map(Some).ok_or_else(|| {
            let known: Vec<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
            bad_query(format!("outcome: '{o}' is not one of {}", known.join(", ")))
        }),
    }
}
