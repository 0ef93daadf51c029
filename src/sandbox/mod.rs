//! A private systemd environment (user manager, session bus, journald) for hosts whose PID 1 is not systemd.
//!
//! `drover sandbox -- CMD` makes cgroups of its own below its current cgroup in every
//! hierarchy, a runtime directory with a session bus that admits any local user, a private
//! mount namespace where journald and `systemd --user` believe they were booted, runs CMD
//! there and tears everything down again. Nothing of the host is moved or taken over: the
//! user manager only ever sees the sandbox's own subtree. See DESIGN.md, "cgroups on these
//! machines" and "Testing against the real thing".
//!
//! Call [`run`] from the main thread of a single-threaded process: `unshare(CLONE_NEWNS)`
//! only moves the calling thread, and the sandbox installs process-wide signal handlers.
//!
//! By job: `cgroups` (the sandbox's own cgroups), `namespace` (its mount namespace),
//! `bus` (its runtime directory and session bus), `daemons` (journald and the user manager:
//! started, waited for, stopped, reaped), `info` (what it tells the outside, and joining
//! it), `signals`; this file sets them up in order, runs CMD and tears them down.

mod bus;
mod cgroups;
mod daemons;
mod info;
mod namespace;
mod signals;

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use cgroups::{HierarchyCgroups, move_to_cgroup};
use daemons::{Daemon, Reaper};
pub use info::SandboxInfo;
use signals::{SignalGuard, take_signal};

/// The system manager binary, run here as a user manager.
pub const SYSTEMD: &str = "/usr/lib/systemd/systemd";
/// journald, started by hand in the sandbox's mount namespace.
pub const JOURNALD: &str = "/usr/lib/systemd/systemd-journald";

/// How long the whole environment may take to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `systemd --user` gets to stop its units before SIGKILL.
const MANAGER_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long journald gets after SIGTERM.
const DAEMON_STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long CMD gets after a forwarded SIGINT/SIGTERM before it is killed.
const COMMAND_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long teardown keeps killing and removing cgroups before it gives up.
const CGROUP_CLEAN_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// The leaf that holds the sandbox process, its helpers, CMD, and whoever joins through
/// [`SandboxInfo::command`]. The user manager gets a sibling of its own, so its subtree
/// holds only what it manages and, on v2, the top cgroup stays free of processes (the
/// "no internal processes" rule would otherwise forbid enabling controllers below it).
const SUPERVISOR_LEAF: &str = "supervisor";
const MANAGER_LEAF: &str = "manager";

/// Everything that can go wrong; each renders as one line that names what failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("must run as root (running as uid {0})")]
    NotRoot(u32),
    #[error("{what} not found (looked for {path})")]
    Missing { what: &'static str, path: String },
    #[error("no command given")]
    NoCommand,
    #[error(
        "no cgroup hierarchy found in /proc/self/cgroup that is mounted in /proc/self/mountinfo"
    )]
    NoCgroups,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} exited during startup ({status}){log}")]
    DaemonExited {
        what: &'static str,
        status: String,
        log: String,
    },
    #[error("timed out after {}s waiting for {what}{log}", .after.as_secs())]
    Timeout {
        what: String,
        after: Duration,
        log: String,
    },
    #[error("interrupted by signal {0} during setup")]
    Interrupted(i32),
    #[error("sandbox info {}: {source}", .path.display())]
    Info {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("teardown incomplete: {0}")]
    Teardown(String),
}

impl SandboxError {
    /// The exit status a command-line caller should use: 127/126 like a shell when CMD
    /// cannot be found or executed, 128+N when a signal interrupted setup, else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            SandboxError::Spawn { source, .. } => match source.kind() {
                io::ErrorKind::NotFound => 127,
                io::ErrorKind::PermissionDenied => 126,
                _ => 1,
            },
            SandboxError::Interrupted(sig) => 128 + sig,
            _ => 1,
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> SandboxError {
    let context = context.into();
    move |source| SandboxError::Io { context, source }
}

fn sys_err(context: impl Into<String>) -> impl FnOnce(nix::Error) -> SandboxError {
    let context = context.into();
    move |source| SandboxError::Sys { context, source }
}

/// What `drover sandbox` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    /// Where to write [`SandboxInfo`] once the environment is ready.
    pub info_file: Option<PathBuf>,
    /// The program and its arguments.
    pub command: Vec<OsString>,
}

/// Runs `opts.command` in a fresh sandbox and tears it down; returns the status to exit
/// with (CMD's exit code, or 128+N if a signal killed it).
pub fn run(opts: &SandboxOptions) -> Result<i32, SandboxError> {
    if opts.command.is_empty() {
        return Err(SandboxError::NoCommand);
    }
    check_preconditions()?;
    let signals = SignalGuard::install()?;
    let mut sandbox = Sandbox::new(opts.info_file.clone());
    let outcome = sandbox.setup().and_then(|()| sandbox.run_command(opts));
    let problems = sandbox.teardown();
    drop(signals);
    match outcome {
        Ok(code) if problems.is_empty() => Ok(code),
        Ok(_) => Err(SandboxError::Teardown(problems.join("; "))),
        Err(e) => {
            // The setup error is the one to report; leftovers are worth a line each.
            for p in problems {
                // Never a panic here, even with stderr closed: the error is still returned.
                let _ = io::Write::write_all(
                    &mut io::stderr(),
                    format!("drover sandbox: teardown: {p}\n").as_bytes(),
                );
            }
            Err(e)
        }
    }
}

