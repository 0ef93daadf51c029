//! The agent's HTTP listener: `/metrics` (Prometheus text format), `/healthz`, the HTTP
//! API (`/api/v1`, [`super::rest`]) and the dashboard (`/`, [`super::web`]). `/metrics`
//! and `/healthz` are read-only and need no token: who can reach the address may read
//! them, and that is loopback unless the operator configures otherwise (`[http] listen`).
//! The API, and so the dashboard's data, needs a bearer token. Every
//! request's `Host` is checked and every response carries the security headers
//! ([`super::rest::security`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::prometheus::{self, Snapshot};
use super::rest::{self, problem, security};
use super::web;
use crate::config::HttpConfig;
use crate::ops::{Health, Ops, Scrape};
use crate::selfmetrics::{self, SelfMetrics};
use crate::state_dir;

/// The file under the state directory that holds the address actually bound (useful with
/// `listen = "127.0.0.1:0"`, which picks a free port).
pub const ADDR_FILE: &str = "http.addr";

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "cannot listen on {addr} for HTTP (/metrics, /healthz, /api/v1; `[http] listen` in the config): {source}"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the HTTP address to {path}: {source}")]
    AddrFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub ops: Ops,
    pub metrics: &'static SelfMetrics,
}

impl HttpState {
    /// The operations' runs and samples, the global registry.
    pub fn new(ops: Ops) -> HttpState {
        HttpState {
            ops,
            metrics: selfmetrics::global(),
        }
    }
}

/// Binds `[http] listen`, writes the bound address to `<state_dir>/http.addr`, and serves
/// in a task of its own. Returns the bound address, or `None` when `enabled = false`.
pub async fn start(
    config: &HttpConfig,
    state_dir: &Path,
    state: HttpState,
) -> Result<Option<SocketAddr>, HttpError> {
    let addr_file = state_dir.join(ADDR_FILE);
    // A stale file from an earlier agent would point a reader at the wrong port.
    match std::fs::remove_file(&addr_file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(HttpError::AddrFile {
                path: addr_file,
                source: e,
            });
        }
        _ => {}
    }
    if !config.enabled {
        tracing::info!(
            drover_event = "http-disabled",
            "HTTP listener off ([http] enabled = false)"
        );
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| HttpError::Bind {
            addr: config.listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| HttpError::Bind {
        addr: config.listen,
        source,
    })?;
    write_atomically(&addr_file, &format!("{bound}\n")).map_err(|source| HttpError::AddrFile {
        path: addr_file.clone(),
        source,
    })?;
    let hosts = security::AllowedHosts::new(config, bound);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(state, hosts)).await {
            tracing::error!(
                drover_event = "http-failed",
                "HTTP listener on {bound} stopped: {e}"
            );
        }
    });
    tracing::info!(
        drover_event = "http-listening",
        "serving /metrics, /healthz, /api/v1 and the dashboard on http://{bound}"
    );
    if !web::built() {
        tracing::warn!(
            drover_event = "dashboard-not-built",
            "this drover was built without its dashboard (web/dist): / says how to build it"
        );
    }
    Ok(Some(bound))
}

/// The routes: `/metrics` and `/healthz` (GET only), and the API. Anything else, and every
/// refusal, is a problem (`application/problem+json`).
pub fn router(state: HttpState, hosts: security::AllowedHosts) -> Router {
    let api = rest::router(state.ops.clone());
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state)
        .merge(api)
        .merge(web::routes())
        .fallback(problem::no_route)
        // After the merge: it reaches every route registered before it.
        .method_not_allowed_fallback(problem::wrong_method)
        // The last layer is the outermost: a refused Host gets the headers too.
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(hosts),
            security::check_host,
        ))
        .layer(axum::middleware::from_fn(security::no_store_for_api))
        .layer(axum::middleware::from_fn(security::security_headers))
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let Scrape { runs, live } = match scrape(&state).await {
        Ok(scrape) => scrape,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    };
    let agent = state.metrics.snapshot();
    let body = prometheus::render(&Snapshot {
        version: env!("CARGO_PKG_VERSION"),
        live: &live,
        runs: &runs,
        agent: &agent,
    });
    ([(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)], body).into_response()
}

/// 200 with `"status": "ok"` when the state DB answers and can be written; 503 with
/// `"status": "degraded"` and the `problems` while it cannot be written or the state
/// directory is (nearly) full; 503 with `"status": "error"` when it does not answer.
async fn healthz(State(state): State<HttpState>) -> Response {
    let uptime = state.metrics.snapshot().uptime_seconds;
    let version = env!("CARGO_PKG_VERSION");
    let ops = state.ops.clone();
    let health = tokio::task::spawn_blocking(move || ops.health().map_err(|e| e.to_string()))
        .await
        .unwrap_or_else(|e| Err(format!("reading the runs failed: {e}")));
    let (status, body) = match health {
        Ok(Health { runs, problems }) => {
            let unfinished = runs.iter().filter(|r| !r.state.is_terminal()).count();
            let running = runs
                .iter()
                .filter(|r| r.state == crate::model::RunState::Running)
                .count();
            let (status, word) = if problems.is_empty() {
                (StatusCode::OK, "ok")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "degraded")
            };
            let body = serde_json::json!({
                "status": word,
                "problems": problems,
                "version": version,
                "uptime_seconds": uptime,
                "runs": {"total": runs.len(), "unfinished": unfinished, "running": running},
            });
            (status, body)
        }
        Err(e) => {
            let body = serde_json::json!({
                "status": "error",
                "version": version,
                "uptime_seconds": uptime,
                "error": e,
            });
            (StatusCode::SERVICE_UNAVAILABLE, body)
        }
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Every run and the live samples, read off the async runtime: the store is SQLite behind
/// a mutex.
async fn scrape(state: &HttpState) -> Result<Scrape, String> {
    let ops = state.ops.clone();
    tokio::task::spawn_blocking(move || ops.scrape().map_err(|e| e.to_string()))
        .await
        .map_err(|e| format!("reading the runs failed: {e}"))?
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("addr.tmp");
    state_dir::write(&tmp, text.as_bytes())?;
    std::fs::rename(&tmp, path)
}
