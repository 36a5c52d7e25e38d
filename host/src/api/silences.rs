//! POST /silences, GET /silences, GET /silences/{id}, DELETE
//! /silences/{id}: silences made and ended over the API (an admin token to
//! write; reads are open). Each change is stored first, then put on the
//! board the processor reads (see `pipeline::suppress`).

use super::extract::{ApiPath, ApiQuery};
use super::views::{SilenceView, SilencesView};
use super::{ApiError, ApiResult, ErrorBody, St, require_admin, require_json, rfc3339};
use crate::pipeline::suppress::matcher::MatcherSpec;
use crate::pipeline::suppress::{Invalid, NewSilence, Silence, SilenceState};
use crate::util::time::{parse_duration_secs, parse_time};
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use utoipa::ToSchema;

/// The body of POST /silences.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SilenceBody {
    /// At least one; all must match a finding for the silence to hold it
    /// back. `name`: rule | subject | source; `op`: `=`, `!=`, `=~`, `!~`
    /// (a regex matches the whole value).
    #[serde(default)]
    matchers: Vec<MatcherSpec>,
    /// Event time it starts at (default: now): ms since the epoch, or RFC
    /// 3339.
    starts_at: Option<TimeArg>,
    /// Event time it ends at (excluded); or give `duration`.
    ends_at: Option<TimeArg>,
    /// How long from `starts_at`: seconds, or "90m", "2h", "1h30m", "7d".
    duration: Option<DurationArg>,
    /// Recurring: the window again every this long (at least its
    /// duration), e.g. "24h" for every night.
    repeat_every: Option<DurationArg>,
    /// Who made it.
    #[serde(default)]
    creator: String,
    /// Why.
    #[serde(default)]
    comment: String,
}

/// A time: milliseconds since the epoch, or RFC 3339.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub(super) enum TimeArg {
    Millis(i64),
    Text(String),
}

/// A duration: seconds, or a text such as "1h30m".
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub(super) enum DurationArg {
    Seconds(u64),
    Text(String),
}

fn invalid(field: &str, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        message: message.into(),
    }
}

impl TimeArg {
    fn ms(&self, field: &str) -> Result<i64, Invalid> {
        match self {
            TimeArg::Millis(ms) => Ok(*ms),
            TimeArg::Text(t) => parse_time(t).map_err(|e| invalid(field, e)),
        }
    }
}

impl DurationArg {
    fn ms(&self, field: &str) -> Result<i64, Invalid> {
        let secs = match self {
            DurationArg::Seconds(s) => *s,
            DurationArg::Text(t) => parse_duration_secs(t).map_err(|e| invalid(field, e))?,
        };
        let ms = i64::try_from(secs).ok().and_then(|s| s.checked_mul(1000));
        ms.ok_or_else(|| invalid(field, "too long"))
    }
}

impl SilenceBody {
    /// The silence it describes, its times resolved (`now` by default).
    fn resolve(self, now: i64) -> Result<NewSilence, Invalid> {
        let starts_at = match &self.starts_at {
            None => now,
            Some(t) => t.ms("/starts_at")?,
        };
        let ends_at = match (&self.ends_at, &self.duration) {
            (Some(t), None) => t.ms("/ends_at")?,
            (None, Some(d)) => (starts_at.checked_add(d.ms("/duration")?))
                .ok_or_else(|| invalid("/duration", "too long"))?,
            (None, None) => return Err(invalid("/ends_at", "give ends_at or duration")),
            (Some(_), Some(_)) => {
                return Err(invalid("/duration", "give ends_at or duration, not both"));
            }
        };
        let repeat_every_secs = match &self.repeat_every {
            None => None,
            Some(d) => Some((d.ms("/repeat_every")? / 1000) as u64),
        };
        Ok(NewSilence {
            matchers: self.matchers,
            starts_at,
            ends_at,
            repeat_every_secs,
            creator: self.creator,
            comment: self.comment,
        })
    }
}

fn unprocessable(e: Invalid) -> ApiError {
    let message = format!("{}: {}", e.field.trim_start_matches('/'), e.message);
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_silence", message).with_field(e.field)
}

/// The body, or a 400 (not JSON) or 422 (not a silence) naming the field.
fn parse_body(body: &[u8]) -> ApiResult<SilenceBody> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let pointer = json_pointer(e.path());
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            let msg = format!("the body is not JSON: {inner}");
            return ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", msg);
        }
        unprocessable(invalid(&pointer, inner.to_string()))
    })
}

