//! POST /plugins/backtest: a candidate plugin, among the live versions of
//! the others, over the stored events of an event-time range, answered as
//! NDJSON lines while it runs (progress every second, then the report);
//! closing the connection cancels it.

use super::extract::ApiQuery;
use super::{ApiError, ApiResult, ErrorBody, St, require_admin};
use crate::deploy::BacktestCandidate;
use crate::pipeline::backtest::{self, BacktestReport, MAX_WARMUP_SECS, Progress};
use crate::util::task::AbortOnDrop;
use crate::util::time::parse_time;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often a running backtest reports progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
const MAX_BATCH: usize = 100_000;

/// Parameters of POST /plugins/backtest.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct BacktestQuery {
    /// Start of the event-time range (RFC 3339, or ms since the epoch),
    /// inclusive.
    from: String,
    /// End of the range, exclusive.
    to: String,
    /// The live plugin it stands in for (default: the first of its stage;
    /// a name no plugin runs under adds it to the others).
    plugin: Option<String>,
    /// The config section it is configured with (default: that plugin's,
    /// else its stage's; `plugin_config.NAME` for a section of its own).
    config: Option<String>,
    /// Events per batch (default: the service's
    /// `stream_processing.batch_size`, so that the windows responses decide
    /// on are those the live service had; at most 100,000).
    batch_size: Option<usize>,
    /// Seconds of events before `from` the plugins warm up on, not
    /// counted (default 0: they start fresh at `from`; at most 86,400); the
    /// window length gives them the state the live versions had.
    warmup: Option<u32>,
}

impl BacktestQuery {
    fn range(&self) -> ApiResult<(i64, i64)> {
        let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", m);
        let from = parse_time(&self.from).map_err(|e| bad(format!("from: {e}")))?;
        let to = parse_time(&self.to).map_err(|e| bad(format!("to: {e}")))?;
        if to <= from {
            return Err(bad(format!(
                "the range is empty: to ({to}) ≤ from ({from})"
            )));
        }
        Ok((from, to))
    }

    /// The warm-up in milliseconds.
    fn warmup_ms(&self) -> ApiResult<i64> {
        match self.warmup.unwrap_or(0) {
            s @ 0..=MAX_WARMUP_SECS => Ok(i64::from(s) * 1000),
            s => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("warmup {s}: use 0 to {MAX_WARMUP_SECS} seconds"),
            )),
        }
    }

    fn batch_size(&self, service: usize) -> ApiResult<usize> {
        match self.batch_size.unwrap_or(service) {
            n @ 1..=MAX_BATCH => Ok(n),
            n => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("batch_size {n}: use 1 to {MAX_BATCH}"),
            )),
        }
    }
}

/// One line of the answer: progress lines, then a report or an error.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum BacktestLine {
    Progress(Progress),
    Report(Box<BacktestReport>),
    /// The backtest stopped: the candidate failed, or the store did.
    Error(String),
}

/// POST /plugins/backtest (admin): run the component in the body in place
/// of the live plugin it stands in for, beside fresh instances of the
/// other live plugins, over the stored events of `[from, to)` in
/// event-time order, fresh (or warmed up), the clock following the events.
/// The answer streams NDJSON: `{"progress": ...}` every second, then
/// `{"report": ...}` (alerts per rule and action requests per rule and
/// action, those the live versions recorded for the batches of those
/// events, and the differences) or `{"error": "..."}`. Closing the
/// connection cancels it. One backtest runs at a time.
#[utoipa::path(
    post,
    path = "/plugins/backtest",
    tag = "plugins",
    security(("admin_token" = [])),
    params(BacktestQuery),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "The component"),
    responses(
        (status = 200, description = "Started: NDJSON lines of progress, then the report or an error", body = BacktestLine, content_type = "application/x-ndjson"),
        (status = 400, description = "No body, or a bad range or parameter", body = ErrorBody),
        (status = 401, description = "No valid admin token", body = ErrorBody),
        (status = 403, description = "Admin endpoints are disabled", body = ErrorBody),
        (status = 409, description = "A backtest is running", body = ErrorBody),
        (status = 413, description = "Larger than plugins.max_upload_bytes", body = ErrorBody),
        (status = 422, description = "It does not compile or configure, or is not of the stage of the plugin it stands in for", body = ErrorBody),
    )
)]
pub(super) async fn backtest(
    State(state): St,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<BacktestQuery>,
    body: bytes::Bytes,
) -> ApiResult<Response> {
    require_admin(&state, &headers)?;
    let body = super::plugins::component(body)?;
    let range = q.range()?;
    let service_batch = state.config.stream_processing.batch_size;
    let sizes = (q.batch_size(service_batch)?, q.warmup_ms()?);
    let Some(hold) = state.deployer.backtest_slot() else {
        let msg = "a backtest is running; one runs at a time";
        return Err(ApiError::new(StatusCode::CONFLICT, "backtest_running", msg));
    };
    let deployer = state.deployer.clone();
    let bench = tokio::task::spawn_blocking(move || {
        let c = BacktestCandidate {
            bytes: &body,
            plugin: q.plugin.as_deref(),
            section: q.config.as_deref(),
        };
        // The clock starts where the warm-up does.
        deployer.backtest_bench(&c, range.0 - sizes.1)
    })
    .await
    .map_err(|e| ApiError::internal(e.into()))?
    .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "plugin_rejected", e))?;
    let (progress, following) = watch::channel(Progress::default());
    let store = state.store.clone();
    let task = tokio::spawn(async move {
        let watch = backtest::Watch {
            progress,
            hold: Some(hold),
        };
        backtest::run(&store, bench, range, sizes, watch).await
    });
    let lines = ndjson_lines(following, AbortOnDrop(task));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(axum::body::Body::from_stream(lines))
        .map_err(|e| ApiError::internal(e.into()))
}

type Running = AbortOnDrop<anyhow::Result<BacktestReport>>;

/// Progress now and every second until the backtest ends, then its
/// report or error. Dropping the stream (the client went away) aborts the
/// task and drops the last progress receiver, which stops the candidate.
fn ndjson_lines(
    following: watch::Receiver<Progress>,
    task: Running,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> {
    let start = Some((following, task, Instant::now()));
    futures::stream::unfold(start, |state| async move {
        let (following, mut task, next) = state?;
        tokio::select! {
            done = &mut task => {
                let line = match done {
                    Ok(Ok(report)) => BacktestLine::Report(Box::new(report)),
                    Ok(Err(e)) => BacktestLine::Error(format!("{e:#}")),
                    Err(e) => BacktestLine::Error(format!("the backtest stopped: {e}")),
                };
                Some((Ok(line_bytes(&line)), None))
            }
            _ = tokio::time::sleep_until(next) => {
                let line = BacktestLine::Progress(*following.borrow());
                Some((Ok(line_bytes(&line)), Some((following, task, next + PROGRESS_EVERY))))
            }
        }
    })
}

fn line_bytes(line: &BacktestLine) -> bytes::Bytes {
    let mut text = serde_json::to_vec(line).unwrap_or_default();
    text.push(b'\n');
    text.into()
}
