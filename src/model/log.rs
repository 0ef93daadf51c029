//! Step logs as the agent serves them (`Logs`): a chunk of one attempt's log file and
//! where it stands, so a reader knows where to go on and whether to wait for more.

use serde::{Deserialize, Serialize};

use super::{RunState, StepState};

/// Where a chunk of a step attempt's log stands. Every door returns this (as JSON) beside
/// the bytes, which need not be UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogMeta {
    pub run: String,
    pub step: String,
    /// The attempt read; 0 when the step has not started (it has no log yet).
    pub attempt: u32,
    /// The step's latest attempt now: above `attempt` once a retry has started.
    pub latest_attempt: u32,
    /// The attempt's state and the run's, taken before the file was read: when they say
    /// the attempt ended, the chunk reaches the log's end.
    pub state: StepState,
    pub run_state: RunState,
    /// Where the chunk starts in the file, and where the next one does.
    pub offset: u64,
    pub next_offset: u64,
    /// The file's size when it was read (0 while it does not exist).
    pub size: u64,
    /// This attempt's log may still grow: it is the step's latest attempt, and neither it
    /// nor the run has ended.
    pub more: bool,
    /// No more output will come for this step in this run (until a restart): its latest
    /// attempt succeeded, or the run ended. Until then a follower waits for a retry.
    pub step_done: bool,
    /// Output this attempt's log lacks because a write to it failed (a full disk): the
    /// attempt's record of where the log was cut (`StepAttempt::log_cut`).
    #[serde(default)]
    pub log_cut: Option<String>,
}

/// A chunk of a step attempt's log: the bytes from `meta.offset` to `meta.next_offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub meta: LogMeta,
    pub data: Vec<u8>,
}
