//! cgroup v2: the files of the unified tree that hold the values drover reads, and their
//! formats.

use super::keyed;

/// Memory charged now, in bytes.
pub(super) const MEMORY_CURRENT: &str = "memory.current";
/// The high-water mark of `MEMORY_CURRENT`.
pub(super) const MEMORY_PEAK: &str = "memory.peak";
/// `low`, `high`, `max`, `oom`, `oom_kill`, `oom_group_kill` counters, one `key N` a line.
pub(super) const MEMORY_EVENTS: &str = "memory.events";
/// Tasks now, one number.
pub(super) const TASKS: &str = "pids.current";
/// `usage_usec N`, `user_usec N`, …: kept by the kernel even in a tree with no controllers.
pub(super) const CPU_STAT: &str = "cpu.stat";
/// "8:0 rbytes=4096 wbytes=0 …" lines per device.
pub(super) const IO_STAT: &str = "io.stat";

/// CPU time used, in nanoseconds, from `cpu.stat`'s microseconds.
pub(super) fn cpu_usage_nsec(cpu_stat: &str) -> Option<u64> {
    keyed(cpu_stat, "usage_usec").map(|usec| usec.saturating_mul(1000))
}

/// Bytes read and written, summed over the devices of `io.stat`.
pub(super) fn io_bytes(text: &str) -> (u64, u64) {
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
    fn sums_io_over_devices() {
        assert_eq!(
            io_bytes("8:0 rbytes=100 wbytes=7 rios=1\n8:16 rbytes=1 wbytes=0\n"),
            (101, 7)
        );
    }

    #[test]
    fn reads_cpu_usage_in_nanoseconds() {
        let stat = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n";
        assert_eq!(cpu_usage_nsec(stat), Some(1_500_000));
        assert_eq!(cpu_usage_nsec("user_usec 1000\n"), None);
    }
}
