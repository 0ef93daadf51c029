//! The kernel's cgroup files, read directly for what systemd does not report on every host
//! (on hybrid v1/v2 hosts systemd records no OOM kill: the memory cgroup's counter does).
//!
//! A unit's cgroup is read the same way whichever layout the host has — v1, hybrid (v1
//! controllers beside a v2 tree with no controllers) or v2: [`Mounts`] knows where each
//! hierarchy is mounted and so which version holds each controller's files; `v1` and `v2`
//! name those files and read their formats; [`ReadFile`] is how a file is read (by path
//! here, kept open by the monitor).

mod membership;
pub(crate) mod mountinfo;
mod procs;
mod v1;
mod v2;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub(crate) use membership::memberships;
use mountinfo::MountEntry;
pub use procs::{live_processes_in, parent_of};
pub(crate) use procs::{procs_in, tree};

/// A cgroup hierarchy's version: v1 (a hierarchy per controller, or the named
/// `name=systemd` one) or the v2 unified tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V1,
    V2,
}

/// One cgroup hierarchy as mounted here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    pub(crate) version: Version,
    pub(crate) mount_point: PathBuf,
    /// The cgroup shown at the mount point: `/`, unless only a subtree of the hierarchy is
    /// mounted (a bind mount into a container).
    pub(crate) root: String,
}

impl Hierarchy {
    /// A `cgroup` (v1) or `cgroup2` mount; `None` for any other file system.
    fn of(entry: &MountEntry) -> Option<Hierarchy> {
        let version = match entry.fs_type.as_str() {
            "cgroup" => Version::V1,
            "cgroup2" => Version::V2,
            _ => return None,
        };
        Some(Hierarchy {
            version,
            mount_point: entry.mount_point.clone(),
            root: entry.root.clone(),
        })
    }

    /// A cgroup's path from the mount point, given its path from the hierarchy's root (as
    /// `/proc/<pid>/cgroup` and systemd's `ControlGroup` give it); `None` outside the
    /// mounted subtree.
    fn relative<'a>(&self, cgroup: &'a str) -> Option<&'a str> {
        let root = self.root.trim_end_matches('/');
        if root.is_empty() {
            return Some(cgroup);
        }
        match cgroup.strip_prefix(root)? {
            "" => Some("/"),
            rest if rest.starts_with('/') => Some(rest),
            _ => None,
        }
    }

    /// The directory of a cgroup given its path from the hierarchy's root.
    pub(crate) fn dir(&self, cgroup: &str) -> Option<PathBuf> {
        let relative = self.relative(cgroup)?;
        Some(self.mount_point.join(relative.trim_start_matches('/')))
    }
}

/// Reads a cgroup file whole; `None` if it cannot be read (no such file, the cgroup is gone).
pub(crate) trait ReadFile {
    fn read(&mut self, path: PathBuf) -> Option<&str>;
}

/// Reads each file by path when asked.
#[derive(Default)]
struct ByPath(String);

impl ReadFile for ByPath {
    fn read(&mut self, path: PathBuf) -> Option<&str> {
        self.0 = fs::read_to_string(path).ok()?;
        Some(&self.0)
    }
}

fn read_u64(files: &mut impl ReadFile, path: PathBuf) -> Option<u64> {
    files.read(path)?.trim().parse().ok()
}

/// The value of `key` in `key value` lines (v2 `cpu.stat`, `memory.events`, v1
/// `memory.oom_control`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// Where the host mounts the cgroup hierarchies drover reads — the one type through which
/// a unit's cgroup is read, whatever the layout. A v2 host has only `unified`, with every
/// controller; a hybrid host has v1 controllers and a `unified` tree without any; a v1 host
/// has `name=systemd` in place of the v2 tree. A controller is in one hierarchy at a time,
/// so its files are in its v1 hierarchy where one is mounted, else in the v2 tree.
#[derive(Debug, Clone, Default)]
pub struct Mounts {
    unified: Option<Hierarchy>,
    memory: Option<Hierarchy>,
    pids: Option<Hierarchy>,
    blkio: Option<Hierarchy>,
    cpuacct: Option<Hierarchy>,
    /// The v1 `name=systemd` hierarchy (hybrid hosts track units there and in `unified`).
    named_systemd: Option<Hierarchy>,
}

