//! `Kill` (operator; protected workflows need a confirmation): the engine's kill, with
//! the request and any refusal in the kill audit trail.

use super::refusals::KEPT;
use super::types::KillArgs;
use super::{Caller, Ops, Result};
use crate::auth::Role;
use crate::engine::KillRequest;
use crate::model::KillRecord;
use crate::quantity::truncated;

impl Ops {
    /// Kills a run; returns the outcome once the run is `killed` (or the kill failed).
    pub async fn kill(&self, caller: &Caller, args: KillArgs) -> Result<KillRecord> {
        let input = args.check();
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
        self.admit(caller, Role::Operator, "kill a run", input, |why| {
            // The record keeps the caller's strings cut short.
            let kept = KillRequest {
                run: truncated(&request.run, KEPT),
                reason: truncated(&request.reason, KEPT),
                by: request.by.clone(),
                grace: None,
                confirm: request.confirm,
            };
            Ok(self.engine.refuse_kill(&kept, why)?)
        })?;
        Ok(self.engine.kill(request).await?)
    }
}
