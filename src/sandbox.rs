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

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

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

/// What a running sandbox tells the outside, written to `--info FILE` once it is ready.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SandboxInfo {
    /// The sandbox process; `/proc/<pid>/ns/mnt` is the private mount namespace.
    pub pid: u32,
    /// `XDG_RUNTIME_DIR` inside the sandbox (holds the bus socket and `systemd/private`).
    pub runtime_dir: PathBuf,
    /// `DBUS_SESSION_BUS_ADDRESS` inside the sandbox.
    pub bus_address: String,
    /// The cgroup directories (one per hierarchy) the sandbox's own processes live in;
    /// joining all of them puts a process where CMD runs.
    pub cgroups: Vec<PathBuf>,
}

impl SandboxInfo {
    /// Reads the JSON a sandbox wrote with `--info`.
    pub fn load(path: &Path) -> Result<SandboxInfo, SandboxError> {
        let text = fs::read(path).map_err(io_err(format!("reading {}", path.display())))?;
        serde_json::from_slice(&text).map_err(|source| SandboxError::Info {
            path: path.to_owned(),
            source,
        })
    }

    /// A Command that runs `program` inside the sandbox: it joins the sandbox's cgroups and
    /// mount namespace and gets `XDG_RUNTIME_DIR` and `DBUS_SESSION_BUS_ADDRESS`. Needs root.
    /// If the sandbox is gone, `spawn` fails with the error of opening its files.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("XDG_RUNTIME_DIR", &self.runtime_dir)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus_address);
        // Everything is opened here, before fork: after fork (possibly in a multithreaded
        // test harness) the closure may only make syscalls, not allocate.
        let prepared = self.prepare_join();
        let mut cwd = vec![0u8; 4096];
        // SAFETY: the closure only calls write, getcwd, setns and chdir on memory and fds
        // prepared before fork; it allocates nothing and takes no locks.
        unsafe {
            cmd.pre_exec(move || {
                let (ns, procs) = match &prepared {
                    Ok(p) => p,
                    Err(errno) => return Err(io::Error::from_raw_os_error(*errno)),
                };
                for fd in procs {
                    // "0" means the writing process, in v1 and v2 alike.
                    nix::unistd::write(fd, b"0")
                        .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
                }
                // setns(CLONE_NEWNS) resets the cwd to the namespace's root: keep the
                // directory the caller asked for, by path, as seen inside the namespace.
                let have_cwd = !nix::libc::getcwd(cwd.as_mut_ptr().cast(), cwd.len() - 1).is_null();
                nix::sched::setns(ns, CloneFlags::CLONE_NEWNS)
                    .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
                if have_cwd {
                    // Best effort: the path exists inside unless the sandbox hid it.
                    nix::libc::chdir(cwd.as_ptr().cast());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Opens the namespace and the `cgroup.procs` files; an errno if any of them fails.
    fn prepare_join(&self) -> Result<(OwnedFd, Vec<OwnedFd>), i32> {
        let open = |path: &Path, flags: OFlag| -> Result<OwnedFd, i32> {
            nix::fcntl::open(path, flags | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| e as i32)
        };
        let ns = open(
            &PathBuf::from(format!("/proc/{}/ns/mnt", self.pid)),
            OFlag::O_RDONLY,
        )?;
        let procs = self
            .cgroups
            .iter()
            .map(|cg| open(&cg.join("cgroup.procs"), OFlag::O_WRONLY))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((ns, procs))
    }
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
                eprintln!("drover sandbox: teardown: {p}");
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

// ---------------------------------------------------------------------------------------
// Signals: a flag the poll loops look at. No self-pipe needed, everything here polls.

static PENDING_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: nix::libc::c_int) {
    PENDING_SIGNAL.store(sig, Ordering::SeqCst);
}

fn take_signal() -> Option<i32> {
    match PENDING_SIGNAL.swap(0, Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Catches SIGINT/SIGTERM/SIGHUP while the sandbox runs; restores the old handlers on drop.
struct SignalGuard {
    old: Vec<(Signal, SigAction)>,
}

impl SignalGuard {
    fn install() -> Result<SignalGuard, SandboxError> {
        PENDING_SIGNAL.store(0, Ordering::SeqCst);
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        let mut guard = SignalGuard { old: Vec::new() };
        for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            let old = unsafe { signal::sigaction(sig, &action) }
                .map_err(sys_err(format!("installing a handler for {sig}")))?;
            guard.old.push((sig, old));
        }
        Ok(guard)
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (sig, old) in self.old.drain(..) {
            // SAFETY: restores what was installed before.
            let _ = unsafe { signal::sigaction(sig, &old) };
        }
    }
}

// ---------------------------------------------------------------------------------------
// cgroups

/// One cgroup hierarchy this process is in, and the sandbox's cgroup in it.
#[derive(Debug)]
struct Hierarchy {
    /// As in /proc/self/cgroup: "memory", "cpu,cpuacct", "name=systemd", or "" for v2.
    name: String,
    /// Where the hierarchy is mounted.
    mount: PathBuf,
    /// This process's cgroup when the sandbox started (where it goes back to).
    parent: PathBuf,
    /// This process's cgroup path as /proc/self/cgroup shows it (from the mount's root).
    rel: String,
    /// `<mount>/<base>/drover-sandbox-<pid>`, where base is `rel` or a descendant of it
    /// (see [`Sandbox::make_cgroups`]).
    top: PathBuf,
    /// Directories between `parent` and `top` that the sandbox created (shallowest first);
    /// removed at teardown if nothing else lives there.
    intermediates: Vec<PathBuf>,
    /// The hierarchy is cpuset, whose new cgroups need cpus and mems before use.
    cpuset: bool,
    /// cgroup v2.
    v2: bool,
}

struct MountEntry {
    root: String,
    mount_point: PathBuf,
    fstype: String,
    super_opts: Vec<String>,
}

/// Undoes mountinfo's octal escapes (`\040` for a space and so on).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            Some(MountEntry {
                root: unescape_mountinfo(pre.get(3)?),
                mount_point: PathBuf::from(unescape_mountinfo(pre.get(4)?)),
                fstype: (*post.first()?).to_owned(),
                super_opts: post.get(2)?.split(',').map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// Every cgroup hierarchy this process is in that is mounted here, with its current path.
fn discover_hierarchies(pid: u32) -> Result<Vec<Hierarchy>, SandboxError> {
    let cgroup =
        fs::read_to_string("/proc/self/cgroup").map_err(io_err("reading /proc/self/cgroup"))?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err("reading /proc/self/mountinfo"))?;
    let mounts = parse_mountinfo(&mountinfo);
    let mut found = Vec::new();
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let v2 = id == "0" && ctrls.is_empty();
        let mount = mounts.iter().find(|m| {
            if v2 {
                m.fstype == "cgroup2"
            } else {
                m.fstype == "cgroup"
                    && ctrls
                        .split(',')
                        .all(|c| m.super_opts.iter().any(|o| o == c))
            }
        });
        // A hierarchy that is not mounted cannot get cgroups of ours; nothing to do there.
        let Some(mount) = mount else { continue };
        // The path in /proc/self/cgroup is from the hierarchy's root; the mount may show a
        // subtree of it (bind mounts in containers). Outside that subtree we cannot reach.
        let rel = if mount.root == "/" {
            path
        } else if let Some(rest) = path.strip_prefix(mount.root.as_str()) {
            rest
        } else {
            continue;
        };
        let parent = mount.mount_point.join(rel.trim_start_matches('/'));
        found.push(Hierarchy {
            name: ctrls.to_owned(),
            mount: mount.mount_point.clone(),
            top: parent.join(format!("drover-sandbox-{pid}")),
            rel: rel.to_owned(),
            intermediates: Vec::new(),
            parent,
            cpuset: !v2 && ctrls.split(',').any(|c| c == "cpuset"),
            v2,
        });
    }
    if found.is_empty() {
        return Err(SandboxError::NoCgroups);
    }
    Ok(found)
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), SandboxError> {
    // cgroup files want one write() per value, which fs::write does for short data.
    fs::write(path, data).map_err(io_err(format!("writing {}", path.display())))
}

fn move_to_cgroup(dir: &Path, pid: u32) -> Result<(), SandboxError> {
    write_file(&dir.join("cgroup.procs"), pid.to_string().as_bytes())
}

/// Creates `dir` (one level); for cpuset copies cpus and mems from its parent, without
/// which no process may join it.
fn make_cgroup(dir: &Path, cpuset: bool) -> Result<(), SandboxError> {
    fs::create_dir(dir).map_err(io_err(format!("creating cgroup {}", dir.display())))?;
    if cpuset {
        let parent = dir.parent().unwrap_or(Path::new("/"));
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let value = fs::read(parent.join(file))
                .map_err(io_err(format!("reading {}", parent.join(file).display())))?;
            write_file(&dir.join(file), &value)?;
        }
    }
    Ok(())
}

/// `ancestor` is `path` or one of its parents, as cgroup paths ("/" is everyone's).
fn is_ancestor(ancestor: &str, path: &str) -> bool {
    let a = ancestor.trim_end_matches('/');
    a.is_empty() || path == a || path.starts_with(&format!("{a}/"))
}

/// Creates the directories from below `parent` down to `base`, recording those it made.
fn make_intermediates(
    parent: &Path,
    base: &Path,
    cpuset: bool,
    made: &mut Vec<PathBuf>,
) -> Result<(), SandboxError> {
    let Ok(rel) = base.strip_prefix(parent) else {
        return Ok(());
    };
    let mut dir = parent.to_owned();
    for part in rel.components() {
        dir.push(part);
        match make_cgroup(&dir, cpuset) {
            Ok(()) => {
                if !made.contains(&dir) {
                    made.push(dir.clone());
                }
            }
            Err(SandboxError::Io { source, .. })
                if source.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Every directory at and below `dir`, deepest first (so they can be removed in order).
fn cgroup_tree(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_owned()];
    let mut i = 0;
    while i < all.len() {
        if let Ok(entries) = fs::read_dir(&all[i]) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    all.push(e.path());
                }
            }
        }
        i += 1;
    }
    all.reverse();
    all
}

fn pids_in(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Child processes: the sandbox is a subreaper, so one reaper collects every exit status.

#[derive(Default)]
struct Reaper {
    exited: HashMap<i32, WaitStatus>,
}

impl Reaper {
    fn reap(&mut self) {
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

    fn status(&mut self, pid: i32) -> Option<WaitStatus> {
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

struct Daemon {
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

// ---------------------------------------------------------------------------------------
// The sandbox itself

struct Sandbox {
    pid: u32,
    info_file: Option<PathBuf>,
    info_written: bool,
    hierarchies: Vec<Hierarchy>,
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

    fn bus_address(&self) -> String {
        format!("unix:path={}", dbus_escape(&self.runtime_dir().join("bus")))
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

    /// On v1, systemd uses one path (its name=systemd cgroup) in every controller hierarchy
    /// and only manages a controller where that path exists. Where this process's cgroups
    /// differ between hierarchies (here memory is at /process_api/<id>, the rest at /), the
    /// sandbox's cgroups all go below the deepest of them, so that the path is the same
    /// everywhere and memory limits work. That is still below the current cgroup in every
    /// hierarchy. Where the paths do not nest, each hierarchy keeps its own.
    fn make_cgroups(&mut self) -> Result<(), SandboxError> {
        self.hierarchies = discover_hierarchies(self.pid)?;
        let deepest = self
            .hierarchies
            .iter()
            .map(|h| h.rel.clone())
            .max_by_key(String::len)
            .unwrap_or_default();
        let aligned = self
            .hierarchies
            .iter()
            .all(|h| is_ancestor(&h.rel, &deepest));
        for i in 0..self.hierarchies.len() {
            let pid = self.pid;
            let h = &mut self.hierarchies[i];
            if aligned && h.rel != deepest {
                let base = h.mount.join(deepest.trim_start_matches('/'));
                h.top = base.join(format!("drover-sandbox-{pid}"));
                // Shared with other sandboxes of the same parent: EEXIST is fine, and a
                // concurrent teardown may remove one between our mkdirs, so retry.
                let mut attempt = 0;
                let made = loop {
                    match make_intermediates(&h.parent, &base, h.cpuset, &mut h.intermediates) {
                        Ok(()) => break Ok(()),
                        Err(_) if attempt < 5 => attempt += 1,
                        Err(e) => break Err(e),
                    }
                };
                match made {
                    Ok(()) => {}
                    // cpuset is optional: systemd does not use it on v1.
                    Err(_) if h.cpuset => continue,
                    Err(e) => return Err(e),
                }
            }
            let h = &self.hierarchies[i];
            if let Err(e) = make_cgroup(&h.top, h.cpuset) {
                if h.cpuset {
                    // cpuset is optional: systemd does not use it on v1.
                    let _ = fs::remove_dir(&h.top);
                    continue;
                }
                return Err(e);
            }
            self.created.push(i);
            make_cgroup(&h.top.join(SUPERVISOR_LEAF), h.cpuset)?;
            make_cgroup(&h.top.join(MANAGER_LEAF), h.cpuset)?;
            if h.v2 {
                enable_v2_controllers(&h.top);
            }
        }
        for &i in &self.created {
            move_to_cgroup(&self.hierarchies[i].top.join(SUPERVISOR_LEAF), self.pid)?;
        }
        Ok(())
    }

    fn make_runtime_dir(&mut self) -> Result<(), SandboxError> {
        // Under /tmp (not $TMPDIR) so that any user can reach the bus socket, and short
        // enough for a unix socket path.
        let dir = PathBuf::from(format!(
            "/tmp/drover-sandbox-{}-{}",
            self.pid,
            random_hex()?
        ));
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&dir)
            .map_err(io_err(format!("creating {}", dir.display())))?;
        self.runtime_dir = Some(dir.clone());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .map_err(io_err(format!("chmod {}", dir.display())))?;
        // The session bus is the user manager's own dbus.socket/dbus.service, as on a real
        // host: systemd 252 connects its API to the bus only once it sees those units
        // running. Runtime units win over the packaged ones; ours admit every local user
        // (tests call as other uids) and leave the socket open to them.
        let units = dir.join("systemd/user");
        fs::create_dir_all(&units).map_err(io_err(format!("creating {}", units.display())))?;
        let config = dir.join("dbus.conf");
        write_file(&config, dbus_config(&dir).as_bytes())?;
        write_file(&units.join("dbus.socket"), DBUS_SOCKET_UNIT.as_bytes())?;
        let service = DBUS_SERVICE_UNIT
            .replace(
                "@DBUS_DAEMON@",
                &find_in_path("dbus-daemon")?.to_string_lossy(),
            )
            .replace("@CONFIG@", &config.to_string_lossy());
        write_file(&units.join("dbus.service"), service.as_bytes())?;
        Ok(())
    }

    fn make_mount_namespace(&mut self) -> Result<(), SandboxError> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(sys_err("unshare(CLONE_NEWNS)"))?;
        // Private, recursively: nothing mounted here may propagate to the host.
        mount_private()?;
        // systemd believes it was booted with systemd when /run/systemd/system exists.
        mount_tmpfs(Path::new("/run/systemd"), "mode=0755")?;
        fs::create_dir_all("/run/systemd/system")
            .map_err(io_err("creating /run/systemd/system"))?;
        // journald's volatile store: a journal of this sandbox's own.
        mount_tmpfs(Path::new("/run/log"), "mode=0755")?;
        // With /var/log/journal present journald would write the host's persistent journal.
        if Path::new("/var/log/journal").is_dir() {
            mount_tmpfs(Path::new("/var/log/journal"), "mode=2755")?;
        }
        dev_log_overlay()
    }

    fn start_journald(&mut self) -> Result<(), SandboxError> {
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

    fn start_manager(&mut self) -> Result<(), SandboxError> {
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

    fn write_info(&mut self) -> Result<(), SandboxError> {
        let Some(path) = self.info_file.clone() else {
            return Ok(());
        };
        let info = SandboxInfo {
            pid: self.pid,
            runtime_dir: self.runtime_dir().to_owned(),
            bus_address: self.bus_address(),
            cgroups: self
                .created
                .iter()
                .map(|&i| self.hierarchies[i].top.join(SUPERVISOR_LEAF))
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&info).map_err(|source| SandboxError::Info {
            path: path.clone(),
            source,
        })?;
        // tmp + rename: a reader sees no file or the whole file, never half of one.
        let mut tmp = path.clone().into_os_string();
        tmp.push(format!(".tmp.{}", self.pid));
        let tmp = PathBuf::from(tmp);
        let mut f =
            fs::File::create(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
        f.write_all(&json)
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_all())
            .map_err(io_err(format!("writing {}", tmp.display())))?;
        fs::rename(&tmp, &path).map_err(io_err(format!("renaming to {}", path.display())))?;
        self.info_written = true;
        Ok(())
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

    fn stop_daemon(&mut self, d: &Daemon) {
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

    /// SIGKILLs whatever is left in the sandbox's cgroups until they are empty, then removes
    /// them deepest first. Also the paths the manager mirrored into v1 controllers: on v1,
    /// systemd uses its name=systemd path in every controller hierarchy, which differs from
    /// ours where this process's memory cgroup is nested and its name=systemd one is not.
    fn clean_cgroups(&mut self) -> Vec<String> {
        let mut roots: Vec<PathBuf> = self
            .created
            .iter()
            .map(|&i| self.hierarchies[i].top.clone())
            .collect();
        if let Some(sd) = self
            .hierarchies
            .iter()
            .find(|h| h.name == "name=systemd")
            .or_else(|| self.hierarchies.iter().find(|h| h.v2))
            && let Ok(rel) = sd.top.strip_prefix(&sd.mount)
        {
            for h in &self.hierarchies {
                let mirror = h.mount.join(rel);
                if !roots.contains(&mirror) && mirror.is_dir() {
                    roots.push(mirror);
                }
            }
        }
        let deadline = Instant::now() + CGROUP_CLEAN_TIMEOUT;
        loop {
            let mut busy = false;
            for root in &roots {
                for dir in cgroup_tree(root) {
                    for pid in pids_in(&dir) {
                        if pid as u32 != self.pid {
                            busy = true;
                            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                        }
                    }
                }
            }
            self.reaper.reap();
            if !busy {
                let mut left = Vec::new();
                for root in &roots {
                    for dir in cgroup_tree(root) {
                        if let Err(e) = fs::remove_dir(&dir)
                            && e.kind() != io::ErrorKind::NotFound
                        {
                            left.push(format!("removing cgroup {}: {e}", dir.display()));
                        }
                    }
                }
                if left.is_empty() || Instant::now() >= deadline {
                    // Shared with other sandboxes: only goes if empty (rmdir refuses otherwise).
                    for h in &self.hierarchies {
                        for dir in h.intermediates.iter().rev() {
                            let _ = fs::remove_dir(dir);
                        }
                    }
                    return left;
                }
            } else if Instant::now() >= deadline {
                return roots
                    .iter()
                    .map(|r| format!("processes still in {} after SIGKILL", r.display()))
                    .collect();
            }
            std::thread::sleep(POLL);
        }
    }
}

/// On v2, lets the manager use whatever controllers the parent hands down. Best effort:
/// it fails where the parent does not delegate them, and the manager then runs without.
fn enable_v2_controllers(top: &Path) {
    let Ok(available) = fs::read_to_string(top.join("cgroup.controllers")) else {
        return;
    };
    for c in available.split_whitespace() {
        let _ = fs::write(top.join("cgroup.subtree_control"), format!("+{c}"));
    }
}

fn mount_private() -> Result<(), SandboxError> {
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys_err("making / recursively private"))
}

fn mount_tmpfs(target: &Path, opts: &str) -> Result<(), SandboxError> {
    if !target.is_dir() {
        // Only a mount point, and /run is a tmpfs on the hosts this is for.
        fs::create_dir_all(target).map_err(io_err(format!("creating {}", target.display())))?;
    }
    nix::mount::mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(opts),
    )
    .map_err(sys_err(format!("mounting a tmpfs on {}", target.display())))
}

fn bind(source: &Path, target: &Path) -> Result<(), SandboxError> {
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys_err(format!(
        "bind-mounting {} on {}",
        source.display(),
        target.display()
    )))
}

/// `logger` and syslog(3) write to /dev/log, which journald serves only as
/// /run/systemd/journal/dev-log; a booted systemd host links the two. Creating the link in
/// the host's /dev would change the host, so the sandbox's /dev is an overlay of the
/// host's (device nodes pass through) with the link added, its submounts bound back in.
fn dev_log_overlay() -> Result<(), SandboxError> {
    let base = Path::new("/run/systemd/.drover-dev");
    let (upper, work, merged) = (base.join("upper"), base.join("work"), base.join("merged"));
    for d in [&upper, &work, &merged] {
        fs::create_dir_all(d).map_err(io_err(format!("creating {}", d.display())))?;
    }
    let opts = format!(
        "lowerdir=/dev,upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::MS_NOSUID,
        Some(opts.as_str()),
    )
    .map_err(sys_err("mounting an overlay of /dev"))?;
    // Submounts of /dev (pts, shm, mqueue...) are not part of the overlay's lower layer.
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err("reading /proc/self/mountinfo"))?;
    let mut subs: Vec<PathBuf> = parse_mountinfo(&mountinfo)
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with("/dev") && p != Path::new("/dev"))
        .collect();
    subs.sort();
    subs.dedup();
    let mut bound: Vec<PathBuf> = Vec::new();
    for sub in subs {
        // A recursive bind of the outer one brings the inner ones along.
        if bound.iter().any(|b| sub.starts_with(b)) {
            continue;
        }
        let Ok(rel) = sub.strip_prefix("/dev") else {
            continue;
        };
        let target = merged.join(rel);
        if target.exists() {
            bind(&sub, &target)?;
            bound.push(sub);
        }
    }
    let log = merged.join("log");
    if fs::symlink_metadata(&log).is_ok() {
        fs::remove_file(&log).map_err(io_err("replacing /dev/log in the overlay"))?;
    }
    std::os::unix::fs::symlink("/run/systemd/journal/dev-log", &log)
        .map_err(io_err("linking /dev/log in the overlay"))?;
    nix::mount::mount(
        Some(merged.as_path()),
        "/dev",
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(sys_err("moving the /dev overlay onto /dev"))?;
    // Nothing else of the host's is mounted below the overlay's directories.
    let _ = nix::mount::umount2(&merged, MntFlags::MNT_DETACH);
    Ok(())
}

/// The session bus: any local user may connect, own names and talk to anyone (tests act as
/// other uids to check roles; drover's own role checks decide what a caller may do),
/// EXTERNAL auth only. Activation files are read from `$XDG_RUNTIME_DIR/dbus-1/services`
/// alone (a real session bus also reads /usr/share/dbus-1/services: left out so that a
/// drover installed on the host stays out of the sandbox).
fn dbus_config(runtime_dir: &Path) -> String {
    let services = runtime_dir.join("dbus-1/services");
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>systemd:</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{}</servicedir>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"#,
        services.display()
    )
}

const DBUS_SOCKET_UNIT: &str = "[Unit]
Description=D-Bus User Message Bus Socket (drover sandbox)

[Socket]
ListenStream=%t/bus
SocketMode=0666
";

const DBUS_SERVICE_UNIT: &str = "[Unit]
Description=D-Bus User Message Bus (drover sandbox)
Requires=dbus.socket

[Service]
Type=notify
NotifyAccess=main
ExecStart=@DBUS_DAEMON@ --config-file=@CONFIG@ --nofork --nopidfile --systemd-activation
";

/// D-Bus address values escape every byte outside `[-0-9A-Za-z_/.\*]` as %XX.
fn dbus_escape(path: &Path) -> String {
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_/.\\*".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

fn random_hex() -> Result<String, SandboxError> {
    let mut bytes = [0u8; 6];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io_err("reading /dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_parses_cgroup_lines() {
        let text = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                    50 31 0:40 /x /a\\040b rw - cgroup cgroup rw,cpu,cpuacct\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert!(m[0].super_opts.iter().any(|o| o == "memory"));
        assert_eq!(m[1].fstype, "cgroup2");
        assert_eq!(m[2].mount_point, PathBuf::from("/a b"));
        assert_eq!(m[2].root, "/x");
    }

    #[test]
    fn bus_address_escapes() {
        assert_eq!(dbus_escape(Path::new("/tmp/a b/bus")), "/tmp/a%20b/bus");
        assert_eq!(
            dbus_escape(Path::new("/tmp/d-1_x.y/bus")),
            "/tmp/d-1_x.y/bus"
        );
    }
}
