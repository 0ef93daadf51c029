//! A kill as the engine drives it: the request (recorded with the run's move to
//! `stopping` in one transaction), the critical-section wait, the termination (the `terminate`
//! part), the attempt's end, cleanup and the final snapshot, and the outcome in the audit
//! trail. A kill that an agent restart interrupted is resumed by the next agent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::drive::{REDRIVE_FIRST, REDRIVE_MAX};
use super::follow::Follower;
use super::step::{self, AttemptFiles};
use super::{Engine, EngineError, Inner, Result};
use crate::claude;
use crate::credentials;
use crate::engine::shim;
use crate::model::{
    CleanupAction, KillPhase, KillRecord, KillResult, Requester, Run, RunState, StepAttempt,
    StepState, Timestamp,
};
use crate::model::{Failure, FailureClass};
use crate::spec::{Step, Workflow};
use crate::store::AttemptEnd;
use crate::sync::lock;
use crate::terminate::{self, Clock, Target};

/// Of the kill budget, what SIGKILL leaves for cleanup and the snapshot.
const CLEANUP_RESERVE: Duration = Duration::from_secs(1);

/// Who asks for a kill, and how.
#[derive(Debug, Clone)]
pub struct KillRequest {
    pub run: String,
    pub reason: String,
    pub by: Requester,
    /// Overrides the workflow's `[kill] grace`.
    pub grace: Option<Duration>,
    /// Needed for a `protected` workflow.
    pub confirm: bool,
}

impl KillRequest {
    fn record(&self) -> KillRecord {
        let mut record = KillRecord::requested(
            &self.run,
            &self.by.requested_by,
            &self.by.channel,
            &self.reason,
        );
        record.uid = self.by.uid;
        record.role = self.by.role.clone();
        record
    }
}

impl Engine {
    /// Kills a run and returns the outcome once the run is `killed` (or the kill failed).
    pub async fn kill(&self, request: KillRequest) -> Result<KillRecord> {
        let inner = &self.inner;
        let (run, workflow) = inner.load(&request.run)?;
        if run.state.is_terminal() {
            return Err(EngineError::AlreadyEnded {
                run: run.id,
                state: run.state,
            });
        }
        if run.state.is_being_killed() {
            return Err(EngineError::KillInProgress(run.id));
        }
        if workflow.protected && !request.confirm {
            let why = format!(
                "run {} (workflow {}) is protected: confirm the kill (drover kill --yes, or the option confirm=true)",
                run.id, workflow.name
            );
            self.refuse_kill(&request, &why)?;
            return Err(EngineError::Unconfirmed(why));
        }
        let grace = request.grace.unwrap_or(workflow.kill.grace);
        if workflow.kill.critical_max + grace >= workflow.kill.budget {
            return Err(EngineError::GraceTooLong {
                grace,
                budget: workflow.kill.budget,
                critical_max: workflow.kill.critical_max,
            });
        }
        let mut record = request.record();
        record.grace_ms = Some(grace.as_millis() as u64);
        // Bound first: the store's guard must not be held across the awaits below.
        let started = inner.store().start_kill(&record);
        let started = match started {
            Err(e) if e.is_transient() => {
                return inner
                    .kill_unrecorded(record, &run, workflow, grace, e)
                    .await;
            }
            started => started?,
        };
        let Some(id) = started else {
            // The run moved on between the check and the transaction.
            let (run, _) = inner.load(&request.run)?;
            return Err(if run.state.is_terminal() {
                EngineError::AlreadyEnded {
                    run: run.id,
                    state: run.state,
                }
            } else {
                EngineError::KillInProgress(run.id)
            });
        };
        record.id = id;
        inner.announce(
            &run.id,
            &workflow.name,
            RunState::Stopping,
            &request.by.requested_by,
        );
        inner.abort_driver(&run.id);
        inner.execute_kill(record, &workflow, grace).await
    }

    /// Records a refused kill (role, confirmation) in the audit trail; changes nothing else.
    pub fn refuse_kill(&self, request: &KillRequest, why: &str) -> Result<()> {
        let mut record = request.record();
        record.result = KillResult::Refused;
        record.error = Some(why.to_owned());
        record.ended_at = Some(Timestamp::now());
        self.inner.store().record_kill(&record)?;
        crate::selfmetrics::global().kill_ended(KillResult::Refused, None);
        tracing::warn!(
            drover_run = %request.run,
            drover_event = "kill",
            message_id = super::KILL_MESSAGE_ID,
            "kill of run {} refused: {why}",
            request.run
        );
        Ok(())
    }

