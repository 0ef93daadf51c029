//! Follows a step's log file while the shim writes it: how much the step has written and
//! when it last wrote. A re-adopted step is followed again from the start of its log.

use crate::model::{StepOutput, Timestamp};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The log of one running attempt and what has been counted of it so far.
pub(super) struct Follower {
    log: PathBuf,
    offset: u64,
    pub(super) output: Arc<Mutex<StepOutput>>,
}

impl Follower {
    pub(super) fn new(log: PathBuf) -> Follower {
        Follower {
            log,
            offset: 0,
            output: Arc::default(),
        }
    }

    /// Counts what the log gained since the last call.
    pub(super) fn catch_up(&mut self) {
        let Ok(mut file) = File::open(&self.log) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        let Ok(read) = file.read_to_end(&mut buf) else {
            return;
        };
        if read == 0 {
            return;
        }
        self.offset += read as u64;
        let mut output = self.output.lock().unwrap_or_else(|p| p.into_inner());
        output.bytes += read as u64;
        output.lines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        // The file's own time, so a re-adopted step is not mistaken for a chatty one.
        output.last_output_at = modified(&self.log).or(Some(Timestamp::now()));
    }
}

fn modified(path: &Path) -> Option<Timestamp> {
    let time = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
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
