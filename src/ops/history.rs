//! `History` (viewer): per day, a workflow's (or every workflow's) runs, outcomes,
//! durations, cost, failure classes, kills and restarts.

use std::time::Duration;

use super::types::HistoryArgs;
use super::{Caller, Ops, Result};
use crate::auth::Role;
use crate::model::History;
use crate::model::Timestamp;

/// The window when the caller names none.
const DEFAULT_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

impl Ops {
    pub fn history(&self, caller: &Caller, args: &HistoryArgs) -> Result<History> {
        self.authorise(caller, Role::Viewer, "read the history")?;
        let window = args.since.unwrap_or(DEFAULT_WINDOW);
        let millis = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let since = Timestamp(Timestamp::now().0.saturating_sub(millis));
        Ok(self.engine.history(args.workflow.as_deref(), since)?)
    }
}
