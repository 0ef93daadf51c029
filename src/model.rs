//! The records every part shares: runs, step attempts and their states. These are also the
//! JSON shapes `Get`/`List` return, so renaming a field is a wire change.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A run's place in its life: `pending → running → succeeded | failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl RunState {
    pub fn is_terminal(self) -> bool {
        matches!(self, RunState::Succeeded | RunState::Failed)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
        }
    }
}

/// A step attempt's place in its life: `starting` (shim spawned, scope being created) →
/// `running` (start gate opened) → `succeeded | failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Pending,
    Starting,
    Running,
    Succeeded,
    Failed,
}

impl StepState {
    pub fn is_terminal(self) -> bool {
        matches!(self, StepState::Succeeded | StepState::Failed)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Starting => "starting",
            StepState::Running => "running",
            StepState::Succeeded => "succeeded",
            StepState::Failed => "failed",
        }
    }
}

macro_rules! text_enum {
    ($ty:ty, $($variant:ident),+) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $(if s == <$ty>::$variant.as_str() { return Ok(<$ty>::$variant); })+
                Err(format!("unknown state {s:?}"))
            }
        }
    };
}
text_enum!(RunState, Pending, Running, Succeeded, Failed);
text_enum!(StepState, Pending, Starting, Running, Succeeded, Failed);

/// One run of a workflow, with the latest attempt of each of its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub workflow: String,
    pub workflow_file: String,
    pub state: RunState,
    pub params: BTreeMap<String, String>,
    /// The git worktree the steps run in, when the workflow names a workspace.
    pub worktree: Option<String>,
    /// Who asked for the run: "uid 1000 (alice)".
    pub requested_by: String,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    /// Why the run failed, when it did not fail in a step (e.g. the worktree could not be made).
    pub error: Option<String>,
    pub steps: Vec<StepAttempt>,
}

/// The latest attempt of one step (or the step not yet started, with `attempt` 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

/// How much a step wrote, and when it last wrote (to tell a busy step from a stuck one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepOutput {
    pub bytes: u64,
    pub lines: u64,
    pub last_output_at: Option<Timestamp>,
}

/// Milliseconds since the Unix epoch; RFC 3339 on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Timestamp {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }
    fn system_time(self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.0.max(0) as u64)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_rfc3339_millis(self.system_time())
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let time = humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)?;
        let millis = time
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(serde::de::Error::custom)?
            .as_millis();
        Ok(Timestamp(
            i64::try_from(millis).map_err(serde::de::Error::custom)?,
        ))
    }
}
