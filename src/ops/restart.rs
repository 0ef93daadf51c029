//! `Restart` (operator, audited; protected workflows need a confirmation): an ended run
//! goes on from a checkpoint.

use super::types::RestartArgs;
use super::{Caller, Ops, Result};
use crate::model::ActionRecord;

impl Ops {
    /// Returns the audit record once the run is running again.
    pub async fn restart(&self, caller: &Caller, args: RestartArgs) -> Result<ActionRecord> {
        let request = self.action_request(caller, args.run, "restart", args.confirm)?;
        Ok(self.engine.restart(&request, args.from).await?)
    }
}