impl Mounts {
    /// Read once from `/proc/self/mountinfo` (mounts do not move while the agent runs).
    pub fn discover() -> Mounts {
        mountinfo::read_own()
            .map(|entries| Mounts::from_entries(&entries))
            .unwrap_or_default()
    }

    /// From the text of a mountinfo file.
    pub fn parse(mountinfo: &str) -> Mounts {
        Mounts::from_entries(&mountinfo::parse(mountinfo))
    }

    /// Each hierarchy at its first mount (a later one is a bind mount of it or of a subtree).
    fn from_entries(entries: &[MountEntry]) -> Mounts {
        let mut mounts = Mounts::default();
        for entry in entries {
            let Some(hierarchy) = Hierarchy::of(entry) else {
                continue;
            };
            let v1 = hierarchy.version == Version::V1;
            let has = |option: &str| v1 && entry.super_options.iter().any(|o| o == option);
            let slots = [
                (!v1, &mut mounts.unified),
                (has("memory"), &mut mounts.memory),
                (has("pids"), &mut mounts.pids),
                (has("blkio"), &mut mounts.blkio),
                (has("cpuacct"), &mut mounts.cpuacct),
                (has("name=systemd"), &mut mounts.named_systemd),
            ];
            for (holds, slot) in slots {
                if holds && slot.is_none() {
                    *slot = Some(hierarchy.clone());
                }
            }
        }
        mounts
    }

    /// The hierarchy holding a controller's files: its v1 hierarchy where one is mounted,
    /// else the v2 tree.
    fn holding<'a>(&'a self, v1: &'a Option<Hierarchy>) -> Option<&'a Hierarchy> {
        v1.as_ref().or(self.unified.as_ref())
    }

    /// A number alone in a file: `file.0` in the `v1` hierarchy where it is mounted, else
    /// `file.1` in the v2 tree.
    fn number(
        &self,
        files: &mut impl ReadFile,
        cgroup: &str,
        v1: &Option<Hierarchy>,
        file: (&str, &str),
    ) -> Option<(u64, Version)> {
        let hierarchy = self.holding(v1)?;
        let file = match hierarchy.version {
            Version::V1 => file.0,
            Version::V2 => file.1,
        };
        let n = read_u64(files, hierarchy.dir(cgroup)?.join(file))?;
        Some((n, hierarchy.version))
    }

    /// Memory charged now, in bytes.
    pub(crate) fn memory_current(
        &self,
        files: &mut impl ReadFile,
        cgroup: &str,
    ) -> Option<(u64, Version)> {
        let file = (v1::MEMORY_CURRENT, v2::MEMORY_CURRENT);
        self.number(files, cgroup, &self.memory, file)
    }

    /// The high-water mark of the memory charged.
    pub(crate) fn memory_peak(
        &self,
        files: &mut impl ReadFile,
        cgroup: &str,
    ) -> Option<(u64, Version)> {
        let file = (v1::MEMORY_PEAK, v2::MEMORY_PEAK);
        self.number(files, cgroup, &self.memory, file)
    }

    /// Tasks (processes and threads) now.
    pub(crate) fn tasks(&self, files: &mut impl ReadFile, cgroup: &str) -> Option<(u64, Version)> {
        let file = (v1::TASKS, v2::TASKS);
        self.number(files, cgroup, &self.pids, file)
    }

