//! `drover kill RUN [--reason TEXT] [--grace DURATION] [--yes] [--json]` — the client of
//! `Manager.Kill`: waits for the outcome, prints each phase, and exits 0 only if the run
//! ended `killed` with no process left.

use std::process::ExitCode;

use anyhow::Context;

use super::{api_error, confirmed, options};
use crate::api::DroverProxy;
use crate::model::{KillRecord, KillResult};

pub async fn run(
    proxy: &DroverProxy<'_>,
    id: &str,
    reason: Option<String>,
    grace: Option<String>,
    yes: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let confirm = confirmed(proxy, id, "Kill", yes).await?;
    let options = options([
        ("grace", grace.map(|g| zbus::Str::from(g).into())),
        ("confirm", confirm.then(|| true.into())),
    ]);
    let reason = reason.unwrap_or_else(|| "killed from the command line".to_owned());
    let text = proxy.kill(id, &reason, options).await.map_err(api_error)?;
    let record: KillRecord =
        serde_json::from_str(&text).context("the agent sent an outcome this client cannot read")?;
    if json {
        outln!("{text}")?;
    } else {
        print_outcome(&record)?;
    }
    let clean = record.result == KillResult::Killed && record.processes_left == Some(0);
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_outcome(record: &KillRecord) -> std::io::Result<()> {
    outln!(
        "run {} {} in {} ms (by {}: {})",
        record.run,
        record.result.as_str(),
        record.total_ms.unwrap_or_default(),
        record.requested_by,
        record.reason
    )?;
    if let Some(step) = &record.step {
        outln!(
            "step:    {step} ({})",
            record.unit.as_deref().unwrap_or("-")
        )?;
    }
    for phase in &record.phases {
        let signalled = if phase.signalled > 0 {
            format!("{} signalled", phase.signalled)
        } else {
            String::new()
        };
        outln!(
            "  {:<14} at {:>5} ms  took {:>5} ms  {:<14} {}",
            phase.name,
            phase.started_ms,
            phase.duration_ms,
            signalled,
            phase.note.as_deref().unwrap_or("")
        )?;
    }
    for action in &record.cleanup {
        outln!(
            "  cleanup: {} — {}{}",
            action.action,
            if action.ok { "" } else { "FAILED: " },
            action.detail
        )?;
    }
    if let Some(snapshot) = &record.snapshot {
        outln!("snapshot: {snapshot}")?;
    }
    outln!(
        "processes left: {}",
        record
            .processes_left
            .map_or("unknown".to_owned(), |n| n.to_string())
    )?;
    if let Some(error) = &record.error {
        outln!("error: {error}")?;
    }
    Ok(())
}
