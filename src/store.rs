//! The state DB (SQLite in WAL mode): runs, step attempts and every transition with who
//! asked and why. Only this module runs SQL; each unit of work is one transaction.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::model::{
    ActionRecord, Alert, AlertState, AlertUpdate, Change, CheckpointRecord, Failure, FailureClass,
    KillRecord, MetricsMinute, OutboxItem, RestartPoint, Run, RunState, Severity, Silence,
    StepAttempt, StepOutput, StepState, StreamReport, Timestamp, parse_severity, severity_str,
};

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

type Result<T> = std::result::Result<T, StoreError>;

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    id            TEXT PRIMARY KEY,
    workflow      TEXT NOT NULL,
    workflow_file TEXT NOT NULL,
    spec_json     TEXT NOT NULL,
    params_json   TEXT NOT NULL,
    state         TEXT NOT NULL,
    worktree      TEXT,
    requested_by  TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    started_at    INTEGER,
    ended_at      INTEGER,
    error         TEXT
);
CREATE TABLE step_attempts (
    run_id     TEXT NOT NULL REFERENCES runs(id),
    idx        INTEGER NOT NULL,
    name       TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    state      TEXT NOT NULL,
    unit       TEXT NOT NULL,
    pid        INTEGER,
    exit_code  INTEGER,
    signal     INTEGER,
    result     TEXT,
    log_path   TEXT NOT NULL,
    output_bytes INTEGER NOT NULL DEFAULT 0,
    output_lines INTEGER NOT NULL DEFAULT 0,
    last_output_at INTEGER,
    started_at INTEGER,
    ended_at   INTEGER,
    PRIMARY KEY (run_id, idx, attempt)
);
CREATE TABLE transitions (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT NOT NULL REFERENCES runs(id),
    step       TEXT,
    attempt    INTEGER,
    from_state TEXT,
    to_state   TEXT NOT NULL,
    at         INTEGER NOT NULL,
    who        TEXT NOT NULL,
    reason     TEXT
);
CREATE INDEX transitions_by_run ON transitions(run_id, seq);
-- The kill audit trail; refusals may name runs that do not exist, hence no foreign key.
CREATE TABLE kills (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       TEXT NOT NULL,
    result       TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    record_json  TEXT NOT NULL
);
CREATE INDEX kills_by_run ON kills(run_id, id);
CREATE TABLE critical_spans (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT NOT NULL REFERENCES runs(id),
    label      TEXT NOT NULL,
    who        TEXT NOT NULL,
    entered_at INTEGER NOT NULL,
    left_at    INTEGER
);
"#,
    r#"
ALTER TABLE runs ADD COLUMN next_attempt_at INTEGER;
ALTER TABLE runs ADD COLUMN restart_json TEXT;
ALTER TABLE runs ADD COLUMN failure_class TEXT;
ALTER TABLE step_attempts ADD COLUMN failure_class TEXT;
ALTER TABLE step_attempts ADD COLUMN failure_evidence TEXT;
ALTER TABLE step_attempts ADD COLUMN session_id TEXT;
ALTER TABLE step_attempts ADD COLUMN agent_json TEXT;
ALTER TABLE step_attempts ADD COLUMN note TEXT;
CREATE TABLE checkpoints (
    run_id        TEXT NOT NULL REFERENCES runs(id),
    n             INTEGER NOT NULL,
    label         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    step          TEXT,
    next_step     INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    reference     TEXT NOT NULL,
    commit_id     TEXT NOT NULL,
    files_changed INTEGER NOT NULL,
    took_ms       INTEGER NOT NULL,
    PRIMARY KEY (run_id, n)
);
-- Restarts, rollbacks and checkpoints asked for by operators; refusals included.
CREATE TABLE actions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL,
    action      TEXT NOT NULL,
    result      TEXT NOT NULL,
    at          INTEGER NOT NULL,
    record_json TEXT NOT NULL
);
CREATE INDEX actions_by_run ON actions(run_id, id);
"#,
    // Alerts, silences and the outbox of alert changes waiting for their sinks.
    r#"
CREATE TABLE alerts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    key         TEXT NOT NULL,
    rule        TEXT NOT NULL,
    run_id      TEXT,
    workflow    TEXT,
    severity    TEXT NOT NULL,
    summary     TEXT NOT NULL,
    state       TEXT NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    resolved_at INTEGER,
    count       INTEGER NOT NULL,
    -- The last state queued for the sinks (NULL: none yet, e.g. silenced from the start).
    notified    TEXT
);
-- At most one firing alert per key: a repeat updates it, a firing after a resolve opens
-- a new one.
CREATE UNIQUE INDEX alerts_firing_key ON alerts(key) WHERE state = 'firing';
CREATE INDEX alerts_unnotified ON alerts(id)
    WHERE (state = 'firing' AND notified IS NOT 'firing') OR (state = 'resolved' AND notified = 'firing');
CREATE TABLE silences (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    target     TEXT NOT NULL,
    until      INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX silences_by_target ON silences(target, until);
CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    sink         TEXT NOT NULL,
    key          TEXT NOT NULL,
    change       TEXT NOT NULL,
    alert_json   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_try_at  INTEGER NOT NULL,
    last_error   TEXT
);
CREATE INDEX outbox_by_sink_key ON outbox(sink, key, id);
"#,
    r#"
-- The monitor's downsampled history: one row per run, step and period (a minute).
CREATE TABLE metrics_history (
    run_id         TEXT NOT NULL,
    workflow       TEXT NOT NULL,
    step           TEXT NOT NULL,
    minute         INTEGER NOT NULL,
    samples        INTEGER NOT NULL,
    cpu_avg        REAL,
    cpu_max        REAL,
    memory_max     INTEGER,
    tasks_max      INTEGER,
    io_read_bytes  INTEGER,
    io_write_bytes INTEGER,
    output_bytes   INTEGER NOT NULL,
    output_lines   INTEGER NOT NULL,
    idle_max       REAL NOT NULL,
    tokens_in      INTEGER,
    tokens_out     INTEGER,
    cost_usd       REAL,
    PRIMARY KEY (run_id, step, minute)
);
CREATE INDEX metrics_history_by_minute ON metrics_history(minute);
CREATE INDEX metrics_history_by_workflow ON metrics_history(workflow, minute);
"#,
];

/// A new run, as the engine creates it.
pub struct NewRun<'a> {
    pub id: &'a str,
    pub workflow: &'a str,
    pub workflow_file: &'a str,
    pub spec_json: &'a str,
    pub params: &'a BTreeMap<String, String>,
    pub requested_by: &'a str,
}

