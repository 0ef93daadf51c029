//! Restart and rollback as the engine drives them: verify the checkpoint and the run's
//! requirements before anything changes, keep the worktree as it is in a checkpoint of its
//! own (nothing is lost), restore the checkpoint's files and transcripts, then go on from
//! its next step. Automatic retries restore the latest checkpoint the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use git2::Oid;

use super::plan;
use super::step::{step_cwd, step_transcript};
use super::{Engine, EngineError, Inner, Result, blocking};
use crate::credentials::{self, Account};
use crate::model::{
    ActionRecord, CheckpointRecord, CheckpointState, FailureClass, Requester, Run, RunState,
};
use crate::recovery;
use crate::recovery::requires::{self, Unmet};
use crate::snapshot;
use crate::spec::Workflow;

/// Who asks for a restart, rollback or checkpoint, and how.
#[derive(Debug, Clone)]
pub struct ActionRequest {
    pub run: String,
    pub by: Requester,
    /// Needed to restart or roll back a `protected` workflow's run.
    pub confirm: bool,
}

impl ActionRequest {
    pub(super) fn record(&self, action: &str) -> ActionRecord {
        ActionRecord::new(&self.by, &self.run, action)
    }
}

/// A checkpoint that passed verification, ready to restore.
struct Verified {
    record: CheckpointRecord,
    commit: Oid,
    state: CheckpointState,
}

impl Engine {
    /// Restarts an ended run from checkpoint `from` (default: the latest), or, for a run
    /// without checkpoints, from its first unfinished step.
    pub async fn restart(
        &self,
        request: &ActionRequest,
        from: Option<u32>,
    ) -> Result<ActionRecord> {
        let inner = &self.inner;
        let _one_action = inner.locks(&request.run).operation.lock_owned().await;
        let started = std::time::Instant::now();
        let (run, workflow) = inner.load(&request.run)?;
        inner.check_ended(&run, "a restart")?;
        inner.check_confirmed(request, &workflow, "restart")?;
        inner.ensure_worktree(&run, &workflow)?;
        let (run, _) = inner.load(&request.run)?;
        let target = match inner.checkpoint_to_restore(&run, from)? {
            Some(record) => Some(inner.verify(&run, &workflow, record).await?),
            None => None,
        };
        let next_step = target.as_ref().map_or_else(
            || recovery::next_step(&workflow, &run),
            |t| t.state.next_step,
        );
        if next_step as usize >= workflow.steps.len() {
            return Err(EngineError::NothingToRestart {
                run: run.id,
                from: target.map_or_else(
                    || "every step succeeded".to_owned(),
                    |t| format!("checkpoint {} was taken after the last step", t.record.n),
                ),
            });
        }
        let unmet = inner.unmet_requirements(
            Some(&run),
            &workflow,
            &run.params,
            Some(next_step as usize),
            &inner.account_of(&run)?,
        )?;
        if !unmet.is_empty() {
            return Err(inner.refuse_for_requirements(request, &run, &unmet)?);
        }
        if !inner
            .store()
            .begin_restart(&run.id, &request.by.requested_by, "restart requested")?
        {
            let (run, _) = inner.load(&run.id)?;
            return Err(EngineError::NotEnded {
                run: run.id,
                state: run.state,
                action: "a restart",
            });
        }
        inner.announce(
            &run.id,
            &workflow.name,
            RunState::Restarting,
            &request.by.requested_by,
        );

        let mut action = request.record("restart");
        action.checkpoint = target.as_ref().map(|t| t.record.n);
        // From `restarting` on, any failure ends the run `failed` (never stuck restarting).
        let restarted = async {
            let restored = match &target {
                Some(target) => {
                    inner
                        .restore(&run, &workflow, target, "before-restart")
                        .await?
                }
                // No checkpoint: the live transcripts are the conversations to resume.
                None => Restored {
                    detail: String::new(),
                    sessions: counting_sessions(&run),
                },
            };
            let step_name = &workflow.steps[next_step as usize].name;
            action.detail = match &target {
                Some(t) => format!(
                    "from checkpoint {} ({}): goes on with step {step_name}; {}",
                    t.record.n, t.record.label, restored.detail
                ),
                None => format!("no checkpoint: goes on with step {step_name}"),
            };
            let attempts = inner.store().attempt_counts(&run.id)?;
            let point = recovery::restart_point(
                action.checkpoint,
                next_step,
                &attempts,
                workflow.steps.len(),
                restored.sessions,
            );
            action.took_ms = started.elapsed().as_millis() as u64;
            action.id = inner.store().complete_restart(&run.id, &point, &action)?;
            crate::selfmetrics::global().restarted(run.failure_class);
            Ok::<_, EngineError>(())
        }
        .await;
        if let Err(e) = restarted {
            action.result = "failed".into();
            action.detail = e.to_string();
            action.took_ms = started.elapsed().as_millis() as u64;
            let reason = format!("restart failed: {e}");
            inner.store().set_run_state(
                &run.id,
                &[RunState::Restarting],
                RunState::Failed,
                "drover",
                Some(&reason),
            )?;
            inner.store().record_action(&action)?;
            inner.announce(&run.id, &workflow.name, RunState::Failed, "drover");
            return Err(e);
        }
        inner.announce(
            &run.id,
            &workflow.name,
            RunState::Running,
            &request.by.requested_by,
        );
        run_event!(
            info,
            run = run.id,
            workflow = workflow.name,
            "restart",
            "run {} restarted by {}: {}",
            run.id,
            request.by.requested_by,
            action.detail
        );
        inner.spawn_driver(run.id.clone());
        Ok(action)
    }

