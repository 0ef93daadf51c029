//! Alerts: what rules (and drover itself) report about runs, deduplicated by key
//! (`<rule>/<run>`), resolved when the rule stops firing, silenced on request, stored in
//! the state DB and sent to sinks (the journal, a webhook, later Slack).
//!
//! Every change is in the state DB before any sink sees it: the change and one outbox row
//! per sink are written in one transaction, and the outbox task (`outbox`) delivers the
//! rows, retrying with backoff, so a change is never lost across an agent restart.

pub mod outbox;
pub mod sink;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{
    ActionRecord, Alert, AlertChange, AlertUpdate, Firing, Requester, Severity, Silence, Timestamp,
};
use crate::store::{NewAlert, Store, StoreError};
use crate::sync::lock;
pub use sink::{JournalSink, Sink, SinkError, WebhookSink};

#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("no firing alert has the key {0:?}")]
    NoSuchAlert(String),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

type Result<T> = std::result::Result<T, AlertsError>;

/// `[alerts]`: where alerts go besides the state DB and the journal.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// POST each alert change as JSON here.
    #[serde(deserialize_with = "webhook_url")]
    pub webhook: Option<String>,
}

/// A URL the webhook sink can POST to, checked by the sink itself so the two never
/// disagree.
fn webhook_url<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<String>, D::Error> {
    let url = String::deserialize(d)?;
    sink::check_webhook_url(&url).map_err(serde::de::Error::custom)?;
    Ok(Some(url))
}

/// Who asks for a silence, for the audit trail (the same fields as an operator's action).
#[derive(Debug, Clone)]
pub struct SilenceRequest {
    pub target: String,
    pub duration: Duration,
    pub reason: String,
    pub by: Requester,
}

/// The alerts part: cheap to clone, shared by the rules tick, the D-Bus API and the
/// outbox task.
#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

struct Inner {
    /// A connection of its own to the state DB (WAL lets it share the file with the
    /// engine's), so alert traffic never waits on the engine's lock.
    store: Mutex<Store>,
    sinks: Vec<Arc<dyn Sink>>,
    /// Wakes the outbox task when rows are queued.
    wake: tokio::sync::Notify,
    /// Every firing and resolution, sent once the state DB holds it (silenced ones too:
    /// a silence holds back the sinks, not the agent's own views).
    changes: tokio::sync::broadcast::Sender<AlertChange>,
}

impl Alerts {
    /// Opens the state DB at `db` with these sinks. Call [`Alerts::start_delivery`] to
    /// have queued changes sent.
    pub fn open(db: &Path, sinks: Vec<Arc<dyn Sink>>) -> Result<Alerts> {
        let store = Store::open(db)?.observe_writes(crate::selfmetrics::record_db_write);
        Ok(Alerts::with_store(store, sinks))
    }

