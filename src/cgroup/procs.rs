//! The processes of a cgroup and of the cgroups below it (`cgroup.procs`, the same file in
//! v1 and v2), and, independently of any hierarchy's files, the live processes whose own
//! `/proc/<pid>/cgroup` names a unit.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The pids in one cgroup's `cgroup.procs`.
pub(crate) fn procs_in(dir: &Path) -> io::Result<Vec<i32>> {
    let text = fs::read_to_string(dir.join("cgroup.procs"))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// The pids in `dir` and in the cgroups below it. An absent cgroup (or one removed while
/// it is read) has none.
pub(crate) fn procs_below(dir: &Path) -> io::Result<Vec<i32>> {
    let mut pids = Vec::new();
    for cgroup in tree(dir) {
        match procs_in(&cgroup) {
            Ok(found) => pids.extend(found),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(pids)
}

/// Every directory at and below `dir`, deepest first (so they can be removed in order).
pub(crate) fn tree(dir: &Path) -> Vec<PathBuf> {
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

/// What `/proc/<pid>/stat` says after the command name: "state ppid …" (the name may hold
/// spaces and parentheses; it ends at the last ')').
fn stat_after_comm(pid: i32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat[stat.rfind(')')? + 1..].trim_start().to_owned())
}

/// The parent of a process.
pub fn parent_of(pid: i32) -> Option<i32> {
    stat_after_comm(pid)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
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
        .filter(|&pid| {
            let zombie = stat_after_comm(pid).map(|rest| rest.starts_with('Z'));
            zombie == Some(false)
                && fs::read_to_string(format!("/proc/{pid}/cgroup"))
                    .is_ok_and(|cgroup| cgroup.lines().any(|l| l.contains(name)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_processes_of_a_cgroup_and_those_below_it() {
        let root = tempfile::tempdir().expect("tempdir");
        let scope = root.path().join("s.scope");
        let below = scope.join("payload");
        fs::create_dir_all(&below).expect("mkdir");
        fs::write(scope.join("cgroup.procs"), "10\n11\n").expect("write");
        fs::write(below.join("cgroup.procs"), "12\n").expect("write");
        let mut pids = procs_below(&scope).expect("procs");
        pids.sort();
        assert_eq!(pids, [10, 11, 12]);
        assert_eq!(procs_in(&below).expect("procs"), [12]);
        assert_eq!(tree(&scope), [below, scope.clone()], "deepest first");
        assert!(
            procs_below(&root.path().join("gone.scope"))
                .expect("absent")
                .is_empty()
        );
    }

    #[test]
    fn knows_its_own_parent() {
        let own = i32::try_from(std::process::id()).expect("pid");
        assert_eq!(
            parent_of(own),
            Some(nix::unistd::getppid().as_raw()),
            "from /proc/self/stat"
        );
    }
}
