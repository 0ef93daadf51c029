//! `drover history [--workflow W] [--since 7d] [--json]` — per day: runs, outcomes,
//! success rate, duration p50/p95, cost, failure classes, kills and restarts. The client
//! of `Manager.History`.

use std::process::ExitCode;

use anyhow::Context;

use super::api_error;
use crate::api::DroverProxy;
use crate::history::History;

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
        println!("{reply}");
        return Ok(ExitCode::SUCCESS);
    }
    let history: History =
        serde_json::from_str(&reply).context("the agent sent a history this client cannot read")?;
    println!(
        "{:<10} {:>5} {:>5} {:>5} {:>6} {:>6} {:>8} {:>8} {:>9} {:>5} {:>8}  FAILURE CLASSES",
        "DAY", "RUNS", "OK", "FAIL", "KILLED", "RATE", "P50", "P95", "COST", "KILLS", "RESTARTS"
    );
    for d in &history.days {
        let classes: Vec<String> = d
            .failure_classes
            .iter()
            .map(|(class, n)| format!("{class}={n}"))
            .collect();
        println!(
            "{:<10} {:>5} {:>5} {:>5} {:>6} {:>6} {:>8} {:>8} {:>9} {:>5} {:>8}  {}",
            d.day,
            d.runs,
            d.succeeded,
            d.failed,
            d.killed,
            d.success_rate
                .map_or("-".to_owned(), |r| format!("{:.0}%", r * 100.0)),
            secs(d.duration_p50_secs),
            secs(d.duration_p95_secs),
            format!("${:.2}", d.cost_usd),
            d.kills,
            d.restarts,
            classes.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A duration for the table: "-", "42.1s", "12m03s", "2h05m".
fn secs(value: Option<f64>) -> String {
    let Some(s) = value else {
        return "-".to_owned();
    };
    let whole = s.round() as u64;
    if s < 60.0 {
        format!("{s:.1}s")
    } else if whole < 3600 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{}h{:02}m", whole / 3600, whole % 3600 / 60)
    }
}
