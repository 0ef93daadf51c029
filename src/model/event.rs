//! What happens to runs as it happens: the engine's announcements (a run's transition, a
//! step attempt's start and end, each sent only after the state DB holds it) and the
//! records of the live event stream (`GET /api/v1/events`) built from them, the monitor's
//! ticks, the alerts' changes and the step logs.

use serde::{Deserialize, Serialize};

use super::{Alert, Change, RunMetrics, RunState, StepState, Timestamp};

/// A run reached a new state (`event: run`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunTransition {
    pub run: String,
    pub workflow: String,
    pub state: RunState,
    /// Who moved it, as the audit trail names them ("drover" for the engine itself).
    pub by: String,
}

/// A step attempt started or ended (`event: step`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepChange {
    pub run: String,
    pub workflow: String,
    pub step: String,
    /// The step's place in the workflow, from 0.
    pub index: u32,
    pub attempt: u32,
    /// `running` when it started; `succeeded`, `failed` or `killed` when it ended.
    pub state: StepState,
    /// How it ended (`exit`, `signal`, `killed`, `lost`, `dependency`, …); none at the start.
    pub result: Option<String>,
}

/// What the engine announces, in the order the state DB took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    Run(RunTransition),
    Step(StepChange),
}

impl EngineEvent {
    pub fn run(&self) -> &str {
        match self {
            EngineEvent::Run(t) => &t.run,
            EngineEvent::Step(s) => &s.run,
        }
    }
}

/// Lines a step attempt wrote to its log (`event: log`): the bytes from `offset` to
/// `next_offset`, whole lines unless one is longer than an event holds or the attempt
/// ended without a final newline. A reader fills a gap with `GET /runs/{id}/logs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogLines {
    pub run: String,
    pub step: String,
    pub attempt: u32,
    pub offset: u64,
    pub next_offset: u64,
    /// The lines without their newlines, invalid UTF-8 replaced (U+FFFD).
    pub lines: Vec<String>,
}

/// The latest metrics of every unfinished run after one monitor tick (`event: metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MetricsTick {
    pub at: Timestamp,
    pub runs: Vec<RunMetrics>,
}

/// An alert fired or resolved (`event: alert`), once the state DB holds the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertChange {
    pub change: Change,
    pub alert: Alert,
}

/// Why a stream says something about itself (`event: reset`, `event: dropped`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StreamNotice {
    pub reason: String,
}