    /// Resets an ended run's worktree to checkpoint `to` without starting anything. The
    /// worktree as it was is kept in a checkpoint first, and the result is recorded as the
    /// latest checkpoint, so a later restart goes on from there; nothing is deleted.
    pub async fn rollback(&self, request: &ActionRequest, to: u32) -> Result<ActionRecord> {
        let inner = &self.inner;
        let _one_action = inner.locks(&request.run).operation.lock_owned().await;
        let started = std::time::Instant::now();
        let (run, workflow) = inner.load(&request.run)?;
        inner.check_ended(&run, "a rollback")?;
        inner.check_confirmed(request, &workflow, "rollback")?;
        let Some(record) = inner.checkpoint_to_restore(&run, Some(to))? else {
            return Err(EngineError::NoWorktree { run: run.id });
        };
        let target = inner.verify(&run, &workflow, record).await?;
        let mut action = request.record("rollback");
        action.checkpoint = Some(to);
        let outcome = async {
            let restored = inner
                .restore(&run, &workflow, &target, "before-rollback")
                .await?;
            let label = format!("rolled back to checkpoint {to}");
            let copy = inner
                .take_checkpoint(&run.id, "rollback", &label, Some(target.state.clone()))
                .await?;
            Ok::<_, EngineError>(format!(
                "worktree reset to checkpoint {to}; {}; recorded as checkpoint {}",
                restored.detail, copy.n
            ))
        }
        .await;
        action.took_ms = started.elapsed().as_millis() as u64;
        match outcome {
            Ok(detail) => action.detail = detail,
            Err(e) => {
                action.result = "failed".into();
                action.detail = e.to_string();
                inner.store().record_action(&action)?;
                return Err(e);
            }
        }
        action.id = inner.store().record_action(&action)?;
        run_event!(
            info,
            run = run.id,
            workflow = workflow.name,
            "rollback",
            "run {} rolled back by {}: {}",
            run.id,
            request.by.requested_by,
            action.detail
        );
        Ok(action)
    }

    /// Records a refused restart, rollback or checkpoint (role) in the audit trail.
    pub fn refuse_action(&self, request: &ActionRequest, action: &str, why: &str) -> Result<()> {
        let mut record = request.record(action);
        record.result = "refused".into();
        record.detail = why.to_owned();
        self.inner.store().record_action(&record)?;
        tracing::warn!(
            drover_run = %request.run,
            drover_event = "refused",
            "{action} of run {} refused: {why}",
            request.run
        );
        Ok(())
    }

