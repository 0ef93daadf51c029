//! The Prometheus text exposition format (0.0.4) of what the agent knows: per-run series
//! from the monitor's latest samples, per-workflow aggregates from the runs, and the
//! agent's self-metrics. Rendering is a pure function of a [`Snapshot`], so it is tested
//! without an agent; `api::http` serves it.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::model::{Run, RunMetrics, RunState, StepState};
use crate::selfmetrics::{HistogramSnapshot, SelfMetricsSnapshot};

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything one scrape shows, gathered by the caller.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    /// The agent's version (`drover_agent_info`).
    pub version: &'a str,
    /// The monitor's latest sample of each running run.
    pub live: &'a [RunMetrics],
    /// Every run the state DB holds (`Engine::runs()`), for the aggregates.
    pub runs: &'a [Run],
    pub agent: &'a SelfMetricsSnapshot,
}

const ALL_STATES: [RunState; 8] = [
    RunState::Pending,
    RunState::Running,
    RunState::Stopping,
    RunState::Killing,
    RunState::Restarting,
    RunState::Succeeded,
    RunState::Failed,
    RunState::Killed,
];

type Value = fn(&RunMetrics) -> Option<f64>;

/// The per-run gauges and counters: (name, type, help, value). A run whose sample lacks a
/// value (systemd and the cgroup did not report it) has no sample in that family.
const RUN_SERIES: &[(&str, &str, &str, Value)] = &[
    (
        "drover_run_cpu_percent",
        "gauge",
        "CPU use of the run's current step over the last sampling interval, in percent of one core.",
        |m| m.latest.cpu_percent,
    ),
    (
        "drover_run_memory_bytes",
        "gauge",
        "Memory in use by the run's current step.",
        |m| m.latest.memory_bytes.map(|v| v as f64),
    ),
    (
        "drover_run_memory_peak_bytes",
        "gauge",
        "Peak memory use of the run's current step.",
        |m| m.latest.memory_peak_bytes.map(|v| v as f64),
    ),
    (
        "drover_run_tasks",
        "gauge",
        "Tasks (processes and threads) in the run's current step.",
        |m| m.latest.tasks.map(|v| v as f64),
    ),
    (
        "drover_run_io_read_bytes_total",
        "counter",
        "Bytes the run's current step has read from block devices.",
        |m| m.latest.io_read_bytes.map(|v| v as f64),
    ),
    (
        "drover_run_io_write_bytes_total",
        "counter",
        "Bytes the run's current step has written to block devices.",
        |m| m.latest.io_write_bytes.map(|v| v as f64),
    ),
    (
        "drover_run_output_bytes_per_second",
        "gauge",
        "Output (stdout and stderr) of the run's current step, bytes per second.",
        |m| Some(m.latest.output_bytes_per_sec),
    ),
    (
        "drover_run_output_lines_per_second",
        "gauge",
        "Output (stdout and stderr) of the run's current step, lines per second.",
        |m| Some(m.latest.output_lines_per_sec),
    ),
    (
        "drover_run_idle_seconds",
        "gauge",
        "Seconds since the run's current step last wrote a line (or started).",
        |m| Some(m.latest.idle_secs),
    ),
    (
        "drover_run_step_elapsed_seconds",
        "gauge",
        "Seconds since the run's current step started.",
        |m| Some(m.latest.step_elapsed_secs),
    ),
    (
        "drover_run_elapsed_seconds",
        "gauge",
        "Seconds since the run started.",
        |m| Some(m.latest.run_elapsed_secs),
    ),
    (
        "drover_run_agent_turns_total",
        "counter",
        "Claude Code turns of the run's current agent step.",
        |m| m.latest.agent.as_ref().map(|a| a.turns as f64),
    ),
    (
        "drover_run_agent_input_tokens_total",
        "counter",
        "Input tokens of the run's current agent step.",
        |m| m.latest.agent.as_ref().map(|a| a.tokens_in as f64),
    ),
    (
        "drover_run_agent_output_tokens_total",
        "counter",
        "Output tokens of the run's current agent step.",
        |m| m.latest.agent.as_ref().map(|a| a.tokens_out as f64),
    ),
    (
        "drover_run_agent_cost_usd_total",
        "counter",
        "Cost in US dollars of the run's current agent step so far.",
        |m| m.latest.agent.as_ref().map(|a| a.cost_usd),
    ),
];

