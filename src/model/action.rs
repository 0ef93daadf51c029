//! Operators' actions other than kills, as the audit trail keeps them, and what a
//! configuration reload did.

use serde::{Deserialize, Serialize};

use super::{Requester, Timestamp};

/// An operator's action other than a kill (restart, rollback, checkpoint, silence,
/// reload), as the audit trail keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub id: i64,
    /// The run acted on; a silence's target; empty for the agent itself (a reload).
    pub run: String,
    /// "restart", "rollback", "checkpoint", "silence" or "reload"; for refusals also "run",
    /// "enter-critical", "leave-critical", "raise-alert" or "resolve-alert".
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

impl ActionRecord {
    /// `by`'s action on `run` ("" for the agent itself), done now; the caller fills in the
    /// rest (a refusal's result, the detail, how long it took).
    pub fn new(by: &Requester, run: &str, action: &str) -> ActionRecord {
        ActionRecord {
            id: 0,
            run: run.to_owned(),
            action: action.to_owned(),
            requested_by: by.requested_by.clone(),
            uid: by.uid,
            role: by.role.clone(),
            channel: by.channel.clone(),
            at: Timestamp::now(),
            result: "done".to_owned(),
            checkpoint: None,
            detail: String::new(),
            took_ms: 0,
        }
    }
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
