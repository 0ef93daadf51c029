//! `drover audit [--run RUN] [--json]` — the kill audit trail: every kill requested,
//! refused, done, or seen from outside. The client of `Manager.Audit`.

use std::process::ExitCode;

use anyhow::Context;

use super::api_error;
use crate::api::DroverProxy;
use crate::model::KillRecord;

pub async fn run(
    proxy: &DroverProxy<'_>,
    run: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let text = proxy.audit(run.unwrap_or("")).await.map_err(api_error)?;
    if json {
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let records: Vec<KillRecord> =
        serde_json::from_str(&text).context("the agent sent records this client cannot read")?;
    println!(
        "{:<5} {:<12} {:<9} {:<8} {:<24} {:<34} REASON",
        "ID", "RUN", "RESULT", "TOTAL", "REQUESTED", "BY"
    );
    for r in &records {
        println!(
            "{:<5} {:<12} {:<9} {:<8} {:<24} {:<34} {}",
            r.id,
            r.run,
            r.result.as_str(),
            r.total_ms.map_or("-".to_owned(), |ms| format!("{ms}ms")),
            r.requested_at.to_string(),
            r.requested_by,
            r.reason
        );
    }
    Ok(ExitCode::SUCCESS)
}
