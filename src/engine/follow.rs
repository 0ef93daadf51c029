//! Follows a step's log file while the shim writes it: how much the step has written and
//! when it last wrote. A re-adopted step is followed again from the start of its log.

use crate::model::{StepOutput, Timestamp};
use crate::sync::lock;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The log of one running attempt and what has been counted of it so far. The file stays
/// open between calls (the shim only appends to it), so a call is a read and an fstat.
pub(super) struct Follower {
    log: PathBuf,
    file: Option<File>,
    offset: u64,
    pub(super) output: Arc<Mutex<StepOutput>>,
}

impl Follower {
    pub(super) fn new(log: PathBuf) -> Follower {
        Follower {
            log,
            file: None,
            offset: 0,
            output: Arc::default(),
        }
    }

    /// Counts what the log gained since the last call.
    pub(super) fn catch_up(&mut self) {
        if self.file.is_none() {
            self.file = File::open(&self.log).ok();
        }
        let Some(file) = &self.file else {
            return;
        };
        let mut chunk = [0u8; 16 * 1024];
        let (mut read, mut lines) = (0u64, 0u64);
        while let Ok(n) = file.read_at(&mut chunk, self.offset + read) {
            if n == 0 {
                break;
            }
            read += n as u64;
            lines += chunk[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        }
        if read == 0 {
            return;
        }
        self.offset += read;
        let mut output = lock(&self.output);
        output.bytes += read;
        output.lines += lines;
        // The file's own time, so a re-adopted step is not mistaken for a chatty one.
        output.last_output_at = modified(file).or(Some(Timestamp::now()));
    }
}

fn modified(file: &File) -> Option<Timestamp> {
    let time = file.metadata().and_then(|m| m.modified()).ok()?;
    let millis = time.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    Some(Timestamp(i64::try_from(millis).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bytes_and_lines_as_the_log_grows() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("s.1.log");
        let mut follower = Follower::new(log.clone());
        follower.catch_up();
        assert_eq!(
            *follower.output.lock().unwrap(),
            StepOutput::default(),
            "no log yet"
        );
        std::fs::write(&log, "one\ntwo\n").unwrap();
        follower.catch_up();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"three\n"))
            .unwrap();
        follower.catch_up();
        let output = follower.output.lock().unwrap().clone();
        assert_eq!((output.bytes, output.lines), (14, 3));
        assert!(output.last_output_at.is_some());
    }
}
