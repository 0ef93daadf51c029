//! The engine: the `Engine` handle, its construction (re-adopting the runs the last agent
//! left) and errors, and the queries on runs. The engine owns run state: `plan` decides
//! the next action from what the state DB holds (so a restarted agent picks up where the
//! last one stopped), `drive` acts on it and records every transition before announcing
//! it, and `step` launches each attempt through its shim into a transient scope.

/// Logs an event of a run (and of one of its steps) with the journald fields every such
/// line carries: `run_event!(info, run = …, workflow = …[, step = …], "event", "message", …)`.
macro_rules! run_event {
    ($level:ident, run = $run:expr, workflow = $workflow:expr, step = $step:expr, $event:literal, $($message:tt)+) => {
        tracing::$level!(
            drover_run = %$run,
            drover_step = %$step,
            drover_workflow = %$workflow,
            drover_event = $event,
            $($message)+
        )
    };
    ($level:ident, run = $run:expr, workflow = $workflow:expr, $event:literal, $($message:tt)+) => {
        tracing::$level!(
            drover_run = %$run,
            drover_workflow = %$workflow,
            drover_event = $event,
            $($message)+
        )
    };
}

mod checkpoint;
mod drive;
mod follow;
mod kill;
mod logs;
mod plan;
mod restart;
pub mod shim;
mod step;
mod wakeups;

pub use crate::store::RunQuery;
pub use kill::KillRequest;
pub use logs::LogRequest;
pub use restart::ActionRequest;

/// journald `MESSAGE_ID` of every kill record (`journalctl MESSAGE_ID=…`).
pub const KILL_MESSAGE_ID: &str = "5f8c1d6e2a7b4c39b0e1d2c3a4b5c6d7";

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::credentials::{self, Account, CredentialsError, ReadError};
use crate::model::{
    EngineEvent, Run, RunState, RunTransition, RunUser, StepChange, StepOutput, StepState,
    Timestamp,
};
use crate::recovery;
use crate::snapshot::SnapshotError;
use crate::spec::{self, Workflow};
use crate::state_dir;
use crate::store::{NewRun, Store, StoreError};
use crate::sync::lock;
use crate::systemd::{Systemd, SystemdError};
use crate::worktree::{self, WorktreeError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Systemd(#[from] SystemdError),
    #[error(transparent)]
    Worktree(#[from] WorktreeError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("workflow file {0}")]
    WorkflowFile(#[from] ReadError),
    #[error("workflow file {}: not UTF-8 text", .0.display())]
    NotUtf8(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid parameter name {0:?}: use letters, digits and '_', not starting with a digit")]
    InvalidParam(String),
    #[error(
        "the workflow path must be absolute (the agent does not share the caller's directory): {0}"
    )]
    RelativePath(String),
    #[error("no run {0}")]
    NoSuchRun(String),
    #[error("run {run} already ended ({state}): nothing to kill")]
    AlreadyEnded { run: String, state: RunState },
    #[error("run {0} is already being killed")]
    KillInProgress(String),
    #[error(
        "run {run}: its step was stopped ({processes_left} processes left), but the kill cannot be recorded: {error}; free space for the state DB and the kill is recorded and finished (cleanup, final checkpoint, audit)"
    )]
    KillNotRecorded {
        run: String,
        processes_left: u32,
        error: StoreError,
    },
    #[error("{0}")]
    Unconfirmed(String),
    #[error(
        "a grace of {} leaves no time for SIGKILL: critical_max ({}) + grace must be less than the kill budget ({})",
        humantime::format_duration(*grace),
        humantime::format_duration(*critical_max),
        humantime::format_duration(*budget)
    )]
    GraceTooLong {
        grace: Duration,
        budget: Duration,
        critical_max: Duration,
    },
    #[error("run {run} is {state}, not running: no critical section can open")]
    NotRunning { run: String, state: RunState },
    #[error("run {run} has no step {step:?} (its steps: {steps})")]
    NoSuchStep {
        run: String,
        step: String,
        steps: String,
    },
    #[error("{}", no_such_attempt(run, step, *attempt, *latest))]
    NoSuchAttempt {
        run: String,
        step: String,
        attempt: u32,
        latest: u32,
    },
    #[error("run {run} has no open critical section {label:?}")]
    NoCriticalSpan { run: String, label: String },
    #[error("run {run}: the stored workflow cannot be read: {reason}")]
    CorruptRun { run: String, reason: String },
    #[error(transparent)]
    Checkpoint(#[from] SnapshotError),
    #[error(
        "run {run} has no worktree (its workflow names no `workspace`): there is nothing to checkpoint"
    )]
    NoWorktree { run: String },
    #[error("run {run} has no checkpoint {n} (it has {available})")]
    NoSuchCheckpoint {
        run: String,
        n: u32,
        available: String,
    },
    #[error("checkpoint {n} of run {run} cannot be used: {reason}")]
    CorruptCheckpoint { run: String, n: u32, reason: String },
    #[error("run {run} is {state}: {action} needs an ended run (kill it first)")]
    NotEnded {
        run: String,
        state: RunState,
        action: &'static str,
    },
    #[error("run {run}: {what}: requirements not met: {unmet}")]
    RequirementsUnmet {
        run: String,
        what: String,
        unmet: String,
    },
    #[error(
        "run {run}: {from}: there is nothing to restart (restart --from an earlier checkpoint)"
    )]
    NothingToRestart { run: String, from: String },
}

