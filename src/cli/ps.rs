//! `drover ps [--all] [--json]` — the client of `Manager.List`.

use std::process::ExitCode;

use anyhow::Context;

use super::api_error;
use crate::api::DroverProxy;
use crate::model::{Run, StepState};

pub async fn run(proxy: &DroverProxy<'_>, all: bool, json: bool) -> anyhow::Result<ExitCode> {
    let text = proxy.list().await.map_err(api_error)?;
    let runs: Vec<Run> =
        serde_json::from_str(&text).context("the agent sent runs this client cannot read")?;
    let runs: Vec<Run> = runs
        .into_iter()
        .filter(|r| all || !r.state.is_terminal())
        .collect();
    if json {
        outln!("{}", serde_json::to_string_pretty(&runs)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<12} {:<20} {:<10} {:<20} CREATED",
        "RUN",
        "WORKFLOW",
        "STATE",
        "STEP"
    )?;
    for run in &runs {
        let step = run
            .steps
            .iter()
            .rev()
            .find(|s| s.state != StepState::Pending)
            .map_or("-".to_owned(), |s| format!("{} ({})", s.name, s.state));
        outln!(
            "{:<12} {:<20} {:<10} {:<20} {}",
            run.id,
            run.workflow,
            run.state,
            step,
            run.created_at
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
