//! One step attempt: spawn its shim held at the start gate, move the shim into the step's
//! scope, open the gate; later, learn from the exit file and the unit how it ended.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;
use tokio::io::AsyncWriteExt;

use super::follow::Follower;
use super::shim::{self, ShimOutcome, ShimSpec, StepExit};
use super::{EngineError, Inner, NEVER_STARTED, Result};
use crate::model::{KillRecord, Run, StepOutput, StepState};
use crate::spec::Workflow;
use crate::store::{AttemptEnd, NewAttempt};
use crate::systemd::ScopeProperties;

/// How long systemd waits between SIGTERM and SIGKILL when it stops a scope itself.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a step's scope is checked while the exit file has not appeared.
const UNIT_CHECK: Duration = Duration::from_secs(1);
/// How long the scope may linger once its step ended before drover stops it (children the
/// step left behind keep it alive).
const LINGER: Duration = Duration::from_secs(3);

/// The journald fields of every line a step attempt writes.
fn journal_fields(
    run: &Run,
    workflow: &Workflow,
    step: &str,
    attempt: u32,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("DROVER_RUN".to_owned(), run.id.clone()),
        ("DROVER_STEP".to_owned(), step.to_owned()),
        ("DROVER_WORKFLOW".to_owned(), workflow.name.clone()),
        ("DROVER_ATTEMPT".to_owned(), attempt.to_string()),
        ("SYSLOG_IDENTIFIER".to_owned(), "drover".to_owned()),
    ])
}

/// The `DROVER_*` variables a step attempt (and its `on_kill` commands) see.
pub(super) fn step_env(
    run: &Run,
    workflow: &Workflow,
    step: &str,
    attempt: u32,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = journal_fields(run, workflow, step, attempt)
        .into_iter()
        .filter(|(k, _)| k.starts_with("DROVER_"))
        .collect();
    for (key, value) in &run.params {
        env.insert(
            format!("DROVER_PARAM_{}", key.to_ascii_uppercase()),
            value.clone(),
        );
    }
    env
}

/// Where a run's steps work: its worktree, or else the workflow file's directory.
pub(super) fn step_cwd(run: &Run) -> PathBuf {
    match &run.worktree {
        Some(worktree) => PathBuf::from(worktree),
        None => Path::new(&run.workflow_file)
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_owned),
    }
}

/// The files of one attempt, in the run's directory.
pub(super) struct AttemptFiles {
    pub(super) log: PathBuf,
    pub(super) exit: PathBuf,
    shim_spec: PathBuf,
}

impl AttemptFiles {
    pub(super) fn of(inner: &Inner, run: &str, step: &str, attempt: u32) -> AttemptFiles {
        AttemptFiles::new(
            &inner.config.state_dir.join("runs").join(run),
            step,
            attempt,
        )
    }

    fn new(run_dir: &Path, step: &str, attempt: u32) -> AttemptFiles {
        let file = |suffix: &str| run_dir.join(format!("{step}.{attempt}.{suffix}"));
        AttemptFiles {
            log: file("log"),
            exit: file("exit"),
            shim_spec: file("shim.json"),
        }
    }
}