/// `matchers[0].op` as a JSON pointer, `/matchers/0/op`.
fn json_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut p = String::new();
    for s in path.iter() {
        match s {
            Segment::Seq { index } => p.push_str(&format!("/{index}")),
            Segment::Map { key } => p.push_str(&format!("/{key}")),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    p
}

fn view(s: &Silence, at: i64) -> SilenceView {
    SilenceView {
        id: s.id.clone(),
        state: s.state(at),
        matchers: s.matchers.iter().map(|m| m.spec.clone()).collect(),
        starts_at: rfc3339(s.starts_at),
        ends_at: rfc3339(s.ends_at),
        repeat_every_secs: s.repeat_every_ms.map(|p| p / 1000),
        creator: s.creator.clone(),
        comment: s.comment.clone(),
        created_at: rfc3339(s.created_at),
        deleted_at: s.deleted_at.map(rfc3339),
    }
}

/// A stored silence that does not read back is the database's problem,
/// not the caller's.
fn readable(row: crate::store::SilenceRow) -> ApiResult<Silence> {
    Silence::from_row(row).map_err(|e| ApiError::internal(anyhow::anyhow!(e)))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no silence {id}"),
    )
}

/// POST /silences (admin): a silence, stored and applied from the next
/// batch on.
#[utoipa::path(
    post,
    path = "/silences",
    tag = "silences",
    security(("admin_token" = [])),
    request_body(content = SilenceBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Made: the silence, with its id (Location: /silences/{id})", body = SilenceView),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid admin token", body = ErrorBody),
        (status = 403, description = "Admin endpoints are disabled", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 422, description = "Not a valid silence; `field` says where", body = ErrorBody),
        (status = 503, description = "The database could not store it", body = ErrorBody),
    )
)]
pub(super) async fn create(
    State(state): St,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let token = require_admin(&state, &headers)?;
    require_json(&headers, false)?;
    let now = crate::store::now_ms();
    let new = parse_body(&body?)?.resolve(now).map_err(unprocessable)?;
    let id = uuid::Uuid::new_v4().to_string();
    let silence = Silence::new(id, now, new).map_err(unprocessable)?;
    (state.store.insert_silence(&silence.to_row()).await).map_err(ApiError::internal)?;
    tracing::info!(id = %silence.id, token, creator = %silence.creator, "silence created");
    let location = HeaderValue::from_str(&format!("/silences/{}", silence.id));
    let answer = Json(view(&silence, now));
    state.silences.put(silence);
    let mut resp = (StatusCode::CREATED, answer).into_response();
    if let Ok(l) = location {
        resp.headers_mut().insert(header::LOCATION, l);
    }
    Ok(resp)
}

/// Parameters of GET /silences.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// `all`: expired and deleted ones too (default: active and pending).
    #[param(value_type = Option<String>)]
    state: Option<ListState>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ListState {
    All,
}

