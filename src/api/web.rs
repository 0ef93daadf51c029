//! The dashboard: the front end in `web/` (TypeScript, built by Vite into `web/dist`),
//! served at `/` from the binary itself, so an installed agent needs no files beside it.
//! Serving files is all this door does: the page reads everything through the HTTP API
//! with the user's bearer token, under the listener's CSP (the build inlines nothing).

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::rest::problem;

/// `web/dist`, embedded at build time. rust-embed is the well-kept crate for this (axum's
/// own examples and most Rust web servers that embed a front end use it): it includes each
/// file with `include_bytes!`, so cargo rebuilds when one changes, and knows each file's
/// MIME type. `allow_missing` embeds nothing instead of failing the build when the assets
/// were not built; `debug-embed` makes debug builds (the tests') embed them too, rather than
/// read the source tree at run time, so they serve what a release serves. `build.rs` tells
/// cargo about a `web/dist` that appears after a build without it.
#[derive(rust_embed::Embed)]
#[folder = "web/dist/"]
#[allow_missing = true]
struct Assets;

/// What `/` says when the binary holds no dashboard.
const NOT_BUILT: &str = "This drover was built without its dashboard: run `npm ci --prefix web && npm run build --prefix web` in its source tree, then build drover again.\n";

/// Whether this binary holds the dashboard.
pub fn built() -> bool {
    Assets::get("index.html").is_some()
}

/// `/` (the page), `/favicon.svg`, and `/assets/…` (Vite's content-hashed JS and CSS).
/// Any other path stays the listener's 404.
pub fn routes() -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/favicon.svg",
            get(|uri: Uri| async move { serve("favicon.svg", &uri) }),
        )
        .route(
            "/assets/{*file}",
            get(|Path(file): Path<String>, uri: Uri| async move {
                serve(&format!("assets/{file}"), &uri)
            }),
        )
}

async fn index(uri: Uri) -> Response {
    if built() {
        serve("index.html", &uri)
    } else {
        (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            NOT_BUILT,
        )
            .into_response()
    }
}

fn serve(path: &str, uri: &Uri) -> Response {
    let Some(file) = Assets::get(path) else {
        return problem::not_found(uri).into_response();
    };
    // Vite names each asset by its content's hash, so a cached copy is never stale; the
    // page and the icon keep their names and are checked again every time.
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mime = file.metadata.mimetype();
    let content_type = if mime.starts_with("text/") && !mime.contains("charset") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_str(&content_type)
                    .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        file.data,
    )
        .into_response()
}
