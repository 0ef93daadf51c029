//! Runs: a run's state, the run record the engine keeps, and where a restart put it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{FailureClass, KillRecord, StepAttempt, Timestamp};

/// A run's place in its life: `pending → running → succeeded | failed`, and on a kill
/// `→ stopping → killing → killed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Pending,
    Running,
    /// A kill was requested: no new step starts; a critical section may still finish.
    Stopping,
    /// The kill is signalling the step's processes.
    Killing,
    /// An operator asked for a restart: the worktree is being restored from a checkpoint.
    Restarting,
    Succeeded,
    Failed,
    Killed,
}

impl RunState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Killed
        )
    }
    /// A kill has been requested and has not finished.
    pub fn is_being_killed(self) -> bool {
        matches!(self, RunState::Stopping | RunState::Killing)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Stopping => "stopping",
            RunState::Killing => "killing",
            RunState::Restarting => "restarting",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Killed => "killed",
        }
    }
}

/// One run of a workflow, with the latest attempt of each of its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Run {
    pub id: String,
    pub workflow: String,
    pub workflow_file: String,
    /// The workflow is `protected`: killing it needs a confirmation.
    #[serde(default)]
    pub protected: bool,
    pub state: RunState,
    pub params: BTreeMap<String, String>,
    /// The git worktree the steps run in, when the workflow names a workspace.
    pub worktree: Option<String>,
    /// Who asked for the run: "uid 1000 (alice)".
    pub requested_by: String,
    /// The account the steps run as, and everything done for the run later (retries,
    /// restarts, `on_kill`, checkpoints, the worktree): the submitter, or the workflow's
    /// `user` when an admin asked. `None` for runs recorded before drover kept it: they ran
    /// as the agent.
    #[serde(default)]
    pub user: Option<RunUser>,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    /// Why the run failed, when it did not fail in a step (e.g. the worktree could not be made).
    pub error: Option<String>,
    pub steps: Vec<StepAttempt>,
    /// The latest kill of this run (requested, refused or done), if any.
    #[serde(default)]
    pub kill: Option<KillRecord>,
    /// When the scheduled automatic retry of a failed step starts.
    #[serde(default)]
    pub next_attempt_at: Option<Timestamp>,
    /// Where the latest restart put the run: the steps before `next_step` count as done.
    #[serde(default)]
    pub restart: Option<RestartPoint>,
    /// Why a failed run failed: its failed step's class, or `dependency` when a restart
    /// was refused for unmet requirements.
    #[serde(default)]
    pub failure_class: Option<FailureClass>,
}

/// A page of runs, newest first, and where the next page starts (`None`: this is the last).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunPage {
    pub runs: Vec<Run>,
    /// Opaque: pass it back as `cursor` for the runs after these.
    pub next_cursor: Option<String>,
}

/// A run's account, as recorded when it was submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunUser {
    pub uid: u32,
    pub name: String,
}

/// What a restart from a checkpoint restored: the steps before `next_step` are done (by
/// the checkpoint), and for the others only attempts from `first_attempts[index]` on count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RestartPoint {
    /// The checkpoint restored, or `None` for a run without checkpoints, restarted at its
    /// first unfinished step.
    pub checkpoint: Option<u32>,
    pub next_step: u32,
    /// By step index: the first attempt number that belongs to this restart.
    pub first_attempts: Vec<u32>,
    /// By step index: the Claude Code session the step's first attempt resumes.
    #[serde(default)]
    pub sessions: BTreeMap<u32, String>,
    /// When the restart happened: the workflow's time limit counts from here.
    #[serde(default)]
    pub at: Option<Timestamp>,
}

impl RestartPoint {
    /// Whether attempt `attempt` of step `index` belongs to the run as restarted.
    pub fn counts(&self, index: u32, attempt: u32) -> bool {
        index < self.next_step
            || attempt
                >= self
                    .first_attempts
                    .get(index as usize)
                    .copied()
                    .unwrap_or(1)
    }
}
