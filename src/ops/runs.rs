//! Reading runs (viewer): every run (`List`, for `drover ps`) and one with its steps
//! (`Get`, for `drover show`, and the steps `drover logs` prints).

use super::types::check_run_id;
use super::{Caller, Ops, Result};
use crate::auth::Role;
use crate::model::Run;

impl Ops {
    /// Every run, newest first.
    pub fn list(&self, caller: &Caller) -> Result<Vec<Run>> {
        self.authorise(caller, Role::Viewer, "list runs")?;
        Ok(self.engine.runs()?)
    }

    /// One run with its steps.
    pub fn get(&self, caller: &Caller, run: &str) -> Result<Run> {
        self.authorise(caller, Role::Viewer, "read a run")?;
        check_run_id(run)?;
        Ok(self.engine.run(run)?)
    }
}
