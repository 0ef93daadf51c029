//! Checkpoints as the engine takes them: after a `checkpoint = true` step, at every kill,
//! and on demand. Each is the worktree plus the run's state (and its agent steps'
//! transcripts) as a commit on `refs/drover/<run>/<n>`, recorded in the state DB.

use std::path::PathBuf;
use std::sync::Arc;

use super::step::{step_cwd, step_home};
use super::{ActionRequest, Engine, EngineError, Inner, Result};
use crate::checkpoint::{self, Checkpoint};
use crate::claude;
use crate::model::{CheckpointRecord, CheckpointState, Run, Timestamp};
use crate::restart;
use crate::spec::Workflow;

impl Engine {
    /// Takes a checkpoint of a run on an operator's request (any state but restarting),
    /// and audits it.
    pub async fn checkpoint(
        &self,
        request: &ActionRequest,
        label: Option<&str>,
    ) -> Result<CheckpointRecord> {
        let started = std::time::Instant::now();
        let label = label.map_or_else(
            || format!("requested by {}", request.requested_by),
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
        let _one_at_a_time = self.checkpointing.lock().await;
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
        let transcripts = transcripts_of(&run, &workflow);
        let (n, parent) = {
            let store = self.store();
            let parent = store
                .checkpoints(run_id)?
                .last()
                .and_then(|c| git2::Oid::from_str(&c.commit).ok());
            (store.next_checkpoint_number(run_id)?, parent)
        };
        let reference = format!("refs/drover/{run_id}/{n}");
        let message = format!("drover: run {run_id} checkpoint {n}: {label}");
        let index_file = self.checkpoint_index(run_id);
        // Only this agent (it holds the state dir's lock) writes checkpoints, one at a
        // time: a lock file left on the private index is from an agent that died writing.
        let stale_lock = index_file.with_extension("index.lock");
        if stale_lock.exists() {
            tracing::warn!(drover_run = %run_id, "removing the stale lock {}", stale_lock.display());
            let _ = std::fs::remove_file(&stale_lock);
        }
        let written = {
            let reference = reference.clone();
            let at = worktree.clone();
            super::blocking(&at, move || {
                Ok(checkpoint::write(&Checkpoint {
                    worktree: &worktree,
                    index_file: &index_file,
                    reference: &reference,
                    parent,
                    message: &message,
                    state_json: &state_json,
                    transcripts: &transcripts,
                })?)
            })
            .await?
        };
        let record = CheckpointRecord {
            run: run_id.to_owned(),
            n,
            label: label.to_owned(),
            reason: reason.to_owned(),
            step: latest_step(&run),
            next_step: state.next_step,
            created_at: Timestamp::now(),
            reference,
            commit: written.commit.to_string(),
            files_changed: written.files_changed,
            took_ms: written.took.as_millis() as u64,
        };
        self.store().add_checkpoint(&record)?;
        tracing::info!(
            drover_run = %run_id,
            drover_workflow = %workflow.name,
            drover_event = "checkpoint",
            "run {run_id}: checkpoint {n} ({reason}: {label}) {} {}, {} files changed, {} ms",
            record.reference,
            record.commit,
            record.files_changed,
            record.took_ms
        );
        Ok(record)
    }

    /// The run's private index for checkpoints: persistent, so later checkpoints only
    /// hash the files that changed.
    pub(super) fn checkpoint_index(&self, run: &str) -> PathBuf {
        self.config
            .state_dir
            .join("runs")
            .join(run)
            .join("checkpoint.index")
    }
}

/// The run's state as a checkpoint keeps it.
pub(super) fn checkpoint_state(run: &Run, workflow: &Workflow) -> CheckpointState {
    CheckpointState {
        run: run.id.clone(),
        workflow: run.workflow.clone(),
        params: run.params.clone(),
        next_step: restart::next_step(workflow, run),
        steps: run.steps.clone(),
    }
}

/// Where the run's agent steps keep their transcripts, by step name.
pub(super) fn transcripts_of(run: &Run, workflow: &Workflow) -> Vec<(String, PathBuf)> {
    run.steps
        .iter()
        .filter_map(|attempt| {
            let step = workflow.steps.get(attempt.index as usize)?;
            step.agent?;
            let session = attempt.session_id.as_deref()?;
            let path = claude::transcript_path(&step_home(step), &step_cwd(run), session);
            Some((step.name.clone(), path))
        })
        .collect()
}

/// The step whose attempt started last: the one a checkpoint now follows or interrupts.
fn latest_step(run: &Run) -> Option<String> {
    run.steps
        .iter()
        .filter(|a| a.attempt > 0)
        .max_by_key(|a| (a.started_at, a.index))
        .map(|a| a.name.clone())
}
