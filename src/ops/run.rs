//! `Run`: start a run of a workflow file (operator).

use super::types::RunArgs;
use super::{Caller, Ops, Result};

impl Ops {
    /// Starts a run and returns its id.
    pub fn run(&self, caller: &Caller, args: RunArgs) -> Result<String> {
        self.admit_run(caller, &args)?;
        Ok(self
            .engine
            .submit(&args.workflow_path, args.params, &caller.to_string())?)
    }
}
