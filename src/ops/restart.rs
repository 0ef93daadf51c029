//! `Restart` (operator, audited; protected workflows need a confirmation): an ended run
//! goes on from a checkpoint.

use super::types::{RestartArgs, check_run_id};
use super::{Caller, Ops, Result};
use crate::model::ActionRecord;

impl Ops {
    /// Returns the audit record once the run is running again.
    pub async fn restart(&self, caller: &Caller, args: RestartArgs) -> Result<ActionRecord> {
        let input = check_run_id(&args.run);
        let request = self.action_request(caller, args.run, "restart", args.confirm, input)?;
        Ok(self.engine.restart(&request, args.from).await?)
    }
}