pub(super) fn unit_name(run: &str, step: &str, attempt: u32) -> String {
    format!("drover-{run}-{step}-{attempt}.scope")
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Starts attempt `attempt` of step `index` and returns once its process runs in its scope.
pub(super) async fn start(
    inner: &Arc<Inner>,
    run: &Run,
    workflow: &Workflow,
    index: usize,
    attempt: u32,
    time_left: Duration,
) -> Result<()> {
    let step = &workflow.steps[index];
    let run_dir = inner.config.state_dir.join("runs").join(&run.id);
    std::fs::create_dir_all(&run_dir).map_err(io_err(&run_dir))?;
    let files = AttemptFiles::new(&run_dir, &step.name, attempt);
    let unit = unit_name(&run.id, &step.name, attempt);
    inner.store().start_attempt(&NewAttempt {
        run: &run.id,
        index: index as u32,
        name: &step.name,
        attempt,
        unit: &unit,
        log_path: &files.log.to_string_lossy(),
    })?;

    let fields = journal_fields(run, workflow, &step.name, attempt);
    let mut env = step_env(run, workflow, &step.name, attempt);
    env.extend(step.env.clone());
    let cwd = step_cwd(run);
    let spec = ShimSpec {
        unit: unit.clone(),
        argv: step.run.argv(),
        cwd,
        env,
        log: files.log.clone(),
        exit_file: files.exit.clone(),
        journal_fields: fields,
    };
    let spec_json = serde_json::to_vec(&spec)
        .map_err(|e| io_err(&files.shim_spec)(std::io::Error::other(e)))?;
    std::fs::write(&files.shim_spec, spec_json).map_err(io_err(&files.shim_spec))?;

    let mut command = tokio::process::Command::new(&inner.config.shim_exe);
    command
        .arg("__shim")
        .arg(&files.shim_spec)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        // A process group of its own keeps the shim clear of signals aimed at the agent's
        // terminal or group (and, unlike a pre_exec setsid, lets std use posix_spawn).
        .process_group(0);
    let mut shim = command.spawn().map_err(io_err(&inner.config.shim_exe))?;
    let (Some(pid), Some(mut gate)) = (shim.id(), shim.stdin.take()) else {
        return Err(io_err(&inner.config.shim_exe)(std::io::Error::other(
            "the shim exited at once",
        )));
    };
    // Reap the shim whenever it ends; it outlives this function by design.
    tokio::spawn(async move {
        let _ = shim.wait().await;
    });

    let limits = &workflow.limits;
    let runtime_max = match step.timeout {
        Some(step_limit) => step_limit.min(time_left),
        None => time_left,
    };
    let props = ScopeProperties {
        description: format!(
            "drover run {} ({}) step {} attempt {attempt}",
            run.id, workflow.name, step.name
        ),
        slice: format!("drover-{}.slice", run.id),
        memory_max: limits.memory_max,
        tasks_max: limits.tasks_max,
        cpu_quota_percent: limits.cpu_quota_percent,
        runtime_max: (runtime_max != Duration::MAX).then_some(runtime_max),
        stop_timeout: STOP_TIMEOUT,
    };
    if let Err(e) = inner.systemd.start_scope(&unit, &[pid], &props).await {
        // Dropping the gate unopened makes the shim exit without running the step.
        drop(gate);
        inner.store().end_attempt(
            &run.id,
            index as u32,
            attempt,
            &AttemptEnd {
                state: StepState::Failed,
                exit_code: None,
                signal: None,
                result: "start-failed",
                output: &StepOutput::default(),
            },
        )?;
        return Err(e.into());
    }
    // The shim is inside the scope now: let it run the step there.
    gate.write_all(b"g")
        .await
        .map_err(io_err(&inner.config.shim_exe))?;
    drop(gate);
    inner
        .store()
        .attempt_running(&run.id, index as u32, attempt, pid)?;
    tracing::info!(
        drover_run = %run.id,
        drover_step = %step.name,
        drover_workflow = %workflow.name,
        drover_event = "step-started",
        "run {}: step {} attempt {attempt} started in {unit} (shim pid {pid})",
        run.id,
        step.name
    );
    Ok(())
}

/// Waits for attempt `attempt` of step `index` to end and records how it ended.
pub(super) async fn await_end(
    inner: &Arc<Inner>,
    run: &Run,
    workflow: &Workflow,
    index: usize,
    attempt: u32,
) -> Result<()> {
    let step = &workflow.steps[index];
    let files = AttemptFiles::of(inner, &run.id, &step.name, attempt);
    let unit = unit_name(&run.id, &step.name, attempt);

    let mut follower = Follower::new(files.log.clone());
    inner
        .live_output()
        .insert(unit.clone(), follower.output.clone());
    let exit = wait_for_exit_file(inner, &files, &unit, &mut follower).await;
    inner.live_output().remove(&unit);
    let exit = exit?;
    let output = follower
        .output
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let systemd_result = settle_scope(inner, &unit).await?;
    let (state, result) = match &exit {
        Some(exit) => classify(exit, systemd_result.as_deref()),
        None => (StepState::Failed, "lost"),
    };
    let (exit_code, signal) = exit
        .as_ref()
        .map_or((None, None), |e| (e.exit_code, e.signal));
    inner.store().end_attempt(
        &run.id,
        index as u32,
        attempt,
        &AttemptEnd {
            state,
            exit_code,
            signal,
            result,
            output: &output,
        },
    )?;
    if let Some(cause) = external_kill(result, signal) {
        let record = KillRecord::external(
            &run.id,
            &step.name,
            &unit,
            format!(
                "{cause} (systemd result: {})",
                systemd_result.as_deref().unwrap_or("gone")
            ),
        );
        inner.store().record_kill(&record)?;
        tracing::warn!(
            drover_run = %run.id,
            drover_step = %step.name,
            drover_event = "kill",
            message_id = super::KILL_MESSAGE_ID,
            "run {}: step {} was killed outside drover: {cause}",
            run.id,
            step.name
        );
    }
    let how = match (exit_code, signal) {
        (_, Some(signal)) => format!("signal {signal}"),
        (Some(code), None) => format!("exit code {code}"),
        (None, None) => "no exit status".to_owned(),
    };
    let error = exit
        .as_ref()
        .and_then(|e| e.error.as_deref())
        .map_or(String::new(), |e| format!("; {e}"));
    tracing::info!(
        drover_run = %run.id,
        drover_step = %step.name,
        drover_workflow = %workflow.name,
        drover_event = "step-ended",
        "run {}: step {} attempt {attempt} ended: {result} ({how}, {} lines){error}",
        run.id,
        step.name,
        output.lines
    );
    Ok(())
}

/// Why an attempt that drover did not kill ended as if killed, if it did: a signal meant
/// to end it (`systemctl kill/stop`), its timeout, the OOM killer, or its shim vanishing.
fn external_kill(result: &str, signal: Option<i32>) -> Option<String> {
    let ending = [
        nix::libc::SIGTERM,
        nix::libc::SIGKILL,
        nix::libc::SIGINT,
        nix::libc::SIGHUP,
    ];
    match result {
        "timeout" => Some("stopped by systemd at its time limit".to_owned()),
        "oom-kill" => Some("killed by the OOM killer".to_owned()),
        "lost" => Some("its supervisor was killed (e.g. SIGKILL to the whole scope)".to_owned()),
        "signal" => signal
            .filter(|s| ending.contains(s))
            .map(|s| format!("ended by signal {s} from outside drover")),
        _ => None,
    }
}

/// How an attempt ended, from the shim's record and systemd's `Result` of the scope.
pub(super) fn classify(exit: &StepExit, systemd_result: Option<&str>) -> (StepState, &'static str) {
    let failed = |result| (StepState::Failed, result);
    match exit.outcome {
        ShimOutcome::GateClosed => failed(NEVER_STARTED),
        ShimOutcome::SpawnFailed => failed("start-failed"),
        ShimOutcome::Exited if exit.oom_kills > 0 || systemd_result == Some("oom-kill") => {
            failed("oom-kill")
        }
        ShimOutcome::Exited if systemd_result == Some("timeout") => failed("timeout"),
        ShimOutcome::Exited if exit.signal.is_some() => failed("signal"),
        ShimOutcome::Exited if exit.exit_code != Some(0) => failed("exit-code"),
        ShimOutcome::Exited => (StepState::Succeeded, "success"),
    }
}

/// Waits until the shim writes the exit file, counting the step's output meanwhile.
/// `None` if the scope is gone without one: the shim itself was killed.
async fn wait_for_exit_file(
    inner: &Arc<Inner>,
    files: &AttemptFiles,
    unit: &str,
    follower: &mut Follower,
) -> Result<Option<StepExit>> {
    let wake = Arc::new(tokio::sync::Notify::new());
    let wake_on_write = wake.clone();
    let watched = [files.exit.clone(), files.log.clone()];
    // inotify wakes the wait at once; the periodic unit check covers a missed event and a
    // scope that vanished without an exit file.
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| e.paths.iter().any(|p| watched.contains(p))) {
            wake_on_write.notify_one();
        }
    })
    .ok();
    if let (Some(watcher), Some(dir)) = (watcher.as_mut(), files.exit.parent()) {
        let _ = watcher.watch(dir, notify::RecursiveMode::NonRecursive);
    }
    let exit_file = files.exit.as_path();
    let mut next_unit_check = tokio::time::Instant::now();
    loop {
        follower.catch_up();
        if let Some(exit) = shim::read_exit_file(exit_file).map_err(io_err(exit_file))? {
            // The shim writes the exit file after the last output line.
            follower.catch_up();
            return Ok(Some(exit));
        }
        if tokio::time::Instant::now() >= next_unit_check {
            let alive = inner.systemd.scope_outcome(unit).await?.is_some_and(|o| {
                matches!(
                    o.active_state.as_str(),
                    "active" | "activating" | "deactivating" | "reloading"
                )
            });
            if !alive {
                // The shim writes the exit file before it leaves the scope: look once more.
                follower.catch_up();
                return shim::read_exit_file(exit_file).map_err(io_err(exit_file));
            }
            next_unit_check += UNIT_CHECK;
        }
        let _ = tokio::time::timeout_at(next_unit_check, wake.notified()).await;
    }
}

