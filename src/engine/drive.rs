//! The driver loop: one task per run takes it from wherever the state DB says it is to its
//! end, acting on what the planner (`engine::plan`) decides: starting and awaiting
//! attempts, scheduling retries, taking owed checkpoints, finishing the run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::plan::{self, Action};
use super::{Inner, Result, step};
use crate::model::FailureClass;
use crate::model::{Run, RunState, StepState, Timestamp};
use crate::recovery;
use crate::spec::Workflow;
use crate::worktree;

/// The first and the longest wait before a run whose transition could not be recorded is
/// driven again: short enough to go on soon after space returns, long enough not to spin.
pub(super) const REDRIVE_FIRST: Duration = Duration::from_millis(250);
pub(super) const REDRIVE_MAX: Duration = Duration::from_secs(5);

impl Inner {
    /// Starts the task that drives `run` to its end; one at a time per run, so its attempts
    /// never overlap (a restarted run's new driver waits for the last one to finish
    /// recording the run's end).
    pub(super) fn spawn_driver(self: &Arc<Self>, run: String) {
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
            inner.drive_to_end(&run).await;
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

    /// Drives `run` to its end. A state-DB write that fails for now (a full disk) leaves the
    /// run where the DB last recorded it, and it is driven again from there (as an agent
    /// restart would) until its transitions are recorded; any other error fails the run.
    async fn drive_to_end(self: &Arc<Self>, run: &str) {
        let mut wait = REDRIVE_FIRST;
        let mut waited = false;
        loop {
            let outcome = match self.drive(run).await {
                Err(e) if !e.is_transient() => {
                    tracing::error!(drover_run = %run, "run {run} failed: {e}");
                    self.finish(run, RunState::Failed, Some(&e.to_string()), None)
                        .await
                }
                outcome => outcome,
            };
            match outcome {
                Ok(()) => return,
                Err(e) if e.is_transient() => {
                    let message = format!(
                        "run {run}: the state DB cannot be written ({e}): the run is driven again from its last recorded state in {}",
                        humantime::format_duration(wait)
                    );
                    if waited {
                        tracing::debug!(drover_run = %run, "{message}");
                    } else {
                        tracing::warn!(drover_run = %run, drover_event = "run-redrive", "{message}");
                    }
                    tokio::time::sleep(wait).await;
                    (wait, waited) = ((wait * 2).min(REDRIVE_MAX), true);
                }
                Err(e) => {
                    tracing::error!(drover_run = %run, "cannot record the failure of run {run}: {e}");
                    return;
                }
            }
        }
    }

    /// Stops the task driving `run` (at an await point: no DB write is torn; what it was
    /// doing is in the DB for whoever takes over).
    pub(super) fn abort_driver(&self, run: &str) {
        if let Some(task) = self.drivers().remove(run) {
            task.abort();
        }
    }

    /// The run's slice outlives its scopes; nothing of the run remains once it is stopped.
    pub(super) async fn stop_slice(&self, run: &str) {
        if let Err(e) = self.systemd.stop_unit(&format!("drover-{run}.slice")).await {
            tracing::warn!(drover_run = %run, "cannot stop the slice of run {run}: {e}");
        }
    }

    /// Ends a run that is still pending or running; a run a kill took over is left to it.
    pub(super) async fn finish(
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
    /// Code finds its sessions by the working directory): made, as the run's user, before
    /// the first step, and made again if it is gone (a run killed while pending, a worktree
    /// removed by hand).
    pub(super) fn ensure_worktree(&self, run: &Run, workflow: &Workflow) -> Result<()> {
        let Some(workspace) = &workflow.workspace else {
            return Ok(());
        };
        let account = self.account_of(run)?;
        let path = match &run.worktree {
            Some(path) => PathBuf::from(path),
            None => worktree::path_for(workspace, &run.id, &account)?,
        };
        worktree::create(workspace, &path, &account)?;
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
            match plan::next_action(&workflow, &run) {
                Action::Start { index, attempt } => {
                    self.take_owed_checkpoint(&run, &workflow, index).await;
                    let session = plan::session_to_resume(&run, index, attempt);
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
                        None => plan::session_to_resume(&run, index, attempt),
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
            run_event!(
                error,
                run = run.id,
                workflow = workflow.name,
                step = step.name,
                "checkpoint-failed",
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
        let Some(time_left) = plan::time_left(workflow, run) else {
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
        let unmet = self.unmet_requirements(
            Some(run),
            workflow,
            &run.params,
            Some(index),
            &self.account_of(run)?,
        )?;
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
                let at = Timestamp::now().plus(delay);
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
                    humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
                );
                self.store()
                    .schedule_retry(&run.id, &step.name, attempt - 1, at, &reason)?;
                run_event!(
                    info,
                    run = run.id,
                    workflow = workflow.name,
                    step = step.name,
                    "retry-scheduled",
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
