//! `GET /api/v1/runs/{id}/logs`: a chunk of one step attempt's log, read through the agent
//! (the logs sit in its private state directory). The reply is JSON: where the chunk stands
//! (`meta`, the D-Bus door's `LogMeta`) and its bytes as they are in the file, base64
//! (`data`), since a chunk may end inside a UTF-8 character or hold bytes that are no
//! text at all. A follower asks again from `meta.next_offset` while `meta.more`.

use axum::Json;
use axum::extract::{Path, State};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::RestState;
use super::auth::Authed;
use super::problem::{Problem, QueryArgs};
use crate::model::LogMeta;
use crate::ops::types::LogsArgs;

/// Which log, and which part of it.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// The step's name.
    step: String,
    /// The attempt (1, 2, …); the step's latest when absent.
    attempt: Option<u32>,
    /// The byte the chunk starts at; 0 when absent.
    offset: Option<u64>,
    /// At most this many bytes: up to 1 MiB, 256 KiB when absent.
    #[param(maximum = 1048576)]
    max: Option<u32>,
}

/// A chunk of a step attempt's log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogReply {
    /// Where the chunk stands: its offset, the next one, the file's size, whether more can
    /// come.
    pub meta: LogMeta,
    /// The chunk's bytes, base64 (RFC 4648 with padding).
    #[schema(content_encoding = "base64")]
    pub data: String,
}

/// A chunk of a step attempt's log. Viewer.
#[utoipa::path(
    get,
    path = "/runs/{id}/logs",
    tag = "runs",
    params(("id" = String, Path, description = "The run's id"), LogsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The chunk and where it stands", body = LogReply),
        (status = 400, description = "No step named, no such step or attempt, a chunk over 1 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No viewer role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn logs(
    State(state): State<RestState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    QueryArgs(query): QueryArgs<LogsQuery>,
) -> Result<Json<LogReply>, Problem> {
    let args = LogsArgs {
        run: id,
        step: query.step,
        attempt: query.attempt.unwrap_or(0),
        offset: query.offset.unwrap_or(0),
        max: query.max.unwrap_or(0),
    };
    // The engine reads the file off the runtime itself.
    let chunk = state.ops.logs(&caller, args).await?;
    Ok(Json(LogReply {
        meta: chunk.meta,
        data: STANDARD.encode(&chunk.data),
    }))
}
