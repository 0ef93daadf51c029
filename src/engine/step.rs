//! One step attempt: spawn its shim held at the start gate, move the shim into the step's
//! scope, open the gate; later, learn from the exit file and the unit how it ended.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::follow::Follower;
use super::plan::NEVER_STARTED;
use super::shim::{self, ShimOutcome, ShimSpec, StepExit};
use super::wakeups::{self, SCOPE_LISTING_PERIOD};
use super::{EngineError, Inner, Result};
use crate::claude::{self, session::SessionStart, transcript::Repair};
use crate::credentials::{self, Account};
use crate::model::{Failure, FailureClass};
use crate::model::{KillRecord, Run, StepOutput, StepState, Timestamp};
use crate::recovery::failure::{self, Evidence};
use crate::spec::{Step, Workflow};
use crate::state_dir;
use crate::store::{AttemptEnd, NewAttempt};
use crate::sync::lock;
use crate::systemd::ScopeProperties;
use crate::terminate::{self, Clock, Target};

/// How long systemd waits between SIGTERM and SIGKILL when it stops a scope itself.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the scope may linger once its step ended before drover stops it (children the
/// step left behind keep it alive).
const LINGER: Duration = Duration::from_secs(3);
/// How much of the end of a failed step's output is searched for evidence.
const EVIDENCE_TAIL: u64 = 64 * 1024;

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

/// The variables a step attempt (and its `on_kill` commands) get on top of the
/// environment they start from (the agent's, or a login's of the run's user: see
/// `Account::start_env`): the `DROVER_*` ones.
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

/// Where an agent step's Claude Code keeps the transcript of `session`: under
/// `$CLAUDE_CONFIG_DIR`, or `$HOME/.claude`, as the step sees them (its own `env`, else the
/// run's user's home when that is not the agent, else the agent's environment; a
/// `HOME`-less agent's step finds its home as node does, in the password database).
pub(super) fn step_transcript(run: &Run, step: &Step, session: &str, account: &Account) -> PathBuf {
    let from_env = |key: &str| {
        step.env
            .get(key)
            .map(PathBuf::from)
            .or_else(|| {
                if account.is_other_than_agent() {
                    (key == "HOME").then(|| account.home.clone())
                } else {
                    std::env::var_os(key).map(PathBuf::from)
                }
            })
            .filter(|p| !p.as_os_str().is_empty())
    };
    let config_dir = from_env("CLAUDE_CONFIG_DIR").unwrap_or_else(|| {
        from_env("HOME")
            .unwrap_or_else(|| account.home.clone())
            .join(".claude")
    });
    claude::transcript::transcript_path_in(&config_dir, &step_cwd(run), session)
}

/// The files of one attempt, in the run's directory.
pub(super) struct AttemptFiles {
    pub(super) log: PathBuf,
    pub(super) exit: PathBuf,
    /// An agent step's stdout alone: its stream-json.
    pub(super) stream: PathBuf,
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
            stream: file("stream.jsonl"),
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
    session: Option<String>,
) -> Result<()> {
    let step = &workflow.steps[index];
    let run_dir = inner.config.state_dir.join("runs").join(&run.id);
    state_dir::create_dir(&run_dir).map_err(io_err(&run_dir))?;
    let files = AttemptFiles::new(&run_dir, &step.name, attempt);
    let unit = unit_name(&run.id, &step.name, attempt);
    let cwd = step_cwd(run);
    let account = inner.account_of(run)?;
    let (argv, session_id, note) = match step.agent {
        Some(_) => {
            // The transcript is in the user's home: looked at and repaired with their rights.
            let (start, note) = credentials::with_rights_of(&account, || {
                claude_session(run, step, session, &account)
            })?;
            let id = match &start {
                SessionStart::New(id) | SessionStart::Resume(id) => id.clone(),
            };
            (
                claude::session::session_argv(&step.run, &start),
                Some(id),
                Some(note),
            )
        }
        None => (step.run.argv(), None, None),
    };
    inner.store().start_attempt(&NewAttempt {
        run: &run.id,
        index: index as u32,
        name: &step.name,
        attempt,
        unit: &unit,
        log_path: &files.log.to_string_lossy(),
        session_id: session_id.as_deref(),
        note: note.as_deref(),
    })?;

    let fields = journal_fields(run, workflow, &step.name, attempt);
    let mut env = step_env(run, workflow, &step.name, attempt);
    env.extend(step.env.clone());
    let spec = ShimSpec {
        unit: unit.clone(),
        argv,
        cwd,
        account,
        env,
        log: files.log.clone(),
        stdout_copy: step.agent.is_some().then(|| files.stream.clone()),
        exit_file: files.exit.clone(),
        journal_fields: fields,
    };
    let spec_json = serde_json::to_vec(&spec)
        .map_err(|e| io_err(&files.shim_spec)(std::io::Error::other(e)))?;
    state_dir::write(&files.shim_spec, &spec_json).map_err(io_err(&files.shim_spec))?;

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
        end_unstarted(inner, run, workflow, index, attempt, "start-failed", None)?;
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
    inner.announce_step(
        &run.id,
        &workflow.name,
        (index as u32, &step.name),
        attempt,
        StepState::Running,
        None,
    );
    run_event!(
        info,
        run = run.id,
        workflow = workflow.name,
        step = step.name,
        "step-started",
        "run {}: step {} attempt {attempt} started in {unit} (shim pid {pid})",
        run.id,
        step.name
    );
    Ok(())
}

