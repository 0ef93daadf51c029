//! Kills: the audit record of one kill, its phases, the critical wait and the cleanup.

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// One kill: who asked and why, and what each phase did. Stored as the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CriticalWait {
    /// "step" for a `critical = true` step, else the labels of the open spans.
    pub labels: Vec<String>,
    pub waited_ms: u64,
    /// "ended" (in time) or "overridden" (at `critical_max`).
    pub outcome: String,
}

/// One cleanup action after the processes ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CleanupAction {
    pub action: String,
    pub ok: bool,
    pub detail: String,
}

impl CleanupAction {
    /// A cleanup action that could not be done, and why.
    pub fn failed(action: String, why: impl std::fmt::Display) -> CleanupAction {
        CleanupAction {
            action,
            ok: false,
            detail: why.to_string(),
        }
    }
}
