//! The audit trails (viewer): kills (`Audit`) and the other actions asked for — restarts,
//! rollbacks, checkpoints, silences, reloads (`Actions`) — of one run or of all.

use super::{Caller, Ops, Result};
use crate::auth::Role;
use crate::model::{ActionRecord, KillRecord};

impl Ops {
    /// Every kill (requested, refused, done, seen from outside), oldest first.
    pub fn kills(&self, caller: &Caller, run: Option<&str>) -> Result<Vec<KillRecord>> {
        self.authorise(caller, Role::Viewer, "read the audit trail")?;
        Ok(self.engine.kills(run)?)
    }

    /// Every other action asked for, refusals included, oldest first.
    pub fn actions(&self, caller: &Caller, run: Option<&str>) -> Result<Vec<ActionRecord>> {
        self.authorise(caller, Role::Viewer, "read the audit trail")?;
        Ok(self.engine.actions(run)?)
    }
}
