//! `[limits]` (memory, CPU, tasks, timeout) and `[kill]` (grace, critical wait, budget).

use super::Ctx;
use crate::quantity::{parse_percent, parse_size};
use crate::spec::SpecError;
use crate::spec::raw::{IntOrStr, RawKill, RawLimits};
use crate::spec::types::{KillPolicy, Limits};

impl Ctx<'_> {
    pub(super) fn validate_limits(&self, raw: RawLimits) -> Result<Limits, SpecError> {
        let memory_max = match raw.memory_max {
            None => None,
            Some(v) => {
                let span = v.span();
                let bytes = match &v.get_ref().0 {
                    IntOrStr::Int(n) => u64::try_from(*n).map_err(|_| {
                        self.err(&span, format!("`memory_max` must not be negative, got {n}"))
                    })?,
                    IntOrStr::Str(s) => parse_size(s).map_err(|m| self.err(&span, m))?,
                };
                if bytes == 0 {
                    return Err(self.err(&span, "`memory_max` must be greater than 0"));
                }
                Some(bytes)
            }
        };

        let cpu_quota_percent = match raw.cpu_quota {
            None => None,
            Some(v) => {
                let span = v.span();
                match &v.get_ref().0 {
                    IntOrStr::Int(n) => {
                        return Err(self.err(
                            &span,
                            format!("`cpu_quota` must be a string such as \"{n}%\", got {n}"),
                        ));
                    }
                    IntOrStr::Str(s) => Some(parse_percent(s).map_err(|m| self.err(&span, m))?),
                }
            }
        };

        let tasks_max = match raw.tasks_max {
            None => None,
            Some(v) => {
                let n = *v.get_ref();
                match u64::try_from(n) {
                    Ok(n) if n >= 1 => Some(n),
                    _ => {
                        return Err(self.err(
                            &v.span(),
                            format!("`tasks_max` must be at least 1, got {n}"),
                        ));
                    }
                }
            }
        };

        let timeout = match raw.timeout {
            None => None,
            Some(t) => Some(self.positive_duration(&t, "limits.timeout")?),
        };

        Ok(Limits {
            memory_max,
            cpu_quota_percent,
            tasks_max,
            timeout,
        })
    }

    pub(super) fn validate_kill(&self, raw: RawKill) -> Result<KillPolicy, SpecError> {
        let mut policy = KillPolicy::default();
        for (value, key, slot) in [
            (&raw.grace, "kill.grace", &mut policy.grace),
            (
                &raw.critical_max,
                "kill.critical_max",
                &mut policy.critical_max,
            ),
            (&raw.budget, "kill.budget", &mut policy.budget),
        ] {
            if let Some(v) = value {
                *slot = self.positive_duration(v, key)?;
            }
        }
        // The phases before SIGKILL must leave it time within the budget.
        if policy.critical_max + policy.grace >= policy.budget {
            let at = raw
                .budget
                .or(raw.grace)
                .or(raw.critical_max)
                .map_or(0, |v| v.span().start);
            return Err(self.err_at(
                at,
                format!(
                    "kill.critical_max ({}) + kill.grace ({}) must be less than kill.budget ({}), leaving time for SIGKILL",
                    humantime::format_duration(policy.critical_max),
                    humantime::format_duration(policy.grace),
                    humantime::format_duration(policy.budget)
                ),
            ));
        }
        Ok(policy)
    }
}