/// How an agent step's attempt joins its Claude Code session: `--resume` when the
/// session's transcript is there (repaired first if a kill cut it), else a new session
/// under the id drover assigns up front. Returns what was done, for the transition.
fn claude_session(
    run: &Run,
    step: &Step,
    candidate: Option<String>,
    account: &Account,
) -> (SessionStart, String) {
    let Some(id) = candidate else {
        let id = uuid::Uuid::new_v4().to_string();
        let note = format!("new Claude Code session {id}");
        return (SessionStart::New(id), note);
    };
    let transcript = step_transcript(run, step, &id, account);
    if !transcript.exists() {
        let note = format!(
            "session {id} has no transcript at {}: started anew under the same id",
            transcript.display()
        );
        return (SessionStart::New(id), note);
    }
    let note = match claude::transcript::repair_transcript(&transcript) {
        Ok(Repair::Intact) => format!("resumes Claude Code session {id}"),
        Ok(Repair::NewlineAdded) => {
            format!(
                "resumes Claude Code session {id}; transcript repaired: its last line's newline added"
            )
        }
        Ok(Repair::Truncated {
            removed_lines,
            removed_bytes,
            reason,
        }) => format!(
            "resumes Claude Code session {id}; transcript repaired: {removed_lines} lines ({removed_bytes} bytes) cut: {reason}"
        ),
        Err(e) => {
            format!("resumes Claude Code session {id}; its transcript could not be checked: {e}")
        }
    };
    (SessionStart::Resume(id), note)
}

/// Records that an attempt ended without running (`result` "start-failed" or
/// "dependency"), then announces it.
fn end_unstarted(
    inner: &Arc<Inner>,
    run: &Run,
    workflow: &Workflow,
    index: usize,
    attempt: u32,
    result: &str,
    failure: Option<&Failure>,
) -> Result<()> {
    inner.store().end_attempt(
        &run.id,
        index as u32,
        attempt,
        &AttemptEnd {
            state: StepState::Failed,
            exit_code: None,
            signal: None,
            result,
            output: &StepOutput::default(),
            failure,
            agent: None,
            log_cut: None,
        },
    )?;
    let step = &workflow.steps[index];
    inner.announce_step(
        &run.id,
        &workflow.name,
        (index as u32, &step.name),
        attempt,
        StepState::Failed,
        Some(result),
    );
    Ok(())
}

/// Records an attempt that did not start because the step's requirements are not met.
pub(super) fn refuse(
    inner: &Arc<Inner>,
    run: &Run,
    workflow: &Workflow,
    index: usize,
    attempt: u32,
    evidence: &str,
) -> Result<()> {
    let step = &workflow.steps[index];
    let files = AttemptFiles::of(inner, &run.id, &step.name, attempt);
    inner.store().start_attempt(&NewAttempt {
        run: &run.id,
        index: index as u32,
        name: &step.name,
        attempt,
        unit: &unit_name(&run.id, &step.name, attempt),
        log_path: &files.log.to_string_lossy(),
        session_id: None,
        note: Some("requirements checked before the start"),
    })?;
    let failure = Failure {
        class: FailureClass::Dependency,
        evidence: evidence.to_owned(),
    };
    end_unstarted(
        inner,
        run,
        workflow,
        index,
        attempt,
        "dependency",
        Some(&failure),
    )?;
    run_event!(
        warn,
        run = run.id,
        workflow = workflow.name,
        step = step.name,
        "step-refused",
        "run {}: step {} not started: requirements not met: {evidence}",
        run.id,
        step.name
    );
    Ok(())
}

