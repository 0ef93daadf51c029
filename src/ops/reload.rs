//! `Reload` (admin; SIGHUP too): the agent re-reads its config file and puts what it can
//! in force. Every reload is audited, refusals included.

use super::{Caller, Ops, Result};
use crate::auth::Role;
use crate::model::ReloadOutcome;

impl Ops {
    pub fn reload(&self, caller: &Caller) -> Result<ReloadOutcome> {
        let by = caller.requester();
        if let Err(denied) = caller.require(Role::Admin, "reload the configuration") {
            self.reloader.refuse(&by, &denied.to_string());
            return Err(denied.into());
        }
        Ok(self.reloader.reload(&by)?)
    }
}
