//! Alerts: the firing ones or all (`Alerts`, viewer), and raising or resolving one by hand
//! (`RaiseAlert`, `ResolveAlert`, admin: operators' scripts and tests; refusals audited).

use super::refusals::Audited;
use super::types::{RaiseAlertArgs, check_len, limits};
use super::{Caller, Ops, Result};
use crate::auth::Role;
use crate::model::Alert;

impl Ops {
    /// Firing alerts (every alert with `all`), newest first.
    pub fn alerts(&self, caller: &Caller, all: bool) -> Result<Vec<Alert>> {
        self.authorise(caller, Role::Viewer, "list alerts")?;
        Ok(self.alerts.alerts(all)?)
    }

    pub fn raise_alert(&self, caller: &Caller, args: &RaiseAlertArgs) -> Result<Alert> {
        let audited = Audited {
            action: "raise-alert",
            run: args.run.as_deref().unwrap_or_default(),
            about: &args.rule,
        };
        self.admit_action(caller, Role::Admin, "raise an alert", audited, args.check())?;
        Ok(self
            .alerts
            .raise(
                &args.rule,
                args.run.as_deref(),
                args.severity,
                &args.summary,
            )?
            .alert)
    }

    /// Resolves the firing alert with this key (`<rule>/<run>`).
    pub fn resolve_alert(&self, caller: &Caller, key: &str) -> Result<Alert> {
        let audited = Audited {
            action: "resolve-alert",
            run: "",
            about: key,
        };
        let input = check_len("the alert key", key, limits::ALERT_KEY);
        self.admit_action(caller, Role::Admin, "resolve an alert", audited, input)?;
        Ok(self.alerts.resolve(key)?.alert)
    }
}
