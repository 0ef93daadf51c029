//! Reading runs (viewer): every run (`List`, for `drover ps`), a page of them with filters
//! (the HTTP API's list) and one with its steps (`Get`, for `drover show`, and the steps
//! `drover logs` prints).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::types::{RunsArgs, check_run_id};
use super::{Caller, InputError, Ops, Result};
use crate::auth::Role;
use crate::engine::RunQuery;
use crate::model::{Run, RunPage, Timestamp};

impl Ops {
    /// Every run, newest first.
    pub fn list(&self, caller: &Caller) -> Result<Vec<Run>> {
        self.authorise(caller, Role::Viewer, "list runs")?;
        Ok(self.engine.runs()?)
    }

    /// A page of the runs `args` filters, newest first, and the cursor of the next page
    /// (none when this one is the last). The store reads the page alone, never every run.
    pub fn runs_page(&self, caller: &Caller, args: &RunsArgs) -> Result<RunPage> {
        self.authorise(caller, Role::Viewer, "list runs")?;
        let limit = args.check()?;
        let after = args.cursor.as_deref().map(decode_cursor).transpose()?;
        // One more than asked: whether it comes tells whether a next page exists.
        let mut runs = self.engine.runs_page(&RunQuery {
            states: &args.states,
            workflow: args.workflow.as_deref(),
            after: after.as_ref().map(|(at, id)| (*at, id.as_str())),
            limit: limit + 1,
        })?;
        let next_cursor = if runs.len() > limit {
            runs.truncate(limit);
            runs.last().map(encode_cursor)
        } else {
            None
        };
        Ok(RunPage { runs, next_cursor })
    }

    /// One run with its steps.
    pub fn get(&self, caller: &Caller, run: &str) -> Result<Run> {
        self.authorise(caller, Role::Viewer, "read a run")?;
        check_run_id(run)?;
        Ok(self.engine.run(run)?)
    }
}

/// Where a page ended: the last run's creation time and id. Opaque to callers (base64), so
/// its form may change without breaking them.
fn encode_cursor(last: &Run) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}.{}", last.created_at.0, last.id))
}

fn decode_cursor(cursor: &str) -> std::result::Result<(Timestamp, String), InputError> {
    let invalid = || InputError::Invalid {
        field: "the cursor",
        reason: "is not one this agent handed out: pass a page's next_cursor as it is".into(),
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (at, id) = text.split_once('.').ok_or_else(invalid)?;
    let at = at.parse::<i64>().map_err(|_| invalid())?;
    check_run_id(id)?;
    Ok((Timestamp(at), id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_anything_else_is_refused() {
        let run: Run = serde_json::from_value(serde_json::json!({
            "id": "abc123", "workflow": "w", "workflow_file": "/w.toml", "state": "pending",
            "params": {}, "worktree": null, "requested_by": "uid 0 (root) via dbus",
            "created_at": "2026-12-02T10:00:00.123Z", "started_at": null, "ended_at": null,
            "error": null, "steps": []
        }))
        .expect("a run");
        let cursor = encode_cursor(&run);
        assert_eq!(
            decode_cursor(&cursor),
            Ok((run.created_at, "abc123".to_owned()))
        );
        for bad in ["", "!!", "bm9wZQ", &URL_SAFE_NO_PAD.encode("x.abc")] {
            let err = decode_cursor(bad).unwrap_err();
            assert!(
                err.to_string().starts_with("the cursor is not one"),
                "{bad}: {err}"
            );
        }
    }
}
