//! Alerts, silences and the outbox of alert changes waiting for their sinks.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, Transaction, params};

use super::checkpoints::insert_action;
use super::{Result, Store, StoreError, StoreReader, to_json};
use crate::model::{
    ActionRecord, Alert, AlertState, AlertUpdate, Change, OutboxItem, Severity, Silence, Timestamp,
    parse_severity, severity_str,
};

/// An alert as a rule (or drover) raises it; see `Store::observe_alerts`.
pub struct NewAlert<'a> {
    pub key: String,
    pub rule: &'a str,
    pub run: Option<&'a str>,
    /// Looked up from the runs table when `None` and `run` names a run.
    pub workflow: Option<&'a str>,
    pub severity: Severity,
    pub summary: &'a str,
}

impl Store {
    /// One unit of alert work, in one transaction: each of `new` opens a firing alert or
    /// updates the one firing with its key (a repeat: last seen, count, summary, severity);
    /// each key of `resolve` not among `new` resolves its firing alert. A change whose
    /// alert no silence covers is queued for every one of `sinks`.
    pub fn observe_alerts(
        &mut self,
        new: &[NewAlert<'_>],
        resolve: &[String],
        sinks: &[&str],
        now: Timestamp,
    ) -> Result<Vec<AlertUpdate>> {
        let tx = self.write()?;
        // Few alerts fire at once, while every rule is evaluated over every run each tick:
        // one read of the firing ones, not a lookup per (rule, run).
        let firing: HashMap<String, i64> = tx
            .prepare_cached("SELECT key, id FROM alerts WHERE state = 'firing'")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut changed = Vec::new();
        for alert in new {
            if let Some(&id) = firing.get(&alert.key) {
                tx.prepare_cached(
                    "UPDATE alerts SET last_seen = ?2, count = count + 1, summary = ?3, severity = ?4
                     WHERE id = ?1",
                )?
                .execute(params![
                        id,
                        now.0,
                        alert.summary,
                        severity_str(alert.severity)
                    ],
                )?;
                changed.push((id, None));
                continue;
            }
            let workflow = match (alert.workflow, alert.run) {
                (Some(w), _) => Some(w.to_owned()),
                (None, Some(run)) => tx
                    .query_row("SELECT workflow FROM runs WHERE id = ?1", [run], |r| {
                        r.get(0)
                    })
                    .optional()?,
                (None, None) => None,
            };
            tx.execute(
                "INSERT INTO alerts (key, rule, run_id, workflow, severity, summary, state,
                                     first_seen, last_seen, count)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'firing', ?7, ?7, 1)",
                params![
                    alert.key,
                    alert.rule,
                    alert.run,
                    workflow,
                    severity_str(alert.severity),
                    alert.summary,
                    now.0
                ],
            )?;
            changed.push((tx.last_insert_rowid(), Some(Change::Firing)));
        }
        for key in resolve {
            if new.iter().any(|a| &a.key == key) {
                continue;
            }
            if let Some(&id) = firing.get(key) {
                tx.prepare_cached(
                    "UPDATE alerts SET state = 'resolved', resolved_at = ?2 WHERE id = ?1",
                )?
                .execute(params![id, now.0])?;
                changed.push((id, Some(Change::Resolved)));
            }
        }
        let mut updates = Vec::with_capacity(changed.len());
        for (id, change) in changed {
            let queued = change.is_some() && queue_alert(&tx, id, sinks, now)?;
            updates.push(AlertUpdate {
                alert: alert_by_id(&tx, id, now)?,
                change,
                queued,
            });
        }
        tx.commit()?;
        Ok(updates)
    }

    /// Queues the changes silences held back and no longer do (a firing alert never sent,
    /// or the resolve of one that was); returns those alerts.
    pub fn release_alerts(&mut self, sinks: &[&str], now: Timestamp) -> Result<Vec<Alert>> {
        let tx = self.write()?;
        let ids: Vec<i64> = tx
            .prepare_cached(
                "SELECT id FROM alerts
                 WHERE (state = 'firing' AND notified IS NOT 'firing') OR (state = 'resolved' AND notified = 'firing')
                 ORDER BY id",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut released = Vec::new();
        for id in ids {
            if queue_alert(&tx, id, sinks, now)? {
                released.push(alert_by_id(&tx, id, now)?);
            }
        }
        tx.commit()?;
        Ok(released)
    }

    /// Records a silence and its audit record in one transaction; returns it with its id.
    pub fn add_silence(&mut self, silence: &Silence, audit: &ActionRecord) -> Result<Silence> {
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO silences (target, until, reason, created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                silence.target,
                silence.until.0,
                silence.reason,
                silence.created_by,
                silence.created_at.0
            ],
        )?;
        let mut stored = silence.clone();
        stored.id = tx.last_insert_rowid();
        insert_action(&tx, audit)?;
        tx.commit()?;
        Ok(stored)
    }

    /// A failed delivery: the row waits until `next_try_at`.
    pub fn outbox_failed(
        &mut self,
        id: i64,
        attempts: u32,
        next_try_at: Timestamp,
        error: &str,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE outbox SET attempts = ?2, next_try_at = ?3, last_error = ?4 WHERE id = ?1",
            params![id, attempts, next_try_at.0, error],
        )?;
        Ok(())
    }

    /// Delivered (or undeliverable for good): the row goes.
    pub fn outbox_remove(&mut self, id: i64) -> Result<()> {
        self.conn
            .execute("DELETE FROM outbox WHERE id = ?1", [id])?;
        Ok(())
    }
}

