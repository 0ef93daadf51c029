//! The cgroup files the monitor falls back on where systemd leaves a value unset: on hybrid
//! hosts the v2 tree's `cpu.stat` (present without controllers) and the v1 memory, pids and
//! blkio hierarchies; on v2 hosts the unified tree's own files.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub use crate::cgroup::Mounts;

/// Which file a value came from: named in samples for tests and debugging.
pub const CGROUP_V1: &str = "cgroup-v1";
pub const CGROUP_V2: &str = "cgroup-v2";

/// At most half the process's file limit stays open (the rest is for the bus, the DB,
/// logs and steps being started), and never more than this; past it a file is read by
/// path each time.
const MAX_OPEN: usize = 4096;

fn max_open() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    usize::try_from(soft / 2).unwrap_or(MAX_OPEN).min(MAX_OPEN)
}

/// How many ticks a file found missing is not looked for again: a controller the unit's
/// manager does not enable (blkio under a user manager, say) stays off for the unit's life.
const RETRY_MISSING_TICKS: u64 = 30;

/// The cgroup files the monitor reads, kept open between ticks: a read is then one `pread`
/// at offset 0 (cgroupfs regenerates the contents) rather than a path walk, an open and a
/// close. A missing file is looked for again only every `RETRY_MISSING_TICKS`. A file not
/// read during a tick is forgotten at its end (its unit has gone).
pub struct Files {
    mounts: Mounts,
    known: HashMap<PathBuf, Known>,
    max_open: usize,
    tick: u64,
    buf: Vec<u8>,
}

struct Known {
    file: Option<File>,
    /// The tick it was last asked for.
    tick: u64,
    /// For a missing file: the tick from which it is looked for again.
    retry_at: u64,
}

fn dir(mount: &Path, control_group: &str) -> PathBuf {
    mount.join(control_group.trim_start_matches('/'))
}

/// `key value` lines (v2 `cpu.stat`, `memory.stat`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

