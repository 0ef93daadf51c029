//! cgroup v1: the files of each controller's hierarchy that hold the values drover reads,
//! and their formats.

/// Memory charged now, in bytes.
pub(super) const MEMORY_CURRENT: &str = "memory.usage_in_bytes";
/// The high-water mark of `MEMORY_CURRENT`.
pub(super) const MEMORY_PEAK: &str = "memory.max_usage_in_bytes";
/// `oom_kill_disable 0`, `under_oom 0`, `oom_kill N` lines.
pub(super) const MEMORY_OOM: &str = "memory.oom_control";
/// Tasks now, one number.
pub(super) const TASKS: &str = "pids.current";
/// CPU time used, in nanoseconds.
pub(super) const CPU_USAGE: &str = "cpuacct.usage";
/// Bytes per device and operation, in the order they are looked for: the throttle file
/// (which counts every device), the CFQ/BFQ one, then the throttle file with descendants.
pub(super) const IO_SERVICE_BYTES: [&str; 3] = [
    "blkio.throttle.io_service_bytes",
    "blkio.io_service_bytes",
    "blkio.throttle.io_service_bytes_recursive",
];

/// Bytes read and written, from "8:0 Read 4096" lines per device; the "Total" summary line
/// is skipped.
pub(super) fn io_bytes(text: &str) -> (u64, u64) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_io_over_devices() {
        assert_eq!(
            io_bytes("8:0 Read 100\n8:0 Write 7\n8:16 Read 1\nTotal 108\n"),
            (101, 7)
        );
    }
}