/// GET /silences: the active and pending silences (`?state=all`: every
/// one), oldest first.
#[utoipa::path(
    get,
    path = "/silences",
    tag = "silences",
    params(ListQuery),
    responses(
        (status = 200, description = "The silences and their state now", body = SilencesView),
        (status = 400, description = "An unknown parameter or state", body = ErrorBody),
        (status = 503, description = "The database could not answer", body = ErrorBody),
    )
)]
pub(super) async fn list(
    State(state): St,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<SilencesView>> {
    let now = crate::store::now_ms();
    let rows = state.store.silences().await.map_err(ApiError::internal)?;
    let mut silences = Vec::with_capacity(rows.len());
    // A row that does not read back is left out, as the processor leaves
    // it out (logged there at start).
    let stored = rows
        .into_iter()
        .filter_map(|row| Silence::from_row(row).ok());
    for s in stored {
        let current = matches!(s.state(now), SilenceState::Active | SilenceState::Pending);
        if current || matches!(q.state, Some(ListState::All)) {
            silences.push(view(&s, now));
        }
    }
    Ok(Json(SilencesView {
        at: rfc3339(now),
        silences,
    }))
}

/// GET /silences/{id}.
#[utoipa::path(
    get,
    path = "/silences/{id}",
    tag = "silences",
    params(("id" = String, Path, description = "The silence's id")),
    responses(
        (status = 200, description = "The silence", body = SilenceView),
        (status = 404, description = "No silence of that id", body = ErrorBody),
        (status = 503, description = "The database could not answer", body = ErrorBody),
    )
)]
pub(super) async fn one(
    State(state): St,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<SilenceView>> {
    let row = state.store.silence(&id).await.map_err(ApiError::internal)?;
    let s = readable(row.ok_or_else(|| not_found(&id))?)?;
    Ok(Json(view(&s, crate::store::now_ms())))
}

/// DELETE /silences/{id} (admin): the silence ends now (it is kept,
/// marked deleted; deleting it again changes nothing).
#[utoipa::path(
    delete,
    path = "/silences/{id}",
    tag = "silences",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The silence's id")),
    responses(
        (status = 200, description = "Deleted: the silence, with deleted_at", body = SilenceView),
        (status = 401, description = "No valid admin token", body = ErrorBody),
        (status = 403, description = "Admin endpoints are disabled", body = ErrorBody),
        (status = 404, description = "No silence of that id", body = ErrorBody),
        (status = 503, description = "The database could not answer", body = ErrorBody),
    )
)]
pub(super) async fn delete(
    State(state): St,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<SilenceView>> {
    let token = require_admin(&state, &headers)?;
    let now = crate::store::now_ms();
    let row = (state.store.delete_silence(&id, now).await).map_err(ApiError::internal)?;
    let s = readable(row.ok_or_else(|| not_found(&id))?)?;
    tracing::info!(id = %s.id, token, "silence deleted");
    let answer = view(&s, now);
    state.silences.put(s);
    Ok(Json(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(json: &str) -> Result<NewSilence, ApiError> {
        parse_body(json.as_bytes())?
            .resolve(1_000_000)
            .map_err(unprocessable)
    }

    #[test]
    fn times_and_durations_resolve() {
        let m = r#""matchers": [{"name": "rule", "op": "=", "value": "x"}], "creator": "ops""#;
        let n = resolve(&format!(r#"{{{m}, "duration": "1h"}}"#)).unwrap();
        assert_eq!((n.starts_at, n.ends_at), (1_000_000, 1_000_000 + 3_600_000));
        let n = resolve(&format!(
            r#"{{{m}, "starts_at": "2024-01-01T02:00:00Z", "ends_at": 1704078000000, "repeat_every": "1d"}}"#
        ))
        .unwrap();
        assert_eq!(
            (n.starts_at, n.ends_at),
            (1_704_074_400_000, 1_704_078_000_000)
        );
        assert_eq!(n.repeat_every_secs, Some(86_400));
        let n = resolve(&format!(r#"{{{m}, "duration": 90}}"#)).unwrap();
        assert_eq!(n.ends_at - n.starts_at, 90_000);
    }

    /// Each mistake is answered with the field it is in.
    #[test]
    fn errors_name_the_field() {
        let m = r#""matchers": [{"name": "rule", "op": "=", "value": "x"}], "creator": "ops""#;
        let cases = [
            (format!(r#"{{{m}}}"#), 422, "/ends_at"),
            (
                format!(r#"{{{m}, "duration": "1h", "ends_at": 5}}"#),
                422,
                "/duration",
            ),
            (format!(r#"{{{m}, "duration": "soon"}}"#), 422, "/duration"),
            (
                format!(r#"{{{m}, "duration": "1h", "starts_at": "noon"}}"#),
                422,
                "/starts_at",
            ),
            (
                format!(r#"{{{m}, "duration": "1h", "colour": 1}}"#),
                422,
                "",
            ),
            (
                r#"{"matchers": [{"name": "rule", "op": "~", "value": "x"}], "duration": 5}"#
                    .to_string(),
                422,
                "/matchers/0/op",
            ),
            (r#"{"matchers": [], "duration": 5"#.to_string(), 400, ""),
        ];
        for (body, status, want) in cases {
            let e = resolve(&body).map(|_| ()).unwrap_err();
            let b = e.body();
            let resp = e.into_response();
            assert_eq!(resp.status().as_u16(), status, "{body}: {}", b.message);
            if !want.is_empty() {
                assert_eq!(b.field.as_deref(), Some(want), "{body}: {}", b.message);
            }
        }
    }
}
