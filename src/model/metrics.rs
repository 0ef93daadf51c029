//! Live metrics: one sample of a running step, an agent step's figures, a run's latest
//! metrics, and the downsampled history row the state DB keeps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{RunState, Timestamp};

/// One sample of a running step (its scope) and its run, taken by the monitor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sample {
    pub at: Option<Timestamp>,
    /// Percent of one core over the last interval (from CPU-time deltas).
    pub cpu_percent: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    pub tasks: Option<u64>,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
    pub output_bytes_per_sec: f64,
    pub output_lines_per_sec: f64,
    /// Seconds since the step's last output line (or its start).
    pub idle_secs: f64,
    pub step_elapsed_secs: f64,
    pub run_elapsed_secs: f64,
    /// For Claude Code steps, what its stream-json says so far.
    pub agent: Option<AgentLive>,
    /// Where each resource value came from ("cpu", "memory", "memory_peak", "tasks", "io"
    /// → "systemd", "cgroup-v1" or "cgroup-v2"), for tests and debugging.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, String>,
    /// The run's slice as a whole (every step of the run), where it can be read.
    #[serde(default)]
    pub run_cpu_percent: Option<f64>,
    #[serde(default)]
    pub run_memory_bytes: Option<u64>,
    #[serde(default)]
    pub run_tasks: Option<u64>,
}

/// A Claude Code step as it runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentLive {
    pub turns: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: f64,
    /// The tool call in progress (no result yet), e.g. "Bash".
    pub tool: Option<String>,
    /// How many times in a row the latest tool call (same tool, same input) was made.
    pub same_tool_calls: u32,
}

/// A run's live metrics: its latest sample and the step it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunMetrics {
    pub run: String,
    pub workflow: String,
    pub state: RunState,
    pub step: Option<String>,
    pub attempt: u32,
    pub unit: Option<String>,
    pub latest: Sample,
}

/// One period of one step of a run, as the state DB's `metrics_history` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsMinute {
    pub run: String,
    pub workflow: String,
    pub step: String,
    /// Start of the period.
    pub minute: Timestamp,
    pub samples: u64,
    pub cpu_avg: Option<f64>,
    pub cpu_max: Option<f64>,
    pub memory_max: Option<u64>,
    pub tasks_max: Option<u64>,
    /// The cumulative counters at the end of the period.
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
    /// Output written during the period.
    pub output_bytes: u64,
    pub output_lines: u64,
    pub idle_max: f64,
    /// An agent step's figures at the end of the period (cumulative).
    pub tokens_in: Option<u64>,
    pub tokens_out: Option<u64>,
    pub cost_usd: Option<f64>,
}

/// `Metrics(run)`: a run's latest metrics and its recent samples, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    #[serde(flatten)]
    pub metrics: RunMetrics,
    pub series: Vec<Sample>,
}
