//! The OpenAPI 3.1 document of the API, generated from the handlers'
//! `#[utoipa::path]` annotations and the view types; served at
//! GET /openapi.json.

use super::{
    analytics, backtest, correlations, health, ingest, plugins, processing, responses, silences,
};
use axum::Json;
use std::sync::OnceLock;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hxp-events",
        description = "Real-time event processing service whose logic runs as sandboxed WebAssembly components",
    ),
    paths(
        document,
        health::health,
        health::metrics,
        health::config,
        ingest::process,
        ingest::events,
        analytics::analytics,
        analytics::status,
        analytics::recalculate,
        correlations::correlations,
        correlations::config,
        correlations::test,
        correlations::stats,
        responses::automated_responses,
        processing::pipeline,
        processing::record,
        plugins::plugins,
        plugins::reload,
        plugins::history,
        plugins::rollback,
        plugins::deploy,
        plugins::remove,
        plugins::shadow,
        plugins::promote,
        plugins::drop_shadow,
        backtest::backtest,
        silences::create,
        silences::list,
        silences::one,
        silences::delete,
    ),
    components(schemas(super::ErrorBody)),
    modifiers(&AdminToken),
)]
pub struct ApiDoc;

/// The `admin_token` security scheme: `Authorization: Bearer <token>`.
struct AdminToken;

impl utoipa::Modify for AdminToken {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("service.admin_token (EVENT_PROCESSING_ADMIN_TOKEN)"))
                    .build(),
            ),
        );
    }
}

/// The document (built once).
pub fn api_doc() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}

/// GET /openapi.json: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object))
)]
pub(super) async fn document() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(api_doc())
}
