//! The per-step supervisor (`drover __shim SPEC`): the only process that owns a step's
//! output. It is spawned by the agent, moved into the step's scope while it waits at the
//! start gate (its stdin), then runs the step, copies each output line to the step's log
//! file and to journald, and writes how the step ended to the exit file, atomically. It
//! ignores SIGTERM (the scope-wide SIGTERM reaches the step itself) and does not depend on
//! the agent staying alive.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use libsystemd::logging::{Priority, journal_send};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use serde::{Deserialize, Serialize};

use crate::cgroup;
use crate::credentials::{self, Account};
use crate::state_dir;
use crate::sync::lock;

/// What the agent tells the shim, through a JSON file beside the step's log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimSpec {
    /// The step's scope, e.g. `drover-<run>-<step>-<n>.scope`.
    pub unit: String,
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    /// Whom the step runs as: the shim stays the agent's user (it writes the log and the
    /// exit file in the private state directory), the step drops to this account.
    pub account: Account,
    /// Variables added to the agent's environment for the step.
    pub env: BTreeMap<String, String>,
    pub log: PathBuf,
    /// Where stdout alone is also copied (an agent step's stream-json), if anywhere.
    #[serde(default)]
    pub stdout_copy: Option<PathBuf>,
    pub exit_file: PathBuf,
    /// Journald fields on every output line: `DROVER_RUN`, `DROVER_STEP`, ….
    pub journal_fields: BTreeMap<String, String>,
}

/// How the step ended, as the shim saw it; the agent reads it from the exit file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepExit {
    pub outcome: ShimOutcome,
    pub pid: Option<u32>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// OOM kills counted in the scope's memory cgroup while the step ran.
    pub oom_kills: u64,
    /// Why the step could not start, or why its output did not reach journald.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShimOutcome {
    /// The step ran and ended (by exit or by signal).
    Exited,
    /// The agent closed the start gate without opening it: the step never ran.
    GateClosed,
    /// The step's program could not be started.
    SpawnFailed,
}

/// One of the step's output pipes.
type OutputStream = Box<dyn Read + Send>;

/// How long output is still copied after the step's main process ends, for children that
/// inherited its stdout.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

extern "C" fn do_nothing(_: nix::libc::c_int) {}

/// Runs the shim; returns its own exit status.
pub fn main(spec_path: &Path) -> i32 {
    // The scope's SIGTERM is for the step; the shim must live to record how it ended. A
    // handler that does nothing, not SIG_IGN: handlers reset to the default across exec,
    // ignored signals would stay ignored in the step.
    let ignore = SigAction::new(
        SigHandler::Handler(do_nothing),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        let _ = unsafe { sigaction(sig, &ignore) };
    }
    let spec: ShimSpec = match fs::read(spec_path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("drover shim: cannot read {}: {e}", spec_path.display());
            return 125;
        }
    };
    let exit = supervise(&spec);
    match write_exit_file(&spec.exit_file, &exit) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!(
                "drover shim: cannot write {}: {e}",
                spec.exit_file.display()
            );
            125
        }
    }
}