    /// Records an action on the agent rather than on one run (a configuration reload)
    /// in the audit trail.
    pub fn record_action(&self, record: &ActionRecord) -> Result<()> {
        self.inner.store().record_action(record)?;
        Ok(())
    }

    /// Restarts, rollbacks and checkpoints asked for, oldest first: of one run, or all.
    pub fn actions(&self, run: Option<&str>) -> Result<Vec<ActionRecord>> {
        Ok(self.inner.store().actions(run)?)
    }
}

/// What a restore did.
struct Restored {
    detail: String,
    /// By step index: the sessions whose transcripts the checkpoint held.
    sessions: BTreeMap<u32, String>,
}

impl Inner {
    fn check_ended(&self, run: &Run, action: &'static str) -> Result<()> {
        if run.state.is_terminal() {
            return Ok(());
        }
        Err(EngineError::NotEnded {
            run: run.id.clone(),
            state: run.state,
            action,
        })
    }

    fn check_confirmed(
        &self,
        request: &ActionRequest,
        workflow: &Workflow,
        what: &str,
    ) -> Result<()> {
        if !workflow.protected || request.confirm {
            return Ok(());
        }
        let why = format!(
            "run {} (workflow {}) is protected: confirm the {what} (--yes, or the option confirm=true)",
            request.run, workflow.name
        );
        let mut action = request.record(what);
        action.result = "refused".into();
        action.detail = why.clone();
        self.store().record_action(&action)?;
        Err(EngineError::Unconfirmed(why))
    }

    /// Records a restart refused for unmet requirements: the run is marked `dependency`.
    fn refuse_for_requirements(
        &self,
        request: &ActionRequest,
        run: &Run,
        unmet: &[Unmet],
    ) -> Result<EngineError> {
        let listed = requires::describe(unmet);
        let reason = format!("restart refused: requirements not met: {listed}");
        let mut action = request.record("restart");
        action.result = "refused".into();
        action.detail = reason.clone();
        self.store().record_action(&action)?;
        // A run that succeeded keeps its success; a failed or killed one now fails for
        // what it needs.
        if run.state != RunState::Succeeded {
            self.store().mark_failure(
                &run.id,
                FailureClass::Dependency,
                &request.by.requested_by,
                &reason,
            )?;
        }
        tracing::warn!(
            drover_run = %run.id,
            drover_event = "restart-refused",
            "run {}: {reason}",
            run.id
        );
        Ok(EngineError::RequirementsUnmet {
            run: run.id.clone(),
            what: "restart refused".into(),
            unmet: listed,
        })
    }

    /// Checkpoint `n`, or the latest one a restart goes on from (not the copies kept
    /// before a restart or rollback); `None` when the run has none.
    fn checkpoint_to_restore(&self, run: &Run, n: Option<u32>) -> Result<Option<CheckpointRecord>> {
        let checkpoints = self.store().checkpoints(&run.id)?;
        match n {
            Some(n) => match checkpoints.iter().find(|c| c.n == n) {
                Some(c) => Ok(Some(c.clone())),
                None => Err(EngineError::NoSuchCheckpoint {
                    run: run.id.clone(),
                    n,
                    available: match (checkpoints.first(), checkpoints.last()) {
                        (Some(first), Some(last)) => {
                            format!("checkpoints {} to {}", first.n, last.n)
                        }
                        _ => "no checkpoints".to_owned(),
                    },
                }),
            },
            None => Ok(checkpoints
                .into_iter()
                .rev()
                .find(|c| !c.reason.starts_with("before-"))),
        }
    }

