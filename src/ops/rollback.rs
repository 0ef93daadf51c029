//! `Rollback` (operator, audited; protected workflows need a confirmation): an ended
//! run's worktree goes back to a checkpoint, and nothing starts.

use super::types::RollbackArgs;
use super::{Caller, Ops, Result};
use crate::model::ActionRecord;

impl Ops {
    pub async fn rollback(&self, caller: &Caller, args: RollbackArgs) -> Result<ActionRecord> {
        let request = self.action_request(caller, args.run, "rollback", args.confirm)?;
        Ok(self.engine.rollback(&request, args.to).await?)
    }
}
