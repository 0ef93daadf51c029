//! `Events` (viewer): one live stream of what happens — run transitions, step starts and
//! ends, metric samples of unfinished runs, alert changes, and the log lines of the runs a
//! client asks for — door-neutral (the HTTP door serves it as Server-Sent Events; Slack and
//! MCP can take the same stream).
//!
//! The hub numbers every event (ids strictly increase) and keeps the last [`HISTORY`], so a
//! client that reconnects with the last id it saw gets exactly the events after it. Ids start
//! from the agent's start time (milliseconds × 1024), so an id from an earlier agent is
//! below every id of this one and is told apart from a kept one: the client gets a `reset`
//! (reload your state) rather than a gap it cannot see. Every event comes from a change the
//! state DB already holds: the engine and the alerts announce only after their writes, the
//! monitor's samples are what it measured, and log lines are read from the step logs through
//! the engine.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::broadcast::{self, error::RecvError};

use super::types::{EventsArgs, check_run_id};
use super::{Caller, Ops, OpsError, Result};
use crate::alerts::Alerts;
use crate::auth::Role;
use crate::engine::{Engine, LogRequest};
use crate::model::{AlertChange, EngineEvent, LogLines, MetricsTick, StreamNotice, Timestamp};
use crate::monitor::Monitor;
use crate::sync::lock;

/// How many events are kept for clients that reconnect.
pub const HISTORY: usize = 10_000;
/// The most bytes of data they hold together (a tick of many runs is large): the oldest go
/// first when either bound is reached.
pub const HISTORY_BYTES: usize = 32 << 20;
/// How far a client may fall behind the newest event before it is dropped (with a final
/// `dropped` event; it reconnects with its last id and resumes from the history).
pub const CLIENT_BUFFER: usize = 1024;
/// The most runs one client may follow the logs of.
pub const MAX_LOG_RUNS: usize = 16;
/// The most runs whose logs the agent follows at once, for all clients together.
pub const MAX_FOLLOWED: usize = 64;
/// How often followed logs are read.
const LOG_POLL: Duration = Duration::from_millis(250);
/// The most bytes of log one event carries.
const LOG_EVENT_MAX: usize = 16 * 1024;
/// The most bytes one attempt's log gives per poll, so a chatty step cannot starve others.
const LOG_POLL_MAX: usize = 4 * LOG_EVENT_MAX;
/// How far back in an attempt's log a new follower starts (the rest is `GET …/logs`'s).
const LOG_TAIL: u64 = 64 * 1024;
/// How long a run's logs are still followed after its last client left, so a client that
/// reconnects at once finds no gap.
const LOG_LINGER: Duration = Duration::from_secs(60);

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// None for a notice about this client's stream only (`dropped`).
    pub id: Option<u64>,
    /// `run`, `step`, `log`, `metrics`, `alert`, `reset` or `dropped`.
    pub kind: &'static str,
    /// The data, JSON.
    pub data: Arc<str>,
    /// The run a `log` event is of: sent only to the clients that asked for it.
    log_of: Option<String>,
}

/// The hub every client's stream reads from.
pub(super) struct EventHub {
    state: Mutex<HubState>,
    live: broadcast::Sender<Arc<Event>>,
    /// Ids of this agent are above it; the first is `base + 1`.
    base: u64,
    follows: Mutex<HashMap<String, Follow>>,
}

struct HubState {
    history: VecDeque<Arc<Event>>,
    /// The bytes of data `history` holds.
    bytes: usize,
    next: u64,
}

/// The logs of one run as they are followed.
#[derive(Default)]
struct Follow {
    clients: usize,
    /// When the last client left.
    unwanted_since: Option<Instant>,
    /// Per step: the attempt being read and where; absent until first seen.
    positions: HashMap<String, Position>,
    /// The run ended and its logs were read to their ends: nothing more until a restart.
    drained: bool,
}

#[derive(Clone, Copy)]
struct Position {
    attempt: u32,
    offset: u64,
    /// Started mid-file: the first bytes up to a newline are a cut line, skipped.
    align: bool,
}