/// Renders the whole exposition.
pub fn render(snapshot: &Snapshot<'_>) -> String {
    let mut out = String::with_capacity(4096 + snapshot.live.len() * 2048);
    render_runs(&mut out, snapshot);
    render_workflows(&mut out, snapshot);
    render_agent(&mut out, snapshot);
    out
}

fn render_runs(out: &mut String, snapshot: &Snapshot<'_>) {
    for (name, kind, help, value) in RUN_SERIES {
        let samples: Vec<(&RunMetrics, f64)> = snapshot
            .live
            .iter()
            .filter_map(|m| value(m).map(|v| (m, v)))
            .collect();
        if samples.is_empty() {
            continue;
        }
        header(out, name, kind, help);
        for (m, v) in samples {
            let step = m.step.as_deref().unwrap_or("");
            sample(
                out,
                name,
                &[("run", &m.run), ("workflow", &m.workflow), ("step", step)],
                v,
            );
        }
    }

    // Which file and step each unfinished run is on: free text (a path) in a label, so
    // it is where escaping matters.
    let unfinished: Vec<&Run> = snapshot
        .runs
        .iter()
        .filter(|r| !r.state.is_terminal())
        .collect();
    if !unfinished.is_empty() {
        let name = "drover_run_info";
        header(
            out,
            name,
            "gauge",
            "Always 1 for each unfinished run: its workflow, file, state and current step.",
        );
        for run in unfinished {
            sample(
                out,
                name,
                &[
                    ("run", &run.id),
                    ("workflow", &run.workflow),
                    ("step", current_step(run).unwrap_or("")),
                    ("state", run.state.as_str()),
                    ("file", &run.workflow_file),
                ],
                1.0,
            );
        }
    }
}

/// The step a run is on: the one starting or running, else none.
fn current_step(run: &Run) -> Option<&str> {
    run.steps
        .iter()
        .find(|s| matches!(s.state, StepState::Starting | StepState::Running))
        .map(|s| s.name.as_str())
}

fn render_workflows(out: &mut String, snapshot: &Snapshot<'_>) {
    let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_workflow: BTreeMap<&str, (BTreeMap<&str, u64>, f64)> = BTreeMap::new();
    for run in snapshot.runs {
        *by_state.entry(run.state.as_str()).or_default() += 1;
        let (states, cost) = by_workflow.entry(&run.workflow).or_default();
        *states.entry(run.state.as_str()).or_default() += 1;
        for step in &run.steps {
            let recorded = step
                .agent
                .as_ref()
                .and_then(|a| a.result.as_ref())
                .and_then(|r| r.total_cost_usd);
            // A running agent step has no `result` yet: its live cost stands in for it.
            let live = || {
                snapshot
                    .live
                    .iter()
                    .find(|m| m.run == run.id && m.step.as_deref() == Some(step.name.as_str()))
                    .and_then(|m| m.latest.agent.as_ref())
                    .map(|a| a.cost_usd)
            };
            *cost += recorded.or_else(live).unwrap_or(0.0);
        }
    }

    let name = "drover_runs";
    header(out, name, "gauge", "Runs in the state DB by state.");
    for state in ALL_STATES {
        let n = by_state.get(state.as_str()).copied().unwrap_or(0);
        sample(out, name, &[("state", state.as_str())], n as f64);
    }
    if by_workflow.is_empty() {
        return;
    }
    let name = "drover_workflow_runs";
    header(
        out,
        name,
        "gauge",
        "Runs in the state DB by workflow and state.",
    );
    for (workflow, (states, _)) in &by_workflow {
        for state in ALL_STATES {
            let n = states.get(state.as_str()).copied().unwrap_or(0);
            sample(
                out,
                name,
                &[("workflow", workflow), ("state", state.as_str())],
                n as f64,
            );
        }
    }
    // A gauge, not a counter: it sums each step's latest attempt, so a retry that costs
    // less than the attempt it replaces lowers it.
    let name = "drover_workflow_cost_usd";
    header(
        out,
        name,
        "gauge",
        "Cost in US dollars of the Claude Code steps of a workflow's runs (latest attempt of each step).",
    );
    for (workflow, (_, cost)) in &by_workflow {
        sample(out, name, &[("workflow", workflow)], *cost);
    }
}

