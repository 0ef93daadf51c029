//! What a running sandbox tells the outside (`--info FILE`), and how another process joins
//! it: its cgroups, its mount namespace and its bus.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use super::{SUPERVISOR_LEAF, Sandbox, SandboxError, io_err};

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

impl Sandbox {
    pub(super) fn write_info(&mut self) -> Result<(), SandboxError> {
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
}
