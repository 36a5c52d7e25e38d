//! The HTTP API (axum): every endpoint of the requirements, plus bulk
//! ingestion, processing records and plugin status. One module per route
//! group; the answers are typed views (`views`), described by the OpenAPI
//! document served at GET /openapi.json (`openapi`).

mod analytics;
mod backtest;
mod correlations;
mod error;
mod extract;
mod health;
mod ingest;
pub mod openapi;
mod page;
mod plugins;
mod processing;
mod responses;
mod silences;
pub mod views;

use error::body_error;
pub use error::{ApiError, ErrorBody};
pub use processing::processing_id;

use crate::config::Config;
use crate::pipeline::{LiveView, PipelineHandle};
use crate::plugin::PluginEngine;
use crate::store::Store;
use crate::telemetry::Metrics;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post, put};
use std::sync::{Arc, RwLock};
use std::time::Instant;

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
    /// The silences the processor applies: the API puts each change on it
    /// once it is stored.
    pub silences: crate::pipeline::suppress::SilenceBoard,
    /// Processing ids are UUIDs that carry this namespace and the event's
    /// sequence number.
    pub namespace: u64,
    pub started: Instant,
}

type St = State<Arc<AppState>>;

type ApiResult<T> = Result<T, ApiError>;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/static/dashboard.js", get(page::js))
        .route("/static/dashboard.css", get(page::css))
        .route("/openapi.json", get(openapi::document))
        .route("/health", get(health::health))
        .route("/analytics", get(analytics::analytics))
        .route("/analytics/status", get(analytics::status))
        .route("/analytics/recalculate", post(analytics::recalculate))
        .route("/correlations", get(correlations::correlations))
        .route("/correlations/config", get(correlations::config))
        .route("/correlations/test", post(correlations::test))
        .route("/correlations/stats", get(correlations::stats))
        .route("/automated-responses", get(responses::automated_responses))
        .route("/process", post(ingest::process))
        .route("/events", post(ingest::events))
        .route("/metrics", get(health::metrics))
        .route("/config", get(health::config))
        .route("/processing/pipeline", get(processing::pipeline))
        .route("/processing/{processing_id}", get(processing::record))
        .route("/plugins", get(plugins::plugins))
        .route(
            "/plugins/reload",
            post(plugins::reload).put(plugins::reserved),
        )
        .route(
            "/plugins/backtest",
            post(backtest::backtest).put(plugins::reserved),
        )
        .route(
            "/plugins/{name}",
            put(plugins::deploy).delete(plugins::remove),
        )
        .route("/plugins/{name}/history", get(plugins::history))
        .route("/plugins/{name}/rollback", post(plugins::rollback))
        .route(
            "/plugins/{name}/shadow",
            get(plugins::shadow).delete(plugins::drop_shadow),
        )
        .route("/plugins/{name}/promote", post(plugins::promote))
        .route("/silences", get(silences::list).post(silences::create))
        .route(
            "/silences/{id}",
            get(silences::one).delete(silences::delete),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // read_body_first has read every body within its limit already.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            read_body_first,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// Read every request body (up to service.max_body_bytes, or
/// plugins.max_upload_bytes for a component) before routing: the one place
/// bodies are limited.
/// An answer sent before its body was read (a 404, a 401, a GET given a
/// body) makes the server close the connection afterwards; a client that
/// already reused it for its next request sees that request dropped.
async fn read_body_first(
    State(state): St,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let (limit, setting) = if is_upload(&parts.method, parts.uri.path()) {
        // Only an admin may make the service hold a component in memory.
        // Anyone else's body is read and dropped, so the client hears why
        // (not a broken pipe).
        if let Err(e) = require_admin(&state, &parts.headers) {
            drain(body, state.config.plugins.max_upload_bytes).await;
            return axum::response::IntoResponse::into_response(e);
        }
        let limit = state.config.plugins.max_upload_bytes;
        (limit, "plugins.max_upload_bytes")
    } else {
        (
            state.config.service.max_body_bytes,
            "service.max_body_bytes",
        )
    };
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => {
            let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
            next.run(req).await
        }
        Err(e) => axum::response::IntoResponse::into_response(body_error(&e, setting)),
    }
}

/// The routes whose body is a plugin component (PUT /plugins/{name}, POST
/// /plugins/backtest): larger than any batch of events.
fn is_upload(method: &Method, path: &str) -> bool {
    (method == Method::PUT && path.starts_with("/plugins/"))
        || (method == Method::POST && path == "/plugins/backtest")
}

/// Read a body to its end (at most `limit` bytes), keeping none of it.
async fn drain(body: axum::body::Body, limit: usize) {
    use http_body_util::BodyExt;
    let mut body = http_body_util::Limited::new(body, limit);
    while let Some(Ok(_)) = body.frame().await {}
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

/// Admin endpoints need `Authorization: Bearer <token>`, one of
/// `service.admin_token` (named "admin") and `service.admin_tokens`; the
/// token's name.
fn require_admin(state: &AppState, headers: &HeaderMap) -> ApiResult<String> {
    let service = &state.config.service;
    let tokens = (!service.admin_token.is_empty())
        .then_some(("admin", service.admin_token.as_str()))
        .into_iter()
        .chain(
            service
                .admin_tokens
                .iter()
                .map(|(n, t)| (n.as_str(), t.as_str())),
        );
    let tokens: Vec<(&str, &str)> = tokens.collect();
    if tokens.is_empty() {
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
    let Some(name) = token_name(&tokens, given) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin bearer token is required",
        )
        .with_details(serde_json::json!({ "hint": "Authorization: Bearer <token>" })));
    };
    Ok(name.to_string())
}

/// The name of the token `given` is, among (name, token) pairs. Every
/// token is compared, so the time does not tell which one matched.
fn token_name<'a>(tokens: &[(&'a str, &str)], given: &str) -> Option<&'a str> {
    tokens.iter().fold(None, |found, (name, token)| {
        match token_matches(given, token) {
            true => Some(*name),
            false => found,
        }
    })
}

/// Whether `given` is the admin token, in time that depends on neither
/// (both are hashed first, so not even the length shows in the timing;
/// `subtle` compares the digests without an early exit).
fn token_matches(given: &str, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let (a, b) = (Sha256::digest(given), Sha256::digest(token));
    a.as_slice().ct_eq(b.as_slice()).into()
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

#[cfg(test)]
mod tests {
    use super::{token_matches, token_name};

    #[test]
    fn each_admin_token_is_known_by_its_name() {
        let tokens = [
            ("admin", "first-token-0123456"),
            ("ci", "second-token-012345"),
        ];
        assert_eq!(token_name(&tokens, "second-token-012345"), Some("ci"));
        assert_eq!(token_name(&tokens, "first-token-0123456"), Some("admin"));
        assert_eq!(token_name(&tokens, "second-token-01234"), None);
        assert_eq!(token_name(&[], ""), None);
    }

    #[test]
    fn the_admin_token_matches_only_itself() {
        assert!(token_matches("s3cret-token", "s3cret-token"));
        for wrong in ["", "s3cret-toke", "s3cret-tokeN", "s3cret-token ", "x"] {
            assert!(!token_matches(wrong, "s3cret-token"), "{wrong:?}");
        }
    }
}
