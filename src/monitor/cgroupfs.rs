//! The cgroup files the monitor falls back on where systemd leaves a value unset: on hybrid
//! hosts the v2 tree's `cpu.stat` (present without controllers) and the v1 memory, pids and
//! blkio hierarchies; on v2 hosts the unified tree's own files.

use std::fs;
use std::path::{Path, PathBuf};

pub use crate::cgroup::Mounts;

/// Which file a value came from: named in samples for tests and debugging.
pub const CGROUP_V1: &str = "cgroup-v1";
pub const CGROUP_V2: &str = "cgroup-v2";

fn dir(mount: &Path, control_group: &str) -> PathBuf {
    mount.join(control_group.trim_start_matches('/'))
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (v2 `cpu.stat`, `memory.stat`).
fn keyed(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// CPU time used, in nanoseconds: the v2 tree's `cpu.stat` `usage_usec` (kept by the kernel
/// even in a tree with no controllers), else v1 `cpuacct.usage`.
pub fn cpu_usage_nsec(m: &Mounts, cg: &str) -> Option<(u64, &'static str)> {
    if let Some(unified) = &m.unified
        && let Some(usec) = keyed(&dir(unified, cg).join("cpu.stat"), "usage_usec")
    {
        return Some((usec.saturating_mul(1000), CGROUP_V2));
    }
    let cpuacct = m.cpuacct.as_ref()?;
    read_u64(&dir(cpuacct, cg).join("cpuacct.usage")).map(|n| (n, CGROUP_V1))
}

/// Memory charged now: v1 `memory.usage_in_bytes`, else v2 `memory.current`.
pub fn memory_current(m: &Mounts, cg: &str) -> Option<(u64, &'static str)> {
    if let Some(memory) = &m.memory
        && let Some(n) = read_u64(&dir(memory, cg).join("memory.usage_in_bytes"))
    {
        return Some((n, CGROUP_V1));
    }
    read_u64(&dir(m.unified.as_ref()?, cg).join("memory.current")).map(|n| (n, CGROUP_V2))
}

/// The high-water mark: v1 `memory.max_usage_in_bytes`, else v2 `memory.peak`.
pub fn memory_peak(m: &Mounts, cg: &str) -> Option<(u64, &'static str)> {
    if let Some(memory) = &m.memory
        && let Some(n) = read_u64(&dir(memory, cg).join("memory.max_usage_in_bytes"))
    {
        return Some((n, CGROUP_V1));
    }
    read_u64(&dir(m.unified.as_ref()?, cg).join("memory.peak")).map(|n| (n, CGROUP_V2))
}

pub fn tasks(m: &Mounts, cg: &str) -> Option<(u64, &'static str)> {
    if let Some(pids) = &m.pids
        && let Some(n) = read_u64(&dir(pids, cg).join("pids.current"))
    {
        return Some((n, CGROUP_V1));
    }
    read_u64(&dir(m.unified.as_ref()?, cg).join("pids.current")).map(|n| (n, CGROUP_V2))
}

/// Bytes read and written: v1 blkio (`throttle.io_service_bytes`, which counts every
/// device, else the CFQ/BFQ `io_service_bytes`), else v2 `io.stat`.
pub fn io_bytes(m: &Mounts, cg: &str) -> Option<((u64, u64), &'static str)> {
    if let Some(blkio) = &m.blkio {
        let d = dir(blkio, cg);
        for file in [
            "blkio.throttle.io_service_bytes",
            "blkio.io_service_bytes",
            "blkio.throttle.io_service_bytes_recursive",
        ] {
            if let Ok(text) = fs::read_to_string(d.join(file)) {
                return Some((v1_io(&text), CGROUP_V1));
            }
        }
    }
    let text = fs::read_to_string(dir(m.unified.as_ref()?, cg).join("io.stat")).ok()?;
    Some((v2_io(&text), CGROUP_V2))
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
