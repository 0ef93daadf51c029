//! The typed requests of the operations, one per thing a caller can ask. Every door decodes
//! its wire format into these (D-Bus arguments and `a{sv}` options today; JSON bodies
//! next), and every door encodes the results the same way: the `model` records, as JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::Severity;

/// `Run`: start a run of a workflow file (an absolute path).
#[derive(Debug, Clone)]
pub struct RunArgs {
    pub workflow_path: String,
    pub params: BTreeMap<String, String>,
}

/// `Kill`.
#[derive(Debug, Clone)]
pub struct KillArgs {
    pub run: String,
    /// Empty: "no reason given".
    pub reason: String,
    /// Overrides the workflow's `[kill] grace`.
    pub grace: Option<Duration>,
    /// Needed for a `protected` workflow.
    pub confirm: bool,
}

/// `EnterCritical` / `LeaveCritical`.
#[derive(Debug, Clone)]
pub struct CriticalArgs {
    pub run: String,
    pub label: String,
}

/// `Checkpoint`: take one now.
#[derive(Debug, Clone)]
pub struct CheckpointArgs {
    pub run: String,
    /// Blank: no label.
    pub label: String,
}

/// `Restart`.
#[derive(Debug, Clone)]
pub struct RestartArgs {
    pub run: String,
    /// The checkpoint number; `None`: the latest.
    pub from: Option<u32>,
    pub confirm: bool,
}

/// `Rollback`.
#[derive(Debug, Clone)]
pub struct RollbackArgs {
    pub run: String,
    pub to: u32,
    pub confirm: bool,
}

/// `History`.
#[derive(Debug, Clone)]
pub struct HistoryArgs {
    /// `None`: every workflow.
    pub workflow: Option<String>,
    /// How far back; `None`: 7 days.
    pub since: Option<Duration>,
}

/// `Silence`: hold back a rule's or a run's alerts for a while.
#[derive(Debug, Clone)]
pub struct SilenceArgs {
    /// A rule name or a run id.
    pub target: String,
    pub duration: Duration,
    pub reason: String,
}

/// `RaiseAlert`: an alert raised by hand (operators' scripts, tests).
#[derive(Debug, Clone)]
pub struct RaiseAlertArgs {
    pub rule: String,
    /// `None`: an alert about no run.
    pub run: Option<String>,
    pub severity: Severity,
    pub summary: String,
}
