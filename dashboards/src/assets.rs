//! The stylesheet, script and icon, compiled into the binary: no CDN, no build step.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};

const ASSETS: &[(&str, &str, &str)] = &[
    (
        "vigil.css",
        "text/css; charset=utf-8",
        include_str!("../assets/vigil.css"),
    ),
    (
        "vigil.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/vigil.js"),
    ),
    ("favicon.svg", "image/svg+xml", include_str!("../assets/favicon.svg")),
];

pub(crate) async fn serve(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.0 == name) {
        // Short caching: the assets change with the binary, and their names do not.
        Some((_, mime, body)) => {
            ([(CONTENT_TYPE, *mime), (CACHE_CONTROL, "public, max-age=300")], *body).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