    pub fn with_store(store: Store, sinks: Vec<Arc<dyn Sink>>) -> Alerts {
        Alerts {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                sinks,
                wake: tokio::sync::Notify::new(),
                changes: tokio::sync::broadcast::channel(256).0,
            }),
        }
    }

    /// The sinks `[alerts]` asks for: the journal always, the webhook when configured.
    pub fn sinks_from_config(config: &AlertsConfig) -> Result<Vec<Arc<dyn Sink>>> {
        let mut sinks: Vec<Arc<dyn Sink>> = vec![Arc::new(JournalSink)];
        if let Some(url) = &config.webhook {
            sinks.push(Arc::new(WebhookSink::new(url)?));
        }
        Ok(sinks)
    }

    /// Starts the outbox task (on the current tokio runtime): it delivers queued changes
    /// now and whenever more are queued, retries failures with backoff, and sends changes
    /// a silence held back once it expires.
    pub fn start_delivery(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(outbox::deliver_forever(self.clone()))
    }

    /// One rule tick: `evaluated` are the (rule, run) pairs the rules looked at, `firings`
    /// those that fired. A new firing opens an alert, a repeat updates it (no new
    /// notification), and an evaluated pair that did not fire resolves its alert.
    pub fn observe(
        &self,
        evaluated: &[(String, String)],
        firings: &[Firing],
    ) -> Result<Vec<AlertUpdate>> {
        let new: Vec<NewAlert<'_>> = firings
            .iter()
            .map(|f| NewAlert {
                key: alert_key(&f.rule, Some(&f.run)),
                rule: &f.rule,
                run: Some(&f.run),
                workflow: Some(&f.workflow),
                severity: f.severity,
                summary: &f.summary,
            })
            .collect();
        let resolve: Vec<String> = evaluated
            .iter()
            .map(|(rule, run)| alert_key(rule, Some(run)))
            .collect();
        self.apply(&new, &resolve, Timestamp::now())
    }

    /// drover's own alert (a rule file that fails to compile: `raise("rules-load",
    /// Some(file), …)`), deduplicated like a rule's. `run` may name something other than a
    /// run; the workflow is filled in when it is one.
    pub fn raise(
        &self,
        rule: &str,
        run: Option<&str>,
        severity: Severity,
        summary: &str,
    ) -> Result<AlertUpdate> {
        if rule.trim().is_empty() {
            return Err(AlertsError::InvalidArgument(
                "an alert needs a rule name".into(),
            ));
        }
        let run = run.filter(|r| !r.is_empty());
        let new = NewAlert {
            key: alert_key(rule, run),
            rule,
            run,
            workflow: None,
            severity,
            summary,
        };
        let mut updates = self.apply(&[new], &[], Timestamp::now())?;
        updates
            .pop()
            .ok_or_else(|| AlertsError::InvalidArgument("the alert was not recorded".into()))
    }

    /// Resolves the firing alert with this key.
    pub fn resolve(&self, key: &str) -> Result<AlertUpdate> {
        let mut updates = self.apply(&[], &[key.to_owned()], Timestamp::now())?;
        updates
            .pop()
            .ok_or_else(|| AlertsError::NoSuchAlert(key.to_owned()))
    }

    /// Resolves every firing alert of `run` (for when it ends: its rules stop looking at
    /// it, so `observe` would never resolve them).
    pub fn resolve_run(&self, run: &str) -> Result<Vec<AlertUpdate>> {
        let keys: Vec<String> = self
            .alerts(false)?
            .into_iter()
            .filter(|a| a.run.as_deref() == Some(run))
            .map(|a| a.key)
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.apply(&[], &keys, Timestamp::now())
    }

    /// Silences a rule or a run for `request.duration`; recorded with the audit record in
    /// one transaction.
    pub fn silence(&self, request: &SilenceRequest) -> Result<Silence> {
        let target = request.target.trim();
        if target.is_empty() {
            return Err(AlertsError::InvalidArgument(
                "a silence needs a rule name or a run id".into(),
            ));
        }
        if request.duration.is_zero() {
            return Err(AlertsError::InvalidArgument(
                "a silence needs a duration above zero".into(),
            ));
        }
        // Its end is a timestamp: beyond the bound it could not be written down.
        crate::quantity::bounded_duration(request.duration)
            .map_err(|e| AlertsError::InvalidArgument(format!("a silence's duration is {e}")))?;
        let now = Timestamp::now();
        let until = now.plus(request.duration);
        let silence = Silence {
            id: 0,
            target: target.to_owned(),
            until,
            reason: request.reason.clone(),
            created_by: request.by.requested_by.clone(),
            created_at: now,
        };
        let audit = ActionRecord {
            at: now,
            detail: format!(
                "silenced until {until} ({}){}",
                humantime::format_duration(request.duration),
                if request.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", request.reason)
                }
            ),
            ..ActionRecord::new(&request.by, target, "silence")
        };
        let silence = self.store().add_silence(&silence, &audit)?;
        tracing::info!(
            drover_event = "silence",
            "alerts of {} silenced until {} by {}",
            silence.target,
            silence.until,
            silence.created_by
        );
        Ok(silence)
    }

    /// Every alert that fires or resolves from now on, as the state DB records it.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<AlertChange> {
        self.inner.changes.subscribe()
    }

    /// Firing alerts (or every alert with `all`), newest first.
    pub fn alerts(&self, all: bool) -> Result<Vec<Alert>> {
        Ok(self.store().alerts(all, Timestamp::now())?)
    }

    /// Silences in force (or every silence with `all`), newest first.
    pub fn silences(&self, all: bool) -> Result<Vec<Silence>> {
        Ok(self.store().silences(all, Timestamp::now())?)
    }

    fn apply(
        &self,
        new: &[NewAlert<'_>],
        resolve: &[String],
        now: Timestamp,
    ) -> Result<Vec<AlertUpdate>> {
        let names = self.sink_names();
        let updates = self.store().observe_alerts(new, resolve, &names, now)?;
        if updates.iter().any(|u| u.queued) {
            self.inner.wake.notify_one();
        }
        for update in &updates {
            if let Some(change) = update.change {
                let _ = self.inner.changes.send(AlertChange {
                    change,
                    alert: update.alert.clone(),
                });
            }
            if let (Some(change), false) = (update.change, update.queued) {
                // Held back by a silence: kept in the DB, said only at debug level.
                tracing::debug!(
                    drover_event = "alert-silenced",
                    "alert {} {} (silenced until {:?})",
                    update.alert.key,
                    change.as_str(),
                    update.alert.silenced_until.map(|t| t.to_string())
                );
            }
        }
        Ok(updates)
    }

    fn sink_names(&self) -> Vec<&str> {
        self.inner.sinks.iter().map(|s| s.name()).collect()
    }

    fn sink(&self, name: &str) -> Option<&Arc<dyn Sink>> {
        self.inner.sinks.iter().find(|s| s.name() == name)
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves the connection usable: each write is a
        // transaction that either committed or rolled back.
        lock(&self.inner.store)
    }
}

/// `<rule>/<run>`, or the rule alone for an alert about no run.
pub fn alert_key(rule: &str, run: Option<&str>) -> String {
    match run.filter(|r| !r.is_empty()) {
        Some(run) => format!("{rule}/{run}"),
        None => rule.to_owned(),
    }
}

#[cfg(test)]
mod tests;
