//! The records every part shares: runs, step attempts and their states. These are also the
//! JSON shapes `Get`/`List` return, so renaming a field is a wire change.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::claude::StreamReport;
use crate::recovery::FailureClass;

mod requester;
pub use requester::Requester;

/// A run's place in its life: `pending → running → succeeded | failed`, and on a kill
/// `→ stopping → killing → killed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
text_enum!(
    RunState, Pending, Running, Stopping, Killing, Restarting, Succeeded, Failed, Killed
);
text_enum!(
    StepState, Pending, Starting, Running, Succeeded, Failed, Killed
);
text_enum!(KillResult, Pending, Killed, Failed, Refused, External);

/// One run of a workflow, with the latest attempt of each of its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// What a restart from a checkpoint restored: the steps before `next_step` are done (by
/// the checkpoint), and for the others only attempts from `first_attempts[index]` on count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// An operator's action other than a kill (restart, rollback, checkpoint, silence,
/// reload), as the audit trail keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub id: i64,
    /// The run acted on; a silence's target; empty for the agent itself (a reload).
    pub run: String,
    /// "restart", "rollback", "checkpoint", "silence" or "reload".
    pub action: String,
    pub requested_by: String,
    pub uid: Option<u32>,
    pub role: Option<String>,
    pub channel: String,
    pub at: Timestamp,
    /// "done", "refused" or "failed".
    pub result: String,
    /// The checkpoint restored or written.
    pub checkpoint: Option<u32>,
    /// What was done (files restored, transcripts repaired) or why it was refused.
    pub detail: String,
    pub took_ms: u64,
}

/// What a configuration reload did (the JSON `Reload` returns). Setting names are TOML
/// key paths such as `rules.role` or `auth.operator.users`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    /// The file read.
    pub config: String,
    /// Changed settings now in force.
    pub applied: Vec<String>,
    /// Changed settings that take effect only when the agent starts again.
    pub restart_needed: Vec<String>,
    /// Rules (re)compiled and now in force, and rules dropped with their file.
    pub rules_loaded: Vec<String>,
    pub rules_removed: Vec<String>,
    /// Rule files that failed to compile (a previous version of each keeps running).
    pub rule_errors: Vec<String>,
}

impl ReloadOutcome {
    /// One line for the audit trail and the journal.
    pub fn summary(&self) -> String {
        let list = |keys: &[String]| {
            if keys.is_empty() {
                "none".to_owned()
            } else {
                keys.join(", ")
            }
        };
        let mut text = format!("{}: changes applied: {}", self.config, list(&self.applied));
        if !self.restart_needed.is_empty() {
            text += &format!(
                "; take effect after a restart: {}",
                self.restart_needed.join(", ")
            );
        }
        if !self.rules_loaded.is_empty() || !self.rules_removed.is_empty() {
            text += &format!(
                "; rules loaded: {}, removed: {}",
                list(&self.rules_loaded),
                list(&self.rules_removed)
            );
        }
        if !self.rule_errors.is_empty() {
            text += &format!("; rule files with errors: {}", self.rule_errors.len());
        }
        text
    }
}

/// One kill: who asked and why, and what each phase did. Stored as the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KillRecord {
    pub id: i64,
    pub run: String,
    /// "uid 1000 (alice) via dbus", or "systemd" for a kill from outside drover.
    pub requested_by: String,
    pub uid: Option<u32>,
    pub role: Option<String>,
    pub channel: String,
    pub reason: String,
    pub requested_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub result: KillResult,
    /// The step that was running, and its scope.
    pub step: Option<String>,
    pub unit: Option<String>,
    /// From SIGTERM to SIGKILL, as asked or the workflow's.
    #[serde(default)]
    pub grace_ms: Option<u64>,
    pub critical: Option<CriticalWait>,
    pub phases: Vec<KillPhase>,
    /// Processes found in the scope after the last phase (0 for a clean kill).
    pub processes_left: Option<u32>,
    pub cleanup: Vec<CleanupAction>,
    /// The final snapshot of the worktree: `<ref> <commit>`.
    pub snapshot: Option<String>,
    /// Milliseconds from the request to the end.
    pub total_ms: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KillResult {
    /// Requested, not finished yet.
    Pending,
    /// The run ended killed, its scope verified empty.
    Killed,
    /// Processes were left after the budget ran out, or a phase failed.
    Failed,
    /// Not allowed (role, confirmation); nothing was done.
    Refused,
    /// Done outside drover (`systemctl kill/stop`, the OOM killer): recorded, not done.
    External,
}

