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
