//! GET /plugins, POST /plugins/reload, PUT and DELETE /plugins/{name},
//! GET /plugins/{name}/history, POST /plugins/{name}/rollback.

use super::extract::{ApiPath, ApiQuery};
use super::views::{DeployView, HistoryView, PluginView, PluginsView, ReloadView, RollbackView};
use super::{ApiError, ApiResult, AppState, ErrorBody, St, require_admin};
use crate::deploy::{DeployError, Mode, Upload, UploadError};
use crate::pipeline::shadow::ShadowReport;
use crate::store::DeploymentRow;
use crate::store::Trigger;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::collections::HashMap;

/// GET /plugins: what runs (stage, version, hash, calls, errors, traps,
/// p99 call time, last error, last deployment), and what was refused.
#[utoipa::path(
    get,
    path = "/plugins",
    tag = "plugins",
    responses((status = 200, description = "The running plugins and the refused files", body = PluginsView))
)]
pub(super) async fn plugins(State(state): St) -> Json<PluginsView> {
    let plugins: Vec<PluginView> = {
        let live = state.live.read().expect("live lock");
        live.plugins
            .iter()
            .map(|p| PluginView {
                mean_call_ms: crate::plugin::instance::mean_call_time(&p.stats).as_secs_f64()
                    * 1000.0,
                status: p.clone(),
            })
            .collect()
    };
    let problems = state.deployer.problems();
    Json(PluginsView {
        plugins,
        rejected: problems.rejected,
        config_error: problems.config,
        quarantined: problems.quarantined,
        shadows: state.deployer.shadow_reports(),
        directory: state.deployer.directory().to_path_buf(),
        watching: state.config.plugins.watch,
    })
}

/// GET /plugins/{name}/history: deployments, newest first (`limit`,
/// default 100).
#[utoipa::path(
    get,
    path = "/plugins/{name}/history",
    tag = "plugins",
    params(
        ("name" = String, Path, description = "The plugin's name"),
        ("limit" = Option<i64>, Query, description = "1 to 10000 (default 100)"),
    ),
    responses(
        (status = 200, description = "The plugin's deployments, newest first", body = HistoryView),
        (status = 400, description = "An invalid limit", body = ErrorBody),
        (status = 503, description = "The database could not answer", body = ErrorBody),
    )
)]
pub(super) async fn history(
    State(state): St,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<HashMap<String, String>>,
) -> ApiResult<Json<HistoryView>> {
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
    Ok(Json(HistoryView {
        plugin: name,
        deployments: rows.into_iter().map(Into::into).collect(),
    }))
}

/// POST /plugins/{name}/rollback (admin): back to the version before the
/// current one.
#[utoipa::path(
    post,
    path = "/plugins/{name}/rollback",
    tag = "plugins",
    security(("admin_token" = [])),
    params(("name" = String, Path, description = "The plugin's name")),
    responses(
        (status = 200, description = "Rolled back", body = RollbackView),
        (status = 401, description = "No valid admin token", body = ErrorBody),
        (status = 403, description = "Admin endpoints are disabled", body = ErrorBody),
        (status = 404, description = "No plugin of that name is loaded", body = ErrorBody),
        (status = 409, description = "No earlier version to roll back to, or it is not in the archive", body = ErrorBody),
        (status = 422, description = "The earlier version was refused", body = ErrorBody),
        (status = 503, description = "The deployment history could not be read", body = ErrorBody),
    )
)]
pub(super) async fn rollback(
    State(state): St,
    headers: HeaderMap,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<RollbackView>> {
    require_admin(&state, &headers)?;
    match state.deployer.rollback(&name).await {
        Ok(deployment) => Ok(Json(RollbackView {
            rolled_back: true,
            deployment,
        })),
        Err(e) => Err(ApiError::new(
            deploy_status(&e),
            "rollback_failed",
            e.to_string(),
        )),
    }
}

/// A deployment's answer, or the error of its kind.
fn deployed(
    r: Result<DeploymentRow, DeployError>,
    code: &'static str,
) -> ApiResult<Json<DeployView>> {
    r.map(|deployment| Json(DeployView { deployment }))
        .map_err(|e| ApiError::new(deploy_status(&e), code, e.to_string()))
}

/// The status of each way a deployment change (rollback, removal, promotion) fails.
fn deploy_status(e: &DeployError) -> StatusCode {
    match e {
        DeployError::NotLoaded(_) => StatusCode::NOT_FOUND,
        DeployError::NoEarlierVersion(_) | DeployError::NotArchived(_) => StatusCode::CONFLICT,
        DeployError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        DeployError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        DeployError::NoShadow(_) => StatusCode::NOT_FOUND,
        DeployError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// POST /plugins/reload (admin): rescan the plugin directory (retrying
/// files rejected before) and re-read the config file.
#[utoipa::path(
    post,
    path = "/plugins/reload",
    tag = "plugins",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The deployments the reload made", body = ReloadView),
        (status = 401, description = "No valid admin token", body = ErrorBody),
        (status = 403, description = "Admin endpoints are disabled", body = ErrorBody),
    )
)]
pub(super) async fn reload(State(state): St, headers: HeaderMap) -> ApiResult<Json<ReloadView>> {
    require_admin(&state, &headers)?;
    let mut deployments: Vec<DeploymentRow> = state.deployer.reload_config(Trigger::Reload).await;
    deployments.extend(state.deployer.rescan(true, Trigger::Reload).await);
    Ok(Json(ReloadView { deployments }))
}