/// Waits for attempt `attempt` of step `index` to end and records how it ended (and why,
/// if it failed).
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
    let current = run
        .steps
        .iter()
        .find(|a| a.index as usize == index && a.attempt == attempt);
    let watch = Watch {
        stall_after: step.stall_after,
        started: current
            .and_then(|a| a.started_at)
            .unwrap_or_else(Timestamp::now),
        shim_pid: current.and_then(|a| a.pid),
        agent_step: step.agent.is_some(),
        grace: workflow.kill.grace,
    };

    let mut follower = Follower::new(files.log.clone());
    inner
        .live_output()
        .insert(unit.clone(), follower.output.clone());
    let ended = wait_for_exit_file(inner, &files, &unit, &mut follower, &watch).await;
    inner.live_output().remove(&unit);
    let Ended { exit, stalled } = ended?;
    let output = lock(&follower.output).clone();
    let systemd_result = settle_scope(inner, &unit).await?;
    let (state, result) = match &exit {
        Some(exit) => classify(exit, systemd_result.as_deref()),
        None => (StepState::Failed, "lost"),
    };
    let (exit_code, signal) = exit
        .as_ref()
        .map_or((None, None), |e| (e.exit_code, e.signal));
    let agent = step
        .agent
        .and_then(|_| claude::stream::read_stream(&files.stream).ok());
    // A stall is drover's own doing, not a kill from outside.
    let external = external_kill(result, signal).filter(|_| stalled.is_none());
    let failure = (state == StepState::Failed && result != NEVER_STARTED).then(|| {
        let killed_by = external
            .is_some()
            .then_some(signal)
            .flatten()
            .filter(|_| result == "signal")
            .map(|s| format!("signal {s} sent from outside drover (systemctl kill/stop?)"));
        failure::classify(&Evidence {
            exit_code,
            signal,
            oom_kills: exit.as_ref().map_or(0, |e| e.oom_kills),
            systemd_result: systemd_result.as_deref(),
            lost: exit.is_none(),
            killed_by: killed_by.as_deref(),
            stalled: stalled.as_deref(),
            agent: agent.as_ref(),
            output_tail: &read_tail(&files.log, EVIDENCE_TAIL),
        })
    });
    let log_cut = exit.as_ref().and_then(StepExit::log_cut_note);
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
            failure: failure.as_ref(),
            agent: agent.as_ref(),
            log_cut: log_cut.as_deref(),
        },
    )?;
    inner.announce_step(
        &run.id,
        &workflow.name,
        (index as u32, &step.name),
        attempt,
        state,
        Some(result),
    );
    if let Some(cause) = external {
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
        crate::selfmetrics::global().kill_ended(record.result, None);
        run_event!(
            warn,
            run = run.id,
            workflow = workflow.name,
            step = step.name,
            "kill",
            message_id = super::KILL_MESSAGE_ID,
            "run {}: step {} was killed outside drover: {cause}",
            run.id,
            step.name
        );
    }
    let how = match (&failure, exit_code, signal) {
        (Some(f), _, _) => format!("{}: {}", f.class, f.evidence),
        (None, _, Some(signal)) => format!("signal {signal}"),
        (None, Some(code), None) => format!("exit code {code}"),
        (None, None, None) => "no exit status".to_owned(),
    };
    let error = exit
        .as_ref()
        .and_then(|e| e.error.as_deref())
        .map_or(String::new(), |e| format!("; {e}"));
    run_event!(
        info,
        run = run.id,
        workflow = workflow.name,
        step = step.name,
        "step-ended",
        "run {}: step {} attempt {attempt} ended: {result} ({how}, {} lines){error}",
        run.id,
        step.name,
        output.lines
    );
    Ok(())
}

