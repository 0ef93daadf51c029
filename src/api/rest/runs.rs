//! `/api/v1/runs`: list (filtered, paged newest first), read one, start one, kill one,
//! with the D-Bus door's semantics (roles, protected workflows' confirmation, audit).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::auth::Authed;
use super::problem::{JsonBody, Problem};
use super::{PREFIX, RestState, blocking};
use crate::model::{KillRecord, Run, RunPage, RunState};
use crate::ops::types::{KillArgs, RunArgs, RunsArgs, limits};
use crate::quantity::{QUOTED_MAX, parse_duration, truncated};

/// The runs list's query. `state` may repeat, or list states separated by commas.
#[derive(Debug, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Runs in any of these states (`state=running&state=pending`, or
    /// `state=running,pending`); every state when absent.
    #[param(explode = true, required = false)]
    state: Vec<RunState>,
    /// Runs of the workflow of this name.
    workflow: Option<String>,
    /// Runs in the page: 1 to 500, default 100.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The `next_cursor` of the page before; absent for the first page.
    cursor: Option<String>,
}

impl ListQuery {
    /// Decodes a query string; an unknown parameter, or one given twice that cannot be,
    /// is refused rather than ignored.
    fn parse(query: &str) -> Result<ListQuery, Problem> {
        let mut parsed = ListQuery::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let twice = |name: &str| Problem::invalid(format!("{name} is given twice"));
            match key.as_ref() {
                "state" => {
                    for state in value.split(',').filter(|s| !s.is_empty()) {
                        let state = state.parse::<RunState>().map_err(|_| {
                            Problem::invalid(format!(
                                "state {:?} is none of pending, running, stopping, killing, restarting, succeeded, failed, killed",
                                truncated(state, QUOTED_MAX)
                            ))
                        })?;
                        if !parsed.state.contains(&state) {
                            parsed.state.push(state);
                        }
                    }
                }
                "workflow" if parsed.workflow.is_some() => return Err(twice("workflow")),
                "workflow" => parsed.workflow = Some(value.into_owned()),
                "limit" if parsed.limit.is_some() => return Err(twice("limit")),
                "limit" => {
                    parsed.limit = Some(value.parse().map_err(|_| {
                        Problem::invalid(format!(
                            "limit {:?} is not a number of runs (1 to {})",
                            truncated(&value, QUOTED_MAX),
                            limits::PAGE_MAX
                        ))
                    })?);
                }
                "cursor" if parsed.cursor.is_some() => return Err(twice("cursor")),
                "cursor" => parsed.cursor = Some(value.into_owned()),
                other => {
                    return Err(Problem::invalid(format!(
                        "unknown query parameter {:?}: the runs list knows state, workflow, limit and cursor",
                        truncated(other, QUOTED_MAX)
                    )));
                }
            }
        }
        Ok(parsed)
    }
}

/// A page of runs, newest first (by creation time, then id). Viewer.
#[utoipa::path(
    get,
    path = "/runs",
    tag = "runs",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of runs and the cursor of the next", body = RunPage),
        (status = 400, description = "A filter, limit or cursor that does not decode", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No viewer role", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<RestState>,
    Authed(caller): Authed,
    RawQuery(query): RawQuery,
) -> Result<Json<RunPage>, Problem> {
    let query = ListQuery::parse(query.as_deref().unwrap_or(""))?;
    let args = RunsArgs {
        states: query.state,
        workflow: query.workflow,
        limit: query.limit,
        cursor: query.cursor,
    };
    let page = blocking(&state.ops, move |ops| ops.runs_page(&caller, &args)).await?;
    Ok(Json(page))
}

/// One run with the latest attempt of each step and its latest kill. Viewer.
#[utoipa::path(
    get,
    path = "/runs/{id}",
    tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The run", body = Run),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No viewer role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<RestState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> Result<Json<Run>, Problem> {
    let run = blocking(&state.ops, move |ops| ops.get(&caller, &id)).await?;
    Ok(Json(run))
}

/// A run to start: a workflow file the token's user can read, and its parameters.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// The workflow file, an absolute path; read with the token's user's rights.
    workflow_path: String,
    /// `$DROVER_PARAM_<NAME>` of every step.
    #[serde(default)]
    params: BTreeMap<String, String>,
}

/// The run started.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Started {
    pub id: String,
}

/// Starts a run of a workflow file. It runs as the token's user (an admin's workflow may
/// name another with `user`). Operator.
#[utoipa::path(
    post,
    path = "/runs",
    tag = "runs",
    request_body = StartRun,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Started; `Location` is the run's URL", body = Started),
        (status = 400, description = "Malformed JSON, or a workflow file that does not validate", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No operator role, or a file the user cannot read", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "A body over 1 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field missing, unknown or of the wrong type; or requirements unmet", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn start(
    State(state): State<RestState>,
    Authed(caller): Authed,
    JsonBody(body): JsonBody<StartRun>,
) -> Result<impl IntoResponse, Problem> {
    let args = RunArgs {
        workflow_path: body.workflow_path,
        params: body.params,
    };
    let id = state.ops.run(&caller, args).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("{PREFIX}/runs/{id}"))],
        Json(Started { id }),
    ))
}

/// How to kill a run.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Kill {
    /// Why, for the kill record; blank: "no reason given".
    #[serde(default)]
    reason: String,
    /// How long the steps get between SIGTERM and SIGKILL ("2s", "1m"); the workflow's
    /// `[kill] grace` when absent.
    grace: Option<String>,
    /// Must be true for a protected workflow.
    #[serde(default)]
    confirm: bool,
}

/// Kills a run: critical-section wait, SIGTERM to its scopes, grace, SIGKILL, cleanup, a
/// final checkpoint. Replies once the run is `killed`, with the kill record. Operator.
#[utoipa::path(
    post,
    path = "/runs/{id}/kill",
    tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    request_body = Kill,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The kill record: each phase's timing, processes signalled, cleanup", body = KillRecord),
        (status = 400, description = "Malformed JSON or grace", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No operator role (the refusal is audited)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run has ended or is being killed; or a protected workflow without `confirm`", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "A body over 1 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field unknown or of the wrong type", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn kill(
    State(state): State<RestState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Kill>,
) -> Result<Json<KillRecord>, Problem> {
    let grace = body
        .grace
        .as_deref()
        .map(|text| parse_duration(text).map_err(|e| Problem::invalid(format!("grace: {e}"))))
        .transpose()?;
    let args = KillArgs {
        run: id,
        reason: body.reason,
        grace,
        confirm: body.confirm,
    };
    Ok(Json(state.ops.kill(&caller, args).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_query_takes_repeated_and_comma_separated_states_and_refuses_the_unknown() {
        let q = ListQuery::parse("state=running,pending&state=running&limit=3&workflow=w%20x")
            .expect("parses");
        assert_eq!(q.state, [RunState::Running, RunState::Pending]);
        assert_eq!((q.limit, q.workflow.as_deref()), (Some(3), Some("w x")));
        for (bad, says) in [
            ("state=sleeping", "none of pending"),
            ("limit=many", "not a number"),
            ("limit=1&limit=2", "limit is given twice"),
            ("sort=asc", "unknown query parameter \"sort\""),
        ] {
            let problem = ListQuery::parse(bad).expect_err("refused");
            assert!(problem.detail.contains(says), "{bad}: {}", problem.detail);
            assert_eq!(problem.status, 400);
        }
    }
}
