//! Kills and critical spans: the kill audit trail (every kill requested, refused, done or
//! seen from outside) and the spans that hold a kill off.

use std::collections::HashMap;

use rusqlite::{Transaction, params};

use super::runs::{move_run, run_state};
use super::{Result, Store, StoreReader, to_json};
use crate::model::{KillRecord, RunState, Timestamp};

impl Store {
    /// Records a kill request and moves its run to `stopping` in one transaction; `None`
    /// (and nothing written) when the run is not running or pending.
    pub fn start_kill(&mut self, record: &KillRecord) -> Result<Option<i64>> {
        let tx = self.write()?;
        let moved = move_run(
            &tx,
            &record.run,
            &[RunState::Pending, RunState::Running],
            RunState::Stopping,
            &record.requested_by,
            Some(&record.reason),
        )?;
        if !moved {
            return Ok(None);
        }
        let id = insert_kill(&tx, record)?;
        tx.commit()?;
        Ok(Some(id))
    }

    /// Records a kill that needs no state change: a refusal, or one done outside drover.
    pub fn record_kill(&mut self, record: &KillRecord) -> Result<i64> {
        let tx = self.write()?;
        let id = insert_kill(&tx, record)?;
        tx.commit()?;
        Ok(id)
    }

    /// Stores the kill's progress or outcome, and moves its run to `to` if given.
    pub fn update_kill(&mut self, record: &KillRecord, to: Option<RunState>) -> Result<()> {
        let tx = self.write()?;
        tx.execute(
            "UPDATE kills SET result = ?2, record_json = ?3 WHERE id = ?1",
            params![
                record.id,
                record.result.as_str(),
                to_json(&record.run, record)?
            ],
        )?;
        if let Some(to) = to {
            let from = [RunState::Stopping, RunState::Killing];
            move_run(&tx, &record.run, &from, to, "drover", Some(&record.reason))?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Opens a critical span; refused (`false`) once a kill of the run has begun or ended.
    pub fn enter_critical(&mut self, run: &str, label: &str, who: &str) -> Result<bool> {
        let tx = self.write()?;
        if run_state(&tx, run)? != RunState::Running.as_str() {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO critical_spans (run_id, label, who, entered_at) VALUES (?1, ?2, ?3, ?4)",
            params![run, label, who, Timestamp::now().0],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Closes the oldest open span of `run` with `label`; `false` if none was open.
    pub fn leave_critical(&mut self, run: &str, label: &str) -> Result<bool> {
        let tx = self.write()?;
        let closed = tx.execute(
            "UPDATE critical_spans SET left_at = ?3
             WHERE id = (SELECT MIN(id) FROM critical_spans
                         WHERE run_id = ?1 AND label = ?2 AND left_at IS NULL)",
            params![run, label, Timestamp::now().0],
        )?;
        tx.commit()?;
        Ok(closed > 0)
    }
}

impl StoreReader {
    /// Kill records, oldest first: of one run, or all.
    pub fn kills(&self, run: Option<&str>) -> Result<Vec<KillRecord>> {
        self.query_records(
            "SELECT run_id, record_json FROM kills WHERE ?1 IS NULL OR run_id = ?1 ORDER BY id",
            run,
            "kill record",
        )
    }

    /// The run's latest kill record, if any.
    /// The latest kill record of each of `runs` that has one.
    pub(super) fn latest_kills(&self, runs: &str) -> Result<HashMap<String, KillRecord>> {
        let latest: Vec<KillRecord> = self.query_records(
            "SELECT run_id, record_json FROM kills WHERE id IN
                 (SELECT MAX(id) FROM kills WHERE run_id IN (SELECT value FROM json_each(?1))
                  GROUP BY run_id)",
            Some(runs),
            "kill record",
        )?;
        Ok(latest.into_iter().map(|k| (k.run.clone(), k)).collect())
    }

    /// Labels of the run's open critical spans.
    pub fn open_critical_spans(&self, run: &str) -> Result<Vec<String>> {
        self.query_all(
            "SELECT label FROM critical_spans WHERE run_id = ?1 AND left_at IS NULL ORDER BY id",
            [run],
            |r| r.get(0),
        )
    }
}

fn insert_kill(tx: &Transaction<'_>, record: &KillRecord) -> Result<i64> {
    tx.execute(
        "INSERT INTO kills (run_id, result, requested_at, record_json) VALUES (?1, ?2, ?3, '{}')",
        params![record.run, record.result.as_str(), record.requested_at.0],
    )?;
    let id = tx.last_insert_rowid();
    let mut stored = record.clone();
    stored.id = id;
    tx.execute(
        "UPDATE kills SET record_json = ?2 WHERE id = ?1",
        params![id, to_json(&record.run, &stored)?],
    )?;
    Ok(id)
}
