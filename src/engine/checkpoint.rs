//! Checkpoints as the engine takes them: after a `checkpoint = true` step, at every kill,
//! and on demand. Each is the worktree plus the run's state (and its agent steps'
//! transcripts) as a commit on `refs/drover/<run>/<n>`, recorded in the state DB.

use std::path::PathBuf;
use std::sync::Arc;

use super::plan;
use super::step::step_transcript;
use super::{ActionRequest, Engine, EngineError, Inner, Result};
use crate::credentials::Account;
use crate::model::{CheckpointRecord, CheckpointState, Run, StepAttempt, Timestamp};
use crate::recovery;
use crate::snapshot::{self, Snapshot};
use crate::spec::Workflow;

impl Engine {
    /// Takes a checkpoint of a run on an operator's request (after any restart or rollback
    /// of it in progress), and audits it.
    pub async fn checkpoint(
        &self,
        request: &ActionRequest,
        label: Option<&str>,
    ) -> Result<CheckpointRecord> {
        let _one_action = self.inner.locks(&request.run).operation.lock_owned().await;
        let started = std::time::Instant::now();
        let label = label.map_or_else(
            || format!("requested by {}", request.by.requested_by),
            str::to_owned,
        );
        let taken = self
            .inner
            .take_checkpoint(&request.run, "manual", &label, None)
            .await;
        let mut action = request.record("checkpoint");
        action.took_ms = started.elapsed().as_millis() as u64;
        match &taken {
            Ok(c) => {
                action.checkpoint = Some(c.n);
                action.detail = format!("{} ({} files changed)", c.reference, c.files_changed);
            }
            Err(e) => {
                action.result = "failed".into();
                action.detail = e.to_string();
            }
        }
        if !matches!(taken, Err(EngineError::NoSuchRun(_))) {
            self.inner.store().record_action(&action)?;
        }
        taken
    }

    /// The run's checkpoints, oldest first.
    pub fn checkpoints(&self, run: &str) -> Result<Vec<CheckpointRecord>> {
        self.inner.load(run)?;
        Ok(self.inner.store().checkpoints(run)?)
    }
}

impl Inner {
    /// Writes the run's next checkpoint: its worktree, and `state` (by default the run's
    /// state now).
    pub(super) async fn take_checkpoint(
        self: &Arc<Self>,
        run_id: &str,
        reason: &str,
        label: &str,
        state: Option<CheckpointState>,
    ) -> Result<CheckpointRecord> {
        let (run, workflow) = self.load(run_id)?;
        let Some(worktree) = run.worktree.clone().map(PathBuf::from) else {
            return Err(EngineError::NoWorktree { run: run.id });
        };
        let state = state.unwrap_or_else(|| checkpoint_state(&run, &workflow));
        let state_json =
            serde_json::to_vec_pretty(&state).map_err(|e| EngineError::CorruptRun {
                run: run.id.clone(),
                reason: e.to_string(),
            })?;
        let transcripts = transcripts_of(&run, &workflow, &state.steps, &self.account_of(&run)?);
        let mut record = CheckpointRecord {
            run: run_id.to_owned(),
            n: 0,
            label: label.to_owned(),
            reason: reason.to_owned(),
            step: latest_step(&state.steps),
            next_step: state.next_step,
            created_at: Timestamp::now(),
            reference: String::new(),
            commit: String::new(),
            files_changed: 0,
            took_ms: 0,
        };
        let inner = self.clone();
        let at = worktree.clone();
        // Numbering, writing and recording happen under the run's git lock, so two
        // checkpoints never share a number or the private index.
        let record = self
            .git_work(&run, &at, move || {
                let (n, parent) = {
                    let store = inner.store();
                    let parent = store
                        .checkpoints(&record.run)?
                        .last()
                        .and_then(|c| git2::Oid::from_str(&c.commit).ok());
                    (store.next_checkpoint_number(&record.run)?, parent)
                };
                let index_file = snapshot::private_index_path(&worktree)?;
                // Only this agent writes checkpoints (it holds the state dir's lock), and
                // only under this lock: a lock file on the private index is from an agent
                // that died writing.
                let _ = std::fs::remove_file(index_file.with_extension("index.lock"));
                record.n = n;
                record.reference = format!("refs/drover/{}/{n}", record.run);
                let message = format!(
                    "drover: run {} checkpoint {n}: {}",
                    record.run, record.label
                );
                let written = snapshot::write(&Snapshot {
                    worktree: &worktree,
                    index_file: &index_file,
                    reference: &record.reference,
                    parent,
                    message: &message,
                    state_json: &state_json,
                    transcripts: &transcripts,
                })?;
                record.commit = written.commit.to_string();
                record.files_changed = written.files_changed;
                record.took_ms = written.took.as_millis() as u64;
                record.created_at = Timestamp::now();
                inner.store().add_checkpoint(&record)?;
                Ok(record)
            })
            .await?;
        run_event!(
            info,
            run = run_id,
            workflow = workflow.name,
            "checkpoint",
            "run {run_id}: checkpoint {} ({reason}: {label}) {} {}, {} files changed, {} ms",
            record.n,
            record.reference,
            record.commit,
            record.files_changed,
            record.took_ms
        );
        Ok(record)
    }
}

/// The run's state as a checkpoint keeps it: the attempts that count since its latest
/// restart (an abandoned attempt's session must not be resumed from here).
pub(super) fn checkpoint_state(run: &Run, workflow: &Workflow) -> CheckpointState {
    CheckpointState {
        run: run.id.clone(),
        workflow: run.workflow.clone(),
        params: run.params.clone(),
        next_step: recovery::next_step(workflow, run),
        steps: plan::counting_attempts(run).cloned().collect(),
    }
}

/// Where the agent steps among `steps` keep their transcripts, by step name.
fn transcripts_of(
    run: &Run,
    workflow: &Workflow,
    steps: &[StepAttempt],
    account: &Account,
) -> Vec<(String, PathBuf)> {
    steps
        .iter()
        .filter_map(|attempt| {
            let step = workflow.steps.get(attempt.index as usize)?;
            step.agent?;
            let session = attempt.session_id.as_deref()?;
            Some((
                step.name.clone(),
                step_transcript(run, step, session, account),
            ))
        })
        .collect()
}

/// The step whose attempt started last: the one a checkpoint now follows or interrupts.
fn latest_step(steps: &[StepAttempt]) -> Option<String> {
    steps
        .iter()
        .filter(|a| a.attempt > 0)
        .max_by_key(|a| (a.started_at, a.index))
        .map(|a| a.name.clone())
}
