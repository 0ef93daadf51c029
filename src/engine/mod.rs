//! The run state machine and step execution. The engine owns run state: it decides the
//! next action from what the state DB holds (so a restarted agent picks up where the last
//! one stopped), records every transition before announcing it, and launches each step
//! through its shim into a transient scope.

mod checkpoint;
mod follow;
mod kill;
mod restart;
pub mod shim;
mod step;
mod wakeups;

pub use kill::KillRequest;
pub use restart::ActionRequest;

/// journald `MESSAGE_ID` of every kill record (`journalctl MESSAGE_ID=…`).
pub const KILL_MESSAGE_ID: &str = "5f8c1d6e2a7b4c39b0e1d2c3a4b5c6d7";

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::model::FailureClass;
use crate::model::{Run, RunState, StepAttempt, StepOutput, StepState, Timestamp};
use crate::recovery;
use crate::snapshot::SnapshotError;
use crate::spec::{self, Workflow};
use crate::store::{NewRun, Store, StoreError};
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

type Result<T> = std::result::Result<T, EngineError>;

/// A run reached a new state; sent only after the state DB holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEvent {
    pub run: String,
    pub state: RunState,
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
    events: broadcast::Sender<RunEvent>,
    /// Per-run locks for git work and operators' actions.
    locks: Mutex<HashMap<String, RunLocks>>,
    /// Which step scopes systemd has active, refreshed every second by one task for all
    /// the steps being awaited (one D-Bus call, not one per step).
    live_scopes: tokio::sync::watch::Sender<LiveScopes>,
    /// Wakes a step's wait when its exit file or log is written.
    wakeups: wakeups::FileWakeups,
}

/// A snapshot of the active `drover-*.scope` units.
#[derive(Debug, Clone, Default)]
struct LiveScopes {
    taken: Option<tokio::time::Instant>,
    active: std::collections::HashSet<String>,
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

/// What a run needs next, decided from its workflow and the attempts the DB holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Start {
        index: usize,
        attempt: u32,
    },
    Await {
        index: usize,
        attempt: u32,
    },
    /// Attempt `attempt` of a failed step, as retry number `retry`, after the backoff.
    Retry {
        index: usize,
        attempt: u32,
        retry: u32,
    },
    Finish {
        state: RunState,
        reason: Option<String>,
        failure: Option<FailureClass>,
    },
}

/// The result an attempt gets when its shim saw the start gate close unopened: the step
/// never ran, so it is started again as a new attempt.
const NEVER_STARTED: &str = "never-started";

fn next_action(workflow: &Workflow, run: &Run) -> Action {
    for (index, step) in workflow.steps.iter().enumerate() {
        let restart = run.restart.as_ref();
        if restart.is_some_and(|r| (index as u32) < r.next_step) {
            continue; // done by the checkpoint the run was restarted from
        }
        let first = restart.map_or(1, |r| r.first_attempts.get(index).copied().unwrap_or(1));
        let Some(attempt) = run
            .steps
            .iter()
            .find(|a| a.index as usize == index && a.attempt >= first)
        else {
            return Action::Start {
                index,
                attempt: first,
            };
        };
        match attempt.state {
            StepState::Succeeded => continue,
            StepState::Failed if attempt.result.as_deref() == Some(NEVER_STARTED) => {
                return Action::Start {
                    index,
                    attempt: attempt.attempt + 1,
                };
            }
            StepState::Failed | StepState::Killed => {
                let so_far = attempt.attempt + 1 - first;
                if let Some(retry) = recovery::retry_number(step, attempt.failure_class, so_far) {
                    return Action::Retry {
                        index,
                        attempt: attempt.attempt + 1,
                        retry,
                    };
                }
                let how = match (attempt.failure_class, &attempt.failure_evidence) {
                    (Some(class), Some(evidence)) => format!("{class}: {evidence}"),
                    _ => attempt.result.clone().unwrap_or_else(|| "failed".into()),
                };
                return Action::Finish {
                    state: RunState::Failed,
                    reason: Some(format!("step {} failed: {how}", step.name)),
                    failure: attempt.failure_class,
                };
            }
            StepState::Pending | StepState::Starting | StepState::Running => {
                return Action::Await {
                    index,
                    attempt: attempt.attempt,
                };
            }
        }
    }
    Action::Finish {
        state: RunState::Succeeded,
        reason: None,
        failure: None,
    }
}

