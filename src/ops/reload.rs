//! `Reload` (admin; SIGHUP too): the agent re-reads its config file and puts what it can
//! in force. Every reload is audited, refusals included.

use super::{Caller, Ops, Result};
use crate::auth::Role;
use crate::model::ReloadOutcome;

impl Ops {
    pub fn reload(&self, caller: &Caller) -> Result<ReloadOutcome> {
        let by = caller.requester();
        self.admit(
            caller,
            Role::Admin,
            "reload the configuration",
            Ok(()),
            |why| {
                self.reloader.refuse(&by, why);
                Ok(())
            },
        )?;
        Ok(self.reloader.reload(&by)?)
    }
}