    /// Checks a checkpoint before anything is changed: its ref, commit and tree, and the
    /// run state it holds.
    async fn verify(
        &self,
        run: &Run,
        workflow: &Workflow,
        record: CheckpointRecord,
    ) -> Result<Verified> {
        let worktree = worktree_of(run)?;
        let account = self.account_of(run)?;
        let (run, steps) = (run.clone(), workflow.steps.len());
        blocking(&worktree, move || {
            credentials::with_rights_of(&account, || verify_checkpoint(&run, steps, record))?
        })
        .await
    }

    /// Restores a verified checkpoint's files and transcripts into the run's worktree,
    /// keeping what the worktree held first in a checkpoint of its own (`keep_reason`)
    /// when it differs.
    async fn restore(
        self: &Arc<Self>,
        run: &Run,
        workflow: &Workflow,
        target: &Verified,
        keep_reason: &str,
    ) -> Result<Restored> {
        let worktree = worktree_of(run)?;
        let commit = target.commit;
        let mut detail = Vec::new();
        let changed = {
            let worktree = worktree.clone();
            self.git_work(run, &worktree.clone(), move || {
                let index_file = snapshot::private_index_path(&worktree)?;
                Ok(snapshot::worktree_tree(&worktree, &index_file)?
                    != snapshot::content_tree(&worktree, commit)?)
            })
            .await?
        };
        if changed {
            let label = format!(
                "the worktree before restoring checkpoint {}",
                target.record.n
            );
            let kept = self
                .take_checkpoint(&run.id, keep_reason, &label, None)
                .await?;
            detail.push(format!("the worktree as it was is checkpoint {}", kept.n));
        }
        let restored = {
            let worktree = worktree.clone();
            self.git_work(run, &worktree.clone(), move || {
                let index_file = snapshot::private_index_path(&worktree)?;
                Ok(snapshot::restore(&worktree, commit, &index_file)?)
            })
            .await?
        };
        detail.push(format!(
            "{} files restored, {} removed",
            restored.files_written, restored.files_removed
        ));
        // The transcripts go to the user's home, with the user's rights.
        let account = self.account_of(run)?;
        let sessions = credentials::with_rights_of(&account, || {
            let mut sessions = BTreeMap::new();
            for attempt in &target.state.steps {
                let Some(step) = workflow.steps.get(attempt.index as usize) else {
                    continue;
                };
                let (Some(_), Some(session)) = (step.agent, &attempt.session_id) else {
                    continue;
                };
                let Some(bytes) = snapshot::read_transcript(&worktree, commit, &step.name)? else {
                    continue;
                };
                let path = step_transcript(run, step, session, &account);
                write_transcript(&path, &bytes)?;
                sessions.insert(attempt.index, session.clone());
                detail.push(format!(
                    "transcript of step {} (session {session}) restored",
                    step.name
                ));
            }
            Ok::<_, EngineError>(sessions)
        })??;
        Ok(Restored {
            detail: detail.join("; "),
            sessions,
        })
    }

    /// Before an automatic retry of step `index`: restores the latest checkpoint taken
    /// since the run's latest (re)start whose next step is this one (the state before the
    /// step, or one taken during it), keeping the failed attempt's worktree in a
    /// checkpoint first. Without such a checkpoint the step is retried on the worktree as
    /// it is (restoring an older one would undo the steps since). Returns the session the
    /// retried agent step goes on with: `Some` when a checkpoint was restored (its session,
    /// or `None` inside for a new one: the checkpoint predates the conversation).
    pub(super) async fn restore_for_retry(
        self: &Arc<Self>,
        run: &Run,
        workflow: &Workflow,
        index: usize,
    ) -> Result<Option<Option<String>>> {
        if run.worktree.is_none() {
            return Ok(None);
        }
        let since = plan::current_go_began(run);
        let Some(record) = self
            .store()
            .checkpoints(&run.id)?
            .into_iter()
            .rev()
            .find(|c| !c.reason.starts_with("before-") && c.created_at >= since)
            .filter(|c| c.next_step as usize == index)
        else {
            return Ok(None);
        };
        let n = record.n;
        let target = self.verify(run, workflow, record).await?;
        let mut restored = self.restore(run, workflow, &target, "before-retry").await?;
        tracing::info!(
            drover_run = %run.id,
            drover_event = "retry-restore",
            "run {}: retry goes on from checkpoint {n}: {}",
            run.id,
            restored.detail
        );
        Ok(Some(restored.sessions.remove(&(index as u32))))
    }

