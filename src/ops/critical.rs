//! `EnterCritical` / `LeaveCritical` (operator; refusals audited): spans a kill waits for,
//! up to the workflow's `critical_max` (`drover critical -- CMD` opens one around CMD).

use super::refusals::Audited;
use super::types::CriticalArgs;
use super::{Caller, Ops, Result};
use crate::auth::Role;

impl Ops {
    pub fn enter_critical(&self, caller: &Caller, args: &CriticalArgs) -> Result<()> {
        self.admit_critical(caller, args, "open a critical section", "enter-critical")?;
        Ok(self
            .engine
            .enter_critical(&args.run, &args.label, &caller.to_string())?)
    }

    pub fn leave_critical(&self, caller: &Caller, args: &CriticalArgs) -> Result<()> {
        self.admit_critical(caller, args, "close a critical section", "leave-critical")?;
        Ok(self.engine.leave_critical(&args.run, &args.label)?)
    }

    fn admit_critical(
        &self,
        caller: &Caller,
        args: &CriticalArgs,
        asks: &'static str,
        action: &'static str,
    ) -> Result<()> {
        let audited = Audited {
            action,
            run: &args.run,
            about: &args.label,
        };
        self.admit_action(caller, Role::Operator, asks, audited, args.check())
    }
}