    /// The kill audit trail, oldest first: of one run, or of all.
    pub fn kills(&self, run: Option<&str>) -> Result<Vec<KillRecord>> {
        Ok(self.inner.store().kills(run)?)
    }

    /// Opens a critical span in a running run: a kill waits for it (up to `critical_max`).
    pub fn enter_critical(&self, run: &str, label: &str, who: &str) -> Result<()> {
        if self.inner.store().enter_critical(run, label, who)? {
            return Ok(());
        }
        let (run, _) = self.inner.load(run)?;
        Err(EngineError::NotRunning {
            run: run.id,
            state: run.state,
        })
    }

    pub fn leave_critical(&self, run: &str, label: &str) -> Result<()> {
        if self.inner.store().leave_critical(run, label)? {
            return Ok(());
        }
        Err(EngineError::NoCriticalSpan {
            run: run.to_owned(),
            label: label.to_owned(),
        })
    }
}

impl Inner {
    /// A kill the state DB cannot record now (a full disk, which the step's own output may
    /// have filled). The step is stopped all the same, since stopping it may be what the
    /// disk needs, and its run is driven no further; the request is recorded and the kill
    /// carried through (cleanup, final checkpoint, audit) once the DB takes writes again.
    /// The caller hears what was done and what waits.
    async fn kill_unrecorded(
        self: &Arc<Self>,
        mut record: KillRecord,
        run: &Run,
        workflow: Workflow,
        grace: Duration,
        error: crate::store::StoreError,
    ) -> Result<KillRecord> {
        self.abort_driver(&run.id);
        let requested = Instant::now();
        let clock = Clock {
            requested,
            grace,
            deadline: requested + workflow.kill.budget.saturating_sub(CLEANUP_RESERVE),
        };
        let mut processes_left = 0;
        if let Some(attempt) = running_attempt(run) {
            processes_left = self
                .stop_attempt(&mut record, run, &workflow.steps, &attempt, &clock)
                .await;
        }
        run_event!(
            error,
            run = run.id,
            workflow = workflow.name,
            "kill",
            message_id = super::KILL_MESSAGE_ID,
            "run {}: the kill requested by {} cannot be recorded ({error}): its step was stopped ({processes_left} processes left); the kill is recorded and finished once the state DB can be written",
            run.id,
            record.requested_by
        );
        let inner = self.clone();
        let id = run.id.clone();
        tokio::spawn(async move {
            let mut wait = REDRIVE_FIRST;
            loop {
                tokio::time::sleep(wait).await;
                let started = inner.store().start_kill(&record);
                match started {
                    Ok(Some(n)) => {
                        record.id = n;
                        let by = record.requested_by.clone();
                        inner.announce(&id, &workflow.name, RunState::Stopping, &by);
                        if let Err(e) = inner.execute_kill(record, &workflow, grace).await {
                            tracing::error!(drover_run = %id, "the deferred kill of run {id} failed: {e}");
                        }
                        return;
                    }
                    // The run ended, or another kill took it, in the meantime.
                    Ok(None) => return,
                    Err(e) if e.is_transient() => wait = (wait * 2).min(REDRIVE_MAX),
                    Err(e) => {
                        tracing::error!(drover_run = %id, "the kill of run {id} cannot be recorded: {e}");
                        return;
                    }
                }
            }
        });
        Err(EngineError::KillNotRecorded {
            run: run.id.clone(),
            processes_left,
            error,
        })
    }