impl EngineError {
    /// The state DB could not be written for now (see [`StoreError::is_transient`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, EngineError::Store(e) if e.is_transient())
    }
}

type Result<T> = std::result::Result<T, EngineError>;

/// Below this much free space on the state directory's file system the agent reports
/// itself degraded: the next logs, exit records and transitions may not fit.
pub const LOW_SPACE: u64 = 1 << 20;

/// The largest workflow file read: generous for TOML a person writes, small enough that a
/// caller cannot grow the agent with one.
pub const MAX_WORKFLOW_FILE: u64 = 1 << 20;

/// A run to create: the workflow as read, who asked, and the account it runs as.
pub struct Submission {
    /// The file's absolute path, as recorded with the run.
    pub workflow_file: String,
    pub workflow: Workflow,
    pub params: BTreeMap<String, String>,
    /// The caller, as the audit trail names them: "uid 1000 (alice)".
    pub requested_by: String,
    pub account: Account,
}

/// Where the engine keeps its files, and how it starts shims.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub state_dir: PathBuf,
    /// The `drover` binary, re-executed as each step's shim.
    pub shim_exe: PathBuf,
}

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Mutex<Store>,
    /// The task driving each run, so that a kill can take the run over.
    drivers: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    /// Output counters of the attempts running now, by unit; the DB has them once they end.
    live_output: Mutex<HashMap<String, Arc<Mutex<StepOutput>>>>,
    systemd: Systemd,
    config: EngineConfig,
    /// Run transitions and step starts and ends, each sent after the state DB holds it.
    events: broadcast::Sender<EngineEvent>,
    /// Per-run locks for git work and operators' actions.
    locks: Mutex<HashMap<String, RunLocks>>,
    /// Which step scopes systemd has active, refreshed every second by one task for all
    /// the steps being awaited (one D-Bus call, not one per step).
    live_scopes: tokio::sync::watch::Sender<wakeups::LiveScopes>,
    /// Wakes a step's wait when its exit file or log is written.
    wakeups: wakeups::FileWakeups,
}

/// What one run's work takes turns on.
#[derive(Clone, Default)]
struct RunLocks {
    /// The worktree and the private index: one checkpoint, comparison or restore at a
    /// time. Held by the blocking git work itself, so a driver aborted mid-way keeps it
    /// until that work really ends.
    git: Arc<tokio::sync::Mutex<()>>,
    /// An operator's restart, rollback or checkpoint, from its checks to its end.
    operation: Arc<tokio::sync::Mutex<()>>,
}

