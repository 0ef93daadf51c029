//! `drover audit [--run RUN] [--json]` — the audit trail: every kill requested, refused,
//! done, or seen from outside, and every restart, rollback and checkpoint asked for. The
//! client of `Manager.Audit` and `Manager.Actions`.

use std::process::ExitCode;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::api_error;
use crate::api::DroverProxy;
use crate::model::{ActionRecord, KillRecord};

/// The shape of `drover audit --json`.
#[derive(Serialize, Deserialize)]
pub struct AuditTrail {
    pub kills: Vec<KillRecord>,
    pub actions: Vec<ActionRecord>,
}

pub async fn run(
    proxy: &DroverProxy<'_>,
    run: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let run = run.unwrap_or("");
    let unreadable = "the agent sent records this client cannot read";
    let kills = proxy.audit(run).await.map_err(api_error)?;
    let actions = proxy.actions(run).await.map_err(api_error)?;
    let trail = AuditTrail {
        kills: serde_json::from_str(&kills).context(unreadable)?,
        actions: serde_json::from_str(&actions).context(unreadable)?,
    };
    if json {
        outln!("{}", serde_json::to_string(&trail)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<5} {:<12} {:<9} {:<8} {:<24} {:<34} REASON",
        "KILL",
        "RUN",
        "RESULT",
        "TOTAL",
        "REQUESTED",
        "BY"
    )?;
    for r in &trail.kills {
        outln!(
            "{:<5} {:<12} {:<9} {:<8} {:<24} {:<34} {}",
            r.id,
            r.run,
            r.result.as_str(),
            r.total_ms.map_or("-".to_owned(), |ms| format!("{ms}ms")),
            r.requested_at.to_string(),
            r.requested_by,
            r.reason
        )?;
    }
    if !trail.actions.is_empty() {
        outln!()?;
        outln!(
            "{:<5} {:<12} {:<10} {:<8} {:<24} {:<34} DETAIL",
            "ID",
            "RUN",
            "ACTION",
            "RESULT",
            "AT",
            "BY"
        )?;
        for a in &trail.actions {
            outln!(
                "{:<5} {:<12} {:<10} {:<8} {:<24} {:<34} {}",
                a.id,
                // Empty for an action on the agent itself (a reload).
                if a.run.is_empty() { "-" } else { &a.run },
                a.action,
                a.result,
                a.at.to_string(),
                a.requested_by,
                a.detail
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
