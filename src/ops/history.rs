//! `History` (viewer): per day, a workflow's (or every workflow's) runs, outcomes,
//! durations, cost, failure classes, kills and restarts.

use std::time::Duration;

use super::error::InputError;
use super::types::{HistoryArgs, check_len, limits};
use super::{Caller, Ops, Result};
use crate::auth::Role;
use crate::model::History;
use crate::model::Timestamp;

/// The window when the caller names none.
const DEFAULT_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest window: a year of days, so a reply stays near 100 KiB (a day is one
/// record), far below what a D-Bus message may carry.
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);
const MAX_WINDOW_TEXT: &str = "366 days (366d)";

impl Ops {
    pub fn history(&self, caller: &Caller, args: &HistoryArgs) -> Result<History> {
        self.authorise(caller, Role::Viewer, "read the history")?;
        if let Some(workflow) = &args.workflow {
            check_len("the workflow name", workflow, limits::WORKFLOW)?;
        }
        let window = args.since.unwrap_or(DEFAULT_WINDOW);
        if window > MAX_WINDOW {
            return Err(InputError::WindowTooLong {
                field: "the history window",
                max: MAX_WINDOW_TEXT,
            }
            .into());
        }
        let millis = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let since = Timestamp(Timestamp::now().0.saturating_sub(millis));
        Ok(self.engine.history(args.workflow.as_deref(), since)?)
    }
}