impl Engine {
    /// Opens the state DB and re-adopts every run that had not finished when the last
    /// agent stopped: their steps kept running in their scopes.
    pub async fn start(config: EngineConfig, systemd: Systemd) -> Result<Engine> {
        let runs_dir = config.state_dir.join("runs");
        state_dir::create_dir(&runs_dir).map_err(|source| EngineError::Io {
            path: runs_dir.clone(),
            source,
        })?;
        // SQLite gives the WAL and shared-memory files the database file's mode.
        let db = config.state_dir.join("state.db");
        state_dir::private_file()
            .append(true)
            .create(true)
            .open(&db)
            .map_err(|source| EngineError::Io {
                path: db.clone(),
                source,
            })?;
        let store = Store::open(&config.state_dir.join("state.db"))?
            .observe_writes(crate::selfmetrics::record_db_write);
        let unfinished = store.unfinished_runs()?;
        for scope in systemd.list_scopes("drover-*.scope").await? {
            let run = scope.name.split('-').nth(1).unwrap_or_default();
            if unfinished.iter().any(|id| id == run) {
                tracing::info!(drover_run = %run, drover_event = "adopt", "scope {} ({}) of run {run} is still there", scope.name, scope.active_state);
            } else {
                tracing::warn!(
                    drover_event = "orphan-scope",
                    "scope {} ({}) belongs to no unfinished run in {}; left alone (`systemctl --user stop {}` ends it)",
                    scope.name,
                    scope.active_state,
                    config.state_dir.display(),
                    scope.name
                );
            }
        }
        let (events, _) = broadcast::channel(1024);
        let engine = Engine {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                live_output: Mutex::default(),
                drivers: Mutex::default(),
                systemd,
                config,
                events,
                locks: Mutex::default(),
                live_scopes: tokio::sync::watch::Sender::default(),
                wakeups: wakeups::FileWakeups::new(),
            }),
        };
        tokio::spawn(wakeups::list_scopes(Arc::downgrade(&engine.inner)));
        for run in unfinished {
            tracing::info!(drover_run = %run, drover_event = "adopt", "re-adopting run {run}");
            engine.readopt(run)?;
        }
        Ok(engine)
    }

    /// Every run transition and step start and end, in the order the state DB took them.
    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.inner.events.subscribe()
    }

    /// Validates and records a new run, then starts it. Bad input changes no state.
    /// Reads and validates a workflow file with `reader`'s rights: a regular file of at
    /// most [`MAX_WORKFLOW_FILE`] bytes, opened without ever waiting (a FIFO or a device is
    /// refused). Blocking.
    pub fn read_workflow(&self, path: &str, reader: &Account) -> Result<Workflow> {
        let path = Path::new(path);
        if !path.is_absolute() {
            return Err(EngineError::RelativePath(path.display().to_string()));
        }
        let bytes = credentials::with_rights_of(reader, || {
            credentials::read_regular_file(path, MAX_WORKFLOW_FILE)
        })??;
        let text = String::from_utf8(bytes).map_err(|_| EngineError::NotUtf8(path.to_owned()))?;
        Ok(spec::parse(&text, path)?)
    }

    /// Creates a run of a workflow read by [`Engine::read_workflow`], to run as `account`
    /// (whom the caller may ask for: the operations decide). Its workspace and requirements
    /// are checked with that account's rights before anything is created. Blocking.
    pub fn submit(&self, submission: Submission) -> Result<String> {
        let Submission {
            workflow_file,
            workflow,
            params,
            requested_by,
            account,
        } = submission;
        if let Some(bad) = params.keys().find(|k| !is_param_name(k)) {
            return Err(EngineError::InvalidParam(bad.clone()));
        }
        account.check_agent_can_act_as()?;
        if let Some(workspace) = &workflow.workspace {
            worktree::check_workspace(workspace, &account)?;
        }
        let unmet = self
            .inner
            .unmet_requirements(None, &workflow, &params, None, &account)?;
        if !unmet.is_empty() {
            return Err(EngineError::RequirementsUnmet {
                run: "(new)".into(),
                what: format!("workflow {} cannot start", workflow.name),
                unmet: recovery::requires::describe(&unmet),
            });
        }
        let spec_json = serde_json::to_string(&workflow).map_err(|e| EngineError::CorruptRun {
            run: "(new)".into(),
            reason: e.to_string(),
        })?;
        let id = new_run_id();
        self.inner.store().create_run(&NewRun {
            id: &id,
            workflow: &workflow.name,
            workflow_file: &workflow_file,
            spec_json: &spec_json,
            params: &params,
            requested_by: &requested_by,
            user: &RunUser {
                uid: account.uid,
                name: account.name.clone(),
            },
        })?;
        self.inner
            .announce(&id, &workflow.name, RunState::Pending, &requested_by);
        self.inner.spawn_driver(id.clone());
        Ok(id)
    }

    pub fn run(&self, id: &str) -> Result<Run> {
        self.inner
            .store()
            .run(id)?
            .map(|(run, spec_json)| {
                self.inner
                    .with_live_output(plan::with_pending_steps(run, &spec_json))
            })
            .ok_or_else(|| EngineError::NoSuchRun(id.to_owned()))
    }

    /// The workflow as stored with the run (what its steps run with, whatever its file
    /// says now).
    pub fn workflow_of(&self, run: &str) -> Result<Workflow> {
        Ok(self.inner.load(run)?.1)
    }

    /// Every run, newest first.
    pub fn runs(&self) -> Result<Vec<Run>> {
        self.runs_ended_since(None)
    }

    /// A page of runs, newest first (`store::RunQuery`).
    pub fn runs_page(&self, query: &RunQuery<'_>) -> Result<Vec<Run>> {
        let runs = self.inner.store().runs_page(query)?;
        Ok(runs
            .into_iter()
            .map(|run| self.inner.with_live_output(run))
            .collect())
    }

    /// The unfinished runs and those that ended at `since` or later (every run for `None`),
    /// newest first.
    pub fn runs_ended_since(&self, since: Option<Timestamp>) -> Result<Vec<Run>> {
        let runs = self.inner.store().runs_ended_since(since)?;
        Ok(runs
            .into_iter()
            .map(|run| self.inner.with_live_output(run))
            .collect())
    }

    /// Per-day history since `since` of `workflow`, or of every workflow (`drover history`).
    pub fn history(
        &self,
        workflow: Option<&str>,
        since: Timestamp,
    ) -> Result<crate::model::History> {
        Ok(crate::history::history(
            &self.inner.store(),
            workflow,
            since,
            Timestamp::now(),
        )?)
    }

    /// The output counters of the attempt running in `unit` right now (the monitor's
    /// read of what the engine follows); `None` once the attempt has ended.
    pub fn live_output(&self, unit: &str) -> Option<StepOutput> {
        let live = self.inner.live_output();
        let output = live.get(unit)?;
        Some(lock(output).clone())
    }

    /// The state directory (step logs and stream-json files live under `runs/`).
    pub fn state_dir(&self) -> &Path {
        &self.inner.config.state_dir
    }

    /// What keeps the engine from recording runs now, in words for an operator: state-DB
    /// writes failing, or the state directory's file system (nearly) full. Empty when
    /// nothing does.
    pub fn storage_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(failure) = crate::selfmetrics::global().db_write_failure() {
            problems.push(format!(
                "state DB writes fail since {} ({} failed; runs wait to be driven on): {}",
                failure.since, failure.failures, failure.error
            ));
        }
        let dir = self.state_dir();
        match state_dir::free_space(dir) {
            Ok(free) if free.bytes < LOW_SPACE => problems.push(format!(
                "the state directory {} has {} bytes free (step logs, exit records and the state DB need room)",
                dir.display(),
                free.bytes
            )),
            Ok(free) if free.inodes == Some(0) => problems.push(format!(
                "the state directory {} has no free inodes",
                dir.display()
            )),
            Ok(_) => {}
            Err(e) => problems.push(format!(
                "cannot tell the free space of the state directory {}: {e}",
                dir.display()
            )),
        }
        problems
    }

    /// Picks up a run the last agent left: a kill it had begun is carried through; any
    /// other run is driven on.
    fn readopt(&self, run: String) -> Result<()> {
        let (record, workflow) = self.inner.load(&run)?;
        if record.state == RunState::Restarting {
            // The restore may be half done; the operator restarts again (which restores
            // the whole checkpoint) rather than the run going on from a mixed worktree.
            let reason = "its restart was interrupted by an agent restart: restart it again";
            self.inner.store().set_run_state(
                &run,
                &[RunState::Restarting],
                RunState::Failed,
                "drover",
                Some(reason),
            )?;
            self.inner
                .announce(&run, &workflow.name, RunState::Failed, "drover");
            return Ok(());
        }
        if !record.state.is_being_killed() {
            self.inner.spawn_driver(run);
            return Ok(());
        }
        let pending = self
            .inner
            .store()
            .kills(Some(&run))?
            .into_iter()
            .rev()
            .find(|k| k.result == crate::model::KillResult::Pending);
        let kill = match pending {
            Some(kill) => kill,
            None => {
                let mut kill = crate::model::KillRecord::requested(
                    &run,
                    "drover",
                    "agent",
                    "resumed after an agent restart",
                );
                kill.id = self.inner.store().record_kill(&kill)?;
                kill
            }
        };
        let grace = kill
            .grace_ms
            .map_or(workflow.kill.grace, Duration::from_millis);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            if let Err(e) = inner.execute_kill(kill, &workflow, grace).await {
                tracing::error!(drover_run = %run, "resuming the kill of run {run} failed: {e}");
            }
        });
        Ok(())
    }
}