    /// How many processes the OOM killer has killed in the cgroup.
    pub(crate) fn oom_kills(
        &self,
        files: &mut impl ReadFile,
        cgroup: &str,
    ) -> Option<(u64, Version)> {
        let hierarchy = self.holding(&self.memory)?;
        let file = match hierarchy.version {
            Version::V1 => v1::MEMORY_OOM,
            Version::V2 => v2::MEMORY_EVENTS,
        };
        let text = files.read(hierarchy.dir(cgroup)?.join(file))?;
        Some((keyed(text, "oom_kill")?, hierarchy.version))
    }

    /// CPU time used, in nanoseconds: the v2 tree's `cpu.stat` (kept even in a tree with no
    /// controllers, so hybrid hosts read it too), else v1 `cpuacct.usage`.
    pub(crate) fn cpu_usage_nsec(
        &self,
        files: &mut impl ReadFile,
        cgroup: &str,
    ) -> Option<(u64, Version)> {
        if let Some(dir) = self.unified.as_ref().and_then(|h| h.dir(cgroup))
            && let Some(nsec) = files
                .read(dir.join(v2::CPU_STAT))
                .and_then(v2::cpu_usage_nsec)
        {
            return Some((nsec, Version::V2));
        }
        let dir = self.cpuacct.as_ref()?.dir(cgroup)?;
        read_u64(files, dir.join(v1::CPU_USAGE)).map(|n| (n, Version::V1))
    }

    /// Bytes read and written.
    pub(crate) fn io_bytes(
        &self,
        files: &mut impl ReadFile,
        cgroup: &str,
    ) -> Option<((u64, u64), Version)> {
        let hierarchy = self.holding(&self.blkio)?;
        let dir = hierarchy.dir(cgroup)?;
        let bytes = match hierarchy.version {
            Version::V1 => v1::IO_SERVICE_BYTES
                .iter()
                .find_map(|file| files.read(dir.join(file)).map(v1::io_bytes))?,
            Version::V2 => v2::io_bytes(files.read(dir.join(v2::IO_STAT))?),
        };
        Some((bytes, hierarchy.version))
    }

    /// The processes in a unit's cgroup (systemd's `ControlGroup`) and in the cgroups below
    /// it, in the hierarchy systemd tracks units in: the v2 tree (v2 and hybrid hosts),
    /// else v1 `name=systemd`. An absent cgroup has none.
    pub(crate) fn procs(&self, control_group: &str) -> io::Result<Vec<i32>> {
        let Some(tracking) = self.unified.as_ref().or(self.named_systemd.as_ref()) else {
            return Err(io::Error::other(
                "no cgroup hierarchy tracks systemd's units here",
            ));
        };
        let Some(dir) = tracking.dir(control_group) else {
            return Err(io::Error::other(format!(
                "{control_group} is outside the part of the hierarchy mounted at {}",
                tracking.mount_point.display()
            )));
        };
        procs::procs_below(&dir)
    }
}

