//! The processes the sandbox starts and stops: journald and `systemd --user` (which starts
//! the bus), each with a log file, waited for until ready, and reaped (the sandbox is a
//! subreaper, so one reaper collects every exit status).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::signals::take_signal;
use super::{
    DAEMON_STOP_TIMEOUT, JOURNALD, MANAGER_LEAF, MANAGER_STOP_TIMEOUT, POLL, READY_TIMEOUT,
    SYSTEMD, Sandbox, SandboxError, io_err,
};

#[derive(Default)]
pub(super) struct Reaper {
    exited: HashMap<i32, WaitStatus>,
}

impl Reaper {
    pub(super) fn reap(&mut self) {
        loop {
            match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        self.exited.insert(pid.as_raw(), status);
                    }
                }
            }
        }
    }

    pub(super) fn status(&mut self, pid: i32) -> Option<WaitStatus> {
        self.reap();
        self.exited.get(&pid).copied()
    }
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit status {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("killed by {sig}"),
        other => format!("{other:?}"),
    }
}

pub(super) struct Daemon {
    what: &'static str,
    pid: i32,
    log: PathBuf,
    stop_timeout: Duration,
}

/// The last lines a daemon wrote, as "; log: a | b | c", or "" if it wrote nothing.
fn log_tail(path: &Path) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(1500)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let start = lines.len().saturating_sub(6);
    format!("; log {}: {}", path.display(), lines[start..].join(" | "))
}

impl Sandbox {
    pub(super) fn start_journald(&mut self) -> Result<(), SandboxError> {
        let mut cmd = Command::new(JOURNALD);
        // Its own messages would go to /dev/kmsg, the host's kernel log; keep them in its
        // log file instead.
        cmd.env("SYSTEMD_LOG_TARGET", "console");
        let pid = self.spawn_daemon("systemd-journald", cmd, DAEMON_STOP_TIMEOUT, None)?;
        self.wait_for("journald's sockets", pid, || {
            ["socket", "stdout", "dev-log"]
                .iter()
                .all(|s| Path::new("/run/systemd/journal").join(s).exists())
        })
    }

    pub(super) fn start_manager(&mut self) -> Result<(), SandboxError> {
        // The manager starts in a cgroup of its own: it manages the tree below the cgroup
        // it starts in, and this one holds nothing else.
        let mut procs = Vec::new();
        for &i in &self.created {
            let path = self.hierarchies[i]
                .top
                .join(MANAGER_LEAF)
                .join("cgroup.procs");
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err(format!("opening {}", path.display())))?;
            procs.push(OwnedFd::from(f));
        }
        let mut cmd = Command::new(SYSTEMD);
        cmd.arg("--user");
        let pid = self.spawn_daemon("systemd --user", cmd, MANAGER_STOP_TIMEOUT, Some(procs))?;
        let env = self.sandbox_env();
        self.wait_for("systemd --user to be running", pid, || {
            Command::new("systemctl")
                .args(["--user", "is-system-running"])
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .is_ok_and(|o| {
                    let state = String::from_utf8_lossy(&o.stdout);
                    matches!(state.trim(), "running" | "degraded")
                })
        })?;
        // Connecting starts the bus (socket activation); the manager then joins it.
        self.wait_for("systemd --user to join the session bus", pid, || {
            Command::new("busctl")
                .args(["--user", "status", "org.freedesktop.systemd1"])
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        })
    }

    /// Starts a helper with its output in `<runtime dir>/<name>.log`, in a process group of
    /// its own (a terminal's Ctrl-C is for CMD, not for the manager) and, if given, moved
    /// into other cgroups before exec.
    fn spawn_daemon(
        &mut self,
        what: &'static str,
        mut cmd: Command,
        stop_timeout: Duration,
        cgroup_procs: Option<Vec<OwnedFd>>,
    ) -> Result<i32, SandboxError> {
        let log = self
            .runtime_dir()
            .join(format!("{}.log", what.replace([' ', '-'], "_")));
        let out = fs::File::create(&log).map_err(io_err(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err(format!("duplicating {}", log.display())))?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .envs(self.sandbox_env())
            // Inherited activation/notification state would confuse them.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("INVOCATION_ID")
            .env_remove("JOURNAL_STREAM");
        if let Some(procs) = cgroup_procs {
            // SAFETY: only write() on fds opened before fork.
            unsafe {
                cmd.pre_exec(move || {
                    for fd in &procs {
                        nix::unistd::write(fd, b"0")
                            .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().map_err(|source| SandboxError::Spawn {
            program: what.to_owned(),
            source,
        })?;
        // The Child handle is dropped (which neither waits nor kills): the reaper owns the
        // exit status, since as subreaper it waits for any pid.
        let pid = child.id() as i32;
        self.daemons.push(Daemon {
            what,
            pid,
            log,
            stop_timeout,
        });
        Ok(pid)
    }

    /// Polls `ready` until it holds, the daemon dies, a signal arrives or time runs out.
    fn wait_for(
        &mut self,
        what: &str,
        pid: i32,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), SandboxError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let daemon = self.daemons.iter().find(|d| d.pid == pid);
        let (name, log) = daemon
            .map(|d| (d.what, d.log.clone()))
            .unwrap_or(("daemon", PathBuf::new()));
        loop {
            if let Some(sig) = take_signal() {
                return Err(SandboxError::Interrupted(sig));
            }
            if ready() {
                return Ok(());
            }
            if let Some(status) = self.reaper.status(pid) {
                return Err(SandboxError::DaemonExited {
                    what: name,
                    status: describe(status),
                    log: log_tail(&log),
                });
            }
            if Instant::now() >= deadline {
                return Err(SandboxError::Timeout {
                    what: what.to_owned(),
                    after: READY_TIMEOUT,
                    log: log_tail(&log),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    pub(super) fn stop_daemon(&mut self, d: &Daemon) {
        let pid = Pid::from_raw(d.pid);
        for (sig, timeout) in [
            (Signal::SIGTERM, d.stop_timeout),
            (Signal::SIGKILL, DAEMON_STOP_TIMEOUT),
        ] {
            if self.reaper.status(d.pid).is_some() {
                return;
            }
            let _ = signal::kill(pid, sig);
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if self.reaper.status(d.pid).is_some() {
                    return;
                }
                std::thread::sleep(POLL);
            }
        }
    }
}
