//! `drover show RUN [--json]` — the client of `Manager.Get`.

use std::process::ExitCode;

use super::format::dash;
use super::get_run;
use crate::api::DroverProxy;

pub async fn run(proxy: &DroverProxy<'_>, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let run = get_run(proxy, id).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&run)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!("run:          {}", run.id)?;
    outln!("workflow:     {} ({})", run.workflow, run.workflow_file)?;
    outln!("state:        {}", run.state)?;
    outln!("requested by: {}", run.requested_by)?;
    outln!("created:      {}", run.created_at)?;
    outln!(
        "started:      {}",
        dash(run.started_at.map(|t| t.to_string()))
    )?;
    outln!(
        "ended:        {}",
        dash(run.ended_at.map(|t| t.to_string()))
    )?;
    if let Some(worktree) = &run.worktree {
        outln!("worktree:     {worktree}")?;
    }
    if let Some(error) = &run.error {
        outln!("error:        {error}")?;
    }
    if let Some(class) = run.failure_class {
        outln!("failure:      {class}")?;
    }
    if let Some(at) = run.next_attempt_at {
        outln!("next attempt: {at}")?;
    }
    if let Some(restart) = &run.restart {
        let from = restart
            .checkpoint
            .map_or("no checkpoint".to_owned(), |n| format!("checkpoint {n}"));
        outln!(
            "restarted:    from {from}, at step {}",
            restart.next_step + 1
        )?;
    }
    outln!()?;
    outln!(
        "{:<16} {:<8} {:<10} {:<10} {:<6} {:<6} UNIT",
        "STEP",
        "ATTEMPT",
        "STATE",
        "RESULT",
        "EXIT",
        "SIGNAL"
    )?;
    for step in &run.steps {
        outln!(
            "{:<16} {:<8} {:<10} {:<10} {:<6} {:<6} {}",
            step.name,
            step.attempt,
            step.state,
            dash(step.result.clone()),
            dash(step.exit_code.map(|c| c.to_string())),
            dash(step.signal.map(|s| s.to_string())),
            dash(step.unit.clone())
        )?;
    }
    for step in &run.steps {
        if let (Some(class), Some(evidence)) = (step.failure_class, &step.failure_evidence) {
            outln!("{}: {class}: {evidence}", step.name)?;
        }
        if let Some(cut) = &step.log_cut {
            outln!("{}: {cut}", step.name)?;
        }
        if let Some(session) = &step.session_id {
            let cost =
                step.agent
                    .as_ref()
                    .and_then(|a| a.result.as_ref())
                    .map_or(String::new(), |r| {
                        format!(
                            ", {} turns, ${:.4}",
                            r.num_turns.unwrap_or_default(),
                            r.total_cost_usd.unwrap_or_default()
                        )
                    });
            outln!("{}: Claude Code session {session}{cost}", step.name)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