/// How many processes the OOM killer has killed in this process's own memory cgroup, when
/// that cgroup is `unit`'s own; `None` where the counter cannot be read or would be a shared
/// ancestor's (systemd did not give the unit a memory cgroup).
pub fn own_oom_kills(unit: &str) -> Option<u64> {
    let mounts = Mounts::discover();
    let memory = mounts.holding(&mounts.memory)?;
    let own = fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = membership::path_of(&own, memory.version, "memory")?;
    if Path::new(path).file_name()? != unit {
        return None;
    }
    mounts
        .oom_kills(&mut ByPath::default(), path)
        .map(|(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 host's unified tree as it lays out a unit's cgroup, below `root`.
    fn v2_host(root: &Path) -> (Mounts, &'static str) {
        let cg = "/user.slice/drover.slice/drover-r-s-1.scope";
        let dir = root.join(cg.trim_start_matches('/'));
        let payload = dir.join("payload");
        fs::create_dir_all(&payload).expect("mkdir");
        for (file, text) in [
            ("cgroup.procs", "100\n101\n"),
            ("memory.current", "4096\n"),
            ("memory.peak", "8192\n"),
            (
                "memory.events",
                "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n",
            ),
            ("pids.current", "5\n"),
            (
                "cpu.stat",
                "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
            ),
            ("io.stat", "8:0 rbytes=100 wbytes=7 rios=1 wios=1\n"),
        ] {
            fs::write(dir.join(file), text).expect("write");
        }
        fs::write(payload.join("cgroup.procs"), "102\n").expect("write");
        let mounts = Mounts::parse(&format!(
            "29 23 0:26 / {} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
            root.display()
        ));
        (mounts, cg)
    }

    #[test]
    fn reads_a_units_cgroup_on_a_v2_host() {
        let root = tempfile::tempdir().expect("tempdir");
        let (mounts, cg) = v2_host(root.path());
        let files = &mut ByPath::default();
        assert_eq!(mounts.memory_current(files, cg), Some((4096, Version::V2)));
        assert_eq!(mounts.memory_peak(files, cg), Some((8192, Version::V2)));
        assert_eq!(mounts.oom_kills(files, cg), Some((2, Version::V2)));
        assert_eq!(mounts.tasks(files, cg), Some((5, Version::V2)));
        assert_eq!(
            mounts.cpu_usage_nsec(files, cg),
            Some((2_500_000, Version::V2))
        );
        assert_eq!(mounts.io_bytes(files, cg), Some(((100, 7), Version::V2)));
        let mut procs = mounts.procs(cg).expect("procs");
        procs.sort();
        assert_eq!(procs, [100, 101, 102]);
        assert!(
            mounts
                .procs("/user.slice/gone.scope")
                .expect("gone")
                .is_empty()
        );
        assert_eq!(mounts.memory_current(files, "/user.slice/gone.scope"), None);
    }

    /// This machine's layout, below `root`: v1 memory, cpuacct, pids, blkio and
    /// name=systemd hierarchies, and a v2 tree with no controllers (only `cpu.stat`).
    fn hybrid_host(root: &Path) -> (Mounts, &'static str) {
        let cg = "/drover.slice/drover-r-s-1.scope";
        let mut mountinfo = String::new();
        for (id, (hierarchy, fs_type, options, files)) in [
            (
                "unified",
                "cgroup2",
                "rw",
                &[("cpu.stat", "usage_usec 7\n"), ("cgroup.procs", "200\n")][..],
            ),
            (
                "memory",
                "cgroup",
                "rw,memory",
                &[
                    ("memory.usage_in_bytes", "1024\n"),
                    ("memory.max_usage_in_bytes", "2048\n"),
                    (
                        "memory.oom_control",
                        "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
                    ),
                ][..],
            ),
            (
                "cpuacct",
                "cgroup",
                "rw,cpuacct",
                &[("cpuacct.usage", "9\n")][..],
            ),
            ("pids", "cgroup", "rw,pids", &[("pids.current", "3\n")][..]),
            (
                "blkio",
                "cgroup",
                "rw,blkio",
                &[(
                    "blkio.throttle.io_service_bytes",
                    "8:0 Read 10\n8:0 Write 4\nTotal 14\n",
                )][..],
            ),
            ("systemd", "cgroup", "rw,name=systemd", &[][..]),
        ]
        .into_iter()
        .enumerate()
        {
            let mount = root.join(hierarchy);
            let dir = mount.join(cg.trim_start_matches('/'));
            fs::create_dir_all(&dir).expect("mkdir");
            for (file, text) in files {
                fs::write(dir.join(file), text).expect("write");
            }
            mountinfo.push_str(&format!(
                "{} 31 0:{id} / {} rw,relatime - {fs_type} {fs_type} {options}\n",
                32 + id,
                mount.display()
            ));
        }
        (Mounts::parse(&mountinfo), cg)
    }

    #[test]
    fn reads_a_units_cgroup_on_a_hybrid_host() {
        let root = tempfile::tempdir().expect("tempdir");
        let (mounts, cg) = hybrid_host(root.path());
        let files = &mut ByPath::default();
        assert_eq!(mounts.memory_current(files, cg), Some((1024, Version::V1)));
        assert_eq!(mounts.memory_peak(files, cg), Some((2048, Version::V1)));
        assert_eq!(mounts.oom_kills(files, cg), Some((1, Version::V1)));
        assert_eq!(mounts.tasks(files, cg), Some((3, Version::V1)));
        assert_eq!(
            mounts.cpu_usage_nsec(files, cg),
            Some((7000, Version::V2)),
            "the v2 tree's cpu.stat first"
        );
        assert_eq!(mounts.io_bytes(files, cg), Some(((10, 4), Version::V1)));
        assert_eq!(mounts.procs(cg).expect("procs"), [200], "from the v2 tree");
        fs::remove_file(
            root.path()
                .join("unified")
                .join(cg.trim_start_matches('/'))
                .join("cpu.stat"),
        )
        .expect("rm");
        assert_eq!(
            mounts.cpu_usage_nsec(files, cg),
            Some((9, Version::V1)),
            "else v1 cpuacct.usage"
        );
    }

    #[test]
    fn finds_hybrid_mounts() {
        let m = Mounts::parse(
            "30 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n\
             31 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             32 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             33 25 0:29 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n\
             34 25 0:30 / /sys/fs/cgroup/blkio rw - cgroup cgroup rw,blkio\n\
             35 25 0:31 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n\
             36 25 0:32 /nested /elsewhere rw - cgroup cgroup rw,memory\n",
        );
        let at = |h: &Option<Hierarchy>| h.as_ref().map(|h| h.mount_point.clone());
        assert_eq!(at(&m.unified), Some("/sys/fs/cgroup/unified".into()));
        assert_eq!(
            at(&m.memory),
            Some("/sys/fs/cgroup/memory".into()),
            "the first mount"
        );
        assert_eq!(at(&m.cpuacct), Some("/sys/fs/cgroup/cpu,cpuacct".into()));
        assert_eq!(at(&m.pids), Some("/sys/fs/cgroup/pids".into()));
        assert_eq!(at(&m.blkio), Some("/sys/fs/cgroup/blkio".into()));
        assert_eq!(at(&m.named_systemd), Some("/sys/fs/cgroup/systemd".into()));
    }

    #[test]
    fn finds_a_unit_below_a_mount_of_a_subtree() {
        let root = tempfile::tempdir().expect("tempdir");
        let scope = root.path().join("app.scope");
        fs::create_dir_all(&scope).expect("mkdir");
        fs::write(scope.join("cgroup.procs"), "7\n").expect("write");
        fs::write(scope.join("memory.current"), "12\n").expect("write");
        let mounts = Mounts::parse(&format!(
            "60 50 0:38 /docker/abc {} rw shared:9 - cgroup2 cgroup2 rw\n",
            root.path().display()
        ));
        let files = &mut ByPath::default();
        assert_eq!(mounts.procs("/docker/abc/app.scope").expect("procs"), [7]);
        assert_eq!(
            mounts.memory_current(files, "/docker/abc/app.scope"),
            Some((12, Version::V2))
        );
        assert!(
            mounts.procs("/other/app.scope").is_err(),
            "not mounted here"
        );
    }

    #[test]
    fn reads_the_oom_counter_of_either_version() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n";
        let v2 = "low 0\nhigh 0\nmax 0\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed(v1, "oom_kill"), Some(4));
        assert_eq!(keyed(v2, "oom_kill"), Some(1));
        assert_eq!(keyed("oom_kill_disable 0\n", "oom_kill"), None);
    }

    #[test]
    fn no_tracking_hierarchy_is_an_error() {
        let mounts = Mounts::parse("35 31 0:32 / /m rw - cgroup cgroup rw,memory\n");
        assert!(mounts.procs("/x.scope").is_err());
    }
}
