//! Who is asking over HTTP: the bearer token in `Authorization: Bearer <token>`, checked by
//! the operations (`Ops::authenticate`), which give its user with the lesser of the token's
//! and the user's role. A handler that takes [`Authed`] runs only for a valid token; every
//! other request gets 401 with `WWW-Authenticate: Bearer`.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::problem::Problem;
use super::{RestState, blocking};
use crate::ops::{Caller, Channel};

/// The caller a valid bearer token stands for.
pub struct Authed(pub Caller);

impl FromRequestParts<RestState> for Authed {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &RestState) -> Result<Self, Problem> {
        let secret = bearer(parts)?.to_owned();
        let caller = blocking(&state.ops, move |ops| {
            ops.authenticate(&secret, Channel::Http)
        })
        .await
        .inspect_err(|problem| {
            tracing::debug!(
                drover_event = "http-unauthenticated",
                "refused an HTTP request: {}",
                problem.detail
            );
        })?;
        Ok(Authed(caller))
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case, as RFC
/// 9110 has it).
fn bearer(parts: &Parts) -> Result<&str, Problem> {
    let missing = || {
        Problem::unauthenticated(
            "no bearer token: send `Authorization: Bearer <token>` with a token from `drover token create`",
        )
    };
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| missing())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(missing());
    }
    Ok(token.trim())
}