impl KillRecord {
    /// A kill as requested, before anything was done.
    pub fn requested(run: &str, requested_by: &str, channel: &str, reason: &str) -> KillRecord {
        KillRecord {
            id: 0,
            run: run.to_owned(),
            requested_by: requested_by.to_owned(),
            uid: None,
            role: None,
            channel: channel.to_owned(),
            reason: reason.to_owned(),
            requested_at: Timestamp::now(),
            ended_at: None,
            result: KillResult::Pending,
            step: None,
            unit: None,
            grace_ms: None,
            critical: None,
            phases: Vec::new(),
            processes_left: None,
            cleanup: Vec::new(),
            snapshot: None,
            total_ms: None,
            error: None,
        }
    }

    /// A kill done outside drover, seen from how a step ended.
    pub fn external(run: &str, step: &str, unit: &str, reason: String) -> KillRecord {
        let mut record = KillRecord::requested(run, "systemd", "systemd", &reason);
        record.result = KillResult::External;
        record.step = Some(step.to_owned());
        record.unit = Some(unit.to_owned());
        record.ended_at = Some(Timestamp::now());
        record
    }
}

impl KillResult {
    pub fn as_str(self) -> &'static str {
        match self {
            KillResult::Pending => "pending",
            KillResult::Killed => "killed",
            KillResult::Failed => "failed",
            KillResult::Refused => "refused",
            KillResult::External => "external",
        }
    }
}

/// One phase of a kill, timed from the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KillPhase {
    /// "critical-wait", "sigterm-main", "sigterm", "sigkill", "verify", "cleanup".
    pub name: String,
    pub started_ms: u64,
    pub duration_ms: u64,
    /// Processes sent a signal in this phase.
    pub signalled: u32,
    pub note: Option<String>,
}

/// How long a critical section held the kill off, and how that ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriticalWait {
    /// "step" for a `critical = true` step, else the labels of the open spans.
    pub labels: Vec<String>,
    pub waited_ms: u64,
    /// "ended" (in time) or "overridden" (at `critical_max`).
    pub outcome: String,
}

/// One cleanup action after the processes ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanupAction {
    pub action: String,
    pub ok: bool,
    pub detail: String,
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
        }
    }
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

/// One sample of a running step (its scope) and its run, taken by the monitor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub at: Option<Timestamp>,
    /// Percent of one core over the last interval (from CPU-time deltas).
    pub cpu_percent: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    pub tasks: Option<u64>,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
    pub output_bytes_per_sec: f64,
    pub output_lines_per_sec: f64,
    /// Seconds since the step's last output line (or its start).
    pub idle_secs: f64,
    pub step_elapsed_secs: f64,
    pub run_elapsed_secs: f64,
    /// For Claude Code steps, what its stream-json says so far.
    pub agent: Option<AgentLive>,
    /// Where each resource value came from ("cpu", "memory", "memory_peak", "tasks", "io"
    /// → "systemd", "cgroup-v1" or "cgroup-v2"), for tests and debugging.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, String>,
    /// The run's slice as a whole (every step of the run), where it can be read.
    #[serde(default)]
    pub run_cpu_percent: Option<f64>,
    #[serde(default)]
    pub run_memory_bytes: Option<u64>,
    #[serde(default)]
    pub run_tasks: Option<u64>,
}

/// A Claude Code step as it runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentLive {
    pub turns: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: f64,
    /// The tool call in progress (no result yet), e.g. "Bash".
    pub tool: Option<String>,
    /// How many times in a row the latest tool call (same tool, same input) was made.
    pub same_tool_calls: u32,
}

/// A run's live metrics: its latest sample and the step it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    pub run: String,
    pub workflow: String,
    pub state: RunState,
    pub step: Option<String>,
    pub attempt: u32,
    pub unit: Option<String>,
    pub latest: Sample,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// An alert: one rule about one run, deduplicated by `key` (`<rule>/<run>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub key: String,
    pub rule: String,
    pub run: Option<String>,
    pub workflow: Option<String>,
    pub severity: Severity,
    pub summary: String,
    pub state: AlertState,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub resolved_at: Option<Timestamp>,
    /// How many times the rule fired while the alert was firing.
    pub count: u64,
    /// Silenced until then (the alert is kept, not sent).
    pub silenced_until: Option<Timestamp>,
}

/// A rule that fired for a run in one evaluation: what the alerts part dedupes, resolves
/// and routes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Firing {
    pub rule: String,
    pub run: String,
    pub workflow: String,
    pub severity: Severity,
    pub summary: String,
}
