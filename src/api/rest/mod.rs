//! The HTTP API, `/api/v1`: a door like D-Bus. Each handler learns its caller from the
//! bearer token ([`auth::Authed`]), decodes the request into `ops::types`, calls [`Ops`]
//! and encodes the result (the `model` records, as JSON); every failure is a problem
//! ([`problem`]). One file per resource:
//!
//! - `whoami` — the caller as the agent sees it;
//! - `runs` — list (filtered, paged), get, start, kill;
//! - `logs` — a chunk of a step attempt's log;
//! - `events` — the live event stream (Server-Sent Events);
//! - `tokens` — the caller's bearer tokens: list, create, revoke.
//!
//! [`routes`] is the one list of handlers: utoipa-axum's `OpenApiRouter` makes the axum
//! router and the OpenAPI 3.1 description (`GET /api/v1/openapi.json`) from it, so a route
//! cannot be served undescribed. [`security`] guards the whole listener (Host check,
//! security headers).

mod auth;
mod events;
mod logs;
pub mod problem;
mod runs;
pub mod security;
mod tokens;
mod whoami;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::OpenApi as _;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ops::Ops;
use problem::Problem;

/// Where the API is mounted.
pub const PREFIX: &str = "/api/v1";

/// The largest request body accepted; a larger one is refused with 413 before it is read
/// whole. A workflow path and its parameters (256 KiB at most) fit with room to spare.
pub const BODY_LIMIT: usize = 1 << 20;

/// What the handlers read.
#[derive(Clone)]
pub struct RestState {
    ops: Ops,
    /// The description, rendered once.
    openapi: Arc<str>,
}

/// The description's frame: the paths come from [`routes`].
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "drover",
        description = "The drover agent's HTTP API: runs, their logs, kills, bearer tokens, and \
            the live event stream (`GET /api/v1/events`, Server-Sent Events). \
            Every route but this description needs `Authorization: Bearer <token>` \
            (`drover token create`); errors are application/problem+json (RFC 9457)."
    ),
    modifiers(&BearerAuth),
    // The event stream's data: text/event-stream has no schema of its own in OpenAPI 3.1.
    components(schemas(
        crate::model::RunTransition,
        crate::model::StepChange,
        crate::model::LogLines,
        crate::model::MetricsTick,
        crate::model::AlertChange,
        crate::model::StreamNotice
    )),
    tags(
        (name = "runs", description = "Workflow runs: list, read, start, kill, logs"),
        (name = "tokens", description = "Bearer tokens of the caller's user"),
        (name = "events", description = "The live event stream"),
        (name = "meta", description = "The caller and the API itself")
    )
)]
struct ApiDoc;

/// The `bearer` security scheme the routes name.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A token from `drover token create`"))
                    .build(),
            ),
        );
    }
}

/// Every route of the API, once: the router and the description both come from here.
fn routes() -> OpenApiRouter<RestState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest(
        PREFIX,
        OpenApiRouter::new()
            .routes(routes!(openapi_json))
            .routes(routes!(whoami::whoami))
            .routes(routes!(runs::list, runs::start))
            .routes(routes!(runs::get))
            .routes(routes!(runs::kill))
            .routes(routes!(logs::logs))
            .routes(routes!(events::events))
            .routes(routes!(tokens::list, tokens::create))
            .routes(routes!(tokens::revoke)),
    )
}

/// The API's description, as `GET /api/v1/openapi.json` serves it.
pub fn description() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// The API's routes with their state and the body limit.
pub fn router(ops: Ops) -> axum::Router {
    let (router, openapi) = routes().split_for_parts();
    let openapi = openapi
        .to_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"the description does not render: {e}\"}}"));
    router
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(RestState {
            ops,
            openapi: openapi.into(),
        })
}

/// The OpenAPI 3.1 description of this API. Served without a token: it holds the API's
/// shape, none of the agent's data.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 description", content_type = "application/json"))
)]
async fn openapi_json(State(state): State<RestState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.to_string(),
    )
}

/// Calls `f` off the async runtime (the operations read SQLite behind a lock); its error
/// is the caller's problem.
async fn blocking<T: Send + 'static>(
    ops: &Ops,
    f: impl FnOnce(&Ops) -> crate::ops::Result<T> + Send + 'static,
) -> Result<T, Problem> {
    let ops = ops.clone();
    match tokio::task::spawn_blocking(move || f(&ops)).await {
        Ok(result) => result.map_err(Problem::from),
        Err(e) => Err(Problem::failed(format!("the request's work failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_is_openapi_3_1_with_every_route_and_its_methods() {
        let json = serde_json::to_value(description()).expect("the description serialises");
        assert!(
            json["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "{}",
            json["openapi"]
        );
        let paths: Vec<(String, Vec<String>)> = json["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .map(|(path, item)| {
                let methods = item.as_object().expect("a path item").keys().cloned();
                (path.clone(), methods.collect())
            })
            .collect();
        let expected = [
            ("/api/v1/events", vec!["get"]),
            ("/api/v1/openapi.json", vec!["get"]),
            ("/api/v1/runs", vec!["get", "post"]),
            ("/api/v1/runs/{id}", vec!["get"]),
            ("/api/v1/runs/{id}/kill", vec!["post"]),
            ("/api/v1/runs/{id}/logs", vec!["get"]),
            ("/api/v1/tokens", vec!["get", "post"]),
            ("/api/v1/tokens/{name}", vec!["delete"]),
            ("/api/v1/whoami", vec!["get"]),
        ];
        let expected: Vec<(String, Vec<String>)> = expected
            .into_iter()
            .map(|(p, m)| (p.to_owned(), m.into_iter().map(str::to_owned).collect()))
            .collect();
        assert_eq!(paths, expected);
        assert_eq!(
            json["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        for schema in [
            "Run",
            "RunPage",
            "KillRecord",
            "LogMeta",
            "Problem",
            "Identity",
            "RunTransition",
            "StepChange",
            "LogLines",
            "MetricsTick",
            "RunMetrics",
            "AlertChange",
            "StreamNotice",
        ] {
            assert!(
                json["components"]["schemas"][schema].is_object(),
                "no schema {schema}"
            );
        }
    }
}
