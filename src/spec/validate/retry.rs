//! `[retry]` and `[step.retry]`: a step's keys laid over the workflow's.

use super::Ctx;
use crate::model::FailureClass;
use crate::quantity::parse_duration;
use crate::spec::SpecError;
use crate::spec::raw::RawRetry;
use crate::spec::types::RetryPolicy;

impl Ctx<'_> {
    /// Lays the keys of `raw` over `base`. `key` is the table's path for messages
    /// (`retry`, `step.retry`) and `who` prefixes them (`step "s": `).
    pub(super) fn validate_retry(
        &self,
        base: &RetryPolicy,
        raw: RawRetry,
        key: &str,
        who: &str,
    ) -> Result<RetryPolicy, SpecError> {
        let mut policy = base.clone();
        if let Some(n) = &raw.max_attempts {
            policy.max_attempts = match u32::try_from(*n.get_ref()) {
                Ok(v) if v >= 1 => v,
                _ => {
                    return Err(self.err(
                        &n.span(),
                        format!(
                            "{who}`{key}.max_attempts` must be between 1 and {}, got {}",
                            u32::MAX,
                            n.get_ref()
                        ),
                    ));
                }
            };
        }
        for (value, slot) in [
            (&raw.initial, &mut policy.initial),
            (&raw.max, &mut policy.max),
            (&raw.jitter, &mut policy.jitter),
        ] {
            if let Some(v) = value {
                *slot = parse_duration(v.get_ref()).map_err(|m| self.err(&v.span(), m))?;
            }
        }
        if let Some(f) = &raw.factor {
            let factor = *f.get_ref();
            // `>=` is false for NaN, which TOML can spell.
            if !(factor >= 1.0 && factor.is_finite()) {
                return Err(self.err(
                    &f.span(),
                    format!(
                        "{who}`{key}.factor` must be a finite number of at least 1.0, got {factor}"
                    ),
                ));
            }
            policy.factor = factor;
        }
        if let Some(names) = raw.retry_on {
            policy.retry_on.clear();
            for name in names {
                let class: FailureClass = name
                    .get_ref()
                    .parse()
                    .map_err(|e| self.err(&name.span(), format!("{who}`{key}.retry_on`: {e}")))?;
                if !policy.retry_on.contains(&class) {
                    policy.retry_on.push(class);
                }
            }
        }
        if policy.max < policy.initial {
            // `base` was valid, so one of these two keys is set here.
            let at = raw
                .max
                .as_ref()
                .or(raw.initial.as_ref())
                .map_or(0, |v| v.span().start);
            let inherited = if who.is_empty() {
                ""
            } else {
                " (keys the step does not set come from [retry] or the defaults)"
            };
            return Err(self.err_at(
                at,
                format!(
                    "{who}`{key}.max` ({}) must be at least `{key}.initial` ({}){inherited}",
                    humantime::format_duration(policy.max),
                    humantime::format_duration(policy.initial),
                ),
            ));
        }
        Ok(policy)
    }
}