impl Engine {
    /// Opens the state DB and re-adopts every run that had not finished when the last
    /// agent stopped: their steps kept running in their scopes.
    pub async fn start(config: EngineConfig, systemd: Systemd) -> Result<Engine> {
        let runs_dir = config.state_dir.join("runs");
        std::fs::create_dir_all(&runs_dir).map_err(|source| EngineError::Io {
            path: runs_dir.clone(),
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
                live_scopes: tokio::sync::watch::Sender::new(LiveScopes::default()),
                wakeups: wakeups::FileWakeups::new(),
            }),
        };
        tokio::spawn(watch_scopes(Arc::downgrade(&engine.inner)));
        for run in unfinished {
            tracing::info!(drover_run = %run, drover_event = "adopt", "re-adopting run {run}");
            engine.readopt(run)?;
        }
        Ok(engine)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<RunEvent> {
        self.inner.events.subscribe()
    }

    /// Validates and records a new run, then starts it. Bad input changes no state.
    pub fn submit(
        &self,
        workflow_file: &str,
        params: BTreeMap<String, String>,
        who: &str,
    ) -> Result<String> {
        if !Path::new(workflow_file).is_absolute() {
            return Err(EngineError::RelativePath(workflow_file.to_owned()));
        }
        let workflow = spec::load(Path::new(workflow_file))?;
        if let Some(bad) = params.keys().find(|k| !is_param_name(k)) {
            return Err(EngineError::InvalidParam(bad.clone()));
        }
        if let Some(workspace) = &workflow.workspace {
            worktree::check_workspace(workspace)?;
        }
        let unmet = self
            .inner
            .unmet_requirements(None, &workflow, &params, None);
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
            workflow_file,
            spec_json: &spec_json,
            params: &params,
            requested_by: who,
        })?;
        self.inner
            .announce(&id, &workflow.name, RunState::Pending, who);
        self.spawn_driver(id.clone());
        Ok(id)
    }

    pub fn run(&self, id: &str) -> Result<Run> {
        self.inner
            .store()
            .run(id)?
            .map(|(run, spec_json)| {
                self.inner
                    .with_live_output(with_pending_steps(run, &spec_json))
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
    ) -> Result<crate::history::History> {
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
        Some(output.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// The state directory (step logs and stream-json files live under `runs/`).
    pub fn state_dir(&self) -> &Path {
        &self.inner.config.state_dir
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
            self.spawn_driver(run);
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

    fn spawn_driver(&self, run: String) {
        self.inner.spawn_driver(run);
    }
}

impl Inner {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn drivers(&self) -> MutexGuard<'_, HashMap<String, tokio::task::AbortHandle>> {
        self.drivers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn locks(&self, run: &str) -> RunLocks {
        self.locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(run.to_owned())
            .or_default()
            .clone()
    }

    /// Runs blocking git work on `run`'s worktree, holding the run's git lock until the
    /// work itself ends (even if the caller is aborted meanwhile).
    async fn git_work<T: Send + 'static>(
        &self,
        run: &str,
        worktree: &Path,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let held = self.locks(run).git.lock_owned().await;
        blocking(worktree, move || {
            let _held = held;
            work()
        })
        .await
    }

    /// Starts the task that drives `run` to its end; one at a time per run, so its attempts
    /// never overlap (a restarted run's new driver waits for the last one to finish
    /// recording the run's end).
    fn spawn_driver(self: &Arc<Self>, run: String) {
        let mut drivers = self.drivers();
        let previous = drivers.remove(&run);
        let inner = self.clone();
        let id = run.clone();
        let task = tokio::spawn(async move {
            if let Some(previous) = previous {
                while !previous.is_finished() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            if let Err(e) = inner.drive(&run).await {
                tracing::error!(drover_run = %run, "run {run} failed: {e}");
                if let Err(store_err) = inner
                    .finish(&run, RunState::Failed, Some(&e.to_string()), None)
                    .await
                {
                    tracing::error!(drover_run = %run, "cannot record the failure of run {run}: {store_err}");
                }
            }
            let mut drivers = inner.drivers();
            if drivers
                .get(&run)
                .is_some_and(|t| t.id() == tokio::task::id())
            {
                drivers.remove(&run);
            }
        });
        drivers.insert(id, task.abort_handle());
    }

    /// Stops the task driving `run` (at an await point: no DB write is torn; what it was
    /// doing is in the DB for whoever takes over).
    fn abort_driver(&self, run: &str) {
        if let Some(task) = self.drivers().remove(run) {
            task.abort();
        }
    }

    /// The run's slice outlives its scopes; nothing of the run remains once it is stopped.
    async fn stop_slice(&self, run: &str) {
        if let Err(e) = self.systemd.stop_unit(&format!("drover-{run}.slice")).await {
            tracing::warn!(drover_run = %run, "cannot stop the slice of run {run}: {e}");
        }
    }

    fn live_output(&self) -> MutexGuard<'_, HashMap<String, Arc<Mutex<StepOutput>>>> {
        self.live_output
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fills in the output counters of the attempts that are running now.
    fn with_live_output(&self, mut run: Run) -> Run {
        let live = self.live_output();
        for step in &mut run.steps {
            if let Some(output) = step.unit.as_ref().and_then(|unit| live.get(unit)) {
                step.output = output.lock().unwrap_or_else(|p| p.into_inner()).clone();
            }
        }
        run
    }

    fn announce(&self, run: &str, workflow: &str, state: RunState, who: &str) {
        tracing::info!(
            drover_run = %run,
            drover_workflow = %workflow,
            drover_event = "state",
            "run {run} ({workflow}) → {state} (by {who})"
        );
        let _ = self.events.send(RunEvent {
            run: run.to_owned(),
            state,
        });
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

    /// Ends a run that is still pending or running; a run a kill took over is left to it.
    async fn finish(
        &self,
        id: &str,
        state: RunState,
        reason: Option<&str>,
        failure: Option<FailureClass>,
    ) -> Result<()> {
        let (run, _) = self.load(id)?;
        let moved = if state == RunState::Failed {
            let reason = reason.unwrap_or("failed");
            self.store().fail_run(id, failure, reason)?
        } else {
            let from = [RunState::Pending, RunState::Running];
            self.store()
                .set_run_state(id, &from, state, "drover", reason)?
        };
        if moved {
            self.announce(id, &run.workflow, state, "drover");
            self.stop_slice(id).await;
        }
        Ok(())
    }

    /// Gives a run with a workspace its worktree, at the same path for all its life (Claude
    /// Code finds its sessions by the working directory): made before the first step, and
    /// made again if it is gone (a run killed while pending, a worktree removed by hand).
    fn ensure_worktree(&self, run: &Run, workflow: &Workflow) -> Result<()> {
        let Some(workspace) = &workflow.workspace else {
            return Ok(());
        };
        let path = self.config.state_dir.join("worktrees").join(&run.id);
        worktree::create(workspace, &path)?;
        if run.worktree.is_none() {
            self.store()
                .set_worktree(&run.id, &path.to_string_lossy())?;
        }
        Ok(())
    }

    /// Takes a run from wherever the DB says it is to its end.
    async fn drive(self: &Arc<Self>, id: &str) -> Result<()> {
        let (run, workflow) = self.load(id)?;
        self.ensure_worktree(&run, &workflow)?;
        if run.state == RunState::Pending {
            let from = [RunState::Pending];
            if !self
                .store()
                .set_run_state(id, &from, RunState::Running, "drover", None)?
            {
                return Ok(()); // a kill took the run over
            }
            self.announce(id, &workflow.name, RunState::Running, "drover");
        }
        loop {
            let (run, _) = self.load(id)?;
            match next_action(&workflow, &run) {
                Action::Start { index, attempt } => {
                    self.take_owed_checkpoint(&run, &workflow, index).await;
                    let session = session_to_resume(&run, index, attempt);
                    self.start_step(&run, &workflow, index, attempt, session)
                        .await?;
                }
                Action::Retry {
                    index,
                    attempt,
                    retry,
                } => {
                    self.wait_for_retry(&run, &workflow, index, attempt, retry)
                        .await?;
                    let session = match self.restore_for_retry(&run, &workflow, index).await? {
                        Some(restored) => restored,
                        None => session_to_resume(&run, index, attempt),
                    };
                    let (run, _) = self.load(id)?;
                    self.start_step(&run, &workflow, index, attempt, session)
                        .await?;
                }
                Action::Await { index, attempt } => {
                    step::await_end(self, &run, &workflow, index, attempt).await?;
                }
                Action::Finish {
                    state,
                    reason,
                    failure,
                } => {
                    if state == RunState::Succeeded {
                        self.take_owed_checkpoint(&run, &workflow, workflow.steps.len())
                            .await;
                    }
                    return self.finish(id, state, reason.as_deref(), failure).await;
                }
            }
        }
    }

    /// Takes the checkpoint a `checkpoint = true` step before step `next` is owed, unless
    /// the DB has it (the agent may have died between the step's end and its checkpoint).
    /// A failure costs a restart point, not the run: it is logged and the run goes on.
    async fn take_owed_checkpoint(self: &Arc<Self>, run: &Run, workflow: &Workflow, next: usize) {
        let Some(done) = next.checked_sub(1) else {
            return;
        };
        let step = &workflow.steps[done];
        let restored = run
            .restart
            .as_ref()
            .is_some_and(|r| next <= r.next_step as usize);
        if !step.checkpoint || run.worktree.is_none() || restored {
            return;
        }
        let Some(ended) = run
            .steps
            .iter()
            .find(|a| a.index as usize == done && a.state == StepState::Succeeded)
            .and_then(|a| a.ended_at)
        else {
            return;
        };
        let taken = self.store().checkpoints(&run.id).map(|all| {
            all.iter()
                .any(|c| c.next_step as usize == next && c.created_at >= ended)
        });
        if matches!(taken, Ok(true)) {
            return;
        }
        let label = format!("after step {}", step.name);
        if let Err(e) = self.take_checkpoint(&run.id, "step", &label, None).await {
            tracing::error!(
                drover_run = %run.id,
                drover_step = %step.name,
                drover_event = "checkpoint-failed",
                "run {}: the checkpoint after step {} failed: {e}",
                run.id,
                step.name
            );
        }
    }

    /// Starts an attempt once the step's requirements are met; an unmet one fails the
    /// attempt as `dependency` without starting anything.
    async fn start_step(
        self: &Arc<Self>,
        run: &Run,
        workflow: &Workflow,
        index: usize,
        attempt: u32,
        session: Option<String>,
    ) -> Result<()> {
        let Some(time_left) = time_left(workflow, run) else {
            let reason = "the workflow's time limit ran out";
            return self
                .finish(
                    &run.id,
                    RunState::Failed,
                    Some(reason),
                    Some(FailureClass::Timeout),
                )
                .await;
        };
        let unmet = self.unmet_requirements(Some(run), workflow, &run.params, Some(index));
        if !unmet.is_empty() {
            let evidence = recovery::requires::describe(&unmet);
            return step::refuse(self, run, workflow, index, attempt, &evidence);
        }
        step::start(self, run, workflow, index, attempt, time_left, session).await
    }

    /// Sleeps until the retry is due, scheduling it first (`next_attempt_at`, kept in the
    /// DB so an agent restart keeps the time).
    async fn wait_for_retry(
        &self,
        run: &Run,
        workflow: &Workflow,
        index: usize,
        attempt: u32,
        retry: u32,
    ) -> Result<()> {
        let step = &workflow.steps[index];
        let at = match run.next_attempt_at {
            Some(at) => at,
            None => {
                let delay = step.retry.delay(retry, fastrand::f64());
                let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                let at = Timestamp(Timestamp::now().0.saturating_add(delay_ms));
                let failed = run.steps.iter().find(|a| a.index as usize == index);
                let why = failed
                    .and_then(|a| {
                        Some(format!(
                            "{}: {}",
                            a.failure_class?,
                            a.failure_evidence.as_deref()?
                        ))
                    })
                    .unwrap_or_else(|| "failed".into());
                let reason = format!(
                    "retry {retry} of {} at {at} (after {}), because of {why}",
                    step.retry.max_attempts - 1,
                    humantime::format_duration(Duration::from_millis(delay_ms as u64))
                );
                self.store()
                    .schedule_retry(&run.id, &step.name, attempt - 1, at, &reason)?;
                tracing::info!(
                    drover_run = %run.id,
                    drover_step = %step.name,
                    drover_workflow = %workflow.name,
                    drover_event = "retry-scheduled",
                    "run {}: step {} {reason}",
                    run.id,
                    step.name
                );
                self.announce(&run.id, &workflow.name, run.state, "drover");
                at
            }
        };
        let wait = Duration::from_millis((at.0 - Timestamp::now().0).max(0) as u64);
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

/// The Claude Code session an attempt continues: for the first attempt after a restart,
/// the one the checkpoint recorded; for a later attempt, its step's previous one.
fn session_to_resume(run: &Run, index: usize, attempt: u32) -> Option<String> {
    let first = run
        .restart
        .as_ref()
        .and_then(|r| r.first_attempts.get(index).copied())
        .unwrap_or(1);
    if attempt == first {
        return run.restart.as_ref()?.sessions.get(&(index as u32)).cloned();
    }
    run.steps
        .iter()
        .find(|a: &&StepAttempt| a.index as usize == index)
        .and_then(|a| a.session_id.clone())
}

/// Refreshes `live_scopes` every second while the engine lives.
async fn watch_scopes(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(step::UNIT_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        match inner.systemd.list_scopes("drover-*.scope").await {
            Ok(scopes) => {
                let active = scopes
                    .into_iter()
                    .filter(|s| {
                        matches!(
                            s.active_state.as_str(),
                            "active" | "activating" | "deactivating" | "reloading"
                        )
                    })
                    .map(|s| s.name)
                    .collect();
                inner.live_scopes.send_replace(LiveScopes {
                    taken: Some(tokio::time::Instant::now()),
                    active,
                });
            }
            Err(e) => tracing::warn!("cannot list the step scopes: {e}"),
        }
    }
}

/// Runs blocking work (git on a whole worktree) off the async runtime.
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

/// What remains of the workflow's time limit (`None` once it has run out); unlimited
/// workflows get `Some(Duration::MAX)`.
fn time_left(workflow: &Workflow, run: &Run) -> Option<Duration> {
    let Some(limit) = workflow.limits.timeout else {
        return Some(Duration::MAX);
    };
    // A restart gives the run its whole time limit again.
    let started = run
        .restart
        .as_ref()
        .and_then(|r| r.at)
        .or(run.started_at)
        .unwrap_or(run.created_at);
    let elapsed = Duration::from_millis((Timestamp::now().0 - started.0).max(0) as u64);
    limit.checked_sub(elapsed).filter(|left| !left.is_zero())
}

/// Lists the steps not started yet too, so a run shows its whole plan.
fn with_pending_steps(mut run: Run, spec_json: &str) -> Run {
    let Ok(workflow) = serde_json::from_str::<Workflow>(spec_json) else {
        return run;
    };
    run.protected = workflow.protected;
    for (index, step) in workflow.steps.iter().enumerate() {
        if !run.steps.iter().any(|a| a.index as usize == index) {
            run.steps
                .push(StepAttempt::planned(&step.name, index as u32));
        }
    }
    run.steps.sort_by_key(|a| a.index);
    run
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
    use crate::model::StepAttempt;

    fn workflow(steps: &[&str]) -> Workflow {
        let mut text = String::from("name = \"wf\"\n");
        for s in steps {
            text.push_str(&format!("[[step]]\nname = \"{s}\"\nrun = \"true\"\n"));
        }
        spec::parse(&text, Path::new("/w.toml")).expect("test workflow parses")
    }

    fn run_with(attempts: Vec<StepAttempt>) -> Run {
        Run {
            id: "r".into(),
            workflow: "wf".into(),
            workflow_file: "/w.toml".into(),
            protected: false,
            state: RunState::Running,
            params: BTreeMap::new(),
            worktree: None,
            requested_by: "t".into(),
            created_at: Timestamp(0),
            started_at: None,
            ended_at: None,
            error: None,
            steps: attempts,
            kill: None,
            next_attempt_at: None,
            restart: None,
            failure_class: None,
        }
    }

    fn attempt(index: u32, attempt: u32, state: StepState, result: Option<&str>) -> StepAttempt {
        StepAttempt {
            attempt,
            state,
            result: result.map(str::to_owned),
            ..StepAttempt::planned(&format!("s{index}"), index)
        }
    }

    #[test]
    fn a_fresh_run_starts_its_first_step() {
        let wf = workflow(&["a", "b"]);
        assert_eq!(
            next_action(&wf, &run_with(vec![])),
            Action::Start {
                index: 0,
                attempt: 1
            }
        );
    }

    #[test]
    fn after_a_success_the_next_step_starts_and_after_the_last_the_run_succeeds() {
        let wf = workflow(&["a", "b"]);
        let one = vec![attempt(0, 1, StepState::Succeeded, Some("success"))];
        assert_eq!(
            next_action(&wf, &run_with(one)),
            Action::Start {
                index: 1,
                attempt: 1
            }
        );
        let both = vec![
            attempt(0, 1, StepState::Succeeded, Some("success")),
            attempt(1, 1, StepState::Succeeded, Some("success")),
        ];
        assert_eq!(
            next_action(&wf, &run_with(both)),
            Action::Finish {
                state: RunState::Succeeded,
                reason: None,
                failure: None
            }
        );
    }

    #[test]
    fn a_failed_step_fails_the_run_and_later_steps_do_not_start() {
        let wf = workflow(&["a", "b"]);
        let failed = vec![attempt(0, 1, StepState::Failed, Some("exit-code"))];
        assert_eq!(
            next_action(&wf, &run_with(failed)),
            Action::Finish {
                state: RunState::Failed,
                reason: Some("step a failed: exit-code".into()),
                failure: None
            }
        );
    }

    #[test]
    fn an_adopted_step_is_awaited_and_a_never_started_one_is_started_again() {
        let wf = workflow(&["a"]);
        let running = vec![attempt(0, 2, StepState::Running, None)];
        assert_eq!(
            next_action(&wf, &run_with(running)),
            Action::Await {
                index: 0,
                attempt: 2
            }
        );
        let gate_closed = vec![attempt(0, 1, StepState::Failed, Some(NEVER_STARTED))];
        assert_eq!(
            next_action(&wf, &run_with(gate_closed)),
            Action::Start {
                index: 0,
                attempt: 2
            }
        );
    }

    #[test]
    fn a_retryable_failure_is_retried_until_the_attempts_run_out() {
        let text = "name = \"wf\"\n[[step]]\nname = \"a\"\nrun = \"true\"\n[step.retry]\nmax_attempts = 2\n";
        let wf = spec::parse(text, Path::new("/w.toml")).unwrap();
        let transient = |n| StepAttempt {
            failure_class: Some(FailureClass::Transient),
            failure_evidence: Some("HTTP 529".into()),
            ..attempt(0, n, StepState::Failed, Some("exit-code"))
        };
        assert_eq!(
            next_action(&wf, &run_with(vec![transient(1)])),
            Action::Retry {
                index: 0,
                attempt: 2,
                retry: 1
            }
        );
        assert_eq!(
            next_action(&wf, &run_with(vec![transient(2)])),
            Action::Finish {
                state: RunState::Failed,
                reason: Some("step a failed: transient: HTTP 529".into()),
                failure: Some(FailureClass::Transient)
            }
        );
    }

    #[test]
    fn after_a_restart_earlier_steps_are_done_and_later_ones_start_over() {
        let wf = workflow(&["a", "b", "c"]);
        let mut run = run_with(vec![
            attempt(0, 1, StepState::Succeeded, Some("success")),
            attempt(1, 1, StepState::Killed, Some("killed")),
        ]);
        run.restart = Some(recovery::restart_point(
            Some(2),
            1,
            &BTreeMap::from([(0, 1), (1, 1)]),
            3,
            BTreeMap::new(),
        ));
        assert_eq!(
            next_action(&wf, &run),
            Action::Start {
                index: 1,
                attempt: 2
            }
        );
        run.steps[1] = attempt(1, 2, StepState::Succeeded, Some("success"));
        assert_eq!(
            next_action(&wf, &run),
            Action::Start {
                index: 2,
                attempt: 1
            }
        );
    }

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