/// Root, the two systemd binaries, dbus-daemon, and systemctl and busctl (used to see the
/// manager ready).
fn check_preconditions() -> Result<(), SandboxError> {
    let uid = nix::unistd::geteuid();
    if !uid.is_root() {
        return Err(SandboxError::NotRoot(uid.as_raw()));
    }
    for (what, path) in [("systemd", SYSTEMD), ("systemd-journald", JOURNALD)] {
        if !is_executable(Path::new(path)) {
            return Err(SandboxError::Missing {
                what,
                path: path.to_owned(),
            });
        }
    }
    for what in ["dbus-daemon", "systemctl", "busctl"] {
        find_in_path(what)?;
    }
    Ok(())
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn find_in_path(name: &'static str) -> Result<PathBuf, SandboxError> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(|| SandboxError::Missing {
            what: name,
            path: format!("{name} in PATH={}", path.to_string_lossy()),
        })
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), SandboxError> {
    // cgroup files want one write() per value, which fs::write does for short data.
    fs::write(path, data).map_err(io_err(format!("writing {}", path.display())))
}

/// A sandbox being set up, run and torn down: what exists so far, so that teardown undoes
/// exactly that.
struct Sandbox {
    pid: u32,
    info_file: Option<PathBuf>,
    info_written: bool,
    hierarchies: Vec<HierarchyCgroups>,
    /// Hierarchies whose `top` exists (teardown removes exactly these).
    created: Vec<usize>,
    runtime_dir: Option<PathBuf>,
    daemons: Vec<Daemon>,
    reaper: Reaper,
    subreaper: bool,
}

impl Sandbox {
    fn new(info_file: Option<PathBuf>) -> Sandbox {
        Sandbox {
            pid: std::process::id(),
            info_file,
            info_written: false,
            hierarchies: Vec::new(),
            created: Vec::new(),
            runtime_dir: None,
            daemons: Vec::new(),
            reaper: Reaper::default(),
            subreaper: false,
        }
    }

    fn runtime_dir(&self) -> &Path {
        self.runtime_dir
            .as_deref()
            .unwrap_or(Path::new("/nonexistent"))
    }

    fn setup(&mut self) -> Result<(), SandboxError> {
        if let Some(info) = &self.info_file {
            // A stale file from an earlier run must not look like a ready sandbox.
            match fs::remove_file(info) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("removing stale {}", info.display()))(e)),
            }
        }
        self.make_cgroups()?;
        self.make_runtime_dir()?;
        // Daemons whose parent dies (systemd's services when the manager is killed, CMD's
        // background children) come to us, so teardown can reap them instead of leaving
        // zombies to a PID 1 that may not reap.
        nix::sys::prctl::set_child_subreaper(true).map_err(sys_err("PR_SET_CHILD_SUBREAPER"))?;
        self.subreaper = true;
        self.make_mount_namespace()?;
        self.start_journald()?;
        self.start_manager()?;
        self.write_info()
    }

    fn sandbox_env(&self) -> Vec<(String, OsString)> {
        vec![
            (
                "XDG_RUNTIME_DIR".to_owned(),
                self.runtime_dir().as_os_str().to_owned(),
            ),
            (
                "DBUS_SESSION_BUS_ADDRESS".to_owned(),
                self.bus_address().into(),
            ),
        ]
    }

    fn run_command(&mut self, opts: &SandboxOptions) -> Result<i32, SandboxError> {
        let program = &opts.command[0];
        let child = Command::new(program)
            .args(&opts.command[1..])
            .envs(self.sandbox_env())
            .spawn()
            .map_err(|source| SandboxError::Spawn {
                program: program.to_string_lossy().into_owned(),
                source,
            })?;
        let pid = child.id() as i32;
        drop(child);
        let mut forwarded: Option<Instant> = None;
        loop {
            if let Some(status) = self.reaper.status(pid) {
                return Ok(match status {
                    WaitStatus::Exited(_, code) => code,
                    WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
                    _ => 1,
                });
            }
            if let Some(sig) = take_signal() {
                if let Ok(sig) = Signal::try_from(sig) {
                    let _ = signal::kill(Pid::from_raw(pid), sig);
                }
                forwarded.get_or_insert_with(Instant::now);
            }
            if forwarded.is_some_and(|t| t.elapsed() > COMMAND_STOP_TIMEOUT) {
                let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Undoes everything setup did, as far as it got; returns what could not be undone.
    fn teardown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        // The manager first (it stops its units), then journald, then the bus.
        while let Some(d) = self.daemons.pop() {
            self.stop_daemon(&d);
        }
        // Back where this process came from, so the sandbox's cgroups can be emptied.
        for &i in &self.created {
            let h = &self.hierarchies[i];
            if let Err(e) = move_to_cgroup(&h.parent, self.pid) {
                problems.push(e.to_string());
            }
        }
        problems.extend(self.clean_cgroups());
        self.reaper.reap();
        if self.subreaper {
            let _ = nix::sys::prctl::set_child_subreaper(false);
        }
        if let Some(dir) = self.runtime_dir.take()
            && let Err(e) = fs::remove_dir_all(&dir)
        {
            problems.push(format!("removing {}: {e}", dir.display()));
        }
        if self.info_written
            && let Some(path) = &self.info_file
        {
            let _ = fs::remove_file(path);
        }
        problems
    }
}
