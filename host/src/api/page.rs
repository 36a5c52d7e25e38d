//! The live dashboard page and its assets, served from the binary (works
//! offline: no CDN).

use axum::http::header;
use axum::response::IntoResponse;

pub(super) async fn index() -> impl IntoResponse {
    static_asset(
        "text/html; charset=utf-8",
        include_str!("../../static/index.html"),
    )
}

pub(super) async fn js() -> impl IntoResponse {
    static_asset(
        "text/javascript; charset=utf-8",
        include_str!("../../static/dashboard.js"),
    )
}

pub(super) async fn css() -> impl IntoResponse {
    static_asset(
        "text/css; charset=utf-8",
        include_str!("../../static/dashboard.css"),
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