impl EventHub {
    /// Makes the hub and starts the tasks that feed it (on the current tokio runtime).
    pub(super) fn start(engine: &Engine, monitor: &Monitor, alerts: &Alerts) -> Arc<EventHub> {
        let now_ms = u64::try_from(Timestamp::now().0).unwrap_or_default();
        let base = now_ms << 10;
        let hub = Arc::new(EventHub {
            state: Mutex::new(HubState {
                history: VecDeque::with_capacity(HISTORY),
                bytes: 0,
                next: base + 1,
            }),
            live: broadcast::channel(CLIENT_BUFFER).0,
            base,
            follows: Mutex::default(),
        });
        tokio::spawn(engine_events(Arc::downgrade(&hub), engine.subscribe()));
        tokio::spawn(metric_ticks(
            Arc::downgrade(&hub),
            monitor.clone(),
            monitor.subscribe(),
        ));
        tokio::spawn(alert_changes(Arc::downgrade(&hub), alerts.subscribe()));
        tokio::spawn(follow_logs(Arc::downgrade(&hub), engine.clone()));
        hub
    }

    fn publish(&self, kind: &'static str, data: &impl Serialize, log_of: Option<String>) {
        let data: Arc<str> = match serde_json::to_string(data) {
            Ok(json) => json.into(),
            Err(e) => {
                tracing::error!("an event of kind {kind} does not serialise: {e}");
                return;
            }
        };
        let mut state = lock(&self.state);
        let event = Arc::new(Event {
            id: Some(state.next),
            kind,
            data,
            log_of,
        });
        state.next += 1;
        state.bytes += event.data.len();
        state.history.push_back(event.clone());
        while state.history.len() > HISTORY || state.bytes > HISTORY_BYTES {
            match state.history.pop_front() {
                Some(old) => state.bytes -= old.data.len(),
                None => break,
            }
        }
        // Sent under the lock, so a client subscribing sees each event once: in its
        // replay or live.
        let _ = self.live.send(event);
    }

    /// A receiver of the events from now on and, for a client that saw up to `after`, the
    /// kept events after it — or a `reset` when the events after it are not all kept (or
    /// `after` is no id of this agent's).
    fn subscribe(
        &self,
        after: Option<u64>,
    ) -> (VecDeque<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let state = lock(&self.state);
        let rx = self.live.subscribe();
        let Some(after) = after else {
            return (VecDeque::new(), rx);
        };
        let first = state
            .history
            .front()
            .and_then(|e| e.id)
            .unwrap_or(state.next);
        let last = state.next - 1;
        if after >= self.base && after >= first.saturating_sub(1) && after <= last {
            let replay = state
                .history
                .iter()
                .filter(|e| e.id.is_some_and(|id| id > after))
                .cloned()
                .collect();
            return (replay, rx);
        }
        let reason = if after < self.base {
            "the id is from an earlier agent or unknown: reload your state"
        } else if after > last {
            "the id is not one this agent gave: reload your state"
        } else {
            "events after the id are no longer kept: reload your state"
        };
        let reset = Event {
            // The stream's position: what comes next is after it.
            id: Some(last.max(self.base)),
            kind: "reset",
            data: notice(reason),
            log_of: None,
        };
        (VecDeque::from([Arc::new(reset)]), rx)
    }

    /// Follows the logs of `runs` for one more client.
    fn want(self: &Arc<Self>, runs: &[String]) -> Result<Interest> {
        let mut follows = lock(&self.follows);
        let new = runs.iter().filter(|r| !follows.contains_key(*r)).count();
        if follows.len() + new > MAX_FOLLOWED {
            return Err(OpsError::InvalidState(format!(
                "the agent follows the logs of {} runs already (at most {MAX_FOLLOWED}): ask for fewer or later",
                follows.len()
            )));
        }
        for run in runs {
            let follow = follows.entry(run.clone()).or_default();
            follow.clients += 1;
            follow.unwanted_since = None;
        }
        Ok(Interest {
            hub: Arc::downgrade(self),
            runs: runs.to_vec(),
        })
    }
}

