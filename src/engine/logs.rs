//! Step logs read for the doors (`ops::logs`): a chunk of one attempt's log, the file found
//! from what the state DB records for the run, step and attempt — never from a path a
//! caller gives — so a viewer reads logs the agent's private state directory holds.

use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use nix::libc;

use super::step::AttemptFiles;
use super::{Engine, EngineError, Result, blocking};
use crate::model::{LogChunk, LogMeta, StepState};

/// Which chunk of which attempt's log is wanted.
#[derive(Debug, Clone)]
pub struct LogRequest {
    pub run: String,
    pub step: String,
    /// 0: the step's latest attempt.
    pub attempt: u32,
    pub offset: u64,
    /// At most this many bytes are read (the caller has bounded it).
    pub max: usize,
}

impl Engine {
    /// A chunk of a step attempt's log. The state DB and the file are read off the async
    /// runtime. A log not written yet, or an offset at or past its end, is an empty chunk.
    pub async fn log_chunk(&self, request: LogRequest) -> Result<LogChunk> {
        let engine = self.clone();
        let state_dir = self.state_dir().to_owned();
        blocking(&state_dir, move || engine.read_log_chunk(&request)).await
    }

    fn read_log_chunk(&self, request: &LogRequest) -> Result<LogChunk> {
        // The states first: when they say the attempt ended, the read below sees all the
        // shim wrote (it writes the log before the exit file the engine learns the end from).
        let run = self.run(&request.run)?;
        let Some(step) = run.steps.iter().find(|s| s.name == request.step) else {
            return Err(EngineError::NoSuchStep {
                run: run.id,
                step: request.step.clone(),
                steps: run
                    .steps
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let latest = step.attempt;
        let (attempt, state, log_cut) = match request.attempt {
            0 => (latest, step.state, step.log_cut.clone()),
            n if n == latest => (n, step.state, step.log_cut.clone()),
            n => {
                let earlier = if n < latest {
                    self.inner.store().attempt(&run.id, step.index, n)?
                } else {
                    None
                };
                let earlier = earlier.ok_or_else(|| EngineError::NoSuchAttempt {
                    run: run.id.clone(),
                    step: step.name.clone(),
                    attempt: n,
                    latest,
                })?;
                (n, earlier.state, earlier.log_cut)
            }
        };
        let (data, size) = if attempt == 0 {
            (Vec::new(), 0)
        } else {
            let log = AttemptFiles::of(&self.inner, &run.id, &step.name, attempt).log;
            read_at(&log, request.offset, request.max)
                .map_err(|source| EngineError::Io { path: log, source })?
        };
        let run_ended = run.state.is_terminal();
        Ok(LogChunk {
            meta: LogMeta {
                run: run.id.clone(),
                step: step.name.clone(),
                attempt,
                latest_attempt: latest,
                state,
                run_state: run.state,
                offset: request.offset,
                // Data is read only below the file's size, so this cannot overflow.
                next_offset: request.offset + data.len() as u64,
                size,
                more: attempt == latest && !state.is_terminal() && !run_ended,
                step_done: run_ended || step.state == StepState::Succeeded,
                log_cut,
            },
            data,
        })
    }
}

/// Up to `max` bytes of the file at `offset`, and the file's size; nothing (size 0) while
/// the file does not exist. Never waits on what is not a regular file, never follows a
/// link.
fn read_at(path: &Path, offset: u64, max: usize) -> io::Result<(Vec<u8>, u64)> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    let size = meta.len();
    let want = usize::try_from(size.saturating_sub(offset)).map_or(max, |left| left.min(max));
    let mut data = vec![0; want];
    let mut filled = 0;
    while filled < want {
        match file.read_at(&mut data[filled..], offset + filled as u64) {
            // The file was cut short since its size was read.
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    data.truncate(filled);
    Ok((data, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_bounded_and_an_offset_past_the_end_or_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("build.1.log");
        assert_eq!(read_at(&log, 0, 10).unwrap(), (Vec::new(), 0));
        std::fs::write(&log, b"hello\nworld\n").unwrap();
        assert_eq!(read_at(&log, 0, 5).unwrap(), (b"hello".to_vec(), 12));
        assert_eq!(read_at(&log, 6, 100).unwrap(), (b"world\n".to_vec(), 12));
        assert_eq!(read_at(&log, 12, 100).unwrap(), (Vec::new(), 12));
        assert_eq!(read_at(&log, u64::MAX, 100).unwrap(), (Vec::new(), 12));
        assert_eq!(read_at(&log, 0, 0).unwrap(), (Vec::new(), 12));
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&log, &link).unwrap();
        assert!(read_at(&link, 0, 10).is_err(), "a link was followed");
        nix::unistd::mkfifo(
            &dir.path().join("fifo.log"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert!(read_at(&dir.path().join("fifo.log"), 0, 10).is_err());
    }
}
