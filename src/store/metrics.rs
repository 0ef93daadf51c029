//! The monitor's downsampled history: one row per run, step and period, written through
//! a [`MetricsLog`], the monitor's connection, which can write nothing else.

use std::path::Path;

use rusqlite::params;

use super::{Result, Store, StoreReader, sql_count};
use crate::model::{MetricsMinute, Timestamp};

/// A history row's columns, in the order `metrics_row` reads and `write_metrics` writes.
macro_rules! metrics_columns {
    () => {
        "run_id, workflow, step, minute, samples, cpu_avg, cpu_max, memory_max, tasks_max,
         io_read_bytes, io_write_bytes, output_bytes, output_lines, idle_max, tokens_in,
         tokens_out, cost_usd"
    };
}

/// A `metrics_history` row, selected with `metrics_columns!()`.
fn metrics_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MetricsMinute> {
    let count =
        |i: usize| -> rusqlite::Result<u64> { Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0)) };
    let opt = |i: usize| -> rusqlite::Result<Option<u64>> {
        Ok(r.get::<_, Option<i64>>(i)?
            .map(|n| u64::try_from(n).unwrap_or(0)))
    };
    Ok(MetricsMinute {
        run: r.get(0)?,
        workflow: r.get(1)?,
        step: r.get(2)?,
        minute: Timestamp(r.get(3)?),
        samples: count(4)?,
        cpu_avg: r.get(5)?,
        cpu_max: r.get(6)?,
        memory_max: opt(7)?,
        tasks_max: opt(8)?,
        io_read_bytes: opt(9)?,
        io_write_bytes: opt(10)?,
        output_bytes: count(11)?,
        output_lines: count(12)?,
        idle_max: r.get(13)?,
        tokens_in: opt(14)?,
        tokens_out: opt(15)?,
        cost_usd: r.get(16)?,
    })
}

/// The monitor's connection to the state DB: it reads like a [`StoreReader`] and writes
/// only `metrics_history`, so sampling can never change a run.
pub struct MetricsLog {
    store: Store,
}

impl std::ops::Deref for MetricsLog {
    type Target = StoreReader;
    fn deref(&self) -> &StoreReader {
        self.store.reader()
    }
}

impl MetricsLog {
    /// Opens (and migrates) the state DB at `path`.
    pub fn open(path: &Path) -> Result<MetricsLog> {
        Ok(MetricsLog {
            store: Store::open(path)?,
        })
    }

    /// See [`Store::observe_writes`].
    pub fn observe_writes(self, observe: fn(super::WriteOutcome<'_>)) -> MetricsLog {
        MetricsLog {
            store: self.store.observe_writes(observe),
        }
    }

    /// Writes the monitor's downsampled rows in one transaction; a row for a period already
    /// written (the same run, step and minute) is replaced.
    pub fn write_metrics(&mut self, rows: &[MetricsMinute]) -> Result<()> {
        let tx = self.store.write()?;
        {
            let mut stmt = tx.prepare_cached(concat!(
                "INSERT OR REPLACE INTO metrics_history (",
                metrics_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
            ))?;
            for r in rows {
                let opt = |n: Option<u64>| n.map(sql_count);
                stmt.execute(params![
                    r.run,
                    r.workflow,
                    r.step,
                    r.minute.0,
                    sql_count(r.samples),
                    r.cpu_avg,
                    r.cpu_max,
                    opt(r.memory_max),
                    opt(r.tasks_max),
                    opt(r.io_read_bytes),
                    opt(r.io_write_bytes),
                    sql_count(r.output_bytes),
                    sql_count(r.output_lines),
                    r.idle_max,
                    opt(r.tokens_in),
                    opt(r.tokens_out),
                    r.cost_usd,
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes history rows for periods that began before `before`; returns how many.
    pub fn prune_metrics(&self, before: Timestamp) -> Result<usize> {
        Ok(self
            .store
            .conn
            .execute("DELETE FROM metrics_history WHERE minute < ?1", [before.0])?)
    }
}

impl StoreReader {
    /// A run's downsampled history, oldest first.
    pub fn metrics_history(&self, run: &str) -> Result<Vec<MetricsMinute>> {
        self.query_all(
            concat!(
                "SELECT ",
                metrics_columns!(),
                " FROM metrics_history WHERE run_id = ?1 ORDER BY minute, step"
            ),
            [run],
            metrics_row,
        )
    }
}