fn render_agent(out: &mut String, snapshot: &Snapshot<'_>) {
    let agent = snapshot.agent;
    let name = "drover_agent_info";
    header(out, name, "gauge", "Always 1: the agent's version.");
    sample(out, name, &[("version", snapshot.version)], 1.0);
    gauge(
        out,
        "drover_agent_uptime_seconds",
        "Seconds since the agent started.",
        Some(agent.uptime_seconds),
    );
    gauge(
        out,
        "drover_monitor_sampling_duration_seconds",
        "How long the monitor's last sampling of every running unit took.",
        agent.sampling_seconds,
    );
    gauge(
        out,
        "drover_rules_evaluation_duration_seconds",
        "How long the last evaluation of every rule against every run took.",
        agent.rule_evaluation_seconds,
    );
    histogram(
        out,
        "drover_db_write_duration_seconds",
        "State-DB write transactions, begin to commit.",
        &agent.db_write_seconds,
    );
    let name = "drover_db_write_failures_total";
    header(
        out,
        name,
        "counter",
        "State-DB writes that could not begin or commit (a full disk, an I/O error).",
    );
    sample(out, name, &[], agent.db_write_failures as f64);
    histogram(
        out,
        "drover_kill_duration_seconds",
        "Kills carried out (killed or failed), from the request to the verified end.",
        &agent.kill_seconds,
    );
    let name = "drover_kills_total";
    header(
        out,
        name,
        "counter",
        "Kills by result since the agent started.",
    );
    for (result, n) in &agent.kills_by_result {
        sample(out, name, &[("result", result)], *n as f64);
    }
    let name = "drover_restarts_total";
    header(
        out,
        name,
        "counter",
        "Restarts since the agent started, by the failure class of the run restarted.",
    );
    for (class, n) in &agent.restarts_by_failure_class {
        sample(out, name, &[("failure_class", class)], *n as f64);
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: Option<f64>) {
    if let Some(value) = value {
        header(out, name, "gauge", help);
        sample(out, name, &[], value);
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &HistogramSnapshot) {
    header(out, name, "histogram", help);
    let bucket = format!("{name}_bucket");
    for (bound, count) in &h.buckets {
        sample(out, &bucket, &[("le", &number(*bound))], *count as f64);
    }
    // A histogram must end with +Inf whatever the snapshot holds.
    if h.buckets.last().is_none_or(|(b, _)| b.is_finite()) {
        sample(out, &bucket, &[("le", "+Inf")], h.count as f64);
    }
    sample(out, &format!("{name}_sum"), &[], h.sum);
    sample(out, &format!("{name}_count"), &[], h.count as f64);
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{label}=\"{}\"", escape_label(value));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&number(value));
    out.push('\n');
}

/// A label value as the text format wants it: backslash, double quote and line feed
/// escaped.
pub fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// HELP text escapes only backslash and line feed.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value: Go's float syntax, which Rust's `Display` matches except for the
/// infinities and NaN.
pub fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AgentLive, Sample};
    use crate::selfmetrics::SelfMetrics;

    fn metrics(step: &str) -> RunMetrics {
        RunMetrics {
            run: "r1".into(),
            workflow: "wf".into(),
            state: RunState::Running,
            step: Some(step.into()),
            attempt: 1,
            unit: None,
            latest: Sample {
                cpu_percent: Some(12.5),
                memory_bytes: Some(1 << 20),
                agent: Some(AgentLive {
                    turns: 3,
                    cost_usd: 0.25,
                    ..Default::default()
                }),
                ..Default::default()
            },
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        let agent = SelfMetrics::new().snapshot();
        let live = [metrics("say \"hi\"\n\\")];
        let text = render(&Snapshot {
            version: "0.1.0",
            live: &live,
            runs: &[],
            agent: &agent,
        });
        assert!(
            text.contains(
                r#"drover_run_cpu_percent{run="r1",workflow="wf",step="say \"hi\"\n\\"} 12.5"#
            ),
            "{text}"
        );
        assert!(text.contains("drover_run_agent_turns_total{"), "{text}");
        // A value the sample lacks has no series at all.
        assert!(!text.contains("drover_run_tasks"), "{text}");
    }

    #[test]
    fn histograms_end_with_inf_and_carry_sum_and_count() {
        let m = SelfMetrics::new();
        m.observe_db_write(std::time::Duration::from_micros(300));
        let text = render(&Snapshot {
            version: "0.1.0",
            live: &[],
            runs: &[],
            agent: &m.snapshot(),
        });
        assert!(text.contains("# TYPE drover_db_write_duration_seconds histogram\n"));
        assert!(text.contains("drover_db_write_duration_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("drover_db_write_duration_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("drover_db_write_duration_seconds_count 1\n"));
        assert!(text.contains("drover_runs{state=\"running\"} 0\n"));
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(3.0), "3");
    }
}