/// Manifest keys of PUT /plugins/{name}, as query parameters.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct DeployQuery {
    /// Checked against the component's world.
    #[param(value_type = Option<String>)]
    stage: Option<crate::plugin::PluginKind>,
    /// Within the stage, lower first (default 100).
    order: Option<i32>,
    /// Config section given to configure (default: the stage's).
    config: Option<String>,
    /// Call deadline (default: plugins.limits).
    deadline_ms: Option<u64>,
    /// Memory limit (default: plugins.limits).
    memory_mb: Option<u64>,
    /// `shadow`: run it beside the live version of that name, acting on
    /// nothing (default `live`).
    #[param(value_type = Option<String>)]
    mode: Option<Mode>,
}

impl DeployQuery {
    fn manifest(&self, defaults: crate::plugin::Limits) -> crate::deploy::Manifest {
        let limits = (self.deadline_ms.is_some() || self.memory_mb.is_some()).then(|| {
            crate::plugin::Limits {
                deadline_ms: self.deadline_ms.unwrap_or(defaults.deadline_ms),
                memory_mb: self.memory_mb.unwrap_or(defaults.memory_mb),
            }
        });
        crate::deploy::Manifest {
            name: None,
            stage: self.stage,
            order: self.order,
            config: self.config.clone(),
            limits,
            // The query's `mode` says how; a shadow's file is written only
            // when it is promoted, as a live one.
            mode: None,
        }
    }
}

/// An admin request's author for the deployment history: the token's
/// name and the client's address ("token ci from 127.0.0.1:50312"); the
/// refusal without a valid token.
fn admin_actor(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
) -> ApiResult<String> {
    let token = require_admin(state, headers)?;
    Ok(
        match extensions.get::<axum::extract::ConnectInfo<crate::tls::ClientAddr>>() {
            Some(addr) => format!("token {token} from {}", addr.0.0),
            None => format!("token {token}"),
        },
    )
}

/// A component upload's body: refused when empty.
pub(super) fn component(body: bytes::Bytes) -> ApiResult<bytes::Bytes> {
    if body.is_empty() {
        let msg = "the body must be the component (.wasm bytes)";
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "empty_body", msg));
    }
    Ok(body)
}

/// PUT /plugins/{name} (admin): deploy the component in the body (the
/// `.wasm` bytes) under `name`, with exactly the checks and swap of a file
/// dropped into the plugin directory; the file is then kept there, so a
/// restart runs it too.
#[utoipa::path(
    put,
    path = "/plugins/{name}",
    tag = "plugins",
    security(("admin_token" = [])),
    params(("name" = String, Path, description = "The plugin's name"), DeployQuery),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "The component"),
    responses(
        (status = 200, description = "Deployed and live", body = DeployView),
        (status = 400, description = "No body, a bad name or manifest key", body = ErrorBody),
        (status = 401, description = "No valid admin token", body = ErrorBody),
        (status = 403, description = "Admin endpoints are disabled", body = ErrorBody),
        (status = 409, description = "The file of that name deploys another plugin", body = ErrorBody),
        (status = 413, description = "Larger than plugins.max_upload_bytes", body = ErrorBody),
        (status = 422, description = "Refused by the checks (details: the recorded attempt)", body = ErrorBody),
    )
)]
pub(super) async fn deploy(
    State(state): St,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeployQuery>,
    body: bytes::Bytes,
) -> ApiResult<Json<DeployView>> {
    let actor = admin_actor(&state, &headers, &extensions)?;
    let upload = Upload {
        name,
        bytes: component(body)?.to_vec(),
        manifest: q.manifest(state.config.plugins.limits),
        actor,
    };
    let deployed = match q.mode.unwrap_or_default() {
        Mode::Live => state.deployer.deploy_upload(upload).await,
        Mode::Shadow => state.deployer.deploy_shadow(upload).await,
    };
    deployed
        .map(|deployment| Json(DeployView { deployment }))
        .map_err(upload_error)
}