impl Inner {
    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    fn drivers(&self) -> MutexGuard<'_, HashMap<String, tokio::task::AbortHandle>> {
        lock(&self.drivers)
    }

    fn locks(&self, run: &str) -> RunLocks {
        lock(&self.locks).entry(run.to_owned()).or_default().clone()
    }

    /// Runs blocking git work on `run`'s worktree with the rights of the run's user,
    /// holding the run's git lock until the work itself ends (even if the caller is aborted
    /// meanwhile). The state DB's files are open already: the user's rights are for the
    /// worktree, the repository and the transcripts.
    async fn git_work<T: Send + 'static>(
        &self,
        run: &Run,
        worktree: &Path,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let account = self.account_of(run)?;
        let held = self.locks(&run.id).git.lock_owned().await;
        blocking(worktree, move || {
            let _held = held;
            credentials::with_rights_of(&account, work)?
        })
        .await
    }

    fn live_output(&self) -> MutexGuard<'_, HashMap<String, Arc<Mutex<StepOutput>>>> {
        lock(&self.live_output)
    }

    /// Fills in the output counters of the attempts that are running now.
    fn with_live_output(&self, mut run: Run) -> Run {
        let live = self.live_output();
        for step in &mut run.steps {
            if let Some(output) = step.unit.as_ref().and_then(|unit| live.get(unit)) {
                step.output = lock(output).clone();
            }
        }
        run
    }

    fn announce(&self, run: &str, workflow: &str, state: RunState, who: &str) {
        run_event!(
            info,
            run = run,
            workflow = workflow,
            "state",
            "run {run} ({workflow}) → {state} (by {who})"
        );
        let _ = self.events.send(EngineEvent::Run(RunTransition {
            run: run.to_owned(),
            workflow: workflow.to_owned(),
            state,
            by: who.to_owned(),
        }));
    }

    /// Announces that attempt `attempt` of step `index` started (`running`) or ended;
    /// called after the state DB holds it.
    fn announce_step(
        &self,
        run: &str,
        workflow: &str,
        (index, step): (u32, &str),
        attempt: u32,
        state: StepState,
        result: Option<&str>,
    ) {
        let _ = self.events.send(EngineEvent::Step(StepChange {
            run: run.to_owned(),
            workflow: workflow.to_owned(),
            step: step.to_owned(),
            index,
            attempt,
            state,
            result: result.map(str::to_owned),
        }));
    }

    fn load(&self, id: &str) -> Result<(Run, Workflow)> {
        let (run, spec_json) = self
            .store()
            .run(id)?
            .ok_or_else(|| EngineError::NoSuchRun(id.to_owned()))?;
        let workflow = serde_json::from_str(&spec_json).map_err(|e| EngineError::CorruptRun {
            run: id.to_owned(),
            reason: e.to_string(),
        })?;
        Ok((run, workflow))
    }

    /// The account `run` runs as, as the password database has it now (its groups may
    /// have changed since the submit); a run recorded before drover kept one ran as the
    /// agent.
    fn account_of(&self, run: &Run) -> Result<Account> {
        Ok(match &run.user {
            Some(user) => Account::of_uid(user.uid)?,
            None => Account::agent()?,
        })
    }
}

fn no_such_attempt(run: &str, step: &str, attempt: u32, latest: u32) -> String {
    match latest {
        0 => format!("step {step} of run {run} has no attempt {attempt}: it has not started"),
        1 => format!("step {step} of run {run} has no attempt {attempt}: it has attempt 1"),
        _ => format!(
            "step {step} of run {run} has no attempt {attempt}: it has attempts 1 to {latest}"
        ),
    }
}

/// Runs blocking work (git on a whole worktree, a step's log) off the async runtime.
async fn blocking<T: Send + 'static>(
    what: &Path,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| EngineError::Io {
            path: what.to_owned(),
            source: std::io::Error::other(e),
        })?
}

fn is_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A short id of lowercase letters and digits (systemd reads dashes as slice nesting).
fn new_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_short_lowercase_alphanumerics() {
        let id = new_run_id();
        assert_eq!(id.len(), 10);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }
}
