//! `drover alerts [--all] [--json]` — firing alerts (every alert with `--all`), newest
//! first. The client of `Manager.Alerts`.

use std::process::ExitCode;

use anyhow::Context;

use super::api_error;
use crate::api::DroverProxy;
use crate::model::severity_str;
use crate::model::{Alert, AlertState};

pub async fn run(proxy: &DroverProxy<'_>, all: bool, json: bool) -> anyhow::Result<ExitCode> {
    let text = proxy.alerts(all).await.map_err(api_error)?;
    let alerts: Vec<Alert> =
        serde_json::from_str(&text).context("the agent sent alerts this client cannot read")?;
    if json {
        outln!("{}", serde_json::to_string(&alerts)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<32} {:<9} {:<9} {:>5} {:<24} {:<24} SUMMARY",
        "KEY",
        "SEVERITY",
        "STATE",
        "COUNT",
        "FIRST SEEN",
        "LAST SEEN"
    )?;
    for a in &alerts {
        let state = match (a.state, a.silenced_until) {
            (AlertState::Resolved, _) => "resolved",
            (AlertState::Firing, Some(_)) => "silenced",
            (AlertState::Firing, None) => "firing",
        };
        outln!(
            "{:<32} {:<9} {:<9} {:>5} {:<24} {:<24} {}",
            a.key,
            severity_str(a.severity),
            state,
            a.count,
            a.first_seen.to_string(),
            a.last_seen.to_string(),
            a.summary
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
