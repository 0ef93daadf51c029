//! `/proc/<pid>/cgroup`: which cgroup a process is in, in each hierarchy, and where that
//! cgroup is in the mounted file system.

use std::path::PathBuf;

use super::mountinfo::MountEntry;
use super::{Hierarchy, Version};

/// One hierarchy a process is in, as mounted here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Membership {
    /// As `/proc/<pid>/cgroup` names the hierarchy: "memory", "cpu,cpuacct",
    /// "name=systemd", or "" for v2.
    pub(crate) controllers: String,
    pub(crate) hierarchy: Hierarchy,
    /// The process's cgroup from the mount point (the mount's root taken off the path
    /// `/proc/<pid>/cgroup` shows), e.g. "/" or "/user.slice/x.scope".
    pub(crate) path: String,
}

impl Membership {
    /// The process's cgroup directory.
    pub(crate) fn dir(&self) -> PathBuf {
        self.hierarchy
            .mount_point
            .join(self.path.trim_start_matches('/'))
    }

    pub(crate) fn has(&self, controller: &str) -> bool {
        has_controller(&self.controllers, controller)
    }
}

fn has_controller(controllers: &str, controller: &str) -> bool {
    controllers.split(',').any(|c| c == controller)
}

/// `hierarchy-id:controllers:path` lines; the path may itself hold colons.
fn lines(proc_cgroup: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    proc_cgroup.lines().filter_map(|line| {
        let mut parts = line.splitn(3, ':');
        Some((parts.next()?, parts.next()?, parts.next()?))
    })
}

/// The v2 line is "0::<path>": hierarchy 0, no controllers named.
fn is_v2(id: &str, controllers: &str) -> bool {
    id == "0" && controllers.is_empty()
}

/// The hierarchies of `proc_cgroup` (the text of `/proc/<pid>/cgroup`) that are mounted in
/// `mounts`, each at its first mount: v2 at a `cgroup2` mount, a v1 hierarchy at the
/// `cgroup` mount whose options name all its controllers. One mounted nowhere, or only as
/// a subtree the process is outside of, is left out (no cgroup of it can be reached).
pub(crate) fn memberships(proc_cgroup: &str, mounts: &[MountEntry]) -> Vec<Membership> {
    lines(proc_cgroup)
        .filter_map(|(id, controllers, path)| {
            let v2 = is_v2(id, controllers);
            let entry = mounts.iter().find(|m| {
                if v2 {
                    m.fs_type == "cgroup2"
                } else {
                    m.fs_type == "cgroup"
                        && controllers
                            .split(',')
                            .all(|c| m.super_options.iter().any(|o| o == c))
                }
            })?;
            let hierarchy = Hierarchy::of(entry)?;
            let path = hierarchy.relative(path)?.to_owned();
            Some(Membership {
                controllers: controllers.to_owned(),
                hierarchy,
                path,
            })
        })
        .collect()
}

/// The process's cgroup (as `proc_cgroup` gives it) in the hierarchy of `version` that
/// holds `controller`: for v2 the one unified line, for v1 the line naming the controller.
pub(super) fn path_of<'a>(
    proc_cgroup: &'a str,
    version: Version,
    controller: &str,
) -> Option<&'a str> {
    lines(proc_cgroup).find_map(|(id, controllers, path)| {
        let found = match version {
            Version::V2 => is_v2(id, controllers),
            Version::V1 => has_controller(controllers, controller),
        };
        found.then_some(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::mountinfo;
    use std::path::Path;

    /// This machine's layout: v1 controllers, memory nested below the others, and a v2 tree.
    const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
5:devices:/
4:memory:/process_api/9780b033
2:cpuacct:/
1:cpu:/
0::/
";

    #[test]
    fn finds_each_mounted_hierarchy_and_the_processes_cgroup_in_it() {
        let m = memberships(HYBRID_CGROUP, &mountinfo::parse(HYBRID_MOUNTS));
        let names: Vec<&str> = m.iter().map(|m| m.controllers.as_str()).collect();
        assert_eq!(
            names,
            ["name=systemd", "memory", "cpuacct", "cpu", ""],
            "devices is not mounted"
        );
        let memory = &m[1];
        assert!(memory.has("memory"));
        assert_eq!(memory.hierarchy.version, Version::V1);
        assert_eq!(memory.path, "/process_api/9780b033");
        assert_eq!(
            memory.dir(),
            Path::new("/sys/fs/cgroup/memory/process_api/9780b033")
        );
        assert_eq!(m[4].hierarchy.version, Version::V2);
        assert_eq!(m[4].dir(), Path::new("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn takes_a_mounts_root_off_the_path() {
        let mounts = mountinfo::parse(
            "60 50 0:38 /docker/abc /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw\n",
        );
        let m = memberships("0::/docker/abc/app.scope\n", &mounts);
        assert_eq!(m[0].path, "/app.scope");
        assert_eq!(m[0].dir(), Path::new("/sys/fs/cgroup/app.scope"));
        let at_root = memberships("0::/docker/abc\n", &mounts);
        assert_eq!(at_root[0].path, "/");
        assert!(
            memberships("0::/docker/abcdef/x\n", &mounts).is_empty(),
            "outside the mounted subtree"
        );
    }

    #[test]
    fn names_the_path_of_a_controllers_hierarchy() {
        assert_eq!(
            path_of(HYBRID_CGROUP, Version::V1, "memory"),
            Some("/process_api/9780b033")
        );
        assert_eq!(path_of(HYBRID_CGROUP, Version::V2, "memory"), Some("/"));
        assert_eq!(path_of("0::/a:b\n", Version::V2, "memory"), Some("/a:b"));
        assert_eq!(path_of("0::/a\n", Version::V1, "memory"), None);
    }
}
