//! The sandbox's private mount namespace: where journald and `systemd --user` believe they
//! were booted, with a journal and a `/dev/log` of the sandbox's own, and nothing
//! propagating back to the host.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::{Sandbox, SandboxError, io_err, sys_err};
use crate::cgroup::mountinfo;

impl Sandbox {
    pub(super) fn make_mount_namespace(&mut self) -> Result<(), SandboxError> {
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
    let mut subs: Vec<PathBuf> = mountinfo::read_own()
        .map_err(io_err("reading /proc/self/mountinfo"))?
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
