//! Reloading the agent's configuration (`drover reload`, D-Bus `Reload`, SIGHUP). The file
//! the agent started with is read and validated again by [`Config::load`]; an invalid one
//! changes nothing. A valid one is put in force where that can be done live (`[auth]`, and
//! `[rules]`: directories and role), and the outcome names the changed settings that take
//! effect only when the agent starts again. Every reload is audited, refusals included.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde_json::Value;
use tokio::sync::watch;

use crate::auth::{Authorizer, Role};
use crate::config::{Config, ConfigError};
use crate::engine::Engine;
use crate::model::{ActionRecord, ReloadOutcome, Requester};
use crate::rules::watch::RulesWatcher;
use crate::rules::{RuleDirs, Rules, RulesError};

/// The tables a reload puts in force; every other setting is read only at start. A new
/// table therefore counts as needing a restart until it is made live here.
const LIVE_TABLES: &[&str] = &["auth", "rules"];

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error("cannot compare the configurations: {0}")]
    Compare(#[from] serde_json::Error),
}

/// The parts a reload changes, and the config they run with.
pub struct Reloader {
    config_path: PathBuf,
    /// Whether the file must exist (given with `--config`), as at start.
    required: bool,
    /// The config the agent started with: start-only settings are compared to it, so a
    /// change stays reported until the agent restarts.
    started: Config,
    /// The last config put in force; the lock also keeps reloads one at a time.
    current: Mutex<Config>,
    rules: Rules,
    watcher: RulesWatcher,
    role: watch::Sender<Role>,
    auth: Arc<Authorizer>,
    engine: Engine,
}

/// What the reloader needs from the agent's wiring.
pub struct Parts {
    pub config_path: PathBuf,
    pub required: bool,
    pub config: Config,
    pub rules: Rules,
    pub watcher: RulesWatcher,
    pub role: watch::Sender<Role>,
    pub auth: Arc<Authorizer>,
    pub engine: Engine,
}

impl Reloader {
    pub fn new(parts: Parts) -> Reloader {
        Reloader {
            config_path: parts.config_path,
            required: parts.required,
            current: Mutex::new(parts.config.clone()),
            started: parts.config,
            rules: parts.rules,
            watcher: parts.watcher,
            role: parts.role,
            auth: parts.auth,
            engine: parts.engine,
        }
    }

    /// Re-reads the config file and puts what it can in force; on an error nothing
    /// changed. Logged and audited either way.
    pub fn reload(&self, by: &Requester) -> Result<ReloadOutcome, ReloadError> {
        let started = Instant::now();
        let result = self.apply();
        let (outcome, detail) = match &result {
            Ok(outcome) => {
                let summary = outcome.summary();
                tracing::info!(
                    drover_event = "config-reload",
                    "configuration reloaded by {}: {summary}",
                    by.requested_by
                );
                ("done", summary)
            }
            Err(e) => {
                tracing::error!(
                    drover_event = "config-reload-failed",
                    "configuration not reloaded (asked by {}), the running one stays in force: {e}",
                    by.requested_by
                );
                ("failed", e.to_string())
            }
        };
        self.audit(by, outcome, detail, started);
        result
    }

    /// Audits a reload refused for the caller's role.
    pub fn refuse(&self, by: &Requester, why: &str) {
        tracing::warn!(drover_event = "refused", "reload refused: {why}");
        self.audit(by, "refused", why.to_owned(), Instant::now());
    }

    fn apply(&self) -> Result<ReloadOutcome, ReloadError> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let new = Config::load(&self.config_path, self.required)?;
        let applied = changed_keys(&current, &new)?
            .into_iter()
            .filter(|key| is_live(key))
            .collect();
        let restart_needed = changed_keys(&self.started, &new)?
            .into_iter()
            .filter(|key| !is_live(key))
            .collect();
        // The rules first: an unreadable directory is the one failure left, and nothing
        // may have changed when it is reported.
        let dirs = RuleDirs::from_config(&new.rules, &self.config_path);
        let report = if dirs == self.rules.dirs() {
            self.rules.reload()?
        } else {
            let report = self.rules.set_dirs(dirs)?;
            self.watcher.dirs_changed();
            report
        };
        self.role.send_replace(new.rules.role);
        self.auth.set_config(new.auth.clone());
        *current = new;
        Ok(ReloadOutcome {
            config: self.config_path.display().to_string(),
            applied,
            restart_needed,
            rules_loaded: report.loaded,
            rules_removed: report.removed,
            rule_errors: report.errors.iter().map(ToString::to_string).collect(),
        })
    }

    fn audit(&self, by: &Requester, result: &str, detail: String, started: Instant) {
        let record = ActionRecord {
            result: result.to_owned(),
            detail,
            took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            ..ActionRecord::new(by, "", "reload")
        };
        // The reload itself has happened (or not) either way; a lost audit row is logged.
        if let Err(e) = self.engine.record_action(&record) {
            tracing::error!(drover_event = "audit-failed", "cannot audit a reload: {e}");
        }
    }
}

fn is_live(key: &str) -> bool {
    LIVE_TABLES.contains(&key.split('.').next().unwrap_or(key))
}

/// The settings (TOML key paths) whose values differ between `old` and `new`, found by
/// walking both as JSON, so a new key is compared without being listed here.
fn changed_keys(old: &Config, new: &Config) -> Result<Vec<String>, serde_json::Error> {
    let mut changed = Vec::new();
    diff(
        "",
        &serde_json::to_value(old)?,
        &serde_json::to_value(new)?,
        &mut changed,
    );
    Ok(changed)
}

fn diff(path: &str, old: &Value, new: &Value, changed: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(old_map), Value::Object(new_map)) => {
            let keys: std::collections::BTreeSet<&String> =
                old_map.keys().chain(new_map.keys()).collect();
            for key in keys {
                let path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                diff(
                    &path,
                    old_map.get(key).unwrap_or(&Value::Null),
                    new_map.get(key).unwrap_or(&Value::Null),
                    changed,
                );
            }
        }
        _ if old != new => changed.push(path.to_owned()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        toml::from_str(text).expect("test config parses")
    }

    #[test]
    fn changed_keys_name_each_setting_that_differs() {
        let old = config("[http]\nlisten = \"127.0.0.1:0\"\n");
        let new = config(
            "state_dir = \"/srv/drover\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [rules]\nrole = \"viewer\"\n[auth.operator]\nusers = [\"alice\"]\n",
        );
        assert_eq!(
            changed_keys(&old, &new).unwrap(),
            ["auth.operator.users", "rules.role", "state_dir"]
        );
        assert!(changed_keys(&new, &new).unwrap().is_empty());
    }

    #[test]
    fn only_auth_and_rules_are_live() {
        assert!(is_live("auth.default_role"));
        assert!(is_live("rules.dir"));
        for key in [
            "state_dir",
            "http.listen",
            "http.enabled",
            "monitor.interval",
            "monitor.history",
            "alerts.webhook",
        ] {
            assert!(!is_live(key), "{key}");
        }
    }
}
