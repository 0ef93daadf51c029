//! Checkpoints: the record of one checkpoint and the run's state as a checkpoint stores it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{StepAttempt, Timestamp};

/// One checkpoint of a run: a commit on `refs/drover/<run>/<n>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    pub run: String,
    pub n: u32,
    pub label: String,
    /// Why it was taken: "step" (after a `checkpoint = true` step), "kill", "manual",
    /// "before-restart", "before-rollback".
    pub reason: String,
    /// The step last finished (or running) when it was taken.
    pub step: Option<String>,
    /// The step a restart from this checkpoint begins with.
    pub next_step: u32,
    pub created_at: Timestamp,
    pub reference: String,
    pub commit: String,
    /// Files that differ from the previous checkpoint (or the worktree's base commit).
    pub files_changed: u32,
    pub took_ms: u64,
}

/// The run's state as a checkpoint stores it (`.drover-state/state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    pub run: String,
    pub workflow: String,
    pub params: BTreeMap<String, String>,
    /// The step a restart begins with: the first not done when the checkpoint was taken.
    pub next_step: u32,
    /// The latest attempt of each step then: results, outputs, attempt counters, session ids.
    pub steps: Vec<StepAttempt>,
}