/// Lets the scope end (stopping what the step left behind), returns systemd's `Result`
/// for it, and clears it from systemd's failed list.
async fn settle_scope(inner: &Arc<Inner>, unit: &str) -> Result<Option<String>> {
    let systemd = &inner.systemd;
    let mut deadline = tokio::time::Instant::now() + LINGER;
    let mut stopped = false;
    let result = loop {
        match systemd.scope_outcome(unit).await? {
            None => break None,
            Some(o) if matches!(o.active_state.as_str(), "inactive" | "failed") => {
                break Some(o.result);
            }
            Some(_) if tokio::time::Instant::now() >= deadline && !stopped => {
                systemd.stop_unit(unit).await?;
                stopped = true;
                deadline += STOP_TIMEOUT + LINGER;
            }
            Some(_) if tokio::time::Instant::now() >= deadline => break None,
            Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    systemd.reset_failed(unit).await?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: Option<i32>, signal: Option<i32>, oom_kills: u64) -> StepExit {
        StepExit {
            outcome: ShimOutcome::Exited,
            pid: Some(1),
            exit_code: code,
            signal,
            oom_kills,
            error: None,
        }
    }

    #[test]
    fn classification_prefers_the_strongest_evidence() {
        assert_eq!(
            classify(&exited(Some(0), None, 0), Some("success")),
            (StepState::Succeeded, "success")
        );
        assert_eq!(
            classify(&exited(Some(2), None, 0), None),
            (StepState::Failed, "exit-code")
        );
        assert_eq!(
            classify(&exited(None, Some(9), 0), Some("signal")),
            (StepState::Failed, "signal")
        );
        assert_eq!(
            classify(&exited(None, Some(9), 1), None),
            (StepState::Failed, "oom-kill")
        );
        assert_eq!(
            classify(&exited(None, Some(9), 0), Some("oom-kill")),
            (StepState::Failed, "oom-kill")
        );
        // A step that exits 0 on the timeout's SIGTERM still timed out.
        assert_eq!(
            classify(&exited(Some(0), None, 0), Some("timeout")),
            (StepState::Failed, "timeout")
        );
    }

    #[test]
    fn attempt_files_are_named_by_step_and_attempt() {
        let files = AttemptFiles::new(Path::new("/s/runs/r"), "build", 2);
        assert_eq!(files.log, Path::new("/s/runs/r/build.2.log"));
        assert_eq!(files.exit, Path::new("/s/runs/r/build.2.exit"));
        assert_eq!(unit_name("r", "build", 2), "drover-r-build-2.scope");
    }
}
