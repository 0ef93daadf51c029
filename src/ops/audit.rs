//! The audit trails (viewer): kills (`Audit`) and the other actions asked for — restarts,
//! rollbacks, checkpoints, silences, reloads (`Actions`) — of one run or of all.

use super::types::{check_len, check_run_id, limits};
use super::{Caller, Ops, Result};
use crate::auth::Role;
use crate::model::{ActionRecord, KillRecord};

impl Ops {
    /// Every kill (requested, refused, done, seen from outside), oldest first.
    pub fn kills(&self, caller: &Caller, run: Option<&str>) -> Result<Vec<KillRecord>> {
        self.authorise(caller, Role::Viewer, "read the audit trail")?;
        run.map_or(Ok(()), check_run_id)?;
        Ok(self.engine.kills(run)?)
    }

    /// Every other action asked for, refusals included, oldest first.
    pub fn actions(&self, caller: &Caller, run: Option<&str>) -> Result<Vec<ActionRecord>> {
        self.authorise(caller, Role::Viewer, "read the audit trail")?;
        // A silence's record names its target (a rule, or a run) where a run id would be.
        run.map_or(Ok(()), |r| check_len("the run or target", r, limits::RULE))?;
        Ok(self.engine.actions(run)?)
    }
}
