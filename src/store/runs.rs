//! Runs and step attempts: their rows, every transition with who asked and why, and the
//! restart of an ended run.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{OptionalExtension, Transaction, params};

use super::checkpoints::insert_action;
use super::{Result, Store, StoreError, StoreReader, sql_count, to_json};
use crate::model::{
    ActionRecord, Failure, FailureClass, RestartPoint, Run, RunState, RunUser, StepAttempt,
    StepOutput, StepState, StreamReport, Timestamp,
};

/// A new run, as the engine creates it.
pub struct NewRun<'a> {
    pub id: &'a str,
    pub workflow: &'a str,
    pub workflow_file: &'a str,
    pub spec_json: &'a str,
    pub params: &'a BTreeMap<String, String>,
    pub requested_by: &'a str,
    pub user: &'a RunUser,
}

/// The account the unit tests' runs are recorded with.
#[cfg(test)]
pub const TEST_USER: RunUser = RunUser {
    uid: 0,
    name: String::new(),
};

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
    /// Where the log was cut (a failed write), if it was.
    pub log_cut: Option<&'a str>,
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

/// A page of runs, newest first (`created_at`, then `id`, both descending): the runs in
/// one of `states` (any state when empty), of `workflow` (any when `None`), after the run
/// `after` (its creation time and id: where the last page ended), at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct RunQuery<'a> {
    pub states: &'a [RunState],
    pub workflow: Option<&'a str>,
    pub after: Option<(Timestamp, &'a str)>,
    pub limit: usize,
}

/// The columns `run_row` reads, in its order.
macro_rules! run_columns {
    () => {
        "SELECT id, workflow, workflow_file, spec_json, params_json, state, worktree,
                requested_by, created_at, started_at, ended_at, error,
                next_attempt_at, restart_json, failure_class, run_uid, run_user
         FROM runs"
    };
}

/// The states of a run that has not ended (what the agent re-adopts, and monitors).
macro_rules! unfinished_states {
    () => {
        "'pending', 'running', 'stopping', 'killing', 'restarting'"
    };
}

impl Store {
    pub fn create_run(&mut self, run: &NewRun<'_>) -> Result<()> {
        let tx = self.write()?;
        let params_json = serde_json::to_string(run.params).unwrap_or_else(|_| "{}".into());
        tx.execute(
            "INSERT INTO runs (id, workflow, workflow_file, spec_json, params_json, state, requested_by, created_at,
                               run_uid, run_user)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                run.id,
                run.workflow,
                run.workflow_file,
                run.spec_json,
                params_json,
                RunState::Pending.as_str(),
                run.requested_by,
                Timestamp::now().0,
                run.user.uid,
                run.user.name,
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
                 failure_class = ?12, failure_evidence = ?13, agent_json = ?14, log_cut = ?15
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
                end.agent.and_then(|a| serde_json::to_string(a).ok()),
                end.log_cut
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
}

impl StoreReader {
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

