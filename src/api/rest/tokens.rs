//! `/api/v1/tokens`: bearer tokens, as `drover token` makes them. A caller lists and
//! revokes their user's own (an admin: anyone's), and makes more with at most the role it
//! holds now; the secret is in the reply to the creation and nowhere else.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::auth::Authed;
use super::problem::{JsonBody, Problem};
use super::{RestState, blocking};
use crate::model::{NewToken, Token};
use crate::ops::types::TokenArgs;
use crate::quantity::{QUOTED_MAX, parse_duration, truncated};

/// The caller's tokens (an admin's: every one), newest first, without secrets. Viewer.
#[utoipa::path(
    get,
    path = "/tokens",
    tag = "tokens",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tokens", body = Vec<Token>),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No viewer role", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<RestState>,
    Authed(caller): Authed,
) -> Result<Json<Vec<Token>>, Problem> {
    Ok(Json(
        blocking(&state.ops, move |ops| ops.tokens(&caller)).await?,
    ))
}

/// A token to make.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// 1 to 64 letters, digits, `.`, `_` and `-`; unique among live tokens.
    name: String,
    /// viewer, operator or admin: at most the caller's.
    #[schema(pattern = "^(viewer|operator|admin)$", example = "operator")]
    role: String,
    /// Whose token, by name or uid (another user's needs admin); the caller's user when
    /// absent.
    user: Option<String>,
    /// How long it admits its caller ("30d"); for ever when absent.
    expires: Option<String>,
}

/// Makes a token; the reply holds its secret, the only time it is shown. Audited.
#[utoipa::path(
    post,
    path = "/tokens",
    tag = "tokens",
    request_body = CreateToken,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The secret (`token`) and the record", body = NewToken),
        (status = 400, description = "Malformed JSON, a bad name, role, user or expiry", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A role above the caller's, or another user's token without admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A live token has that name", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field missing, unknown or of the wrong type", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<RestState>,
    Authed(caller): Authed,
    JsonBody(body): JsonBody<CreateToken>,
) -> Result<(StatusCode, Json<NewToken>), Problem> {
    let role = body.role.parse().map_err(|_| {
        Problem::invalid(format!(
            "role {:?}: viewer, operator or admin",
            truncated(&body.role, QUOTED_MAX)
        ))
    })?;
    let expires = body
        .expires
        .as_deref()
        .map(|text| parse_duration(text).map_err(|e| Problem::invalid(format!("expires: {e}"))))
        .transpose()?;
    let args = TokenArgs {
        name: body.name,
        role,
        user: body.user,
        expires,
    };
    let created = blocking(&state.ops, move |ops| ops.create_token(&caller, args)).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Revokes a live token (its user may, and an admin); it admits nobody from then on.
/// Audited.
#[utoipa::path(
    delete,
    path = "/tokens/{name}",
    tag = "tokens",
    params(("name" = String, Path, description = "The token's name")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The token, revoked", body = Token),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Another user's token without admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No live token of that name", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke(
    State(state): State<RestState>,
    Authed(caller): Authed,
    Path(name): Path<String>,
) -> Result<Json<Token>, Problem> {
    Ok(Json(
        blocking(&state.ops, move |ops| ops.revoke_token(&caller, &name)).await?,
    ))
}