/// PUT of a plugin under a name the API's own paths take (for an admin):
/// refused, as a file of that name is.
pub(super) async fn reserved(
    State(state): St,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> ApiError {
    if let Err(e) = require_admin(&state, &headers) {
        return e;
    }
    let name = uri.path().rsplit('/').next().unwrap_or_default();
    let e = crate::deploy::check_name(name).err().unwrap_or_default();
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_plugin", e)
}

/// The answer for each way an upload fails.
fn upload_error(e: UploadError) -> ApiError {
    let (status, code) = match &e {
        UploadError::BadName(_) | UploadError::BadManifest(_) => {
            (StatusCode::BAD_REQUEST, "invalid_plugin")
        }
        UploadError::FileTaken { .. } => (StatusCode::CONFLICT, "name_conflict"),
        UploadError::Io(_) | UploadError::NotKept(_) | UploadError::Internal(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "plugin_directory")
        }
        UploadError::Stopping => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
        UploadError::Rejected(_) => (StatusCode::UNPROCESSABLE_ENTITY, "plugin_rejected"),
    };
    let err = ApiError::new(status, code, e.to_string());
    match e {
        UploadError::Rejected(row) => err.with_details(serde_json::json!({ "deployment": row })),
        _ => err,
    }
}

/// DELETE /plugins/{name} (admin): unload the plugin and remove its file
/// from the plugin directory.
#[utoipa::path(
    delete,
    path = "/plugins/{name}",
    tag = "plugins",
    security(("admin_token" = [])),
    params(("name" = String, Path, description = "The plugin's name")),
    responses(
        (status = 200, description = "Unloaded", body = DeployView),
        (status = 401, description = "No valid admin token", body = ErrorBody),
        (status = 403, description = "Admin endpoints are disabled", body = ErrorBody),
        (status = 404, description = "No plugin of that name is loaded", body = ErrorBody),
        (status = 422, description = "Refused (the only analytics plugin)", body = ErrorBody),
    )
)]
pub(super) async fn remove(
    State(state): St,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<DeployView>> {
    let who = admin_actor(&state, &headers, &extensions)?;
    deployed(state.deployer.remove(&name, who).await, "remove_failed")
}

/// GET /plugins/{name}/shadow: what the plugin's shadow did so far against
/// the live version.
#[utoipa::path(
    get,
    path = "/plugins/{name}/shadow",
    tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name")),
    responses(
        (status = 200, description = "The shadow's report", body = ShadowReport),
        (status = 404, description = "The plugin has no shadow", body = ErrorBody),
    )
)]
pub(super) async fn shadow(
    State(state): St,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<ShadowReport>> {
    match state.deployer.shadow_report(&name) {
        Some(report) => Ok(Json(report)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_shadow",
            format!("{name} has no shadow"),
        )),
    }
}

/// POST /plugins/{name}/promote (admin): the shadow becomes the live
/// version, with its state; its file is written into the plugin directory.
#[utoipa::path(
    post,
    path = "/plugins/{name}/promote",
    tag = "plugins",
    security(("admin_token" = [])),
    params(("name" = String, Path, description = "The plugin's name")),
    responses(
        (status = 200, description = "Promoted", body = DeployView),
        (status = 401, description = "No valid admin token", body = ErrorBody),
        (status = 403, description = "Admin endpoints are disabled", body = ErrorBody),
        (status = 404, description = "The plugin has no shadow", body = ErrorBody),
        (status = 422, description = "Refused", body = ErrorBody),
    )
)]
pub(super) async fn promote(
    State(state): St,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<DeployView>> {
    let who = admin_actor(&state, &headers, &extensions)?;
    deployed(state.deployer.promote(&name, who).await, "promote_failed")
}

/// DELETE /plugins/{name}/shadow (admin): stop the plugin's shadow.
#[utoipa::path(
    delete,
    path = "/plugins/{name}/shadow",
    tag = "plugins",
    security(("admin_token" = [])),
    params(("name" = String, Path, description = "The plugin's name")),
    responses(
        (status = 200, description = "Stopped", body = DeployView),
        (status = 401, description = "No valid admin token", body = ErrorBody),
        (status = 403, description = "Admin endpoints are disabled", body = ErrorBody),
        (status = 404, description = "The plugin has no shadow", body = ErrorBody),
    )
)]
pub(super) async fn drop_shadow(
    State(state): St,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<DeployView>> {
    let who = admin_actor(&state, &headers, &extensions)?;
    deployed(
        state.deployer.drop_shadow(&name, who).await,
        "drop_shadow_failed",
    )
}