/// The start of a step attempt, as the engine records it before spawning anything.
pub struct NewAttempt<'a> {
    pub run: &'a str,
    pub index: u32,
    pub name: &'a str,
    pub attempt: u32,
    pub unit: &'a str,
    pub log_path: &'a str,
    /// An agent step's Claude Code session.
    pub session_id: Option<&'a str>,
    /// What drover did before the start (a session resumed, a transcript repaired).
    pub note: Option<&'a str>,
}

/// How a step attempt ended.
pub struct AttemptEnd<'a> {
    pub state: StepState,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub result: &'a str,
    pub output: &'a StepOutput,
    pub failure: Option<&'a Failure>,
    pub agent: Option<&'a StreamReport>,
}

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

/// One recorded transition, oldest first.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Transition {
    pub seq: i64,
    pub step: Option<String>,
    pub attempt: Option<u32>,
    pub from: Option<String>,
    pub to: String,
    pub at: Timestamp,
    pub who: String,
    pub reason: Option<String>,
}

/// The columns `run_row` reads, in its order.
macro_rules! run_columns {
    () => {
        "SELECT id, workflow, workflow_file, spec_json, params_json, state, worktree,
                requested_by, created_at, started_at, ended_at, error,
                next_attempt_at, restart_json, failure_class
         FROM runs"
    };
}

/// The states of a run that has not ended (what the agent re-adopts, and monitors).
macro_rules! unfinished_states {
    () => {
        "'pending', 'running', 'stopping', 'killing', 'restarting'"
    };
}

pub struct Store {
    conn: Connection,
    /// Told how long each committed write took (the agent's self-metrics); see
    /// [`Store::observe_writes`].
    observe_write: fn(Duration),
}

/// A write transaction, timed from begin to commit for the store's write observer (the
/// agent's `drover_db_write_duration_seconds`). Dropped without `commit`, it rolls back and
/// reports nothing.
struct TimedTx<'c> {
    tx: Transaction<'c>,
    began: std::time::Instant,
    observe: fn(Duration),
}

impl<'c> std::ops::Deref for TimedTx<'c> {
    type Target = Transaction<'c>;
    fn deref(&self) -> &Transaction<'c> {
        &self.tx
    }
}

impl TimedTx<'_> {
    fn commit(self) -> rusqlite::Result<()> {
        self.tx.commit()?;
        (self.observe)(self.began.elapsed());
        Ok(())
    }
}

