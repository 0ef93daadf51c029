//! `EnterCritical` / `LeaveCritical` (operator): spans a kill waits for, up to the
//! workflow's `critical_max` (`drover critical -- CMD` opens one around CMD).

use super::types::CriticalArgs;
use super::{Caller, Ops, Result};
use crate::auth::Role;

impl Ops {
    pub fn enter_critical(&self, caller: &Caller, args: &CriticalArgs) -> Result<()> {
        self.authorise(caller, Role::Operator, "open a critical section")?;
        Ok(self
            .engine
            .enter_critical(&args.run, &args.label, &caller.to_string())?)
    }

    pub fn leave_critical(&self, caller: &Caller, args: &CriticalArgs) -> Result<()> {
        self.authorise(caller, Role::Operator, "close a critical section")?;
        Ok(self.engine.leave_critical(&args.run, &args.label)?)
    }
}