    /// The runs `query` selects, with their steps and kills: one indexed query for the
    /// page (a keyset on `created_at, id`, so a deep page costs what the first does), never
    /// every run.
    pub fn runs_page(&self, query: &RunQuery<'_>) -> Result<Vec<Run>> {
        let states: Vec<&str> = query.states.iter().map(|s| s.as_str()).collect();
        // A list of strings always serialises.
        let states = (!states.is_empty())
            .then(|| serde_json::to_string(&states).unwrap_or_else(|_| "[]".into()));
        let (after_at, after_id) = query
            .after
            .map_or((None, None), |(at, id)| (Some(at.0), Some(id)));
        self.query_runs(
            concat!(
                run_columns!(),
                " WHERE (?1 IS NULL OR state IN (SELECT value FROM json_each(?1)))
                   AND (?2 IS NULL OR workflow = ?2)
                   AND (?3 IS NULL OR created_at < ?3 OR (created_at = ?3 AND id < ?4))
                 ORDER BY created_at DESC, id DESC
                 LIMIT ?5"
            ),
            params![
                states,
                query.workflow,
                after_at,
                after_id,
                i64::try_from(query.limit).unwrap_or(i64::MAX)
            ],
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
        let rows: Vec<RunRow> = self.query_all(sql, params, run_row)?;
        let runs = rows
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
        self.query_all(
            concat!(
                "SELECT id FROM runs WHERE state IN (",
                unfinished_states!(),
                ") ORDER BY created_at"
            ),
            [],
            |r| r.get(0),
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

    /// By step index, the highest attempt number the run has used.
    pub fn attempt_counts(&self, run: &str) -> Result<BTreeMap<u32, u32>> {
        self.query_all(
            "SELECT idx, MAX(attempt) FROM step_attempts WHERE run_id = ?1 GROUP BY idx",
            [run],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    /// Attempt `attempt` of step `index` of `run`, whether or not it is the latest.
    pub fn attempt(&self, run: &str, index: u32, attempt: u32) -> Result<Option<StepAttempt>> {
        self.conn
            .prepare_cached(concat!(
                attempt_columns!(),
                " WHERE run_id = ?1 AND idx = ?2 AND attempt = ?3"
            ))?
            .query_row(params![run, index, attempt], attempt_row)
            .optional()?
            .map(|row| Ok(row.into_attempt()?.1))
            .transpose()
    }

    pub fn transitions(&self, run: &str) -> Result<Vec<Transition>> {
        self.query_all(
            "SELECT seq, step, attempt, from_state, to_state, at, who, reason
             FROM transitions WHERE run_id = ?1 ORDER BY seq",
            [run],
            |r| {
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
            },
        )
    }

    /// The latest attempt of every step of each of `runs` (a JSON array of ids), in step
    /// order.
    fn latest_attempts(&self, runs: &str) -> Result<HashMap<String, Vec<StepAttempt>>> {
        let rows: Vec<AttemptRow> = self.query_all(
            concat!(
                attempt_columns!(),
                " WHERE run_id IN (SELECT value FROM json_each(?1))
                   AND attempt = (SELECT MAX(attempt) FROM step_attempts b
                                  WHERE b.run_id = a.run_id AND b.idx = a.idx)
                 ORDER BY run_id, idx"
            ),
            [runs],
            attempt_row,
        )?;
        let mut by_run: HashMap<String, Vec<StepAttempt>> = HashMap::new();
        for row in rows {
            let (run, step) = row.into_attempt()?;
            by_run.entry(run).or_default().push(step);
        }
        Ok(by_run)
    }
}

/// The columns `attempt_row` reads, in its order.
macro_rules! attempt_columns {
    () => {
        "SELECT name, idx, attempt, state, unit, pid, exit_code, signal, result, log_path,
                started_at, ended_at, output_bytes, output_lines, last_output_at,
                failure_class, failure_evidence, session_id, agent_json, note, run_id, log_cut
         FROM step_attempts a"
    };
}
use attempt_columns;

/// A `step_attempts` row before its text columns are decoded.
struct AttemptRow {
    run: String,
    attempt: StepAttempt,
    state: String,
    failure_class: Option<String>,
    agent_json: Option<String>,
}

fn attempt_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AttemptRow> {
    Ok(AttemptRow {
        run: r.get(20)?,
        attempt: StepAttempt {
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
            log_cut: r.get(21)?,
        },
        state: r.get(3)?,
        failure_class: r.get(15)?,
        agent_json: r.get(18)?,
    })
}

impl AttemptRow {
    /// The run's id and the attempt, its state, class and agent report decoded.
    fn into_attempt(self) -> Result<(String, StepAttempt)> {
        let corrupt = StoreError::corrupt(&self.run);
        let mut step = self.attempt.clone();
        step.state = self.state.parse().map_err(corrupt)?;
        step.failure_class = self
            .failure_class
            .as_deref()
            .map(str::parse::<FailureClass>)
            .transpose()
            .map_err(|e| corrupt(e.to_string()))?;
        step.agent = self
            .agent_json
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(format!("agent report: {e}")))?;
        Ok((self.run, step))
    }
}

/// The run's state as stored.
pub(super) fn run_state(tx: &Transaction<'_>, run: &str) -> Result<String> {
    tx.query_row("SELECT state FROM runs WHERE id = ?1", [run], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::NoSuchRun(run.to_owned()))
}

pub(super) fn move_run(
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
            user: match (
                r.get::<_, Option<u32>>(15)?,
                r.get::<_, Option<String>>(16)?,
            ) {
                (Some(uid), Some(name)) => Some(RunUser { uid, name }),
                _ => None,
            },
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
        let corrupt = StoreError::corrupt(&self.run.id);
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
