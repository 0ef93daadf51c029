//! The kernel's cgroup files, read directly for what systemd does not report on every host
//! (on hybrid v1/v2 hosts systemd records no OOM kill: the memory cgroup's counter does).

use std::fs;
use std::path::PathBuf;

/// Where the memory controller's files for this process's own cgroup live: the v1 memory
/// hierarchy when it is mounted, otherwise the v2 unified tree.
fn own_memory_cgroup() -> Option<(PathBuf, &'static str)> {
    let membership = fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut v1_memory_mount = None;
    let mut v2_mount = None;
    for line in mountinfo.lines() {
        // "<id> <parent> <dev> <root> <mountpoint> <opts> … - <fstype> <source> <superopts>"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split(' ').nth(4);
        let mut right = right.split(' ');
        match (right.next(), mount_point) {
            (Some("cgroup"), Some(mp))
                if right
                    .nth(1)
                    .is_some_and(|opts| opts.split(',').any(|o| o == "memory")) =>
            {
                v1_memory_mount = Some(PathBuf::from(mp));
            }
            (Some("cgroup2"), Some(mp)) => v2_mount = Some(PathBuf::from(mp)),
            _ => {}
        }
    }
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

/// The mount point of the hierarchy systemd tracks units in: the v2 tree (unified or
/// hybrid), else the v1 `name=systemd` hierarchy.
fn tracking_mount() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut named_systemd = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        match right.next() {
            Some("cgroup2") => return Some(PathBuf::from(mount_point)),
            Some("cgroup")
                if right
                    .nth(1)
                    .is_some_and(|o| o.split(',').any(|o| o == "name=systemd")) =>
            {
                named_systemd = Some(PathBuf::from(mount_point));
            }
            _ => {}
        }
    }
    named_systemd
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
