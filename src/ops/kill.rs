//! `Kill` (operator; protected workflows need a confirmation): the engine's kill, with
//! the request and any refusal in the kill audit trail.

use super::types::KillArgs;
use super::{Caller, Ops, Result};
use crate::auth::Role;
use crate::engine::KillRequest;
use crate::model::KillRecord;

impl Ops {
    /// Kills a run; returns the outcome once the run is `killed` (or the kill failed).
    pub async fn kill(&self, caller: &Caller, args: KillArgs) -> Result<KillRecord> {
        let request = KillRequest {
            run: args.run,
            reason: if args.reason.trim().is_empty() {
                "no reason given".to_owned()
            } else {
                args.reason
            },
            by: caller.requester(),
            grace: args.grace,
            confirm: args.confirm,
        };
        if let Err(denied) = caller.require(Role::Operator, "kill a run") {
            self.engine.refuse_kill(&request, &denied.to_string())?;
            return Err(denied.into());
        }
        Ok(self.engine.kill(request).await?)
    }
}
