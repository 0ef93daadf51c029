//! The workflow as a whole: its name, workspace, tables and the list of steps.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::{Ctx, workflow_name_problem};
use crate::spec::SpecError;
use crate::spec::raw::RawWorkflow;
use crate::spec::types::{KillPolicy, Limits, Requirements, RetryPolicy, Workflow};

/// Longer than any name `useradd` makes (32 bytes), short enough to quote in an error.
const MAX_USER_NAME: usize = 64;

impl Ctx<'_> {
    /// The whole workflow: its top-level keys, then each step.
    pub(in crate::spec) fn validate(&self, raw: RawWorkflow) -> Result<Workflow, SpecError> {
        let name = match raw.name {
            Some(n) => {
                self.check_workflow_name(&n)?;
                n.into_inner()
            }
            None => return Err(self.err_at(0, "missing required key `name`")),
        };

        let workspace = match raw.workspace {
            Some(ws) => Some(self.resolve_workspace(&ws)?),
            None => None,
        };

        let user = match raw.user {
            Some(user) => Some(self.check_user_name(user)?),
            None => None,
        };

        let limits = match raw.limits {
            Some(l) => self.validate_limits(l)?,
            None => Limits::default(),
        };

        let kill = match raw.kill {
            Some(k) => self.validate_kill(k)?,
            None => KillPolicy::default(),
        };

        let retry = match raw.retry {
            Some(r) => self.validate_retry(&RetryPolicy::default(), r, "retry", "")?,
            None => RetryPolicy::default(),
        };

        let requires = match raw.requires {
            Some(r) => self.validate_requires(r, "requires", "")?,
            None => Requirements::default(),
        };

        let Some(raw_steps) = raw.step else {
            return Err(self.err_at(
                0,
                "workflow has no steps: add at least one [[step]] with `name` and `run`",
            ));
        };
        if raw_steps.get_ref().is_empty() {
            return Err(self.err(
                &raw_steps.span(),
                "workflow has no steps: add at least one [[step]] with `name` and `run`",
            ));
        }
        let mut steps = Vec::with_capacity(raw_steps.get_ref().len());
        // name -> span of its first definition, for the duplicate message.
        let mut seen: BTreeMap<String, Range<usize>> = BTreeMap::new();
        for (index, raw_step) in raw_steps.into_inner().into_iter().enumerate() {
            let step = self.validate_step(index, raw_step, &retry, &mut seen)?;
            steps.push(step);
        }

        Ok(Workflow {
            name,
            workspace,
            user,
            limits,
            protected: raw.protected.unwrap_or(false),
            kill,
            retry,
            requires,
            steps,
        })
    }

    /// A user name as the password database could hold it: the lookup happens at submit.
    fn check_user_name(&self, user: Spanned<String>) -> Result<String, SpecError> {
        let value = user.get_ref();
        if value.is_empty() || value.len() > MAX_USER_NAME {
            return Err(self.err(
                &user.span(),
                format!("`user` must be a user name of 1 to {MAX_USER_NAME} bytes"),
            ));
        }
        if value
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == ':' || c == '/')
        {
            return Err(self.err(
                &user.span(),
                "`user` must be a user name: no spaces, control characters, `:` or `/`",
            ));
        }
        Ok(user.into_inner())
    }

    fn check_workflow_name(&self, n: &Spanned<String>) -> Result<(), SpecError> {
        let value = n.get_ref();
        if value.is_empty() {
            return Err(self.err(&n.span(), "workflow `name` must not be empty"));
        }
        if let Some(problem) = workflow_name_problem(value) {
            return Err(self.err(&n.span(), problem));
        }
        Ok(())
    }

    fn resolve_workspace(&self, ws: &Spanned<String>) -> Result<PathBuf, SpecError> {
        let raw = ws.get_ref();
        if raw.trim().is_empty() {
            return Err(self.err(&ws.span(), "`workspace` must not be empty"));
        }
        if raw.contains('\0') {
            return Err(self.err(
                &ws.span(),
                "`workspace` contains a NUL byte, which no path can hold",
            ));
        }
        let given = Path::new(raw);
        let joined = if given.is_absolute() {
            given.to_path_buf()
        } else {
            // Relative to the workflow file, not to wherever drover was started.
            self.origin
                .parent()
                .unwrap_or_else(|| Path::new(""))
                .join(given)
        };
        // `absolute` is lexical: `..` is kept because resolving it without the
        // filesystem is wrong across symlinks; the engine canonicalises later.
        let abs = std::path::absolute(&joined).map_err(|e| {
            self.err(
                &ws.span(),
                format!("cannot make workspace {raw:?} absolute: {e}"),
            )
        })?;
        // The workflow is stored as JSON, which cannot hold non-UTF-8 paths.
        if abs.to_str().is_none() {
            return Err(self.err(
                &ws.span(),
                format!(
                    "workspace resolves to a path that is not valid UTF-8: {}",
                    abs.display()
                ),
            ));
        }
        Ok(abs)
    }
}