    /// Carries a recorded kill request through to its outcome.
    pub(super) async fn execute_kill(
        self: &Arc<Self>,
        mut record: KillRecord,
        workflow: &Workflow,
        grace: Duration,
    ) -> Result<KillRecord> {
        // Time counts from the request, also for a kill the last agent began.
        let since_request =
            Duration::from_millis((Timestamp::now().0 - record.requested_at.0).max(0) as u64);
        let requested = Instant::now()
            .checked_sub(since_request)
            .unwrap_or_else(Instant::now);
        let clock = Clock {
            requested,
            grace,
            deadline: requested + workflow.kill.budget.saturating_sub(CLEANUP_RESERVE),
        };
        let (run, _) = self.load(&record.run)?;
        let current = running_attempt(&run);

        if let Some(attempt) = &current {
            let step = &workflow.steps[attempt.index as usize];
            let files = AttemptFiles::of(self, &run.id, &step.name, attempt.attempt);
            record.step = Some(step.name.clone());
            record.unit = attempt.unit.clone();
            let started = Instant::now();
            record.critical = terminate::wait_critical(workflow.kill.critical_max, || {
                let mut open = self
                    .store()
                    .open_critical_spans(&run.id)
                    .unwrap_or_default();
                if step.critical && !files.exit.exists() {
                    open.insert(0, "step".to_owned());
                }
                open
            })
            .await;
            if let Some(wait) = &record.critical {
                record.phases.push(KillPhase {
                    name: "critical-wait".to_owned(),
                    started_ms: started
                        .saturating_duration_since(clock.requested)
                        .as_millis() as u64,
                    duration_ms: wait.waited_ms,
                    signalled: 0,
                    note: Some(format!("{} ({})", wait.outcome, wait.labels.join(", "))),
                });
            }
        }
        if self.store().set_run_state(
            &run.id,
            &[RunState::Stopping],
            RunState::Killing,
            "drover",
            Some(&record.reason),
        )? {
            self.announce(&run.id, &workflow.name, RunState::Killing, "drover");
        }

        let account = self.account_of(&run);
        let mut processes_left = 0;
        if let Some(attempt) = &current {
            let step = &workflow.steps[attempt.index as usize];
            processes_left = self
                .stop_attempt(&mut record, &run, &workflow.steps, attempt, &clock)
                .await;
            let signalled = record.phases.iter().any(|p| p.name.starts_with("sig"));
            let killed_by = format!(
                "killed by {} via {}: {}",
                record.requested_by, record.channel, record.reason
            );
            self.record_killed_attempt(&run, &workflow.name, attempt, step, signalled, &killed_by)?;

            let started = Instant::now();
            let left = workflow
                .kill
                .budget
                .saturating_sub(clock.requested.elapsed());
            // on_kill runs as the run's user; an account gone from the password database
            // since is a failed cleanup, not a reason to run it as the agent.
            match &account {
                Ok(account) => {
                    let mut env: Vec<(String, String)> =
                        step::step_env(&run, workflow, &step.name, attempt.attempt)
                            .into_iter()
                            .collect();
                    env.extend(step.env.clone());
                    record.cleanup = terminate::run_on_kill(
                        &step.on_kill,
                        &step::step_cwd(&run),
                        &env,
                        account,
                        left.max(Duration::from_millis(500)),
                    )
                    .await;
                }
                Err(e) => {
                    record.cleanup = step
                        .on_kill
                        .iter()
                        .map(|command| CleanupAction::failed(format!("on_kill: {command}"), e))
                        .collect()
                }
            }
            record.phases.push(KillPhase {
                name: "cleanup".to_owned(),
                started_ms: started
                    .saturating_duration_since(clock.requested)
                    .as_millis() as u64,
                duration_ms: started.elapsed().as_millis() as u64,
                signalled: 0,
                note: None,
            });
        }
        if let Some(worktree) = &run.worktree {
            let worktree = std::path::Path::new(worktree);
            // As the run's user: the worktree's git dir is theirs.
            let removed = match &account {
                Ok(account) => credentials::with_rights_of(account, || {
                    terminate::remove_stale_git_locks(worktree)
                })
                .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match removed {
                Ok(removed) => record.cleanup.extend(removed),
                Err(e) => record
                    .cleanup
                    .push(CleanupAction::failed("remove stale git locks".into(), e)),
            }
            let label = format!("killed by {} ({})", record.requested_by, record.reason);
            match self.take_checkpoint(&run.id, "kill", &label, None).await {
                Ok(c) => record.snapshot = Some(format!("{} {}", c.reference, c.commit)),
                Err(e) => record
                    .cleanup
                    .push(CleanupAction::failed("final checkpoint".into(), e)),
            }
        }

        record.processes_left = Some(processes_left);
        record.result = if processes_left == 0 && record.error.is_none() {
            KillResult::Killed
        } else {
            KillResult::Failed
        };
        record.ended_at = Some(Timestamp::now());
        record.total_ms = Some(clock.requested.elapsed().as_millis() as u64);
        let end_state = if record.result == KillResult::Killed {
            RunState::Killed
        } else {
            RunState::Failed
        };
        self.store().update_kill(&record, Some(end_state))?;
        crate::selfmetrics::global().kill_ended(record.result, record.total_ms);
        self.announce(&run.id, &workflow.name, end_state, &record.requested_by);
        let phases: Vec<String> = record
            .phases
            .iter()
            .map(|p| format!("{} {} ms", p.name, p.duration_ms))
            .collect();
        run_event!(
            info,
            run = run.id,
            workflow = workflow.name,
            "kill",
            message_id = super::KILL_MESSAGE_ID,
            "run {} {} by {} ({}) in {} ms: {}; {} processes left",
            run.id,
            record.result.as_str(),
            record.requested_by,
            record.reason,
            record.total_ms.unwrap_or_default(),
            phases.join(", "),
            processes_left
        );
        self.stop_slice(&run.id).await;
        Ok(record)
    }

    /// Signals `attempt`'s scope until it is empty (the `terminate` part), adding the phases
    /// to `record`; returns the processes left (1 when that cannot be told: the error is in
    /// the record).
    async fn stop_attempt(
        &self,
        record: &mut KillRecord,
        run: &Run,
        steps: &[Step],
        attempt: &StepAttempt,
        clock: &Clock,
    ) -> u32 {
        let step = &steps[attempt.index as usize];
        let unit = attempt
            .unit
            .clone()
            .unwrap_or_else(|| step::unit_name(&run.id, &step.name, attempt.attempt));
        let target = Target {
            unit: &unit,
            shim_pid: attempt.pid,
            agent_step: step.agent.is_some(),
        };
        match terminate::scope(&self.systemd, &target, clock).await {
            Ok(done) => {
                record.phases.extend(done.phases);
                done.processes_left
            }
            Err(e) => {
                record.error = Some(e.to_string());
                1
            }
        }
    }

    /// The attempt the kill ended: killed, unless it had ended by itself before any
    /// signal (a critical step that finished in time), which is then recorded as such.
    fn record_killed_attempt(
        &self,
        run: &Run,
        workflow: &str,
        attempt: &StepAttempt,
        step: &Step,
        signalled: bool,
        killed_by: &str,
    ) -> Result<()> {
        let files = AttemptFiles::of(self, &run.id, &step.name, attempt.attempt);
        let exit = shim::read_exit_file(&files.exit).ok().flatten();
        let (state, result) = match &exit {
            Some(exit) if !signalled => step::classify(exit, None),
            _ => (StepState::Killed, "killed"),
        };
        let failure = (state != StepState::Succeeded).then(|| Failure {
            class: FailureClass::Killed,
            evidence: killed_by.to_owned(),
        });
        let agent = step
            .agent
            .and_then(|_| claude::stream::read_stream(&files.stream).ok());
        let mut follower = Follower::new(files.log.clone());
        follower.catch_up();
        let output = lock(&follower.output).clone();
        let log_cut = exit.as_ref().and_then(shim::StepExit::log_cut_note);
        self.store().end_attempt(
            &run.id,
            attempt.index,
            attempt.attempt,
            &AttemptEnd {
                state,
                exit_code: exit.as_ref().and_then(|e| e.exit_code),
                signal: exit.as_ref().and_then(|e| e.signal),
                result,
                output: &output,
                failure: failure.as_ref(),
                agent: agent.as_ref(),
                log_cut: log_cut.as_deref(),
            },
        )?;
        self.announce_step(
            &run.id,
            workflow,
            (attempt.index, &step.name),
            attempt.attempt,
            state,
            Some(result),
        );
        Ok(())
    }
}

/// The attempt a kill has to stop: the one starting or running, if any.
fn running_attempt(run: &Run) -> Option<StepAttempt> {
    run.steps
        .iter()
        .find(|a| matches!(a.state, StepState::Starting | StepState::Running))
        .cloned()
}
