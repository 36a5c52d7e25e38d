//! GET /plugins, POST /plugins/reload, GET /plugins/{name}/history,
//! POST /plugins/{name}/rollback.

use super::extract::{ApiPath, ApiQuery};
use super::views::{HistoryView, PluginView, PluginsView, ReloadView, RollbackView};
use super::{ApiError, ApiResult, ErrorBody, St, require_admin};
use crate::deploy::DeployError;
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
            rollback_status(&e),
            "rollback_failed",
            e.to_string(),
        )),
    }
}

/// The status of each way a rollback fails.
fn rollback_status(e: &DeployError) -> StatusCode {
    match e {
        DeployError::NotLoaded(_) => StatusCode::NOT_FOUND,
        DeployError::NoEarlierVersion(_) | DeployError::NotArchived(_) => StatusCode::CONFLICT,
        DeployError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        DeployError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
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
