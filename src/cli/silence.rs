//! `drover silence RULE|RUN --for 1h [--reason TEXT]` and `drover silences [--all]`: hold
//! back the alerts of a rule or a run (they are still stored), and list the silences. The
//! client of `Manager.Silence` and `Manager.Silences`.

use std::process::ExitCode;

use anyhow::Context;

use super::api_error;
use crate::api::DroverProxy;
use crate::model::Silence;

pub async fn add(
    proxy: &DroverProxy<'_>,
    target: &str,
    duration: &str,
    reason: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let text = proxy
        .silence(target, duration, reason.unwrap_or(""))
        .await
        .map_err(api_error)?;
    let silence: Silence =
        serde_json::from_str(&text).context("the agent sent a silence this client cannot read")?;
    if json {
        outln!("{}", serde_json::to_string(&silence)?)?;
    } else {
        outln!(
            "alerts of {} silenced until {}",
            silence.target,
            silence.until
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn list(proxy: &DroverProxy<'_>, all: bool, json: bool) -> anyhow::Result<ExitCode> {
    let text = proxy.silences(all).await.map_err(api_error)?;
    let silences: Vec<Silence> =
        serde_json::from_str(&text).context("the agent sent silences this client cannot read")?;
    if json {
        outln!("{}", serde_json::to_string(&silences)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<5} {:<24} {:<24} {:<34} REASON",
        "ID",
        "TARGET",
        "UNTIL",
        "BY"
    )?;
    for s in &silences {
        outln!(
            "{:<5} {:<24} {:<24} {:<34} {}",
            s.id,
            s.target,
            s.until.to_string(),
            s.created_by,
            s.reason
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