impl Store {
    /// Begins a write; every write goes through here so its latency is measured.
    fn write(&mut self) -> rusqlite::Result<TimedTx<'_>> {
        let began = std::time::Instant::now();
        // IMMEDIATE: the write lock is taken (waiting out `busy_timeout`) before the first
        // read. A deferred transaction that reads and then writes fails at once with
        // SQLITE_BUSY when another connection (the monitor's, a CLI's) committed between.
        Ok(TimedTx {
            tx: self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?,
            began,
            observe: self.observe_write,
        })
    }

    /// Has `observe` told how long each committed write took, begin to commit. The store
    /// is given the recording rather than reaching for the agent's registry, so it
    /// depends on `model` alone and a test's store records nothing.
    pub fn observe_writes(self, observe: fn(Duration)) -> Store {
        Store {
            observe_write: observe,
            ..self
        }
    }

    pub fn open(path: &Path) -> Result<Store> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
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
        migrate(&mut conn).map_err(open_err)?;
        // Every statement stays prepared: the default 16 is fewer than the engine uses,
        // and re-parsing SQL each time was the most of the monitor's cost.
        conn.set_prepared_statement_cache_capacity(256);
        Ok(Store {
            conn,
            observe_write: |_| {},
        })
    }

    pub fn create_run(&mut self, run: &NewRun<'_>) -> Result<()> {
        let tx = self.write()?;
        let params_json = serde_json::to_string(run.params).unwrap_or_else(|_| "{}".into());
        tx.execute(
            "INSERT INTO runs (id, workflow, workflow_file, spec_json, params_json, state, requested_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                run.id,
                run.workflow,
                run.workflow_file,
                run.spec_json,
                params_json,
                RunState::Pending.as_str(),
                run.requested_by,
                Timestamp::now().0
            ],
        )?;
        record(
            &tx,
            run.id,
            None,
            None,
            None,
            RunState::Pending.as_str(),
            run.requested_by,
            Some("submitted"),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Moves a run to `to` if it is in one of `from` (returns whether it moved), stamping
    /// start or end times, and records the transition.
    pub fn set_run_state(
        &mut self,
        run: &str,
        from: &[RunState],
        to: RunState,
        who: &str,
        reason: Option<&str>,
    ) -> Result<bool> {
        let tx = self.write()?;
        let moved = move_run(&tx, run, from, to, who, reason)?;
        tx.commit()?;
        Ok(moved)
    }

    pub fn set_worktree(&mut self, run: &str, worktree: &str) -> Result<()> {
        let tx = self.write()?;
        tx.execute(
            "UPDATE runs SET worktree = ?2 WHERE id = ?1",
            params![run, worktree],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn start_attempt(&mut self, attempt: &NewAttempt<'_>) -> Result<()> {
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO step_attempts (run_id, idx, name, attempt, state, unit, log_path, session_id, note)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                attempt.run,
                attempt.index,
                attempt.name,
                attempt.attempt,
                StepState::Starting.as_str(),
                attempt.unit,
                attempt.log_path,
                attempt.session_id,
                attempt.note
            ],
        )?;
        // A scheduled retry is due once its attempt starts.
        tx.execute(
            "UPDATE runs SET next_attempt_at = NULL WHERE id = ?1",
            [attempt.run],
        )?;
        record(
            &tx,
            attempt.run,
            Some(attempt.name),
            Some(attempt.attempt),
            Some(StepState::Pending.as_str()),
            StepState::Starting.as_str(),
            "drover",
            attempt.note,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The start gate is open: the step's process runs inside its scope.
    pub fn attempt_running(&mut self, run: &str, index: u32, attempt: u32, pid: u32) -> Result<()> {
        let tx = self.write()?;
        let name = attempt_name(&tx, run, index, attempt)?;
        tx.execute(
            "UPDATE step_attempts SET state = 'running', pid = ?4, started_at = ?5
             WHERE run_id = ?1 AND idx = ?2 AND attempt = ?3",
            params![run, index, attempt, pid, Timestamp::now().0],
        )?;
        record(
            &tx,
            run,
            Some(&name),
            Some(attempt),
            Some("starting"),
            "running",
            "drover",
            None,
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn end_attempt(
        &mut self,
        run: &str,
        index: u32,
        attempt: u32,
        end: &AttemptEnd<'_>,
    ) -> Result<()> {
        let tx = self.write()?;
        let name = attempt_name(&tx, run, index, attempt)?;
        let from: String = tx.query_row(
            "SELECT state FROM step_attempts WHERE run_id = ?1 AND idx = ?2 AND attempt = ?3",
            params![run, index, attempt],
            |r| r.get(0),
        )?;
        tx.execute(
            "UPDATE step_attempts SET state = ?4, exit_code = ?5, signal = ?6, result = ?7, ended_at = ?8,
                 output_bytes = ?9, output_lines = ?10, last_output_at = ?11,
                 failure_class = ?12, failure_evidence = ?13, agent_json = ?14
             WHERE run_id = ?1 AND idx = ?2 AND attempt = ?3",
            params![
                run,
                index,
                attempt,
                end.state.as_str(),
                end.exit_code,
                end.signal,
                end.result,
                Timestamp::now().0,
                sql_count(end.output.bytes),
                sql_count(end.output.lines),
                end.output.last_output_at.map(|t| t.0),
                end.failure.map(|f| f.class.as_str()),
                end.failure.map(|f| f.evidence.as_str()),
                end.agent.and_then(|a| serde_json::to_string(a).ok())
            ],
        )?;
        record(
            &tx,
            run,
            Some(&name),
            Some(attempt),
            Some(&from),
            end.state.as_str(),
            "drover",
            Some(end.result),
        )?;
        tx.commit()?;
        Ok(())
    }

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
    fn latest_kills(&self, runs: &str) -> Result<HashMap<String, KillRecord>> {
        let latest: Vec<KillRecord> = self.query_records(
            "SELECT run_id, record_json FROM kills WHERE id IN
                 (SELECT MAX(id) FROM kills WHERE run_id IN (SELECT value FROM json_each(?1))
                  GROUP BY run_id)",
            Some(runs),
            "kill record",
        )?;
        Ok(latest.into_iter().map(|k| (k.run.clone(), k)).collect())
    }

    /// Records kept as JSON (`run_id`, `record_json` columns), of one run or all.
    fn query_records<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        run: Option<&str>,
        what: &str,
    ) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt
            .query_map([run], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(run, json)| {
                serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                    run,
                    reason: format!("{what}: {e}"),
                })
            })
            .collect()
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

    /// Labels of the run's open critical spans.
    pub fn open_critical_spans(&self, run: &str) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT label FROM critical_spans WHERE run_id = ?1 AND left_at IS NULL ORDER BY id",
        )?;
        let labels = stmt
            .query_map([run], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(labels)
    }

    /// Schedules the automatic retry of a failed attempt: the run's `next_attempt_at`, and
    /// the decision as a transition of that attempt.
    pub fn schedule_retry(
        &mut self,
        run: &str,
        step: &str,
        attempt: u32,
        at: Timestamp,
        reason: &str,
    ) -> Result<()> {
        let tx = self.write()?;
        tx.execute(
            "UPDATE runs SET next_attempt_at = ?2 WHERE id = ?1",
            params![run, at.0],
        )?;
        record(
            &tx,
            run,
            Some(step),
            Some(attempt),
            Some(StepState::Failed.as_str()),
            "retry-scheduled",
            "drover",
            Some(reason),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Ends a pending or running run as failed, with the class of its failure.
    pub fn fail_run(
        &mut self,
        run: &str,
        class: Option<FailureClass>,
        reason: &str,
    ) -> Result<bool> {
        let tx = self.write()?;
        let from = [RunState::Pending, RunState::Running];
        let moved = move_run(&tx, run, &from, RunState::Failed, "drover", Some(reason))?;
        if moved {
            tx.execute(
                "UPDATE runs SET failure_class = ?2 WHERE id = ?1",
                params![run, class.map(FailureClass::as_str)],
            )?;
        }
        tx.commit()?;
        Ok(moved)
    }

    /// Marks an ended run as failed for `class` (a refused restart's `dependency`) without
    /// restarting it, and records why.
    pub fn mark_failure(
        &mut self,
        run: &str,
        class: FailureClass,
        who: &str,
        reason: &str,
    ) -> Result<()> {
        let tx = self.write()?;
        let current = run_state(&tx, run)?;
        tx.execute(
            "UPDATE runs SET failure_class = ?2, error = ?3 WHERE id = ?1",
            params![run, class.as_str(), reason],
        )?;
        record(
            &tx,
            run,
            None,
            None,
            Some(&current),
            &current,
            who,
            Some(reason),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Moves an ended run to `restarting`; `false` (nothing written) if it has not ended.
    pub fn begin_restart(&mut self, run: &str, who: &str, reason: &str) -> Result<bool> {
        let tx = self.write()?;
        let from = [RunState::Succeeded, RunState::Failed, RunState::Killed];
        let moved = move_run(&tx, run, &from, RunState::Restarting, who, Some(reason))?;
        tx.commit()?;
        Ok(moved)
    }

    /// The restore is done: the run goes on from `point`, its old end cleared, and the
    /// operator's action is in the audit trail — one transaction.
    pub fn complete_restart(
        &mut self,
        run: &str,
        point: &RestartPoint,
        action: &ActionRecord,
    ) -> Result<i64> {
        let tx = self.write()?;
        let json = to_json(run, point)?;
        let from = [RunState::Restarting];
        if !move_run(
            &tx,
            run,
            &from,
            RunState::Running,
            &action.requested_by,
            Some(&action.detail),
        )? {
            return Err(StoreError::Corrupt {
                run: run.to_owned(),
                reason: "a restart completed for a run that was not restarting".into(),
            });
        }
        tx.execute(
            "UPDATE runs SET restart_json = ?2, ended_at = NULL, error = NULL,
                 failure_class = NULL, next_attempt_at = NULL
             WHERE id = ?1",
            params![run, json],
        )?;
        let id = insert_action(&tx, action)?;
        tx.commit()?;
        Ok(id)
    }

    /// By step index, the highest attempt number the run has used.
    pub fn attempt_counts(&self, run: &str) -> Result<BTreeMap<u32, u32>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT idx, MAX(attempt) FROM step_attempts WHERE run_id = ?1 GROUP BY idx",
        )?;
        let counts = stmt
            .query_map([run], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(counts)
    }

    /// The number the run's next checkpoint gets.
    pub fn next_checkpoint_number(&self, run: &str) -> Result<u32> {
        let max: Option<u32> = self.conn.query_row(
            "SELECT MAX(n) FROM checkpoints WHERE run_id = ?1",
            [run],
            |r| r.get(0),
        )?;
        Ok(max.unwrap_or(0) + 1)
    }

    pub fn add_checkpoint(&mut self, c: &CheckpointRecord) -> Result<()> {
        let tx = self.write()?;
        tx.execute(
            "INSERT INTO checkpoints (run_id, n, label, reason, step, next_step, created_at,
                                      reference, commit_id, files_changed, took_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
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

    /// The run's checkpoints, oldest first.
    pub fn checkpoints(&self, run: &str) -> Result<Vec<CheckpointRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT run_id, n, label, reason, step, next_step, created_at, reference, commit_id,
                    files_changed, took_ms
             FROM checkpoints WHERE run_id = ?1 ORDER BY n",
        )?;
        let rows = stmt
            .query_map([run], |r| {
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
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Records an operator's action (or its refusal) in the audit trail.
    pub fn record_action(&mut self, action: &ActionRecord) -> Result<i64> {
        let tx = self.write()?;
        let id = insert_action(&tx, action)?;
        tx.commit()?;
        Ok(id)
    }

    /// Restarts, rollbacks and checkpoints asked for, oldest first: of one run, or all.
    pub fn actions(&self, run: Option<&str>) -> Result<Vec<ActionRecord>> {
        self.query_records(
            "SELECT run_id, record_json FROM actions WHERE ?1 IS NULL OR run_id = ?1 ORDER BY id",
            run,
            "action record",
        )
    }

    /// The latest run of `workflow` other than `except`: its id and state.
    pub fn latest_run_of(&self, workflow: &str, except: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, state FROM runs WHERE workflow = ?1 AND id != ?2
                 ORDER BY created_at DESC, rowid DESC LIMIT 1",
                params![workflow, except],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// The run with the latest attempt of each step it has started, or `None`.
    pub fn run(&self, id: &str) -> Result<Option<(Run, String)>> {
        let row = self
            .conn
            .prepare_cached(concat!(run_columns!(), " WHERE id = ?1"))?
            .query_row([id], run_row)
            .optional()?;
        let Some(row) = row else { return Ok(None) };
        let (run, spec_json) = row.into_run()?;
        let run = self.with_steps_and_kills(vec![run])?.pop();
        Ok(run.map(|run| (run, spec_json)))
    }

    /// Every run, newest first.
    pub fn runs(&self) -> Result<Vec<Run>> {
        self.runs_ended_since(None)
    }

    /// The unfinished runs and those that ended at `since` or later (every run for
    /// `None`), newest first.
    pub fn runs_ended_since(&self, since: Option<Timestamp>) -> Result<Vec<Run>> {
        self.query_runs(
            concat!(
                run_columns!(),
                " WHERE ?1 IS NULL OR ended_at IS NULL OR ended_at >= ?1
                 ORDER BY created_at DESC, id"
            ),
            [since.map(|t| t.0)],
        )
    }

    /// The runs that have not reached a final state, oldest first, with their steps.
    pub fn unfinished(&self) -> Result<Vec<Run>> {
        self.query_runs(
            concat!(
                run_columns!(),
                " WHERE state IN (",
                unfinished_states!(),
                ") ORDER BY created_at"
            ),
            [],
        )
    }

    /// The runs `sql` (over `run_columns!()`) selects, with their steps and kills.
    fn query_runs(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<Run>> {
        let runs = self
            .conn
            .prepare_cached(sql)?
            .query_map(params, run_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?
            .into_iter()
            .map(|row| Ok(row.into_run()?.0))
            .collect::<Result<Vec<_>>>()?;
        self.with_steps_and_kills(runs)
    }

    /// Fills in each run's latest attempts and latest kill: two queries for the whole
    /// list, not two per run (the monitor lists every unfinished run each second).
    fn with_steps_and_kills(&self, mut runs: Vec<Run>) -> Result<Vec<Run>> {
        if runs.is_empty() {
            return Ok(runs);
        }
        let ids = serde_json::to_string(&runs.iter().map(|r| &r.id).collect::<Vec<_>>())
            .unwrap_or_else(|_| "[]".into());
        let mut steps = self.latest_attempts(&ids)?;
        let mut kills = self.latest_kills(&ids)?;
        for run in &mut runs {
            run.steps = steps.remove(&run.id).unwrap_or_default();
            run.kill = kills.remove(&run.id);
        }
        Ok(runs)
    }

    /// Ids of the runs that have not reached a final state: the ones to re-adopt.
    pub fn unfinished_runs(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(concat!(
            "SELECT id FROM runs WHERE state IN (",
            unfinished_states!(),
            ") ORDER BY created_at"
        ))?;
        let ids = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    }

    pub fn transitions(&self, run: &str) -> Result<Vec<Transition>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, step, attempt, from_state, to_state, at, who, reason
             FROM transitions WHERE run_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt
            .query_map([run], |r| {
                Ok(Transition {
                    seq: r.get(0)?,
                    step: r.get(1)?,
                    attempt: r.get(2)?,
                    from: r.get(3)?,
                    to: r.get(4)?,
                    at: Timestamp(r.get(5)?),
                    who: r.get(6)?,
                    reason: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// The latest attempt of every step of each of `runs` (a JSON array of ids), in step
    /// order.
    fn latest_attempts(&self, runs: &str) -> Result<HashMap<String, Vec<StepAttempt>>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, idx, attempt, state, unit, pid, exit_code, signal, result, log_path, started_at, ended_at,
                    output_bytes, output_lines, last_output_at,
                    failure_class, failure_evidence, session_id, agent_json, note, run_id
             FROM step_attempts a
             WHERE run_id IN (SELECT value FROM json_each(?1))
               AND attempt = (SELECT MAX(attempt) FROM step_attempts b
                              WHERE b.run_id = a.run_id AND b.idx = a.idx)
             ORDER BY run_id, idx",
        )?;
        let rows = stmt
            .query_map([runs], |r| {
                Ok((
                    r.get::<_, String>(20)?,
                    StepAttempt {
                        name: r.get(0)?,
                        index: r.get(1)?,
                        attempt: r.get(2)?,
                        state: StepState::Pending,
                        unit: r.get(4)?,
                        pid: r.get(5)?,
                        exit_code: r.get(6)?,
                        signal: r.get(7)?,
                        result: r.get(8)?,
                        log: r.get(9)?,
                        output: StepOutput {
                            bytes: r.get::<_, i64>(12)?.max(0) as u64,
                            lines: r.get::<_, i64>(13)?.max(0) as u64,
                            last_output_at: r.get::<_, Option<i64>>(14)?.map(Timestamp),
                        },
                        started_at: r.get::<_, Option<i64>>(10)?.map(Timestamp),
                        ended_at: r.get::<_, Option<i64>>(11)?.map(Timestamp),
                        failure_class: None,
                        failure_evidence: r.get(16)?,
                        session_id: r.get(17)?,
                        agent: None,
                        note: r.get(19)?,
                    },
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(15)?,
                    r.get::<_, Option<String>>(18)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut by_run: HashMap<String, Vec<StepAttempt>> = HashMap::new();
        for (run, mut step, state, class, agent) in rows {
            let corrupt = |reason: String| StoreError::Corrupt {
                run: run.clone(),
                reason,
            };

            step.state = state.parse().map_err(corrupt)?;
            step.failure_class = class
                .map(|c| c.parse::<FailureClass>())
                .transpose()
                .map_err(|e| corrupt(e.to_string()))?;
            step.agent = agent
                .map(|json| serde_json::from_str(&json))
                .transpose()
                .map_err(|e| corrupt(format!("agent report: {e}")))?;
            by_run.entry(run).or_default().push(step);
        }
        Ok(by_run)
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

fn insert_action(tx: &Transaction<'_>, action: &ActionRecord) -> Result<i64> {
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

impl Store {
    /// Writes the monitor's downsampled rows in one transaction; a row for a period already
    /// written (the same run, step and minute) is replaced.
    pub fn write_metrics(&mut self, rows: &[MetricsMinute]) -> Result<()> {
        let tx = self.write()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO metrics_history (run_id, workflow, step, minute, samples,
                     cpu_avg, cpu_max, memory_max, tasks_max, io_read_bytes, io_write_bytes,
                     output_bytes, output_lines, idle_max, tokens_in, tokens_out, cost_usd)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
            )?;
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

    /// A run's downsampled history, oldest first.
    pub fn metrics_history(&self, run: &str) -> Result<Vec<MetricsMinute>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT run_id, workflow, step, minute, samples, cpu_avg, cpu_max, memory_max,
                    tasks_max, io_read_bytes, io_write_bytes, output_bytes, output_lines,
                    idle_max, tokens_in, tokens_out, cost_usd
             FROM metrics_history WHERE run_id = ?1 ORDER BY minute, step",
        )?;
        let rows = stmt
            .query_map([run], |r| {
                let count = |i: usize| -> rusqlite::Result<u64> {
                    Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0))
                };
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
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Deletes history rows for periods that began before `before`; returns how many.
    pub fn prune_metrics(&self, before: Timestamp) -> Result<usize> {
        Ok(self
            .conn
            .execute("DELETE FROM metrics_history WHERE minute < ?1", [before.0])?)
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

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let applied: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (version, sql) in (1u32..).zip(MIGRATIONS).skip(applied as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
    }
    Ok(())
}

/// The run's state as stored.
fn run_state(tx: &Transaction<'_>, run: &str) -> Result<String> {
    tx.query_row("SELECT state FROM runs WHERE id = ?1", [run], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::NoSuchRun(run.to_owned()))
}

fn move_run(
    tx: &Transaction<'_>,
    run: &str,
    from: &[RunState],
    to: RunState,
    who: &str,
    reason: Option<&str>,
) -> Result<bool> {
    let current = run_state(tx, run)?;
    if !from.iter().any(|s| s.as_str() == current) {
        return Ok(false);
    }
    let now = Timestamp::now().0;
    tx.execute(
        "UPDATE runs SET state = ?2,
             started_at = CASE WHEN ?2 = 'running' AND started_at IS NULL THEN ?3 ELSE started_at END,
             ended_at = CASE WHEN ?2 IN ('succeeded', 'failed', 'killed') THEN ?3 ELSE ended_at END,
             error = CASE WHEN ?2 IN ('failed', 'killed') THEN ?4 ELSE error END,
             next_attempt_at = CASE WHEN ?2 IN ('succeeded', 'failed', 'killed') THEN NULL
                                    ELSE next_attempt_at END
         WHERE id = ?1",
        params![run, to.as_str(), now, reason],
    )?;
    record(
        tx,
        run,
        None,
        None,
        Some(&current),
        to.as_str(),
        who,
        reason,
    )?;
    Ok(true)
}

fn attempt_name(tx: &Transaction<'_>, run: &str, index: u32, attempt: u32) -> Result<String> {
    tx.query_row(
        "SELECT name FROM step_attempts WHERE run_id = ?1 AND idx = ?2 AND attempt = ?3",
        params![run, index, attempt],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| StoreError::NoSuchRun(format!("{run} (step {index} attempt {attempt})")))
}

#[allow(clippy::too_many_arguments)]
fn record(
    tx: &Transaction<'_>,
    run: &str,
    step: Option<&str>,
    attempt: Option<u32>,
    from: Option<&str>,
    to: &str,
    who: &str,
    reason: Option<&str>,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO transitions (run_id, step, attempt, from_state, to_state, at, who, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            run,
            step,
            attempt,
            from,
            to,
            Timestamp::now().0,
            who,
            reason
        ],
    )?;
    Ok(())
}

/// A `runs` row before its JSON columns are decoded.
struct RunRow {
    run: Run,
    state: String,
    spec_json: String,
    params_json: String,
    restart_json: Option<String>,
    failure_class: Option<String>,
}

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        run: Run {
            id: r.get(0)?,
            workflow: r.get(1)?,
            workflow_file: r.get(2)?,
            protected: false,
            state: RunState::Pending,
            params: BTreeMap::new(),
            worktree: r.get(6)?,
            requested_by: r.get(7)?,
            created_at: Timestamp(r.get(8)?),
            started_at: r.get::<_, Option<i64>>(9)?.map(Timestamp),
            ended_at: r.get::<_, Option<i64>>(10)?.map(Timestamp),
            error: r.get(11)?,
            steps: Vec::new(),
            kill: None,
            next_attempt_at: r.get::<_, Option<i64>>(12)?.map(Timestamp),
            restart: None,
            failure_class: None,
        },
        spec_json: r.get(3)?,
        params_json: r.get(4)?,
        state: r.get(5)?,
        restart_json: r.get(13)?,
        failure_class: r.get(14)?,
    })
}

impl RunRow {
    fn into_run(self) -> Result<(Run, String)> {
        let corrupt = |reason: String| StoreError::Corrupt {
            run: self.run.id.clone(),
            reason,
        };
        let mut run = self.run.clone();
        run.state = self.state.parse().map_err(corrupt)?;
        run.params = serde_json::from_str(&self.params_json).map_err(|e| corrupt(e.to_string()))?;
        if let Some(json) = &self.restart_json {
            run.restart = Some(serde_json::from_str(json).map_err(|e| corrupt(e.to_string()))?);
        }
        if let Some(class) = &self.failure_class {
            run.failure_class = Some(
                class
                    .parse::<FailureClass>()
                    .map_err(|e| corrupt(e.to_string()))?,
            );
        }
        Ok((run, self.spec_json))
    }
}

/// One day (UTC) of a workflow's history, or of all workflows': runs by the day they were
/// created; kills and restarts by the day they happened.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct History {
    pub workflow: Option<String>,
    pub since: Timestamp,
    pub days: Vec<HistoryDay>,
}

const MILLIS_PER_DAY: i64 = 24 * 3600 * 1000;

/// `YYYY-MM-DD` of a day number since the epoch (civil-from-days, proleptic Gregorian).
fn day_name(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The `q` quantile (nearest rank) of sorted `values`.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

impl Store {
    /// Per-day history since `since` (to `now`), of `workflow` or of every workflow.
    pub fn history(
        &self,
        workflow: Option<&str>,
        since: Timestamp,
        now: Timestamp,
    ) -> Result<History> {
        let first = since.0.div_euclid(MILLIS_PER_DAY);
        let last = now.0.div_euclid(MILLIS_PER_DAY).max(first);
        let mut days: Vec<HistoryDay> = (first..=last)
            .map(|d| HistoryDay {
                day: day_name(d),
                ..HistoryDay::default()
            })
            .collect();
        let mut durations: Vec<Vec<f64>> = vec![Vec::new(); days.len()];
        let slot = |at: i64| usize::try_from(at.div_euclid(MILLIS_PER_DAY) - first).ok();

        let mut stmt = self.conn.prepare_cached(
            "SELECT created_at, started_at, ended_at, state, failure_class FROM runs
             WHERE created_at >= ?1 AND (?2 IS NULL OR workflow = ?2)",
        )?;
        let rows = stmt.query_map(params![since.0, workflow], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?;
        for row in rows {
            let (created, started, ended, state, class) = row?;
            let Some(i) = slot(created).filter(|&i| i < days.len()) else {
                continue;
            };
            let day = &mut days[i];
            day.runs += 1;
            let ended_as = match state.as_str() {
                "succeeded" => Some(&mut day.succeeded),
                "failed" => Some(&mut day.failed),
                "killed" => Some(&mut day.killed),
                _ => None,
            };
            if let Some(count) = ended_as {
                *count += 1;
                if let Some(end) = ended {
                    let secs = (end - started.unwrap_or(created)).max(0) as f64 / 1000.0;
                    durations[i].push(secs);
                }
                if state != "succeeded" {
                    let class = class.unwrap_or_else(|| "none".to_owned());
                    *day.failure_classes.entry(class).or_default() += 1;
                }
            }
        }

        // Costs by the day their run was created; agent_json is drover's own JSON, but a
        // damaged value is skipped rather than failing the whole report.
        let mut stmt = self.conn.prepare_cached(
            "SELECT r.created_at,
                    json_extract(a.agent_json, '$.result.total_cost_usd')
             FROM step_attempts a JOIN runs r ON r.id = a.run_id
             WHERE r.created_at >= ?1 AND (?2 IS NULL OR r.workflow = ?2)
               AND a.agent_json IS NOT NULL AND json_valid(a.agent_json)",
        )?;
        let rows = stmt.query_map(params![since.0, workflow], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<f64>>(1)?))
        })?;
        for row in rows {
            if let (created, Some(cost)) = row?
                && let Some(day) = slot(created).and_then(|i| days.get_mut(i))
            {
                day.cost_usd += cost;
            }
        }

        let mut stmt = self.conn.prepare_cached(
            "SELECT k.requested_at FROM kills k JOIN runs r ON r.id = k.run_id
             WHERE k.requested_at >= ?1 AND (?2 IS NULL OR r.workflow = ?2)
               AND k.result IN ('killed', 'failed', 'external')",
        )?;
        for at in stmt.query_map(params![since.0, workflow], |r| r.get::<_, i64>(0))? {
            if let Some(day) = slot(at?).and_then(|i| days.get_mut(i)) {
                day.kills += 1;
            }
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT x.at FROM actions x JOIN runs r ON r.id = x.run_id
             WHERE x.at >= ?1 AND (?2 IS NULL OR r.workflow = ?2)
               AND x.action = 'restart' AND x.result = 'done'",
        )?;
        for at in stmt.query_map(params![since.0, workflow], |r| r.get::<_, i64>(0))? {
            if let Some(day) = slot(at?).and_then(|i| days.get_mut(i)) {
                day.restarts += 1;
            }
        }

        for (day, mut secs) in days.iter_mut().zip(durations) {
            secs.sort_by(f64::total_cmp);
            day.duration_p50_secs = quantile(&secs, 0.5);
            day.duration_p95_secs = quantile(&secs, 0.95);
            let ended = day.succeeded + day.failed + day.killed;
            day.success_rate = (ended > 0).then(|| day.succeeded as f64 / ended as f64);
        }
        Ok(History {
            workflow: workflow.map(str::to_owned),
            since,
            days,
        })
    }
}

/// Alerts, silences and the alert outbox.
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

    /// Firing alerts (every alert with `all`), newest first.
    pub fn alerts(&self, all: bool, now: Timestamp) -> Result<Vec<Alert>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts a WHERE ?2 OR a.state = 'firing' ORDER BY a.id DESC"
        ))?;
        let rows = stmt
            .query_map(params![now.0, all], alert_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(AlertRow::into_alert).collect()
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

    /// Silences in force at `now` (every silence with `all`), newest first.
    pub fn silences(&self, all: bool, now: Timestamp) -> Result<Vec<Silence>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, target, until, reason, created_by, created_at FROM silences
             WHERE ?2 OR until > ?1 ORDER BY id DESC",
        )?;
        let rows = stmt
            .query_map(params![now.0, all], |r| {
                Ok(Silence {
                    id: r.get(0)?,
                    target: r.get(1)?,
                    until: Timestamp(r.get(2)?),
                    reason: r.get(3)?,
                    created_by: r.get(4)?,
                    created_at: Timestamp(r.get(5)?),
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Outbox rows due at `now`, oldest first: only the oldest row of each alert and
    /// sink, so a change is never delivered before the one it follows.
    pub fn outbox_due(&self, now: Timestamp, limit: usize) -> Result<Vec<OutboxItem>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.id FROM outbox o
             WHERE o.next_try_at <= ?1
               AND o.id = (SELECT MIN(id) FROM outbox WHERE sink = o.sink AND key = o.key)
             ORDER BY o.id LIMIT ?2",
        )?;
        let ids: Vec<i64> = stmt
            .query_map(
                params![now.0, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| r.get(0),
            )?
            .collect::<rusqlite::Result<_>>()?;
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

    /// Every outbox row, oldest first (for tests and diagnostics).
    pub fn outbox(&self) -> Result<Vec<OutboxItem>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM outbox ORDER BY id")?;
        let ids: Vec<i64> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
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
        let corrupt = |reason: String| StoreError::Corrupt {
            run: key.clone(),
            reason,
        };
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
        let corrupt = |reason: String| StoreError::Corrupt {
            run: self.key.clone(),
            reason,
        };
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

/// History the rules part reads (`step_p95_secs`, `recent_failures`).
impl Store {
    /// Seconds each successful attempt of step `step` took in runs of `workflow` other
    /// than `except`, newest first, at most `limit` of them.
    pub fn step_durations(
        &self,
        workflow: &str,
        step: &str,
        except: &str,
        limit: u32,
    ) -> Result<Vec<f64>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT a.ended_at - a.started_at FROM step_attempts a JOIN runs r ON r.id = a.run_id
             WHERE r.workflow = ?1 AND a.name = ?2 AND a.run_id != ?3 AND a.state = 'succeeded'
               AND a.started_at IS NOT NULL AND a.ended_at IS NOT NULL
             ORDER BY a.ended_at DESC LIMIT ?4",
        )?;
        let millis = stmt
            .query_map(params![workflow, step, except, limit], |r| {
                r.get::<_, i64>(0)
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(millis
            .into_iter()
            .map(|ms| ms.max(0) as f64 / 1000.0)
            .collect())
    }

    /// How many runs of `workflow` ended failed at or after `since`.
    pub fn failed_runs_since(&self, workflow: &str, since: Timestamp) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM runs WHERE workflow = ?1 AND state = 'failed' AND ended_at >= ?2",
            params![workflow, since.0],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_history_is_written_replaced_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("state.db")).unwrap();
        let row = |minute: i64, samples: u64| MetricsMinute {
            run: "r1".into(),
            workflow: "w".into(),
            step: "s".into(),
            minute: Timestamp(minute),
            samples,
            cpu_avg: Some(12.5),
            cpu_max: Some(40.0),
            memory_max: Some(1 << 30),
            tasks_max: Some(3),
            io_read_bytes: None,
            io_write_bytes: None,
            output_bytes: 10,
            output_lines: 2,
            idle_max: 1.5,
            tokens_in: Some(100),
            tokens_out: None,
            cost_usd: Some(0.5),
        };
        store
            .write_metrics(&[row(60_000, 1), row(120_000, 60)])
            .unwrap();
        store.write_metrics(&[row(60_000, 59)]).unwrap();
        assert_eq!(
            store.metrics_history("r1").unwrap(),
            vec![row(60_000, 59), row(120_000, 60)]
        );
        assert_eq!(store.prune_metrics(Timestamp(120_000)).unwrap(), 1);
        assert_eq!(store.metrics_history("r1").unwrap(), vec![row(120_000, 60)]);
    }

    /// A write that reads before it writes waits out another connection's write; a
    /// deferred transaction would fail at once (SQLITE_BUSY) once that one commits, since
    /// its read saw the database before the commit.
    #[test]
    fn a_write_waits_for_another_connections_write_instead_of_failing() {
        let (dir, mut store) = temp_store();
        let other = Connection::open(dir.path().join("state.db")).expect("open");
        other
            .execute_batch("BEGIN IMMEDIATE; CREATE TABLE scratch (x);")
            .expect("the other connection's write");
        let committer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            other.execute_batch("COMMIT").expect("commit");
        });
        let alert = NewAlert {
            key: "rule/-".into(),
            rule: "rule",
            run: None,
            workflow: None,
            severity: Severity::Warning,
            summary: "s",
        };
        // Reads the firing alerts, then inserts: across the other connection's commit.
        store
            .observe_alerts(&[alert], &[], &[], Timestamp::now())
            .expect("the write waited for the other one");
        committer.join().expect("committer");
    }

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("state.db")).expect("open");
        (dir, store)
    }

    #[test]
    fn run_and_attempt_lifecycle_is_recorded_once_per_transition() {
        let (_dir, mut store) = temp_store();
        let params = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
        store
            .create_run(&NewRun {
                id: "abc",
                workflow: "wf",
                workflow_file: "/w.toml",
                spec_json: "{}",
                params: &params,
                requested_by: "uid 0 (root)",
            })
            .unwrap();
        store
            .set_run_state(
                "abc",
                &[RunState::Pending],
                RunState::Running,
                "drover",
                None,
            )
            .unwrap();
        store
            .start_attempt(&NewAttempt {
                run: "abc",
                index: 0,
                name: "build",
                attempt: 1,
                unit: "drover-abc-build-1.scope",
                log_path: "/l",
                session_id: None,
                note: None,
            })
            .unwrap();
        store.attempt_running("abc", 0, 1, 42).unwrap();
        store
            .end_attempt(
                "abc",
                0,
                1,
                &AttemptEnd {
                    state: StepState::Failed,
                    exit_code: Some(3),
                    signal: None,
                    result: "exit-code",
                    output: &StepOutput {
                        bytes: 5,
                        lines: 1,
                        last_output_at: None,
                    },
                    failure: None,
                    agent: None,
                },
            )
            .unwrap();
        store
            .set_run_state(
                "abc",
                &[RunState::Running],
                RunState::Failed,
                "drover",
                Some("step build failed"),
            )
            .unwrap();
        assert!(
            !store
                .set_run_state(
                    "abc",
                    &[RunState::Running],
                    RunState::Succeeded,
                    "drover",
                    None
                )
                .unwrap(),
            "a finished run does not move again"
        );

        let (run, spec) = store.run("abc").unwrap().unwrap();
        assert_eq!(spec, "{}");
        assert_eq!(run.state, RunState::Failed);
        assert_eq!(run.params, params);
        assert_eq!(run.error.as_deref(), Some("step build failed"));
        assert!(run.started_at.is_some() && run.ended_at.is_some());
        assert_eq!(run.steps.len(), 1);
        assert_eq!(run.steps[0].exit_code, Some(3));
        assert_eq!(run.steps[0].pid, Some(42));
        assert_eq!(run.steps[0].state, StepState::Failed);

        let moves: Vec<String> = store
            .transitions("abc")
            .unwrap()
            .iter()
            .map(|t| format!("{}:{}", t.step.as_deref().unwrap_or("run"), t.to))
            .collect();
        assert_eq!(
            moves,
            [
                "run:pending",
                "run:running",
                "build:starting",
                "build:running",
                "build:failed",
                "run:failed"
            ]
        );
        assert!(store.unfinished_runs().unwrap().is_empty());
    }

    #[test]
    fn a_restart_moves_an_ended_run_back_to_running_with_its_point_and_audit_record() {
        let (_dir, mut store) = temp_store();
        store
            .create_run(&NewRun {
                id: "r",
                workflow: "wf",
                workflow_file: "/w.toml",
                spec_json: "{}",
                params: &BTreeMap::new(),
                requested_by: "t",
            })
            .unwrap();
        assert!(
            store
                .fail_run("r", Some(FailureClass::Exit), "step a failed")
                .unwrap()
        );
        let (failed, _) = store.run("r").unwrap().unwrap();
        assert_eq!(failed.failure_class, Some(FailureClass::Exit));
        assert!(store.begin_restart("r", "uid 0 (root)", "asked").unwrap());
        assert!(
            !store.begin_restart("r", "uid 0 (root)", "again").unwrap(),
            "a restarting run is not restarted twice"
        );
        let point = RestartPoint {
            checkpoint: Some(2),
            next_step: 1,
            first_attempts: vec![2, 3],
            sessions: BTreeMap::from([(1, "s-1".to_owned())]),
            at: Some(Timestamp(5)),
        };
        let action = ActionRecord {
            id: 0,
            run: "r".into(),
            action: "restart".into(),
            requested_by: "uid 0 (root)".into(),
            uid: Some(0),
            role: Some("admin".into()),
            channel: "dbus".into(),
            at: Timestamp(6),
            result: "done".into(),
            checkpoint: Some(2),
            detail: "from checkpoint 2".into(),
            took_ms: 3,
        };
        let id = store.complete_restart("r", &point, &action).unwrap();
        let (run, _) = store.run("r").unwrap().unwrap();
        assert_eq!(run.state, RunState::Running);
        assert_eq!(run.restart, Some(point));
        assert_eq!(
            (run.error, run.failure_class, run.ended_at),
            (None, None, None)
        );
        let actions = store.actions(Some("r")).unwrap();
        assert_eq!(actions, [ActionRecord { id, ..action }]);
        let moves: Vec<String> = store
            .transitions("r")
            .unwrap()
            .into_iter()
            .map(|t| t.to)
            .collect();
        assert_eq!(moves, ["pending", "failed", "restarting", "running"]);
    }

    #[test]
    fn reopening_keeps_everything_and_does_not_remigrate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let mut store = Store::open(&path).unwrap();
            store
                .create_run(&NewRun {
                    id: "r1",
                    workflow: "wf",
                    workflow_file: "/w.toml",
                    spec_json: "{}",
                    params: &BTreeMap::new(),
                    requested_by: "t",
                })
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.unfinished_runs().unwrap(), ["r1"]);
        assert_eq!(store.runs().unwrap().len(), 1);
        assert!(store.run("nope").unwrap().is_none());
    }

    #[test]
    fn history_counts_runs_costs_and_durations_per_day() {
        let (_dir, mut store) = temp_store();
        let params = BTreeMap::new();
        let mut run = |id: &str, workflow: &str, end: RunState, cost: Option<f64>| {
            store
                .create_run(&NewRun {
                    id,
                    workflow,
                    workflow_file: "/w.toml",
                    spec_json: "{}",
                    params: &params,
                    requested_by: "t",
                })
                .unwrap();
            store
                .set_run_state(id, &[RunState::Pending], RunState::Running, "t", None)
                .unwrap();
            store
                .start_attempt(&NewAttempt {
                    run: id,
                    index: 0,
                    name: "s",
                    attempt: 1,
                    unit: "u",
                    log_path: "/l",
                    session_id: None,
                    note: None,
                })
                .unwrap();
            let report = cost.map(|c| StreamReport {
                result: Some(crate::model::ResultEvent {
                    total_cost_usd: Some(c),
                    ..Default::default()
                }),
                ..Default::default()
            });
            store
                .end_attempt(
                    id,
                    0,
                    1,
                    &AttemptEnd {
                        state: StepState::Succeeded,
                        exit_code: Some(0),
                        signal: None,
                        result: "success",
                        output: &StepOutput::default(),
                        failure: None,
                        agent: report.as_ref(),
                    },
                )
                .unwrap();
            if end == RunState::Failed {
                store.fail_run(id, Some(FailureClass::Oom), "oom").unwrap();
            } else {
                store
                    .set_run_state(id, &[RunState::Running], end, "t", None)
                    .unwrap();
            }
        };
        run("a", "wf", RunState::Succeeded, Some(0.25));
        run("b", "wf", RunState::Succeeded, Some(0.5));
        run("c", "wf", RunState::Failed, None);
        run("d", "other", RunState::Succeeded, Some(9.0));

        let now = Timestamp::now();
        let since = Timestamp(now.0 - 2 * MILLIS_PER_DAY);
        let all = store.history(None, since, now).unwrap();
        assert_eq!(all.days.len(), 3, "{all:?}");
        let today = all.days.last().unwrap();
        assert_eq!(today.runs, 4);
        assert_eq!(today.succeeded, 3);
        assert!((today.cost_usd - 9.75).abs() < 1e-9, "{today:?}");
        assert_eq!(all.days[0].runs, 0);

        let wf = store.history(Some("wf"), since, now).unwrap();
        let today = wf.days.last().unwrap();
        assert_eq!((today.runs, today.succeeded, today.failed), (3, 2, 1));
        assert_eq!(today.success_rate, Some(2.0 / 3.0));
        assert!((today.cost_usd - 0.75).abs() < 1e-9);
        assert_eq!(today.failure_classes.get("oom"), Some(&1));
        assert!(today.duration_p50_secs.is_some() && today.duration_p95_secs.is_some());
    }

    #[test]
    fn history_day_names_and_quantiles() {
        assert_eq!(day_name(0), "1970-01-01");
        assert_eq!(day_name(19_782), "2024-02-29");
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.95), Some(4.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