impl Files {
    pub fn new(mounts: Mounts) -> Files {
        Files {
            mounts,
            known: HashMap::new(),
            max_open: max_open(),
            tick: 0,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Forgets the files the tick now ending did not ask for, and starts the next.
    pub fn end_tick(&mut self) {
        let tick = self.tick;
        self.known.retain(|_, known| known.tick == tick);
        self.tick += 1;
    }

    /// The whole file, or `None` if it cannot be read (no such file, the cgroup is gone).
    fn read(&mut self, path: PathBuf) -> Option<&str> {
        let tick = self.tick;
        let kept = match self.known.get_mut(&path) {
            Some(known) if known.file.is_none() && tick < known.retry_at => {
                known.tick = tick;
                return None;
            }
            Some(known) => known.file.take(),
            None => None,
        };
        self.buf.clear();
        let file = kept
            .map_or_else(|| File::open(&path), Ok)
            .and_then(|file| read_all(&file, &mut self.buf).map(|()| file))
            .ok();
        let found = file.is_some();
        let known = Known {
            file,
            tick,
            retry_at: tick + RETRY_MISSING_TICKS,
        };
        if self.known.len() < self.max_open || self.known.contains_key(&path) {
            self.known.insert(path, known);
        }
        if !found {
            return None;
        }
        std::str::from_utf8(&self.buf).ok()
    }

    fn read_u64(&mut self, path: PathBuf) -> Option<u64> {
        self.read(path)?.trim().parse().ok()
    }

    /// CPU time used, in nanoseconds: the v2 tree's `cpu.stat` `usage_usec` (kept by the
    /// kernel even in a tree with no controllers), else v1 `cpuacct.usage`.
    pub fn cpu_usage_nsec(&mut self, cg: &str) -> Option<(u64, &'static str)> {
        if let Some(unified) = &self.mounts.unified {
            let path = dir(unified, cg).join("cpu.stat");
            if let Some(usec) = self.read(path).and_then(|text| keyed(text, "usage_usec")) {
                return Some((usec.saturating_mul(1000), CGROUP_V2));
            }
        }
        let path = dir(self.mounts.cpuacct.as_ref()?, cg).join("cpuacct.usage");
        self.read_u64(path).map(|n| (n, CGROUP_V1))
    }

    /// Memory charged now: v1 `memory.usage_in_bytes`, else v2 `memory.current`.
    pub fn memory_current(&mut self, cg: &str) -> Option<(u64, &'static str)> {
        self.v1_else_v2(cg, V1::Memory, "memory.usage_in_bytes", "memory.current")
    }

    /// The high-water mark: v1 `memory.max_usage_in_bytes`, else v2 `memory.peak`.
    pub fn memory_peak(&mut self, cg: &str) -> Option<(u64, &'static str)> {
        self.v1_else_v2(cg, V1::Memory, "memory.max_usage_in_bytes", "memory.peak")
    }

    pub fn tasks(&mut self, cg: &str) -> Option<(u64, &'static str)> {
        self.v1_else_v2(cg, V1::Pids, "pids.current", "pids.current")
    }

    fn v1_else_v2(
        &mut self,
        cg: &str,
        hierarchy: V1,
        v1: &str,
        v2: &str,
    ) -> Option<(u64, &'static str)> {
        let mount = match hierarchy {
            V1::Memory => &self.mounts.memory,
            V1::Pids => &self.mounts.pids,
        };
        if let Some(mount) = mount {
            let path = dir(mount, cg).join(v1);
            if let Some(n) = self.read_u64(path) {
                return Some((n, CGROUP_V1));
            }
        }
        let path = dir(self.mounts.unified.as_ref()?, cg).join(v2);
        self.read_u64(path).map(|n| (n, CGROUP_V2))
    }

    /// Bytes read and written: v1 blkio (`throttle.io_service_bytes`, which counts every
    /// device, else the CFQ/BFQ `io_service_bytes`), else v2 `io.stat`.
    pub fn io_bytes(&mut self, cg: &str) -> Option<((u64, u64), &'static str)> {
        if let Some(blkio) = &self.mounts.blkio {
            let d = dir(blkio, cg);
            for file in [
                "blkio.throttle.io_service_bytes",
                "blkio.io_service_bytes",
                "blkio.throttle.io_service_bytes_recursive",
            ] {
                if let Some(text) = self.read(d.join(file)) {
                    return Some((v1_io(text), CGROUP_V1));
                }
            }
        }
        let path = dir(self.mounts.unified.as_ref()?, cg).join("io.stat");
        Some((v2_io(self.read(path)?), CGROUP_V2))
    }
}

/// The v1 hierarchies a value may come from.
enum V1 {
    Memory,
    Pids,
}

/// Reads from offset 0 to the end (cgroup files are small; a read may return less).
fn read_all(file: &File, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    loop {
        let n = file.read_at(&mut chunk, buf.len() as u64)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// "8:0 Read 4096" lines per device; the "Total" summary line is skipped.
fn v1_io(text: &str) -> (u64, u64) {
    let (mut read, mut write) = (0u64, 0u64);
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(_dev), Some(op), Some(n)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let n: u64 = n.parse().unwrap_or(0);
        match op {
            "Read" => read = read.saturating_add(n),
            "Write" => write = write.saturating_add(n),
            _ => {}
        }
    }
    (read, write)
}

/// "8:0 rbytes=4096 wbytes=0 …" lines per device.
fn v2_io(text: &str) -> (u64, u64) {
    let (mut read, mut write) = (0u64, 0u64);
    for field in text.split_whitespace() {
        if let Some(n) = field.strip_prefix("rbytes=") {
            read = read.saturating_add(n.parse().unwrap_or(0));
        } else if let Some(n) = field.strip_prefix("wbytes=") {
            write = write.saturating_add(n.parse().unwrap_or(0));
        }
    }
    (read, write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A kept-open file is read afresh each time, and closed once a tick passes without it.
    #[test]
    fn rereads_open_files_and_closes_unread_ones() {
        let root = tempfile::tempdir().expect("tempdir");
        let cg = root.path().join("drover.slice/s.scope");
        fs::create_dir_all(&cg).expect("mkdir");
        let mut files = Files::new(Mounts {
            pids: Some(root.path().to_owned()),
            ..Mounts::default()
        });
        fs::write(cg.join("pids.current"), "3\n").expect("write");
        assert_eq!(files.tasks("/drover.slice/s.scope"), Some((3, CGROUP_V1)));
        fs::write(cg.join("pids.current"), "12\n").expect("write");
        assert_eq!(files.tasks("/drover.slice/s.scope"), Some((12, CGROUP_V1)));
        assert_eq!(files.known.len(), 1);
        files.end_tick();
        assert_eq!(files.known.len(), 1, "read in the tick that ended");
        files.end_tick();
        assert!(files.known.is_empty(), "not read for a whole tick");
        fs::remove_dir_all(&cg).expect("rmdir");
        assert_eq!(files.tasks("/drover.slice/s.scope"), None);
    }

    /// A missing file is not looked for each tick, but is found once it appears.
    #[test]
    fn looks_for_missing_files_again_later() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut files = Files::new(Mounts {
            pids: Some(root.path().to_owned()),
            ..Mounts::default()
        });
        assert_eq!(files.tasks("/late.scope"), None);
        let cg = root.path().join("late.scope");
        fs::create_dir_all(&cg).expect("mkdir");
        fs::write(cg.join("pids.current"), "2\n").expect("write");
        for _ in 0..RETRY_MISSING_TICKS - 1 {
            files.end_tick();
            assert_eq!(files.tasks("/late.scope"), None, "not looked for yet");
        }
        files.end_tick();
        assert_eq!(files.tasks("/late.scope"), Some((2, CGROUP_V1)));
    }

    #[test]
    fn finds_hybrid_mounts() {
        let m = Mounts::parse(
            "30 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n\
             31 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             32 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             33 25 0:29 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n\
             34 25 0:30 / /sys/fs/cgroup/blkio rw - cgroup cgroup rw,blkio\n",
        );
        assert_eq!(
            m.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            m.memory.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            m.cpuacct.as_deref(),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(m.pids.as_deref(), Some(Path::new("/sys/fs/cgroup/pids")));
        assert_eq!(m.blkio.as_deref(), Some(Path::new("/sys/fs/cgroup/blkio")));
    }

    #[test]
    fn sums_io_over_devices() {
        assert_eq!(
            v1_io("8:0 Read 100\n8:0 Write 7\n8:16 Read 1\nTotal 108\n"),
            (101, 7)
        );
        assert_eq!(
            v2_io("8:0 rbytes=100 wbytes=7 rios=1\n8:16 rbytes=1 wbytes=0\n"),
            (101, 7)
        );
    }
}
