//! Checkpoints and operators' actions: a run's checkpoints, and the audit trail of
//! restarts, rollbacks, checkpoints, silences and reloads asked for.

use rusqlite::{Transaction, params};

use super::{Result, Store, StoreReader, sql_count, to_json};
use crate::model::{ActionRecord, CheckpointRecord, Timestamp};

/// A checkpoint's columns, in the order `checkpoint_row` reads and `add_checkpoint` writes.
macro_rules! checkpoint_columns {
    () => {
        "run_id, n, label, reason, step, next_step, created_at, reference, commit_id,
         files_changed, took_ms"
    };
}

/// A `checkpoints` row, selected with `checkpoint_columns!()`.
fn checkpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CheckpointRecord> {
    Ok(CheckpointRecord {
        run: r.get(0)?,
        n: r.get(1)?,
        label: r.get(2)?,
        reason: r.get(3)?,
        step: r.get(4)?,
        next_step: r.get(5)?,
        created_at: Timestamp(r.get(6)?),
        reference: r.get(7)?,
        commit: r.get(8)?,
        files_changed: r.get(9)?,
        took_ms: r.get::<_, i64>(10)?.max(0) as u64,
    })
}

impl Store {
    pub fn add_checkpoint(&mut self, c: &CheckpointRecord) -> Result<()> {
        let tx = self.write()?;
        tx.execute(
            concat!(
                "INSERT INTO checkpoints (",
                checkpoint_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ),
            params![
                c.run,
                c.n,
                c.label,
                c.reason,
                c.step,
                c.next_step,
                c.created_at.0,
                c.reference,
                c.commit,
                c.files_changed,
                sql_count(c.took_ms)
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records an operator's action (or its refusal) in the audit trail.
    pub fn record_action(&mut self, action: &ActionRecord) -> Result<i64> {
        let tx = self.write()?;
        let id = insert_action(&tx, action)?;
        tx.commit()?;
        Ok(id)
    }
}

impl StoreReader {
    /// The number the run's next checkpoint gets.
    pub fn next_checkpoint_number(&self, run: &str) -> Result<u32> {
        let max: Option<u32> = self.conn.query_row(
            "SELECT MAX(n) FROM checkpoints WHERE run_id = ?1",
            [run],
            |r| r.get(0),
        )?;
        Ok(max.unwrap_or(0) + 1)
    }

    /// The run's checkpoints, oldest first.
    pub fn checkpoints(&self, run: &str) -> Result<Vec<CheckpointRecord>> {
        self.query_all(
            concat!(
                "SELECT ",
                checkpoint_columns!(),
                " FROM checkpoints WHERE run_id = ?1 ORDER BY n"
            ),
            [run],
            checkpoint_row,
        )
    }

    /// Restarts, rollbacks and checkpoints asked for, oldest first: of one run, or all.
    pub fn actions(&self, run: Option<&str>) -> Result<Vec<ActionRecord>> {
        self.query_records(
            "SELECT run_id, record_json FROM actions WHERE ?1 IS NULL OR run_id = ?1 ORDER BY id",
            run,
            "action record",
        )
    }
}

pub(super) fn insert_action(tx: &Transaction<'_>, action: &ActionRecord) -> Result<i64> {
    tx.execute(
        "INSERT INTO actions (run_id, action, result, at, record_json) VALUES (?1, ?2, ?3, ?4, '{}')",
        params![action.run, action.action, action.result, action.at.0],
    )?;
    let id = tx.last_insert_rowid();
    let mut stored = action.clone();
    stored.id = id;
    tx.execute(
        "UPDATE actions SET record_json = ?2 WHERE id = ?1",
        params![id, to_json(&action.run, &stored)?],
    )?;
    Ok(id)
}