fn supervise(spec: &ShimSpec) -> StepExit {
    // Everything that can be prepared is, before the gate: the step's start waits on it.
    let log = state_dir::private_file()
        .create(true)
        .append(true)
        .open(&spec.log);
    let mut gate = [0u8; 1];
    if !matches!(io::stdin().read(&mut gate), Ok(1)) {
        return StepExit::not_started(ShimOutcome::GateClosed, None);
    }
    let log = match log {
        Ok(file) => Arc::new(Mutex::new(file)),
        Err(e) => {
            let error = format!("cannot open log {}: {e}", spec.log.display());
            return StepExit::not_started(ShimOutcome::SpawnFailed, Some(error));
        }
    };

    let Some((program, args)) = spec.argv.split_first() else {
        return StepExit::not_started(ShimOutcome::SpawnFailed, Some("empty command".into()));
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // std resets the signal mask and SIGPIPE for the step either way (with posix_spawn
    // when the step runs as the agent's own user, which needs no pre_exec).
    credentials::drop_before_exec(&mut command, &spec.account, &spec.cwd);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let error = format!("cannot start {program:?}: {e}");
            let _ = writeln!(lock(&log), "drover: {error}");
            return StepExit::not_started(ShimOutcome::SpawnFailed, Some(error));
        }
    };
    let pid = child.id();

    let journal_error: Arc<Mutex<Option<String>>> = Arc::default();
    let (done_tx, done_rx) = mpsc::channel();
    // A failure to open the copy loses only the copy: the log still has every line.
    let stdout_copy = spec.stdout_copy.as_ref().and_then(|path| {
        state_dir::private_file()
            .create(true)
            .append(true)
            .open(path)
            .inspect_err(|e| {
                let _ = writeln!(lock(&log), "drover: cannot open {}: {e}", path.display());
            })
            .ok()
    });
    let streams: [(Option<OutputStream>, &str, Priority, Option<File>); 2] = [
        (
            child.stdout.take().map(|s| Box::new(s) as _),
            "stdout",
            Priority::Info,
            stdout_copy,
        ),
        (
            child.stderr.take().map(|s| Box::new(s) as _),
            "stderr",
            Priority::Warning,
            None,
        ),
    ];
    for (stream, name, priority, mut copy) in streams {
        let Some(stream) = stream else { continue };
        let mut fields = spec.journal_fields.clone();
        fields.insert("DROVER_STREAM".into(), name.into());
        let (log, journal_error, done_tx) = (log.clone(), journal_error.clone(), done_tx.clone());
        std::thread::spawn(move || {
            copy_lines(
                stream,
                &log,
                copy.as_mut(),
                priority,
                &fields,
                &journal_error,
            );
            let _ = done_tx.send(());
        });
    }
    drop(done_tx);

    let status = child.wait();
    // Children of the step may keep its stdout open; copy what comes soon, then move on.
    let deadline = std::time::Instant::now() + DRAIN_AFTER_EXIT;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match done_rx.recv_timeout(left) {
            Ok(()) => continue,
            Err(_) => break,
        }
    }
    // The scope's memory cgroup is new, so its whole count belongs to this step.
    let oom_kills = cgroup::own_oom_kills(&spec.unit).unwrap_or(0);
    let error = lock(&journal_error).clone();
    match status {
        Ok(status) => StepExit {
            outcome: ShimOutcome::Exited,
            pid: Some(pid),
            exit_code: status.code(),
            signal: status.signal(),
            oom_kills,
            error,
        },
        Err(e) => StepExit {
            outcome: ShimOutcome::Exited,
            pid: Some(pid),
            exit_code: None,
            signal: None,
            oom_kills,
            error: Some(format!("waiting for the step failed: {e}")),
        },
    }
}

impl StepExit {
    fn not_started(outcome: ShimOutcome, error: Option<String>) -> StepExit {
        StepExit {
            outcome,
            pid: None,
            exit_code: None,
            signal: None,
            oom_kills: 0,
            error,
        }
    }
}

/// Copies one output stream line by line to the log file (and `copy`) and to journald.
fn copy_lines(
    stream: OutputStream,
    log: &Mutex<File>,
    mut copy: Option<&mut File>,
    priority: Priority,
    fields: &BTreeMap<String, String>,
    journal_error: &Mutex<Option<String>>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        let _ = lock(log).write_all(&line);
        if let Some(copy) = copy.as_mut() {
            let _ = copy.write_all(&line);
        }
        let text = String::from_utf8_lossy(&line[..line.len() - 1]);
        if let Err(e) = journal_send(priority, &text, fields.iter()) {
            lock(journal_error).get_or_insert_with(|| format!("journald: {e}"));
        }
    }
}

/// Writes the exit file so that a reader sees either nothing or the whole record.
fn write_exit_file(path: &Path, exit: &StepExit) -> io::Result<()> {
    let partial = path.with_extension("partial");
    let mut file = state_dir::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&partial)?;
    file.write_all(&serde_json::to_vec(exit).map_err(io::Error::other)?)?;
    file.sync_all()?;
    fs::rename(&partial, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads an exit file the shim wrote; `None` while it does not exist yet.
pub fn read_exit_file(path: &Path) -> io::Result<Option<StepExit>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(io::Error::other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
