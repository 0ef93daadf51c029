//! `drover history [--workflow W] [--since 7d] [--json]` — per day: runs, outcomes,
//! success rate, duration p50/p95, cost, failure classes, kills and restarts. The client
//! of `Manager.History`.

use std::process::ExitCode;

use anyhow::Context;

use super::api_error;
use super::format::{dash, secs};
use crate::api::DroverProxy;
use crate::model::History;

pub async fn run(
    proxy: &DroverProxy<'_>,
    workflow: Option<&str>,
    since: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let reply = proxy
        .history(workflow.unwrap_or(""), since)
        .await
        .map_err(api_error)?;
    if json {
        outln!("{reply}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let history: History =
        serde_json::from_str(&reply).context("the agent sent a history this client cannot read")?;
    outln!(
        "{:<10} {:>5} {:>5} {:>5} {:>6} {:>6} {:>8} {:>8} {:>9} {:>5} {:>8}  FAILURE CLASSES",
        "DAY",
        "RUNS",
        "OK",
        "FAIL",
        "KILLED",
        "RATE",
        "P50",
        "P95",
        "COST",
        "KILLS",
        "RESTARTS"
    )?;
    for d in &history.days {
        let classes: Vec<String> = d
            .failure_classes
            .iter()
            .map(|(class, n)| format!("{class}={n}"))
            .collect();
        outln!(
            "{:<10} {:>5} {:>5} {:>5} {:>6} {:>6} {:>8} {:>8} {:>9} {:>5} {:>8}  {}",
            d.day,
            d.runs,
            d.succeeded,
            d.failed,
            d.killed,
            d.success_rate
                .map_or("-".to_owned(), |r| format!("{:.0}%", r * 100.0)),
            dash(d.duration_p50_secs.map(secs)),
            dash(d.duration_p95_secs.map(secs)),
            format!("${:.2}", d.cost_usd),
            d.kills,
            d.restarts,
            classes.join(" ")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
