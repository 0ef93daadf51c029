//! The cgroup files the monitor falls back on where systemd leaves a value unset, kept
//! open between ticks. Which file holds a value on this host (on hybrid hosts the v2 tree's
//! `cpu.stat` and the v1 memory, pids and blkio hierarchies; on v2 hosts the unified tree's
//! own files) is for [`Mounts`] to say; this module only reads them cheaply.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

pub use crate::cgroup::Mounts;
use crate::cgroup::{ReadFile, Version};

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

/// The cgroup values the monitor reads, from files kept open between ticks.
pub struct Files {
    mounts: Mounts,
    open: OpenFiles,
}

/// The files themselves: a read is one `pread` at offset 0 (cgroupfs regenerates the
/// contents) rather than a path walk, an open and a close. A missing file is looked for
/// again only every `RETRY_MISSING_TICKS`. A file not read during a tick is forgotten at
/// its end (its unit has gone).
struct OpenFiles {
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

/// How a sample names the version a value was read from.
fn source<T>(read: Option<(T, Version)>) -> Option<(T, &'static str)> {
    read.map(|(value, version)| {
        let source = match version {
            Version::V1 => CGROUP_V1,
            Version::V2 => CGROUP_V2,
        };
        (value, source)
    })
}

impl Files {
    pub fn new(mounts: Mounts) -> Files {
        Files {
            mounts,
            open: OpenFiles {
                known: HashMap::new(),
                max_open: max_open(),
                tick: 0,
                buf: Vec::with_capacity(4096),
            },
        }
    }

    /// Forgets the files the tick now ending did not ask for, and starts the next.
    pub fn end_tick(&mut self) {
        let open = &mut self.open;
        let tick = open.tick;
        open.known.retain(|_, known| known.tick == tick);
        open.tick += 1;
    }

    /// CPU time used, in nanoseconds.
    pub fn cpu_usage_nsec(&mut self, cg: &str) -> Option<(u64, &'static str)> {
        source(self.mounts.cpu_usage_nsec(&mut self.open, cg))
    }

    /// Memory charged now.
    pub fn memory_current(&mut self, cg: &str) -> Option<(u64, &'static str)> {
        source(self.mounts.memory_current(&mut self.open, cg))
    }

    /// The high-water mark of the memory charged.
    pub fn memory_peak(&mut self, cg: &str) -> Option<(u64, &'static str)> {
        source(self.mounts.memory_peak(&mut self.open, cg))
    }

    pub fn tasks(&mut self, cg: &str) -> Option<(u64, &'static str)> {
        source(self.mounts.tasks(&mut self.open, cg))
    }

    /// Bytes read and written.
    pub fn io_bytes(&mut self, cg: &str) -> Option<((u64, u64), &'static str)> {
        source(self.mounts.io_bytes(&mut self.open, cg))
    }
}

impl ReadFile for OpenFiles {
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
        let mut files = Files::new(pids_mounted_at(root.path()));
        fs::write(cg.join("pids.current"), "3\n").expect("write");
        assert_eq!(files.tasks("/drover.slice/s.scope"), Some((3, CGROUP_V1)));
        fs::write(cg.join("pids.current"), "12\n").expect("write");
        assert_eq!(files.tasks("/drover.slice/s.scope"), Some((12, CGROUP_V1)));
        assert_eq!(files.open.known.len(), 1);
        files.end_tick();
        assert_eq!(files.open.known.len(), 1, "read in the tick that ended");
        files.end_tick();
        assert!(files.open.known.is_empty(), "not read for a whole tick");
        fs::remove_dir_all(&cg).expect("rmdir");
        assert_eq!(files.tasks("/drover.slice/s.scope"), None);
    }

    /// A missing file is not looked for each tick, but is found once it appears.
    #[test]
    fn looks_for_missing_files_again_later() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut files = Files::new(pids_mounted_at(root.path()));
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

    /// On a v2 host every value comes from the unified tree.
    #[test]
    fn reads_the_unified_tree_of_a_v2_host() {
        let root = tempfile::tempdir().expect("tempdir");
        let cg = root.path().join("drover.slice/s.scope");
        fs::create_dir_all(&cg).expect("mkdir");
        for (file, text) in [
            ("memory.current", "10\n"),
            ("memory.peak", "20\n"),
            ("pids.current", "2\n"),
            ("cpu.stat", "usage_usec 3\nuser_usec 2\n"),
            ("io.stat", "8:0 rbytes=5 wbytes=6 rios=1\n"),
        ] {
            fs::write(cg.join(file), text).expect("write");
        }
        let mut files = Files::new(Mounts::parse(&format!(
            "29 23 0:26 / {} rw shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
            root.path().display()
        )));
        let s = "/drover.slice/s.scope";
        assert_eq!(files.memory_current(s), Some((10, CGROUP_V2)));
        assert_eq!(files.memory_peak(s), Some((20, CGROUP_V2)));
        assert_eq!(files.tasks(s), Some((2, CGROUP_V2)));
        assert_eq!(files.cpu_usage_nsec(s), Some((3000, CGROUP_V2)));
        assert_eq!(files.io_bytes(s), Some(((5, 6), CGROUP_V2)));
    }

    /// Only a v1 pids hierarchy, mounted at `root`.
    fn pids_mounted_at(root: &std::path::Path) -> Mounts {
        Mounts::parse(&format!(
            "33 25 0:29 / {} rw,relatime - cgroup cgroup rw,pids\n",
            root.display()
        ))
    }
}
