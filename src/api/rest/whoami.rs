//! `GET /api/v1/whoami`: the caller as the agent sees it, to check a token before using it.

use axum::Json;

use super::auth::Authed;
use super::problem::Problem;
use crate::model::Identity;

/// The token's user, uid and role now (the lesser of the token's and the user's), and the
/// token's name. Any valid token may ask, whatever its role.
#[utoipa::path(
    get,
    path = "/whoami",
    tag = "meta",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = Identity),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn whoami(Authed(caller): Authed) -> Json<Identity> {
    Json(caller.identity())
}