    /// The requirements of the workflow (and of step `step`) that are not met now, checked
    /// with the rights of `account`, whom the run runs as: a path it cannot see is missing.
    pub(super) fn unmet_requirements(
        &self,
        run: Option<&Run>,
        workflow: &Workflow,
        params: &BTreeMap<String, String>,
        step: Option<usize>,
        account: &Account,
    ) -> Result<Vec<Unmet>> {
        let step = step.and_then(|i| workflow.steps.get(i));
        let mut env: BTreeMap<String, String> = account.start_env().into_iter().collect();
        for (key, value) in params {
            env.insert(
                format!("DROVER_PARAM_{}", key.to_ascii_uppercase()),
                value.clone(),
            );
        }
        if let Some(step) = step {
            env.extend(step.env.clone());
        }
        let base_dir = match (run, &workflow.workspace) {
            (Some(run), _) => step_cwd(run),
            (None, Some(workspace)) => workspace.clone(),
            (None, None) => PathBuf::from("/"),
        };
        let this_run = run.map_or("", |r| r.id.as_str());
        let latest_run = |name: &str| self.store().latest_run_of(name, this_run).ok().flatten();
        let ctx = requires::Context {
            env: &env,
            base_dir: &base_dir,
            git_dir: workflow.workspace.as_deref(),
            latest_run: &latest_run,
        };
        Ok(credentials::with_rights_of(account, || {
            let mut unmet = requires::check(&workflow.requires, &ctx);
            if let Some(step) = step {
                unmet.extend(requires::check(&step.requires, &ctx));
            }
            unmet
        })?)
    }
}

/// [`Inner::verify`]'s work, blocking.
fn verify_checkpoint(run: &Run, steps: usize, record: CheckpointRecord) -> Result<Verified> {
    let corrupt = |reason: String| EngineError::CorruptCheckpoint {
        run: run.id.clone(),
        n: record.n,
        reason,
    };
    let worktree = worktree_of(run)?;
    let expected = Oid::from_str(&record.commit)
        .map_err(|e| corrupt(format!("the state DB records a malformed commit id: {e}")))?;
    let commit = snapshot::open(&worktree, &record.reference, Some(expected))
        .map_err(|e| corrupt(e.to_string()))?;
    let bytes = snapshot::read_state(&worktree, commit).map_err(|e| corrupt(e.to_string()))?;
    let state: CheckpointState = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(format!("its run state is malformed: {e}")))?;
    if state.run != run.id {
        return Err(corrupt(format!("it holds the state of run {}", state.run)));
    }
    if state.next_step as usize > steps {
        return Err(corrupt(format!(
            "its next step ({}) is beyond the workflow's {} steps",
            state.next_step, steps
        )));
    }
    Ok(Verified {
        record,
        commit,
        state,
    })
}

/// By step index, the sessions of the attempts that count since the run's latest restart.
fn counting_sessions(run: &Run) -> BTreeMap<u32, String> {
    plan::counting_attempts(run)
        .filter_map(|a| Some((a.index, a.session_id.clone()?)))
        .collect()
}

fn worktree_of(run: &Run) -> Result<PathBuf> {
    run.worktree
        .as_ref()
        .map(PathBuf::from)
        .ok_or_else(|| EngineError::NoWorktree {
            run: run.id.clone(),
        })
}

/// Puts a transcript where Claude Code looks for it. What it has to create is made as
/// private as Claude Code makes it (directories 0700, the file 0600), whatever the
/// agent's umask: a conversation is its user's alone, even in a home others may enter.
fn write_transcript(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let io = |source| EngineError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .map_err(io)
}
