//! `Run`: start a run of a workflow file (operator). The run runs as the caller; a
//! workflow's `user = "NAME"` runs it as that user instead, which only an admin may ask.
//! The file is read with the caller's rights.

use super::refusals::Audited;
use super::types::RunArgs;
use super::{Caller, Ops, OpsError, Result};
use crate::auth::Role;
use crate::credentials::Account;
use crate::engine::{EngineError, Submission};

impl Ops {
    /// Starts a run and returns its id. The file reading and the checks run off the async
    /// runtime: a slow disk holds up this call only.
    pub async fn run(&self, caller: &Caller, args: RunArgs) -> Result<String> {
        self.admit_run(caller, &args)?;
        let (ops, caller) = (self.clone(), caller.clone());
        let path = args.workflow_path.clone();
        tokio::task::spawn_blocking(move || ops.submit(&caller, args))
            .await
            .map_err(|e| {
                OpsError::Engine(EngineError::Io {
                    path: path.into(),
                    source: std::io::Error::other(e),
                })
            })?
    }

    fn submit(&self, caller: &Caller, args: RunArgs) -> Result<String> {
        let Some(uid) = caller.uid() else {
            return Err(OpsError::InvalidState(format!(
                "{caller} is not a user: only a user's request can start a run"
            )));
        };
        let submitter = Account::of_uid(uid).map_err(EngineError::from)?;
        let workflow = self.engine.read_workflow(&args.workflow_path, &submitter)?;
        let account = match &workflow.user {
            Some(name) => {
                let named = Account::of_name(name).map_err(EngineError::from)?;
                if named.uid != submitter.uid {
                    let audited = Audited {
                        action: "run",
                        run: "",
                        about: &args.workflow_path,
                    };
                    let asks = "run a workflow as another user";
                    self.admit_action(caller, Role::Admin, asks, audited, Ok(()))?;
                }
                named
            }
            None => submitter,
        };
        Ok(self.engine.submit(Submission {
            workflow_file: args.workflow_path,
            workflow,
            params: args.params,
            requested_by: caller.to_string(),
            account,
        })?)
    }
}
