//! Step attempts: an attempt's state, what it wrote, and how it ended.

use serde::{Deserialize, Serialize};

use super::{FailureClass, StreamReport, Timestamp};

/// A step attempt's place in its life: `starting` (shim spawned, scope being created) →
/// `running` (start gate opened) → `succeeded | failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Pending,
    Starting,
    Running,
    Succeeded,
    Failed,
    /// Ended by a kill.
    Killed,
}

impl StepState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepState::Succeeded | StepState::Failed | StepState::Killed
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Starting => "starting",
            StepState::Running => "running",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
            StepState::Killed => "killed",
        }
    }
}

/// The latest attempt of one step (or the step not yet started, with `attempt` 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepAttempt {
    pub name: String,
    pub index: u32,
    pub attempt: u32,
    pub state: StepState,
    pub unit: Option<String>,
    pub pid: Option<u32>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// How the attempt ended, in systemd's words: "success", "exit-code", "signal",
    /// "timeout", "oom-kill"; or drover's "start-failed" and "lost" (the step's supervisor
    /// vanished without reporting).
    pub result: Option<String>,
    pub log: Option<String>,
    /// What the step has written so far (stdout and stderr).
    pub output: StepOutput,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    /// Why a failed attempt failed, and the evidence for it.
    #[serde(default)]
    pub failure_class: Option<FailureClass>,
    #[serde(default)]
    pub failure_evidence: Option<String>,
    /// An agent step's Claude Code session: the previous attempt's, resumed, unless a
    /// restored checkpoint predates the conversation (then a new one).
    #[serde(default)]
    pub session_id: Option<String>,
    /// What an agent step's stream-json output reported.
    #[serde(default)]
    pub agent: Option<StreamReport>,
    /// What drover did before starting the attempt (a session resumed, a transcript
    /// repaired, requirements checked).
    #[serde(default)]
    pub note: Option<String>,
    /// Output the attempt's log lacks because a write to it failed (a full disk): where the
    /// log was cut and how much is only in the journal.
    #[serde(default)]
    pub log_cut: Option<String>,
}

impl StepAttempt {
    /// A step not started yet (attempt 0).
    pub fn planned(name: &str, index: u32) -> StepAttempt {
        StepAttempt {
            name: name.to_owned(),
            index,
            attempt: 0,
            state: StepState::Pending,
            unit: None,
            pid: None,
            exit_code: None,
            signal: None,
            result: None,
            log: None,
            output: StepOutput::default(),
            started_at: None,
            ended_at: None,
            failure_class: None,
            failure_evidence: None,
            session_id: None,
            agent: None,
            note: None,
            log_cut: None,
        }
    }
}

/// How much a step wrote, and when it last wrote (to tell a busy step from a stuck one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepOutput {
    pub bytes: u64,
    pub lines: u64,
    pub last_output_at: Option<Timestamp>,
}
