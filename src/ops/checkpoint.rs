//! `Checkpoint` (operator, audited): snapshot a run's worktree and state now;
//! `Checkpoints` (viewer): a run's checkpoints.

use super::types::{CheckpointArgs, check_run_id};
use super::{Caller, Ops, Result};
use crate::auth::Role;
use crate::model::CheckpointRecord;

impl Ops {
    pub async fn checkpoint(
        &self,
        caller: &Caller,
        args: CheckpointArgs,
    ) -> Result<CheckpointRecord> {
        let input = args.check();
        let request = self.action_request(caller, args.run, "checkpoint", false, input)?;
        let label = Some(args.label.as_str()).filter(|l| !l.trim().is_empty());
        Ok(self.engine.checkpoint(&request, label).await?)
    }

    /// A run's checkpoints, oldest first.
    pub fn checkpoints(&self, caller: &Caller, run: &str) -> Result<Vec<CheckpointRecord>> {
        self.authorise(caller, Role::Viewer, "list checkpoints")?;
        check_run_id(run)?;
        Ok(self.engine.checkpoints(run)?)
    }
}
