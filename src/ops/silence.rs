//! `Silence` (operator, audited like an action, refusals included): a rule's or a run's
//! alerts are stored but not sent for a while; `Silences` (viewer): those in force, or all.

use super::types::SilenceArgs;
use super::{Caller, Ops, Result};
use crate::alerts::SilenceRequest;
use crate::auth::Role;
use crate::model::Silence;

impl Ops {
    pub fn silence(&self, caller: &Caller, args: SilenceArgs) -> Result<Silence> {
        let input = args.check();
        let request = self.action_request(caller, args.target, "silence", false, input)?;
        Ok(self.alerts.silence(&SilenceRequest {
            target: request.run,
            duration: args.duration,
            reason: args.reason,
            by: request.by,
        })?)
    }

    /// Silences in force (every silence with `all`), newest first.
    pub fn silences(&self, caller: &Caller, all: bool) -> Result<Vec<Silence>> {
        self.authorise(caller, Role::Viewer, "list silences")?;
        Ok(self.alerts.silences(all)?)
    }
}
