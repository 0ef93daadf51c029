//! Alerts: severities and states, an alert and the firing it came from, silences, and
//! alert changes on their way to the sinks (the outbox).

use serde::{Deserialize, Serialize};

use super::Timestamp;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// An alert: one rule about one run, deduplicated by `key` (`<rule>/<run>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// What happened to an alert, as sinks are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Firing,
    Resolved,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Firing => "firing",
            Change::Resolved => "resolved",
        }
    }

    pub fn parse(text: &str) -> Option<Change> {
        match text {
            "firing" => Some(Change::Firing),
            "resolved" => Some(Change::Resolved),
            _ => None,
        }
    }
}

impl From<AlertState> for Change {
    fn from(state: AlertState) -> Change {
        match state {
            AlertState::Firing => Change::Firing,
            AlertState::Resolved => Change::Resolved,
        }
    }
}

/// The spelling of a severity in the state DB, JSON and the CLI.
pub fn severity_str(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// The severity spelled `text`, as [`severity_str`] spells it.
pub fn parse_severity(text: &str) -> Option<Severity> {
    match text {
        "info" => Some(Severity::Info),
        "warning" => Some(Severity::Warning),
        "critical" => Some(Severity::Critical),
        _ => None,
    }
}

/// A silence: alerts whose rule or run is `target` are stored but not sent until `until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: i64,
    /// A rule name or a run id.
    pub target: String,
    pub until: Timestamp,
    pub reason: String,
    pub created_by: String,
    pub created_at: Timestamp,
}

/// One alert change waiting in the outbox for one sink.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    pub id: i64,
    pub sink: String,
    pub key: String,
    pub change: Change,
    /// The alert as it was when the change happened.
    pub alert: Alert,
    /// Failed deliveries so far.
    pub attempts: u32,
    pub next_try_at: Timestamp,
    pub last_error: Option<String>,
}

/// What one alert did in one `observe`/`raise`/`resolve`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertUpdate {
    pub alert: Alert,
    /// `Some` when the alert began or was resolved; `None` for a repeat.
    pub change: Option<Change>,
    /// The change was queued for the sinks (not silenced).
    pub queued: bool,
}
