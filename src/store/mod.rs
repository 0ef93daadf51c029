//! The state DB (SQLite in WAL mode): runs, step attempts and every transition with who
//! asked and why. Only this module runs SQL; each unit of work is one transaction.
//!
//! [`Store`] writes (the engine, the operations, the alerts part for its own rows, the
//! monitor for its history); [`StoreReader`] only queries, and is what a `Store` derefs
//! to, so a reader cannot write by mistake. The parts: `schema` (migrations), `runs`
//! (runs, attempts, transitions, restarts), `kills` (kills, critical spans),
//! `checkpoints` (checkpoints, operators' actions), `alerts` (alerts, silences, outbox),
//! `metrics` (the monitor's history) and `history` (what the reports read).

mod alerts;
mod checkpoints;
mod history;
mod kills;
mod metrics;
mod runs;
mod schema;
#[cfg(test)]
mod tests;
mod tokens;

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, TransactionBehavior};

pub use alerts::NewAlert;
pub use history::CreatedRun;
pub use metrics::MetricsLog;
#[cfg(test)]
pub use runs::TEST_USER;
pub use runs::{AttemptEnd, NewAttempt, NewRun, RunQuery, Transition};
pub use tokens::NewTokenRow;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state DB {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state DB: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state DB holds a malformed record for run {run}: {reason}")]
    Corrupt { run: String, reason: String },
    #[error("run {0} is not in the state DB")]
    NoSuchRun(String),
}

/// What a state-DB write came to, as told to the store's write observer: how long a
/// committed one took, or why one failed.
pub type WriteOutcome<'a> = std::result::Result<Duration, &'a rusqlite::Error>;

type Result<T> = std::result::Result<T, StoreError>;
impl StoreError {
    /// The state DB cannot be written for now (a full disk, an I/O error, a lock held too
    /// long), not that the write is wrong: the same write may succeed later, so a caller
    /// keeps what it was doing and tries again.
    pub fn is_transient(&self) -> bool {
        use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked, DiskFull, SystemIoFailure};
        let (StoreError::Sql(rusqlite::Error::SqliteFailure(e, _))
        | StoreError::Open {
            source: rusqlite::Error::SqliteFailure(e, _),
            ..
        }) = self
        else {
            return false;
        };
        matches!(
            e.code,
            DiskFull | SystemIoFailure | DatabaseBusy | DatabaseLocked
        )
    }

    /// Makes `Corrupt` errors about `run` (or an alert's key), for `map_err`.
    fn corrupt(run: &str) -> impl Fn(String) -> StoreError + Copy + '_ {
        move |reason| StoreError::Corrupt {
            run: run.to_owned(),
            reason,
        }
    }
}

/// A connection to the state DB that only queries: what readers (the monitor's sampling,
/// the rules' history, queries) are given. Its connection is `query_only`.
pub struct StoreReader {
    conn: Connection,
}

/// A connection to the state DB that writes, each unit of work in one IMMEDIATE
/// transaction; it reads as a [`StoreReader`] too.
pub struct Store {
    reader: StoreReader,
    /// Told how each write went (the agent's self-metrics and health); see
    /// [`Store::observe_writes`].
    observe_write: fn(WriteOutcome<'_>),
}

impl std::ops::Deref for Store {
    type Target = StoreReader;
    fn deref(&self) -> &StoreReader {
        &self.reader
    }
}

/// A write transaction, timed from begin to commit for the store's write observer (the
/// agent's `drover_db_write_duration_seconds`). Dropped without `commit`, it rolls back and
/// reports nothing.
struct TimedTx<'c> {
    tx: Transaction<'c>,
    began: Instant,
    observe: fn(WriteOutcome<'_>),
}

impl<'c> std::ops::Deref for TimedTx<'c> {
    type Target = Transaction<'c>;
    fn deref(&self) -> &Transaction<'c> {
        &self.tx
    }
}

impl TimedTx<'_> {
    /// Commits; the observer hears how it went. In WAL mode the pages reach the disk
    /// here, so this is where a full disk shows.
    fn commit(self) -> rusqlite::Result<()> {
        let (observe, began) = (self.observe, self.began);
        match self.tx.commit() {
            Ok(()) => {
                observe(Ok(began.elapsed()));
                Ok(())
            }
            Err(e) => {
                observe(Err(&e));
                Err(e)
            }
        }
    }
}

/// Opens `path` with the settings every connection shares.
fn connect(path: &Path) -> Result<Connection> {
    let open_err = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    let conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    // NORMAL in WAL mode: a committed transition survives the agent's crash (what
    // re-adoption needs) without an fsync per transition; a power loss that could drop
    // the last ones also ends the steps they describe.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(open_err)?;
    // Every statement stays prepared: the default 16 is fewer than the engine uses,
    // and re-parsing SQL each time was the most of the monitor's cost.
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

impl Store {
    /// Opens (and migrates) the state DB at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        let mut conn = connect(path)?;
        schema::migrate(&mut conn).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Store {
            reader: StoreReader { conn },
            observe_write: |_| {},
        })
    }

    /// Has `observe` told how each write went: how long a committed one took, begin to
    /// commit, or why one could not begin or commit. The store is given the recording
    /// rather than reaching for the agent's registry, so it depends on `model` alone and a
    /// test's store records nothing.
    pub fn observe_writes(self, observe: fn(WriteOutcome<'_>)) -> Store {
        Store {
            observe_write: observe,
            ..self
        }
    }

    /// The read-only side of this connection.
    pub fn reader(&self) -> &StoreReader {
        &self.reader
    }

    /// Begins a write; every write goes through here so its latency is measured.
    fn write(&mut self) -> rusqlite::Result<TimedTx<'_>> {
        let began = Instant::now();
        // IMMEDIATE: the write lock is taken (waiting out `busy_timeout`) before the first
        // read. A deferred transaction that reads and then writes fails at once with
        // SQLITE_BUSY when another connection (the monitor's, a CLI's) committed between.
        let tx = self
            .reader
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .inspect_err(|e| (self.observe_write)(Err(e)))?;
        Ok(TimedTx {
            tx,
            began,
            observe: self.observe_write,
        })
    }
}

impl StoreReader {
    /// Opens a query-only connection to the state DB at `path`, which a [`Store`] has
    /// created and migrated.
    pub fn open(path: &Path) -> Result<StoreReader> {
        let conn = connect(path)?;
        conn.pragma_update(None, "query_only", "ON")
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Ok(StoreReader { conn })
    }

    /// Every row `sql` selects, each mapped by `row` (a record's one mapping from its
    /// columns).
    fn query_all<T, C: FromIterator<T>>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<C> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt
            .query_map(params, row)?
            .collect::<rusqlite::Result<C>>()?;
        Ok(rows)
    }

    /// Records kept as JSON (`run_id`, `record_json` columns), of one run or all.
    fn query_records<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        run: Option<&str>,
        what: &str,
    ) -> Result<Vec<T>> {
        let rows: Vec<(String, String)> =
            self.query_all(sql, [run], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.into_iter()
            .map(|(run, json)| {
                serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                    run,
                    reason: format!("{what}: {e}"),
                })
            })
            .collect()
    }
}

fn to_json(run: &str, value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt {
        run: run.to_owned(),
        reason: e.to_string(),
    })
}

/// SQLite integers are signed; counts beyond `i64::MAX` saturate.
fn sql_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
