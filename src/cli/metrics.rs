//! `drover metrics RUN [--json]` — the client of `Manager.Metrics`.

use std::process::ExitCode;

use anyhow::Context;

use super::api_error;
use super::format::{bytes, dash, secs};
use crate::api::DroverProxy;
use crate::model::MetricsReport;

pub async fn run(proxy: &DroverProxy<'_>, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let text = proxy.metrics(id).await.map_err(api_error)?;
    if json {
        // The agent's JSON as it is: fields this client does not know are kept.
        let value: serde_json::Value =
            serde_json::from_str(&text).context("the agent sent metrics that are not JSON")?;
        outln!("{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let report: MetricsReport =
        serde_json::from_str(&text).context("the agent sent metrics this client cannot read")?;
    let m = &report.metrics;
    let s = &m.latest;
    let source = |k: &str| {
        s.sources
            .get(k)
            .map_or(String::new(), |src| format!("  ({src})"))
    };
    outln!("run:          {} ({})", m.run, m.workflow)?;
    outln!("state:        {}", m.state)?;
    outln!(
        "step:         {}",
        dash(
            m.step
                .as_ref()
                .map(|st| format!("{st} attempt {}", m.attempt))
        )
    )?;
    outln!("unit:         {}", dash(m.unit.clone()))?;
    outln!(
        "cpu:          {}{}",
        dash(s.cpu_percent.map(|c| format!("{c:.1}% of a core"))),
        source("cpu")
    )?;
    outln!(
        "memory:       {} (peak {}){}",
        dash(s.memory_bytes.map(bytes)),
        dash(s.memory_peak_bytes.map(bytes)),
        source("memory")
    )?;
    outln!(
        "tasks:        {}{}",
        dash(s.tasks.map(|t| t.to_string())),
        source("tasks")
    )?;
    outln!(
        "io:           read {}, written {}{}",
        dash(s.io_read_bytes.map(bytes)),
        dash(s.io_write_bytes.map(bytes)),
        source("io")
    )?;
    outln!(
        "run slice:    cpu {}, memory {}, tasks {}",
        dash(s.run_cpu_percent.map(|c| format!("{c:.1}%"))),
        dash(s.run_memory_bytes.map(bytes)),
        dash(s.run_tasks.map(|t| t.to_string()))
    )?;
    outln!(
        "output:       {:.0} B/s, {:.1} lines/s; idle {}",
        s.output_bytes_per_sec,
        s.output_lines_per_sec,
        secs(s.idle_secs)
    )?;
    outln!(
        "elapsed:      step {}, run {}",
        secs(s.step_elapsed_secs),
        secs(s.run_elapsed_secs)
    )?;
    if let Some(a) = &s.agent {
        outln!(
            "agent:        {} turns, {} tokens in, {} out, ${:.4}",
            a.turns,
            a.tokens_in,
            a.tokens_out,
            a.cost_usd
        )?;
        if let Some(tool) = &a.tool {
            outln!(
                "tool:         {tool} (same call {}× in a row)",
                a.same_tool_calls
            )?;
        }
    }
    outln!("samples:      {} in the report", report.series.len())?;
    Ok(ExitCode::SUCCESS)
}