/// A client's wish for some runs' logs; dropping it (the client left) lets them go.
struct Interest {
    hub: Weak<EventHub>,
    runs: Vec<String>,
}

impl Drop for Interest {
    fn drop(&mut self) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let mut follows = lock(&hub.follows);
        for run in &self.runs {
            if let Some(follow) = follows.get_mut(run) {
                follow.clients = follow.clients.saturating_sub(1);
                if follow.clients == 0 {
                    follow.unwanted_since = Some(Instant::now());
                }
            }
        }
    }
}

/// One client's stream: the replay first, then live events, log lines only of its runs.
pub struct EventStream {
    replay: VecDeque<Arc<Event>>,
    live: broadcast::Receiver<Arc<Event>>,
    logs: HashSet<String>,
    ended: bool,
    _interest: Interest,
}

impl EventStream {
    /// The next event, waiting for one; None once the stream has ended (after a final
    /// `dropped` event for a client too slow to keep up).
    pub async fn next(&mut self) -> Option<Arc<Event>> {
        if self.ended {
            return None;
        }
        if let Some(event) = self.replay.pop_front() {
            return Some(event);
        }
        loop {
            match self.live.recv().await {
                Ok(event) => {
                    if event.log_of.as_ref().is_none_or(|r| self.logs.contains(r)) {
                        return Some(event);
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    self.ended = true;
                    let reason = format!(
                        "this client fell {missed} events behind: reconnect with the last id seen to resume"
                    );
                    return Some(Arc::new(Event {
                        id: None,
                        kind: "dropped",
                        data: notice(&reason),
                        log_of: None,
                    }));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

impl Ops {
    /// The live event stream for `caller`: after `args.last_event_id` when given (resumed
    /// from the kept events, or a `reset`), with the log lines of `args.logs`.
    pub fn events(&self, caller: &Caller, args: EventsArgs) -> Result<EventStream> {
        self.authorise(caller, Role::Viewer, "read events")?;
        let after = args.check()?;
        let mut logs = args.logs;
        logs.sort();
        logs.dedup();
        for run in &logs {
            check_run_id(run)?;
            self.engine.run(run)?;
        }
        let interest = self.events.want(&logs)?;
        let (replay, live) = self.events.subscribe(after);
        Ok(EventStream {
            replay,
            live,
            logs: logs.into_iter().collect(),
            ended: false,
            _interest: interest,
        })
    }
}

fn notice(reason: &str) -> Arc<str> {
    let notice = StreamNotice {
        reason: reason.to_owned(),
    };
    serde_json::to_string(&notice)
        .unwrap_or_else(|_| "{}".to_owned())
        .into()
}

async fn engine_events(hub: Weak<EventHub>, mut events: broadcast::Receiver<EngineEvent>) {
    loop {
        let event = events.recv().await;
        let Some(hub) = hub.upgrade() else { return };
        match event {
            Ok(EngineEvent::Run(transition)) => {
                // A restarted run writes to its logs again.
                if let Some(follow) = lock(&hub.follows).get_mut(&transition.run) {
                    follow.drained = false;
                }
                hub.publish("run", &transition, None);
            }
            Ok(EngineEvent::Step(change)) => hub.publish("step", &change, None),
            Err(RecvError::Lagged(missed)) => {
                let reason = format!("{missed} run events were missed: reload your state");
                hub.publish("reset", &StreamNotice { reason }, None);
            }
            Err(RecvError::Closed) => return,
        }
    }
}

async fn metric_ticks(hub: Weak<EventHub>, monitor: Monitor, mut ticks: broadcast::Receiver<()>) {
    loop {
        match ticks.recv().await {
            Ok(()) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
        let Some(hub) = hub.upgrade() else { return };
        let runs = monitor.all();
        // Nothing runs: nothing to say (and no history spent on it).
        if !runs.is_empty() {
            let tick = MetricsTick {
                at: Timestamp::now(),
                runs,
            };
            hub.publish("metrics", &tick, None);
        }
    }
}

async fn alert_changes(hub: Weak<EventHub>, mut changes: broadcast::Receiver<AlertChange>) {
    loop {
        let change = changes.recv().await;
        let Some(hub) = hub.upgrade() else { return };
        match change {
            Ok(change) => hub.publish("alert", &change, None),
            Err(RecvError::Lagged(missed)) => {
                let reason = format!("{missed} alert changes were missed: reload your state");
                hub.publish("reset", &StreamNotice { reason }, None);
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Reads the followed runs' logs every [`LOG_POLL`] and publishes what is new.
async fn follow_logs(hub: Weak<EventHub>, engine: Engine) {
    let mut ticker = tokio::time::interval(LOG_POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        let Some(hub) = hub.upgrade() else { return };
        let runs: Vec<String> = {
            let mut follows = lock(&hub.follows);
            follows.retain(|_, f| {
                f.clients > 0 || f.unwanted_since.is_none_or(|t| t.elapsed() < LOG_LINGER)
            });
            follows
                .iter()
                .filter(|(_, f)| !f.drained)
                .map(|(run, _)| run.clone())
                .collect()
        };
        for run in runs {
            if let Err(e) = follow_run(&hub, &engine, &run).await {
                tracing::debug!(drover_run = %run, "cannot follow the logs of run {run}: {e}");
            }
        }
    }
}

/// Publishes what each step of `run` wrote since the last poll.
async fn follow_run(hub: &EventHub, engine: &Engine, run: &str) -> Result<()> {
    let record = {
        let engine = engine.clone();
        let id = run.to_owned();
        tokio::task::spawn_blocking(move || engine.run(&id))
            .await
            .map_err(|e| OpsError::InvalidState(format!("reading run {run}: {e}")))??
    };
    let known = match lock(&hub.follows).get(run) {
        Some(follow) => follow.positions.clone(),
        None => return Ok(()),
    };
    let mut positions = HashMap::new();
    let mut all_done = record.state.is_terminal();
    for step in record.steps.iter().filter(|s| s.attempt > 0) {
        let mut pos = match known.get(&step.name) {
            Some(pos) => *pos,
            // First seen: joined at its last LOG_TAIL bytes (all of a step that starts
            // while followed).
            None => start_position(engine, run, &step.name, step.attempt).await?,
        };
        let mut read = 0;
        loop {
            let chunk = engine
                .log_chunk(LogRequest {
                    run: run.to_owned(),
                    step: step.name.clone(),
                    attempt: pos.attempt,
                    offset: pos.offset,
                    max: LOG_EVENT_MAX,
                })
                .await?;
            let meta = &chunk.meta;
            let (lines, used) = split_lines(&chunk.data, pos.align, meta.more);
            if used > 0 {
                pos.align = false;
                if !lines.is_empty() {
                    let event = LogLines {
                        run: run.to_owned(),
                        step: step.name.clone(),
                        attempt: pos.attempt,
                        offset: pos.offset,
                        next_offset: pos.offset + used as u64,
                        lines,
                    };
                    hub.publish("log", &event, Some(run.to_owned()));
                }
                pos.offset += used as u64;
                read += used;
            }
            let at_end = used < chunk.data.len() || chunk.data.len() < LOG_EVENT_MAX;
            if at_end && pos.attempt < meta.latest_attempt && !meta.more {
                // This attempt's log is read: the next one starts at its first byte.
                pos = Position {
                    attempt: pos.attempt + 1,
                    offset: 0,
                    align: false,
                };
                continue;
            }
            if at_end {
                all_done &= !meta.more && pos.attempt >= meta.latest_attempt;
                break;
            }
            if read >= LOG_POLL_MAX {
                all_done = false;
                break;
            }
        }
        positions.insert(step.name.clone(), pos);
    }
    if let Some(follow) = lock(&hub.follows).get_mut(run) {
        follow.positions.extend(positions);
        follow.drained = all_done;
    }
    Ok(())
}

/// Where a new follower starts reading a step's latest attempt: the last [`LOG_TAIL`]
/// bytes, from the first whole line.
async fn start_position(engine: &Engine, run: &str, step: &str, attempt: u32) -> Result<Position> {
    let chunk = engine
        .log_chunk(LogRequest {
            run: run.to_owned(),
            step: step.to_owned(),
            attempt,
            offset: u64::MAX,
            max: 0,
        })
        .await?;
    let offset = chunk.meta.size.saturating_sub(LOG_TAIL);
    Ok(Position {
        attempt,
        offset,
        align: offset > 0,
    })
}

/// The whole lines at the start of `data` and how many bytes they take. A line still
/// being written waits for its newline unless it fills an event alone or the log can grow
/// no more; `align` skips a cut first line.
fn split_lines(data: &[u8], align: bool, more: bool) -> (Vec<String>, usize) {
    let mut skip = 0;
    if align {
        match data.iter().position(|&b| b == b'\n') {
            Some(newline) => skip = newline + 1,
            None if more && data.len() < LOG_EVENT_MAX => return (Vec::new(), 0),
            None => return (Vec::new(), data.len()),
        }
    }
    let rest = &data[skip..];
    let end = match rest.iter().rposition(|&b| b == b'\n') {
        Some(newline) => newline + 1,
        None if !more || data.len() == LOG_EVENT_MAX => rest.len(),
        None => 0,
    };
    let text = String::from_utf8_lossy(&rest[..end]);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let lines = if end == 0 {
        Vec::new()
    } else {
        text.split('\n').map(str::to_owned).collect()
    };
    (lines, skip + end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_for_their_newline_while_the_log_grows() {
        assert_eq!(
            split_lines(b"one\ntwo\nthr", false, true),
            (vec!["one".to_owned(), "two".to_owned()], 8)
        );
        assert_eq!(split_lines(b"thr", false, true), (Vec::new(), 0));
        assert_eq!(
            split_lines(b"thr", false, false),
            (vec!["thr".to_owned()], 3)
        );
        assert_eq!(
            split_lines(b"cut\nwhole\n", true, true),
            (vec!["whole".to_owned()], 10)
        );
        assert_eq!(split_lines(b"", false, true), (Vec::new(), 0));
    }

    fn hub() -> EventHub {
        EventHub {
            state: Mutex::new(HubState {
                history: VecDeque::new(),
                bytes: 0,
                next: 1001,
            }),
            live: broadcast::channel(CLIENT_BUFFER).0,
            base: 1000,
            follows: Mutex::default(),
        }
    }

    fn ids(events: &VecDeque<Arc<Event>>) -> Vec<(Option<u64>, &'static str)> {
        events.iter().map(|e| (e.id, e.kind)).collect()
    }

    #[test]
    fn a_client_resumes_after_its_last_id_or_is_told_to_reload() {
        let hub = hub();
        for n in 0..HISTORY + 5 {
            hub.publish("run", &n, None);
        }
        // 1001..=11005 published; 1006..=11005 kept.
        let (replay, _) = hub.subscribe(Some(11_003));
        assert_eq!(ids(&replay), [(Some(11_004), "run"), (Some(11_005), "run")]);
        let (replay, _) = hub.subscribe(Some(11_005));
        assert!(replay.is_empty());
        let (replay, _) = hub.subscribe(Some(1005));
        assert_eq!(replay.len(), HISTORY);
        assert_eq!(
            lock(&hub.state).bytes,
            replay.iter().map(|e| e.data.len()).sum::<usize>()
        );
        for stale in [1004, 999, 11_006, u64::MAX] {
            let (replay, _) = hub.subscribe(Some(stale));
            assert_eq!(ids(&replay), [(Some(11_005), "reset")], "after {stale}");
        }
    }
}
