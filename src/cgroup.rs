//! The kernel's cgroup files, read directly for what systemd does not report on every host
//! (on hybrid v1/v2 hosts systemd records no OOM kill: the memory cgroup's counter does).

use std::fs;
use std::path::PathBuf;

/// Where the memory controller's files for this process's own cgroup live: the v1 memory
/// hierarchy when it is mounted, otherwise the v2 unified tree.
fn own_memory_cgroup() -> Option<(PathBuf, &'static str)> {
    let membership = fs::read_to_string("/proc/self/cgroup").ok()?;
    let Mounts {
        memory: v1_memory_mount,
        unified: v2_mount,
        ..
    } = Mounts::discover();
    for line in membership.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let relative = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory")
            && let Some(mount) = &v1_memory_mount
        {
            return Some((mount.join(relative), "memory.oom_control"));
        }
        if controllers.is_empty()
            && v1_memory_mount.is_none()
            && let Some(mount) = &v2_mount
        {
            return Some((mount.join(relative), "memory.events"));
        }
    }
    None
}

/// How many processes the OOM killer has killed in this process's own memory cgroup, when
/// that cgroup is `unit`'s own; `None` where the counter cannot be read or would be a shared
/// ancestor's (systemd did not give the unit a memory cgroup).
pub fn own_oom_kills(unit: &str) -> Option<u64> {
    let (dir, file) = own_memory_cgroup()?;
    if dir.file_name()? != unit {
        return None;
    }
    let text = fs::read_to_string(dir.join(file)).ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix("oom_kill ")
            .and_then(|n| n.trim().parse().ok())
    })
}

/// Where each cgroup hierarchy drover reads is mounted.
#[derive(Debug, Clone, Default)]
pub struct Mounts {
    pub unified: Option<PathBuf>,
    pub memory: Option<PathBuf>,
    pub pids: Option<PathBuf>,
    pub blkio: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    /// The v1 `name=systemd` hierarchy (hybrid hosts track units there and in `unified`).
    pub named_systemd: Option<PathBuf>,
}

impl Mounts {
    /// Read once from `/proc/self/mountinfo` (mounts do not move while the agent runs).
    pub fn discover() -> Mounts {
        fs::read_to_string("/proc/self/mountinfo")
            .map(|text| Mounts::parse(&text))
            .unwrap_or_default()
    }

    pub fn parse(mountinfo: &str) -> Mounts {
        let mut mounts = Mounts::default();
        for line in mountinfo.lines() {
            // "<id> <parent> <dev> <root> <mountpoint> <opts> … - <fstype> <source> <superopts>"
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = left.split(' ').nth(4) else {
                continue;
            };
            let mut right = right.split(' ');
            match right.next() {
                Some("cgroup2") => mounts.unified = Some(PathBuf::from(mount_point)),
                Some("cgroup") => {
                    let opts: Vec<&str> = right.nth(1).unwrap_or_default().split(',').collect();
                    let has = |c: &str| opts.contains(&c);
                    let path = || Some(PathBuf::from(mount_point));
                    if has("memory") {
                        mounts.memory = path();
                    }
                    if has("pids") {
                        mounts.pids = path();
                    }
                    if has("blkio") {
                        mounts.blkio = path();
                    }
                    if has("cpuacct") {
                        mounts.cpuacct = path();
                    }
                    if has("name=systemd") {
                        mounts.named_systemd = path();
                    }
                }
                _ => {}
            }
        }
        mounts
    }
}

/// The mount point of the hierarchy systemd tracks units in: the v2 tree (unified or
/// hybrid), else the v1 `name=systemd` hierarchy.
fn tracking_mount() -> Option<PathBuf> {
    let mounts = Mounts::discover();
    mounts.unified.or(mounts.named_systemd)
}

/// The processes in the cgroup systemd reports as a unit's `ControlGroup` (and in the
/// cgroups below it). An absent cgroup has none.
pub fn procs(control_group: &str) -> std::io::Result<Vec<i32>> {
    let Some(mount) = tracking_mount() else {
        return Err(std::io::Error::other(
            "no cgroup hierarchy tracks systemd's units here",
        ));
    };
    let mut pids = Vec::new();
    let mut dirs = vec![mount.join(control_group.trim_start_matches('/'))];
    while let Some(dir) = dirs.pop() {
        let text = match fs::read_to_string(dir.join("cgroup.procs")) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        if let Ok(entries) = fs::read_dir(&dir) {
            dirs.extend(
                entries
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path()),
            );
        }
    }
    Ok(pids)
}

/// The parent of a process, from `/proc/<pid>/stat`.
pub fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid …": comm may hold spaces and parentheses; it ends at the last ')'.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

/// Live processes (zombies excluded: they are dead, only not yet reaped) whose cgroup, in
/// any hierarchy, contains `name` — e.g. a unit's name. Read from every process's
/// `/proc/<pid>/cgroup`: a check that does not trust any one hierarchy's `cgroup.procs`.
pub fn live_processes_in(name: &str) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let zombie = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| Some(stat[stat.rfind(')')? + 1..].trim_start().starts_with('Z')));
            zombie == Some(false)
                && fs::read_to_string(format!("/proc/{pid}/cgroup"))
                    .is_ok_and(|cgroup| cgroup.lines().any(|l| l.contains(name)))
        })
        .collect()
}
