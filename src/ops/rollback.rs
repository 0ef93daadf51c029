//! `Rollback` (operator, audited; protected workflows need a confirmation): an ended
//! run's worktree goes back to a checkpoint, and nothing starts.

use super::types::{RollbackArgs, check_run_id};
use super::{Caller, Ops, Result};
use crate::model::ActionRecord;

impl Ops {
    pub async fn rollback(&self, caller: &Caller, args: RollbackArgs) -> Result<ActionRecord> {
        let input = check_run_id(&args.run);
        let request = self.action_request(caller, args.run, "rollback", args.confirm, input)?;
        Ok(self.engine.rollback(&request, args.to).await?)
    }
}
