//! Every error of the HTTP listener as `application/problem+json` (RFC 9457): the
//! operations' failures by their [`ErrorKind`], and what axum refuses before a handler runs
//! (malformed JSON, a wrong content type, a body over the limit, an unknown route). The
//! `type` of a drover failure is `urn:drover:error:<Kind>`, the kinds the D-Bus door names
//! `org.drover.Drover1.Error.<Kind>`; a plain HTTP refusal is `about:blank`.

use axum::extract::FromRequest;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::ops::{ErrorKind, OpsError};

/// A problem as it is sent. Its `detail` is the operation's message, which names no secret
/// (the operations say only that a token admits nobody, never whose it was).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:drover:error:<Kind>` (`NoSuchRun`, `PermissionDenied`, …) or `about:blank`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The kind in words; the same for every problem of a kind.
    pub title: String,
    /// The HTTP status, repeated.
    pub status: u16,
    /// What went wrong this time, and what to do about it.
    pub detail: String,
}

impl Problem {
    /// A refusal of HTTP itself (no such route, wrong method): `about:blank`, titled by
    /// the status.
    pub fn http(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }

    /// A drover failure of `kind`, sent with `status`.
    pub fn of_kind(kind: ErrorKind, status: StatusCode, detail: impl Into<String>) -> Problem {
        let (name, title) = kind_names(kind);
        Problem {
            kind: format!("urn:drover:error:{name}"),
            title: title.into(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }

    /// A request the door itself cannot decode (a query parameter, a duration): the
    /// operations' `InvalidArgument`, 400.
    pub fn invalid(detail: impl Into<String>) -> Problem {
        Problem::of_kind(ErrorKind::InvalidArgument, StatusCode::BAD_REQUEST, detail)
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Problem {
        Problem::of_kind(ErrorKind::Unauthenticated, StatusCode::UNAUTHORIZED, detail)
    }

    /// Something broke in the agent, not in the request.
    pub fn failed(detail: impl Into<String>) -> Problem {
        Problem::of_kind(ErrorKind::Failed, StatusCode::INTERNAL_SERVER_ERROR, detail)
    }

    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// The HTTP status of each kind: one table for every route.
fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::InvalidArgument | ErrorKind::InvalidConfig => StatusCode::BAD_REQUEST,
        ErrorKind::NoSuchRun | ErrorKind::NoSuchToken => StatusCode::NOT_FOUND,
        // The request is sound, the run's state (or a missing confirmation) is not.
        ErrorKind::InvalidState
        | ErrorKind::ConfirmationRequired
        | ErrorKind::CorruptCheckpoint => StatusCode::CONFLICT,
        ErrorKind::RequirementsUnmet => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The kind's name (as D-Bus names its error) and its title.
fn kind_names(kind: ErrorKind) -> (&'static str, &'static str) {
    match kind {
        ErrorKind::PermissionDenied => ("PermissionDenied", "The caller lacks the role"),
        ErrorKind::Unauthenticated => ("Unauthenticated", "No valid bearer token"),
        ErrorKind::InvalidArgument => ("InvalidArgument", "The request is malformed"),
        ErrorKind::NoSuchRun => ("NoSuchRun", "No such run"),
        ErrorKind::NoSuchToken => ("NoSuchToken", "No such token"),
        ErrorKind::InvalidState => ("InvalidState", "The run is not in a state for this"),
        ErrorKind::ConfirmationRequired => (
            "ConfirmationRequired",
            "A protected workflow needs \"confirm\": true",
        ),
        ErrorKind::RequirementsUnmet => ("RequirementsUnmet", "Requirements are not met"),
        ErrorKind::CorruptCheckpoint => ("CorruptCheckpoint", "The checkpoint is damaged"),
        ErrorKind::InvalidConfig => ("InvalidConfig", "The configuration does not validate"),
        ErrorKind::Failed => ("Failed", "The agent failed"),
    }
}

impl From<OpsError> for Problem {
    fn from(e: OpsError) -> Problem {
        let kind = e.kind();
        Problem::of_kind(kind, status_of(kind), e.to_string())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_string(&self).unwrap_or_else(|_| "{}".into());
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750: the scheme a client must use.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"drover\""),
            );
        }
        response
    }
}

/// A JSON request body, refused as a problem when it is not one: 415 without
/// `Content-Type: application/json`, 400 when it does not parse, 422 when it has a field
/// missing, of the wrong type or unknown (the bodies deny unknown fields), 413 over the
/// listener's limit.
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Problem> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_problem(&rejection)),
        }
    }
}

fn json_problem(rejection: &JsonRejection) -> Problem {
    let status = rejection.status();
    let detail = rejection.body_text();
    match rejection {
        JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_) => {
            Problem::of_kind(ErrorKind::InvalidArgument, status, detail)
        }
        _ => Problem::http(status, detail),
    }
}

/// A query string decoded into `T`, refused as a 400 problem when it does not decode.
pub struct QueryArgs<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for QueryArgs<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Problem> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| QueryArgs(value))
            .map_err(|rejection: QueryRejection| Problem::invalid(rejection.body_text()))
    }
}

/// No route has this path.
pub async fn no_route(uri: axum::http::Uri) -> Problem {
    not_found(&uri)
}

/// Nothing is served at `uri`'s path (no route, or no such dashboard asset).
pub fn not_found(uri: &axum::http::Uri) -> Problem {
    Problem::http(
        StatusCode::NOT_FOUND,
        format!(
            "nothing is served at {}: see /api/v1/openapi.json for the API's routes",
            crate::quantity::truncated(uri.path(), crate::quantity::QUOTED_MAX)
        ),
    )
}

/// The path is served, not with this method (axum adds the `Allow` header).
pub async fn wrong_method(method: axum::http::Method) -> Problem {
    Problem::http(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not served at this path: the Allow header lists what is"),
    )
}
