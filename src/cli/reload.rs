//! `drover reload` — the client of `Manager.Reload` (and the unit's `ExecReload`): the
//! agent re-reads its config file; an invalid one is refused and changes nothing.

use std::process::ExitCode;

use anyhow::Context;

use super::api_error;
use crate::api::DroverProxy;
use crate::model::ReloadOutcome;

pub async fn run(proxy: &DroverProxy<'_>, json: bool) -> anyhow::Result<ExitCode> {
    let reply = proxy.reload().await.map_err(api_error)?;
    if json {
        outln!("{reply}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let outcome: ReloadOutcome =
        serde_json::from_str(&reply).context("the agent sent a reply this client cannot read")?;
    outln!("reloaded {}", outcome.config)?;
    let list = |keys: &[String]| keys.join(", ");
    if !outcome.applied.is_empty() {
        outln!("applied: {}", list(&outcome.applied))?;
    }
    if !outcome.restart_needed.is_empty() {
        outln!(
            "take effect after the agent restarts: {}",
            list(&outcome.restart_needed)
        )?;
    }
    if !outcome.rules_loaded.is_empty() {
        outln!("rules loaded: {}", list(&outcome.rules_loaded))?;
    }
    if !outcome.rules_removed.is_empty() {
        outln!("rules removed: {}", list(&outcome.rules_removed))?;
    }
    // Rule files that do not compile are not the config's fault: the reload stands, and
    // their previous versions keep running.
    for error in &outcome.rule_errors {
        errln!("rule not loaded: {error}");
    }
    Ok(ExitCode::SUCCESS)
}
