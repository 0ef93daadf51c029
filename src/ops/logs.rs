//! `Logs` (viewer): a chunk of one step attempt's log. The logs sit in the agent's private
//! state directory, so a viewer reads them through the agent, never by path; the file is
//! the one the engine records for the run, step and attempt.

use super::types::LogsArgs;
use super::{Caller, Ops, Result};
use crate::auth::Role;
use crate::engine::LogRequest;
use crate::model::LogChunk;

impl Ops {
    /// Up to `args.max` bytes of the log from `args.offset`, with where they stand: the
    /// next offset, the file's size, and whether more can come (for a follower).
    pub async fn logs(&self, caller: &Caller, args: LogsArgs) -> Result<LogChunk> {
        self.authorise(caller, Role::Viewer, "read step logs")?;
        let max = args.check()?;
        Ok(self
            .engine
            .log_chunk(LogRequest {
                run: args.run,
                step: args.step,
                attempt: args.attempt,
                offset: args.offset,
                max,
            })
            .await?)
    }
}