impl StoreReader {
    /// Firing alerts (every alert with `all`), newest first.
    pub fn alerts(&self, all: bool, now: Timestamp) -> Result<Vec<Alert>> {
        let rows: Vec<AlertRow> = self.query_all(
            &format!(
                "SELECT {ALERT_COLUMNS} FROM alerts a WHERE ?2 OR a.state = 'firing' ORDER BY a.id DESC"
            ),
            params![now.0, all],
            alert_row,
        )?;
        rows.into_iter().map(AlertRow::into_alert).collect()
    }

    /// Silences in force at `now` (every silence with `all`), newest first.
    pub fn silences(&self, all: bool, now: Timestamp) -> Result<Vec<Silence>> {
        self.query_all(
            "SELECT id, target, until, reason, created_by, created_at FROM silences
             WHERE ?2 OR until > ?1 ORDER BY id DESC",
            params![now.0, all],
            |r| {
                Ok(Silence {
                    id: r.get(0)?,
                    target: r.get(1)?,
                    until: Timestamp(r.get(2)?),
                    reason: r.get(3)?,
                    created_by: r.get(4)?,
                    created_at: Timestamp(r.get(5)?),
                })
            },
        )
    }

    /// Outbox rows due at `now`, oldest first: only the oldest row of each alert and
    /// sink, so a change is never delivered before the one it follows.
    pub fn outbox_due(&self, now: Timestamp, limit: usize) -> Result<Vec<OutboxItem>> {
        let ids: Vec<i64> = self.query_all(
            "SELECT o.id FROM outbox o
             WHERE o.next_try_at <= ?1
               AND o.id = (SELECT MIN(id) FROM outbox WHERE sink = o.sink AND key = o.key)
             ORDER BY o.id LIMIT ?2",
            params![now.0, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| r.get(0),
        )?;
        ids.into_iter().map(|id| self.outbox_item(id)).collect()
    }

    /// When the earliest row that may be delivered next is due.
    pub fn outbox_next_try(&self) -> Result<Option<Timestamp>> {
        Ok(self
            .conn
            .query_row(
                "SELECT MIN(o.next_try_at) FROM outbox o
                 WHERE o.id = (SELECT MIN(id) FROM outbox WHERE sink = o.sink AND key = o.key)",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )?
            .map(Timestamp))
    }

    /// Every outbox row, oldest first (for tests and diagnostics).
    pub fn outbox(&self) -> Result<Vec<OutboxItem>> {
        let ids: Vec<i64> =
            self.query_all("SELECT id FROM outbox ORDER BY id", [], |r| r.get(0))?;
        ids.into_iter().map(|id| self.outbox_item(id)).collect()
    }

    fn outbox_item(&self, id: i64) -> Result<OutboxItem> {
        let (sink, key, change, json, attempts, next, last_error): (
            String,
            String,
            String,
            String,
            i64,
            i64,
            Option<String>,
        ) = self.conn.query_row(
            "SELECT sink, key, change, alert_json, attempts, next_try_at, last_error
             FROM outbox WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )?;
        let corrupt = StoreError::corrupt(&key);
        Ok(OutboxItem {
            id,
            change: Change::parse(&change)
                .ok_or_else(|| corrupt(format!("outbox change {change:?}")))?,
            alert: serde_json::from_str(&json)
                .map_err(|e| corrupt(format!("outbox alert: {e}")))?,
            sink,
            key: key.clone(),
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            next_try_at: Timestamp(next),
            last_error,
        })
    }
}

/// The columns an `Alert` is read from; `?1` is now, for the silence in force.
const ALERT_COLUMNS: &str = "a.key, a.rule, a.run_id, a.workflow, a.severity, a.summary, a.state,
    a.first_seen, a.last_seen, a.resolved_at, a.count,
    (SELECT MAX(s.until) FROM silences s
      WHERE (s.target = a.rule OR s.target = a.run_id) AND s.until > ?1)";

struct AlertRow {
    key: String,
    rule: String,
    run: Option<String>,
    workflow: Option<String>,
    severity: String,
    summary: String,
    state: String,
    first_seen: i64,
    last_seen: i64,
    resolved_at: Option<i64>,
    count: i64,
    silenced_until: Option<i64>,
}

fn alert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlertRow> {
    Ok(AlertRow {
        key: r.get(0)?,
        rule: r.get(1)?,
        run: r.get(2)?,
        workflow: r.get(3)?,
        severity: r.get(4)?,
        summary: r.get(5)?,
        state: r.get(6)?,
        first_seen: r.get(7)?,
        last_seen: r.get(8)?,
        resolved_at: r.get(9)?,
        count: r.get(10)?,
        silenced_until: r.get(11)?,
    })
}

impl AlertRow {
    fn into_alert(self) -> Result<Alert> {
        let corrupt = StoreError::corrupt(&self.key);
        let severity = parse_severity(&self.severity)
            .ok_or_else(|| corrupt(format!("alert severity {:?}", self.severity)))?;
        let state = match self.state.as_str() {
            "firing" => AlertState::Firing,
            "resolved" => AlertState::Resolved,
            other => return Err(corrupt(format!("alert state {other:?}"))),
        };
        Ok(Alert {
            key: self.key,
            rule: self.rule,
            run: self.run,
            workflow: self.workflow,
            severity,
            summary: self.summary,
            state,
            first_seen: Timestamp(self.first_seen),
            last_seen: Timestamp(self.last_seen),
            resolved_at: self.resolved_at.map(Timestamp),
            count: u64::try_from(self.count).unwrap_or(0),
            silenced_until: self.silenced_until.map(Timestamp),
        })
    }
}

fn alert_by_id(tx: &Transaction<'_>, id: i64, now: Timestamp) -> Result<Alert> {
    tx.query_row(
        &format!("SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.id = ?2"),
        params![now.0, id],
        alert_row,
    )?
    .into_alert()
}

/// Queues alert `id`'s state for every sink unless a silence covers it or the sinks
/// already have it (or never had its firing, for a resolve); true if queued.
fn queue_alert(tx: &Transaction<'_>, id: i64, sinks: &[&str], now: Timestamp) -> Result<bool> {
    let alert = alert_by_id(tx, id, now)?;
    if alert.silenced_until.is_some() {
        return Ok(false);
    }
    let notified: Option<String> =
        tx.query_row("SELECT notified FROM alerts WHERE id = ?1", [id], |r| {
            r.get(0)
        })?;
    let change = Change::from(alert.state);
    let due = match change {
        Change::Firing => notified.as_deref() != Some("firing"),
        Change::Resolved => notified.as_deref() == Some("firing"),
    };
    if !due {
        return Ok(false);
    }
    let json = to_json(&alert.key, &alert)?;
    for sink in sinks {
        tx.execute(
            "INSERT INTO outbox (sink, key, change, alert_json, created_at, next_try_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![sink, alert.key, change.as_str(), json, now.0],
        )?;
    }
    tx.execute(
        "UPDATE alerts SET notified = ?2 WHERE id = ?1",
        params![id, change.as_str()],
    )?;
    Ok(true)
}