/// The last `max` bytes of a file, as text (empty if it cannot be read).
fn read_tail(path: &Path, max: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut bytes = Vec::new();
    let _ = file.take(max).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
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

/// What the wait for a step's end watches besides the exit file.
struct Watch {
    stall_after: Option<Duration>,
    started: Timestamp,
    shim_pid: Option<u32>,
    agent_step: bool,
    grace: Duration,
}

/// How the wait ended: the shim's record (`None` if the scope is gone without one: the
/// shim itself was killed), and the stall evidence if drover stopped a silent step.
struct Ended {
    exit: Option<StepExit>,
    stalled: Option<String>,
}

/// Waits until the shim writes the exit file, counting the step's output meanwhile and
/// stopping the step if it stays silent longer than its `stall_after`.
async fn wait_for_exit_file(
    inner: &Arc<Inner>,
    files: &AttemptFiles,
    unit: &str,
    follower: &mut Follower,
    watch: &Watch,
) -> Result<Ended> {
    // inotify wakes the wait at once; the periodic check covers a missed event and a
    // scope that vanished without an exit file.
    let dir = files.exit.parent().unwrap_or(Path::new("/"));
    let registration = inner
        .wakeups
        .register(dir, &[files.exit.clone(), files.log.clone()]);
    let wake = &registration.wake;
    let exit_file = files.exit.as_path();
    let mut scopes = inner.live_scopes.subscribe();
    let began = tokio::time::Instant::now();
    let mut stalled = None;
    loop {
        follower.catch_up();
        if let Some(exit) = shim::read_exit_file(exit_file).map_err(io_err(exit_file))? {
            // The shim writes the exit file after the last output line.
            follower.catch_up();
            return Ok(Ended {
                exit: Some(exit),
                stalled,
            });
        }
        if stalled.is_none()
            && let Some(evidence) = silent_too_long(watch, follower)
        {
            stop_stalled(inner, unit, watch, &evidence).await;
            stalled = Some(evidence);
        }
        // A listing taken since the wait began that lacks the scope (or no recent listing
        // at all): ask systemd about this scope alone before believing it gone.
        let missing = {
            let live = scopes.borrow_and_update();
            let stale = live
                .taken
                .is_none_or(|t| t.elapsed() > 10 * SCOPE_LISTING_PERIOD);
            stale && began.elapsed() > SCOPE_LISTING_PERIOD
                || live.taken.is_some_and(|t| t > began) && !live.active.contains(unit)
        };
        if missing && !scope_alive(inner, unit).await? {
            // The shim writes the exit file before it leaves the scope: look once more.
            follower.catch_up();
            let exit = shim::read_exit_file(exit_file).map_err(io_err(exit_file))?;
            return Ok(Ended { exit, stalled });
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = scopes.changed() => {}
            _ = tokio::time::sleep(SCOPE_LISTING_PERIOD) => {}
        }
    }
}

async fn scope_alive(inner: &Arc<Inner>, unit: &str) -> Result<bool> {
    Ok(inner
        .systemd
        .scope_outcome(unit)
        .await?
        .is_some_and(|o| wakeups::is_live(&o.active_state)))
}

/// The stall evidence, once the step has written nothing for longer than `stall_after`
/// (counted from its start until its first line).
fn silent_too_long(watch: &Watch, follower: &Follower) -> Option<String> {
    let stall_after = watch.stall_after?;
    let last = lock(&follower.output)
        .last_output_at
        .unwrap_or(watch.started);
    let silent = Duration::from_millis((Timestamp::now().0 - last.0).max(0) as u64);
    (silent > stall_after).then(|| {
        format!(
            "no output for {} (stall_after {}); stopped by drover",
            humantime::format_duration(Duration::from_secs(silent.as_secs())),
            humantime::format_duration(stall_after)
        )
    })
}

/// Ends a stalled step the way a kill does (SIGTERM, the workflow's grace, SIGKILL), so
/// the shim still records how it ended.
async fn stop_stalled(inner: &Arc<Inner>, unit: &str, watch: &Watch, evidence: &str) {
    tracing::warn!(drover_event = "stalled", "{unit}: {evidence}");
    let requested = std::time::Instant::now();
    let clock = Clock {
        requested,
        grace: watch.grace,
        deadline: requested + watch.grace + STOP_TIMEOUT,
    };
    let target = Target {
        unit,
        shim_pid: watch.shim_pid,
        agent_step: watch.agent_step,
    };
    if let Err(e) = terminate::scope(&inner.systemd, &target, &clock).await {
        tracing::error!(
            drover_event = "stalled",
            "{unit}: stopping the stalled step failed: {e}"
        );
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
            log_cut: None,
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
