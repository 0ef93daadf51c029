//! `drover history`'s report: per day (UTC), a workflow's (or every workflow's) runs,
//! outcomes, durations, cost, failure classes, kills and restarts. Reckoned by `history`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// One day (UTC) of a workflow's history, or of all workflows': runs by the day they were
/// created; kills and restarts by the day they happened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryDay {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub runs: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub killed: u64,
    /// Succeeded over ended (succeeded + failed + killed); `None` when none ended.
    pub success_rate: Option<f64>,
    /// Of the runs that ended: start (or creation) to end, in seconds.
    pub duration_p50_secs: Option<f64>,
    pub duration_p95_secs: Option<f64>,
    /// What Claude Code reported for every attempt of the day's runs (`total_cost_usd` of
    /// their `result` events), retries included.
    pub cost_usd: f64,
    /// The failed and killed runs by failure class (`none` for a run failed outside a step).
    pub failure_classes: BTreeMap<String, u64>,
    /// Kills carried out (killed, failed, or seen from outside), not refusals.
    pub kills: u64,
    /// Restarts done (the `actions` audit trail), not refusals or failures.
    pub restarts: u64,
}

/// `drover history`: one row per day from `since` to today, empty days included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub workflow: Option<String>,
    pub since: Timestamp,
    pub days: Vec<HistoryDay>,
}
