//! The sandbox's own cgroups: made below this process's cgroup in every hierarchy (so the
//! user manager only ever sees the sandbox's subtree), joined, and emptied and removed at
//! teardown. Which hierarchies there are and where they are mounted is `cgroup`'s to say.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::{
    CGROUP_CLEAN_TIMEOUT, MANAGER_LEAF, POLL, SUPERVISOR_LEAF, Sandbox, SandboxError, io_err,
    write_file,
};
use crate::cgroup::{self, Version, mountinfo};

/// One cgroup hierarchy this process is in, and the sandbox's cgroup in it.
#[derive(Debug)]
pub(super) struct HierarchyCgroups {
    /// As in /proc/self/cgroup: "memory", "cpu,cpuacct", "name=systemd", or "" for v2.
    name: String,
    /// Where the hierarchy is mounted.
    mount: PathBuf,
    /// This process's cgroup when the sandbox started (where it goes back to).
    pub(super) parent: PathBuf,
    /// This process's cgroup path from the mount point (as /proc/self/cgroup shows it, the
    /// mount's root taken off).
    rel: String,
    /// `<mount>/<base>/drover-sandbox-<pid>`, where base is `rel` or a descendant of it
    /// (see [`Sandbox::make_cgroups`]).
    pub(super) top: PathBuf,
    /// Directories between `parent` and `top` that the sandbox created (shallowest first);
    /// removed at teardown if nothing else lives there.
    intermediates: Vec<PathBuf>,
    /// The hierarchy is cpuset, whose new cgroups need cpus and mems before use.
    cpuset: bool,
    /// cgroup v2.
    v2: bool,
}

/// Every cgroup hierarchy this process is in that is mounted here, with its current path.
/// A hierarchy that is not mounted (or only as a subtree this process is outside of)
/// cannot get cgroups of ours; nothing to do there.
fn discover_hierarchies(pid: u32) -> Result<Vec<HierarchyCgroups>, SandboxError> {
    let own =
        fs::read_to_string("/proc/self/cgroup").map_err(io_err("reading /proc/self/cgroup"))?;
    let mounts = mountinfo::read_own().map_err(io_err("reading /proc/self/mountinfo"))?;
    let found: Vec<HierarchyCgroups> = cgroup::memberships(&own, &mounts)
        .into_iter()
        .map(|membership| {
            let parent = membership.dir();
            let v2 = membership.hierarchy.version == Version::V2;
            HierarchyCgroups {
                cpuset: !v2 && membership.has("cpuset"),
                v2,
                top: parent.join(format!("drover-sandbox-{pid}")),
                parent,
                name: membership.controllers,
                mount: membership.hierarchy.mount_point,
                rel: membership.path,
                intermediates: Vec::new(),
            }
        })
        .collect();
    if found.is_empty() {
        return Err(SandboxError::NoCgroups);
    }
    Ok(found)
}

pub(super) fn move_to_cgroup(dir: &Path, pid: u32) -> Result<(), SandboxError> {
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

impl Sandbox {
    /// On v1, systemd uses one path (its name=systemd cgroup) in every controller hierarchy
    /// and only manages a controller where that path exists. Where this process's cgroups
    /// differ between hierarchies (here memory is at /process_api/<id>, the rest at /), the
    /// sandbox's cgroups all go below the deepest of them, so that the path is the same
    /// everywhere and memory limits work. That is still below the current cgroup in every
    /// hierarchy. Where the paths do not nest, each hierarchy keeps its own.
    pub(super) fn make_cgroups(&mut self) -> Result<(), SandboxError> {
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

    /// SIGKILLs whatever is left in the sandbox's cgroups until they are empty, then removes
    /// them deepest first. Also the paths the manager mirrored into v1 controllers: on v1,
    /// systemd uses its name=systemd path in every controller hierarchy, which differs from
    /// ours where this process's memory cgroup is nested and its name=systemd one is not.
    pub(super) fn clean_cgroups(&mut self) -> Vec<String> {
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
                for dir in cgroup::tree(root) {
                    for pid in cgroup::procs_in(&dir).unwrap_or_default() {
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
                    for dir in cgroup::tree(root) {
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
