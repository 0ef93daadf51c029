//! `GET /api/v1/events`: the live event stream (`Ops::events`) as Server-Sent Events. Each
//! event has its `id:` (strictly increasing), its `event:` type and its JSON `data:`; a
//! client that reconnects sends `Last-Event-ID` (browsers' `EventSource` does) and gets
//! exactly the events after it, or a `reset`. A comment every [`KEEP_ALIVE`] keeps idle
//! proxies from closing the connection.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;

use super::auth::Authed;
use super::problem::{Problem, QueryArgs};
use super::{RestState, blocking};
use crate::ops::EventStream;
use crate::ops::types::EventsArgs;

/// How often an idle stream gets a comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The header a reconnecting client names the last event it saw with.
const LAST_EVENT_ID: &str = "last-event-id";

/// Which runs' log lines the stream carries.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Run ids, comma-separated, at most 16: their steps' log lines come as `log` events.
    logs: Option<String>,
}

/// The live event stream. Viewer.
///
/// Server-Sent Events (`text/event-stream`); every event's `data` is one JSON object:
/// - `run` (`RunTransition`): a run reached a state (`pending`, `running`, …), and who moved it;
/// - `step` (`StepChange`): a step attempt started (`running`) or ended (its state and result);
/// - `log` (`LogLines`): lines a step of a run named in `logs` wrote, with their byte offsets
///   (a gap is read with `GET /runs/{id}/logs`); a followed step that had started is joined
///   at its last 64 KiB;
/// - `metrics` (`MetricsTick`): after each monitor tick, the latest sample of every unfinished run;
/// - `alert` (`AlertChange`): an alert fired or resolved;
/// - `reset` (`StreamNotice`): the events after `Last-Event-ID` are not all kept, or the id is
///   from an earlier agent: reload the state, then go on with this stream;
/// - `dropped` (`StreamNotice`, no id): the client fell too far behind and the stream ends;
///   reconnect with the last id seen.
///
/// Ids strictly increase, across agent restarts too. Each event is sent only after the state DB
/// holds the change. The agent keeps the last 10,000 events for resuming.
#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    params(
        EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event seen: the stream resumes after it"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The stream: events `run`, `step`, `log`, `metrics`, `alert`, `reset`, `dropped` (data schemas RunTransition, StepChange, LogLines, MetricsTick, AlertChange, StreamNotice)", content_type = "text/event-stream", body = String),
        (status = 400, description = "More than 16 runs in `logs`, or an id too long", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No viewer role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "A run in `logs` does not exist", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The agent follows the logs of too many runs already", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn events(
    State(state): State<RestState>,
    Authed(caller): Authed,
    headers: HeaderMap,
    QueryArgs(query): QueryArgs<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Problem> {
    // A value that is not text is no id this agent gave: it is answered with a reset.
    let last_event_id = headers
        .get(LAST_EVENT_ID)
        .map(|value| value.to_str().unwrap_or("-").to_owned());
    let logs = query
        .logs
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|run| !run.is_empty())
        .map(str::to_owned)
        .collect();
    let args = EventsArgs {
        last_event_id,
        logs,
    };
    // The runs named are looked up in the state DB.
    let stream = blocking(&state.ops, move |ops| ops.events(&caller, args)).await?;
    Ok(Sse::new(sse(stream)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

fn sse(stream: EventStream) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures_util::stream::unfold(stream, |mut stream| async move {
        let event = stream.next().await?;
        let mut sse = SseEvent::default().event(event.kind).data(&*event.data);
        if let Some(id) = event.id {
            sse = sse.id(id.to_string());
        }
        Some((Ok(sse), stream))
    })
}
