//! `drover checkpoint RUN [--label TEXT] [--json]` and `drover checkpoints RUN [--json]` —
//! the clients of `Manager.Checkpoint` and `Manager.Checkpoints`.

use std::process::ExitCode;

use anyhow::Context;

use super::api_error;
use crate::api::DroverProxy;
use crate::model::CheckpointRecord;

pub async fn take(
    proxy: &DroverProxy<'_>,
    run: &str,
    label: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let text = proxy
        .checkpoint(run, label.unwrap_or(""))
        .await
        .map_err(api_error)?;
    if json {
        outln!("{text}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let c: CheckpointRecord = serde_json::from_str(&text)
        .context("the agent sent a checkpoint this client cannot read")?;
    outln!(
        "checkpoint {} of run {}: {} {} ({} files changed, {} ms)",
        c.n,
        c.run,
        c.reference,
        c.commit,
        c.files_changed,
        c.took_ms
    )?;
    Ok(ExitCode::SUCCESS)
}

pub async fn list(proxy: &DroverProxy<'_>, run: &str, json: bool) -> anyhow::Result<ExitCode> {
    let text = proxy.checkpoints(run).await.map_err(api_error)?;
    if json {
        outln!("{text}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let checkpoints: Vec<CheckpointRecord> = serde_json::from_str(&text)
        .context("the agent sent checkpoints this client cannot read")?;
    if checkpoints.is_empty() {
        outln!("run {run} has no checkpoints")?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<4} {:<16} {:<16} {:<24} {:<12} {:>7}  LABEL",
        "N",
        "REASON",
        "STEP",
        "TIME",
        "COMMIT",
        "CHANGED"
    )?;
    for c in &checkpoints {
        outln!(
            "{:<4} {:<16} {:<16} {:<24} {:<12} {:>7}  {}",
            c.n,
            c.reason,
            c.step.as_deref().unwrap_or("-"),
            c.created_at.to_string(),
            c.commit.get(..12).unwrap_or(&c.commit),
            c.files_changed,
            c.label
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
