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
    /// Output that could not be written to the log (a full disk): the journal has it.
    #[serde(default)]
    pub log_cut: Option<LogCut>,
}

/// Where a step's log was cut because a write to it failed, and how much was not written.
/// The log marks each gap in place once it can be written again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogCut {
    /// The log's length when the first write failed.
    pub at: u64,
    /// Output bytes not written to the log (all of them went to the journal).
    pub lost_bytes: u64,
    /// Why the first write failed.
    pub error: String,
}

impl std::fmt::Display for LogCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the log was cut at byte {}: {}; {} bytes of output are only in the journal",
            self.at, self.error, self.lost_bytes
        )
    }
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

/// Space set aside for the exit file before the step starts, so that a step that fills
/// the disk still has its end recorded (the record is a few hundred bytes).
const EXIT_FILE_RESERVE: usize = 16 * 1024;

/// How long the shim keeps trying to write the exit file (a full disk, an I/O error)
/// before it gives up and leaves the attempt to be recorded as `lost`.
const EXIT_FILE_PATIENCE: Duration = Duration::from_secs(3600);

/// The longest wait between two tries at writing the exit file.
const RETRY_MAX: Duration = Duration::from_secs(5);

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
    write_exit_file_patiently(&spec, &exit)
}

/// Writes the exit file, trying again while it fails (the disk may be full for a while:
/// the agent waits for this record, and a step whose end is lost counts as failed).
fn write_exit_file_patiently(spec: &ShimSpec, exit: &StepExit) -> i32 {
    let started = std::time::Instant::now();
    let mut wait = Duration::from_millis(100);
    let mut told = false;
    loop {
        let Err(e) = write_exit_file(&spec.exit_file, exit) else {
            return 0;
        };
        let message = format!(
            "drover shim: cannot write {}: {e}",
            spec.exit_file.display()
        );
        if started.elapsed() >= EXIT_FILE_PATIENCE {
            journal_event(
                &spec.journal_fields,
                "exit-file-lost",
                &format!("{message}; giving up"),
            );
            return 125;
        }
        if !told {
            let message = format!("{message}; trying again until it can be written");
            journal_event(&spec.journal_fields, "exit-file-retry", &message);
            told = true;
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(RETRY_MAX);
    }
}

/// Tells the journal (with the step's fields and `DROVER_EVENT`) and the shim's stderr
/// something went wrong; neither failing can stop the shim.
fn journal_event(fields: &BTreeMap<String, String>, event: &str, message: &str) {
    let event = ("DROVER_EVENT".to_owned(), event.to_owned());
    let fields = fields.iter().chain([(&event.0, &event.1)]);
    let _ = journal_send(Priority::Error, message, fields);
    let _ = writeln!(io::stderr(), "{message}");
}

fn supervise(spec: &ShimSpec) -> StepExit {
    // Everything that can be prepared is, before the gate: the step's start waits on it.
    let log = state_dir::private_file()
        .create(true)
        .append(true)
        .open(&spec.log);
    if let Err(e) = reserve_exit_file(&spec.exit_file) {
        let message = format!(
            "drover shim: cannot set space aside for {}: {e}",
            spec.exit_file.display()
        );
        journal_event(&spec.journal_fields, "exit-file-reserve-failed", &message);
    }
    let mut gate = [0u8; 1];
    if !matches!(io::stdin().read(&mut gate), Ok(1)) {
        return StepExit::not_started(ShimOutcome::GateClosed, None);
    }
    let log = match log {
        Ok(file) => Arc::new(Mutex::new(StepLog::new(file, &spec.journal_fields))),
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
            lock(&log).write_line(format!("drover: {error}\n").as_bytes());
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
                let line = format!("drover: cannot open {}: {e}\n", path.display());
                lock(&log).write_line(line.as_bytes());
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
    let log_cut = lock(&log).finish();
    match status {
        Ok(status) => StepExit {
            outcome: ShimOutcome::Exited,
            pid: Some(pid),
            exit_code: status.code(),
            signal: status.signal(),
            oom_kills,
            error,
            log_cut,
        },
        Err(e) => StepExit {
            outcome: ShimOutcome::Exited,
            pid: Some(pid),
            exit_code: None,
            signal: None,
            oom_kills,
            error: Some(format!("waiting for the step failed: {e}")),
            log_cut,
        },
    }
}

impl StepExit {
    /// What the attempt's record says of a cut log.
    pub fn log_cut_note(&self) -> Option<String> {
        self.log_cut.as_ref().map(LogCut::to_string)
    }

    fn not_started(outcome: ShimOutcome, error: Option<String>) -> StepExit {
        StepExit {
            outcome,
            pid: None,
            exit_code: None,
            signal: None,
            oom_kills: 0,
            error,
            log_cut: None,
        }
    }
}

/// The step's log file, and the output a failed write kept out of it.
struct StepLog {
    file: File,
    cut: Option<LogCut>,
    /// Bytes not written since the last gap marker.
    gap: u64,
    /// Where the journal has what the log lacks, for the gap markers.
    journal_match: String,
    journal_fields: BTreeMap<String, String>,
}

impl StepLog {
    fn new(file: File, journal_fields: &BTreeMap<String, String>) -> StepLog {
        let journal_match = ["DROVER_RUN", "DROVER_STEP"]
            .iter()
            .filter_map(|k| Some(format!("{k}={}", journal_fields.get(*k)?)))
            .collect::<Vec<_>>()
            .join(" ");
        StepLog {
            file,
            cut: None,
            gap: 0,
            journal_match,
            journal_fields: journal_fields.clone(),
        }
    }

    /// Appends `line`; while writes fail, counts it as lost instead, and marks the gap
    /// first once the log can be written again. Each line tries: a write to a full disk
    /// fails at once, at less cost than one that succeeds.
    fn write_line(&mut self, line: &[u8]) {
        if self.gap > 0 && !self.close_gap() {
            self.lose(line.len() as u64);
            return;
        }
        if let Err(e) = self.file.write_all(line) {
            if self.cut.is_none() {
                // Where the log ends now, with any part of the line that was written.
                let at = self.file.metadata().map_or(0, |m| m.len());
                journal_event(
                    &self.journal_fields,
                    "log-cut",
                    &format!(
                        "drover: output of this step could not be written to its log: {e}; it still goes to the journal"
                    ),
                );
                self.cut = Some(LogCut {
                    at,
                    lost_bytes: 0,
                    error: e.to_string(),
                });
            }
            self.lose(line.len() as u64);
        }
    }

    fn lose(&mut self, bytes: u64) {
        self.gap += bytes;
        if let Some(cut) = &mut self.cut {
            cut.lost_bytes += bytes;
        }
    }

    /// Writes the marker of the current gap; false if it cannot.
    fn close_gap(&mut self) -> bool {
        let error = self.cut.as_ref().map_or("", |c| c.error.as_str());
        let marker = format!(
            "\n[drover: {} bytes of output are missing here: the log could not be written ({error}); the journal has them: journalctl {}]\n",
            self.gap, self.journal_match
        );
        if self.file.write_all(marker.as_bytes()).is_err() {
            return false;
        }
        self.gap = 0;
        true
    }

    /// At the step's end: marks an open gap if the log can be written now; returns the
    /// cut, if the log was ever cut.
    fn finish(&mut self) -> Option<LogCut> {
        if self.gap > 0 {
            self.close_gap();
        }
        self.cut.clone()
    }
}

/// Sets aside the space the exit file needs (see [`EXIT_FILE_RESERVE`]): its temporary
/// file, filled now and overwritten in place at the end.
fn reserve_exit_file(path: &Path) -> io::Result<()> {
    let mut file = state_dir::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path.with_extension("partial"))?;
    file.write_all(&[0; EXIT_FILE_RESERVE])
}

/// Copies one output stream line by line to the log file (and `copy`) and to journald.
fn copy_lines(
    stream: OutputStream,
    log: &Mutex<StepLog>,
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
        lock(log).write_line(&line);
        if let Some(copy) = copy.as_mut() {
            let _ = copy.write_all(&line);
        }
        let text = String::from_utf8_lossy(&line[..line.len() - 1]);
        if let Err(e) = journal_send(priority, &text, fields.iter()) {
            lock(journal_error).get_or_insert_with(|| format!("journald: {e}"));
        }
    }
}

/// Writes the exit file so that a reader sees either nothing or the whole record: into
/// the space [`reserve_exit_file`] set aside (overwritten, then cut to length, neither of
/// which needs more space), then renamed into place.
fn write_exit_file(path: &Path, exit: &StepExit) -> io::Result<()> {
    let partial = path.with_extension("partial");
    let mut file = state_dir::private_file()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&partial)?;
    let record = serde_json::to_vec(exit).map_err(io::Error::other)?;
    file.write_all(&record)?;
    file.set_len(record.len() as u64)?;
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
