//! What a rule sees of one run: [`RunView`], a plain record built from the run, its
//! latest metrics and a few history numbers, so rules can be tested without an agent.

use std::collections::BTreeMap;

use rhai::{Dynamic, FLOAT, INT, Map, Scope};

use crate::model::{Run, RunMetrics, RunState, StepState};
use crate::spec::{AgentKind, Workflow};

/// The stored workflow's `[limits]`, as rules see them (`limits.memory_max`, …).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitsView {
    pub memory_max: Option<u64>,
    pub cpu_quota_percent: Option<u32>,
    pub tasks_max: Option<u64>,
    pub timeout_secs: Option<f64>,
}

/// What the state DB says about earlier runs of the workflow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// p95 of this step's successful durations in earlier runs, seconds; `None` with too
    /// few of them to mean anything (see [`p95`]).
    pub step_p95_secs: Option<f64>,
    /// Runs of the workflow that failed recently (the integrator chooses the window; 24 h
    /// by default, [`RECENT_FAILURES_WINDOW`]).
    pub recent_failures: Option<u64>,
}

/// The window `recent_failures` counts over.
pub const RECENT_FAILURES_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Fewer earlier durations than this give no p95: one slow outlier would be the "p95".
pub const MIN_DURATIONS_FOR_P95: usize = 5;

/// One run as a rule sees it. Every field that may be unknown is an `Option`; rules see
/// `None` as `()`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunView {
    pub run: String,
    pub workflow: String,
    pub state: String,
    pub step: Option<String>,
    pub attempt: Option<u32>,
    /// Whether the current step is a Claude Code step (`agent = "claude-code"`).
    pub agent_step: bool,
    pub failure_class: Option<String>,
    pub params: BTreeMap<String, String>,
    pub limits: LimitsView,
    /// The current step's `stall_after`, seconds.
    pub stall_after_secs: Option<f64>,
    pub cpu_percent: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    pub tasks: Option<u64>,
    pub idle_secs: Option<f64>,
    pub step_elapsed_secs: Option<f64>,
    pub run_elapsed_secs: Option<f64>,
    pub output_lines_per_sec: Option<f64>,
    pub turns: Option<u64>,
    pub tokens_in: Option<u64>,
    pub tokens_out: Option<u64>,
    pub cost_usd: Option<f64>,
    /// Claude Code cost of the whole run so far: the ended steps' (their latest attempts'
    /// `result` events) plus the running step's `cost_usd`.
    pub run_cost_usd: Option<f64>,
    pub tool: Option<String>,
    pub same_tool_calls: Option<u32>,
    pub history: History,
}

impl RunView {
    /// The view of `run`: `workflow` is the one stored with it (for limits and step
    /// kinds), `metrics` the monitor's latest (none yet: metrics are `()`).
    pub fn new(
        run: &Run,
        workflow: Option<&Workflow>,
        metrics: Option<&RunMetrics>,
        history: History,
    ) -> RunView {
        let current = run
            .steps
            .iter()
            .rev()
            .find(|s| matches!(s.state, StepState::Starting | StepState::Running))
            .or_else(|| run.steps.iter().rev().find(|s| s.attempt > 0));
        let step_name = metrics
            .and_then(|m| m.step.clone())
            .or_else(|| current.map(|s| s.name.clone()));
        let spec_step = workflow.and_then(|w| {
            step_name
                .as_deref()
                .and_then(|name| w.steps.iter().find(|s| s.name == name))
        });
        // The run's own class once it failed; while it runs, the class of the latest
        // failed attempt (a retry in progress).
        let failure_class = run
            .failure_class
            .or_else(|| run.steps.iter().rev().find_map(|s| s.failure_class));
        let sample = metrics.map(|m| &m.latest);
        let agent = sample.and_then(|s| s.agent.as_ref());
        let ended_cost: Vec<f64> = run
            .steps
            .iter()
            .filter(|s| s.state.is_terminal())
            .filter_map(|s| s.agent.as_ref()?.result.as_ref()?.total_cost_usd)
            .collect();
        let run_cost_usd = match (agent.map(|a| a.cost_usd), ended_cost.is_empty()) {
            (None, true) => None,
            (live, _) => Some(live.unwrap_or(0.0) + ended_cost.iter().sum::<f64>()),
        };
        RunView {
            run: run.id.clone(),
            workflow: run.workflow.clone(),
            state: metrics.map_or(run.state, |m| m.state).as_str().to_owned(),
            attempt: metrics
                .map(|m| m.attempt)
                .filter(|&a| a > 0)
                .or_else(|| current.map(|s| s.attempt).filter(|&a| a > 0)),
            step: step_name,
            agent_step: spec_step.is_some_and(|s| matches!(s.agent, Some(AgentKind::ClaudeCode))),
            failure_class: failure_class.map(|c| c.to_string()),
            params: run.params.clone(),
            limits: workflow.map_or_else(LimitsView::default, |w| LimitsView {
                memory_max: w.limits.memory_max,
                cpu_quota_percent: w.limits.cpu_quota_percent,
                tasks_max: w.limits.tasks_max,
                timeout_secs: w.limits.timeout.map(|t| t.as_secs_f64()),
            }),
            stall_after_secs: spec_step
                .and_then(|s| s.stall_after)
                .map(|d| d.as_secs_f64()),
            cpu_percent: sample.and_then(|s| s.cpu_percent),
            memory_bytes: sample.and_then(|s| s.memory_bytes),
            memory_peak_bytes: sample.and_then(|s| s.memory_peak_bytes),
            tasks: sample.and_then(|s| s.tasks),
            idle_secs: sample.map(|s| s.idle_secs),
            step_elapsed_secs: sample.map(|s| s.step_elapsed_secs),
            run_elapsed_secs: sample.map(|s| s.run_elapsed_secs),
            output_lines_per_sec: sample.map(|s| s.output_lines_per_sec),
            turns: agent.map(|a| a.turns),
            tokens_in: agent.map(|a| a.tokens_in),
            tokens_out: agent.map(|a| a.tokens_out),
            cost_usd: agent.map(|a| a.cost_usd),
            run_cost_usd,
            tool: agent.and_then(|a| a.tool.clone()),
            same_tool_calls: agent.map(|a| a.same_tool_calls),
            history,
        }
    }

    /// A plausible running Claude Code run with every value set: what `drover rules check`
    /// dry-runs rules against, and the base of tests.
    pub fn sample() -> RunView {
        RunView {
            run: "sample-run".into(),
            workflow: "sample".into(),
            state: RunState::Running.as_str().into(),
            step: Some("fix".into()),
            attempt: Some(1),
            agent_step: true,
            failure_class: None,
            params: BTreeMap::from([("ticket".to_owned(), "1234".to_owned())]),
            limits: LimitsView {
                memory_max: Some(2 << 30),
                cpu_quota_percent: Some(150),
                tasks_max: Some(256),
                timeout_secs: Some(1800.0),
            },
            stall_after_secs: Some(300.0),
            cpu_percent: Some(12.5),
            memory_bytes: Some(300 << 20),
            memory_peak_bytes: Some(400 << 20),
            tasks: Some(12),
            idle_secs: Some(3.0),
            step_elapsed_secs: Some(120.0),
            run_elapsed_secs: Some(150.0),
            output_lines_per_sec: Some(2.0),
            turns: Some(4),
            tokens_in: Some(12_000),
            tokens_out: Some(3_000),
            cost_usd: Some(0.42),
            run_cost_usd: Some(0.42),
            tool: Some("Bash".into()),
            same_tool_calls: Some(1),
            history: History {
                step_p95_secs: Some(600.0),
                recent_failures: Some(0),
            },
        }
    }

    /// A running run with nothing known yet (no step, no metrics, no history): rules must
    /// cope with `()` everywhere.
    pub fn bare() -> RunView {
        RunView {
            run: "sample-run".into(),
            workflow: "sample".into(),
            state: RunState::Running.as_str().into(),
            ..RunView::default()
        }
    }

    /// The rule's variables for this run.
    pub(crate) fn scope(&self) -> Scope<'static> {
        let mut scope = Scope::new();
        // Plain variables, not constants: rules are compiled against a sample scope, and
        // Rhai's optimizer would fold the sample's constant values into the AST. Each
        // evaluation gets a fresh scope, so a rule assigning to one changes nothing else.
        scope.push("run", self.run.clone());
        scope.push("workflow", self.workflow.clone());
        scope.push("state", self.state.clone());
        scope.push_dynamic("step", text(&self.step));
        scope.push_dynamic("attempt", int(self.attempt.map(u64::from)));
        scope.push("agent_step", self.agent_step);
        scope.push_dynamic("failure_class", text(&self.failure_class));
        let params: Map = self
            .params
            .iter()
            .map(|(k, v)| (k.as_str().into(), Dynamic::from(v.clone())))
            .collect();
        scope.push("labels", params.clone());
        scope.push("params", params);
        let mut limits = Map::new();
        limits.insert("memory_max".into(), int(self.limits.memory_max));
        limits.insert(
            "cpu_quota_percent".into(),
            int(self.limits.cpu_quota_percent.map(u64::from)),
        );
        limits.insert("tasks_max".into(), int(self.limits.tasks_max));
        limits.insert("timeout_secs".into(), float(self.limits.timeout_secs));
        scope.push("limits", limits);
        scope.push_dynamic("stall_after_secs", float(self.stall_after_secs));
        scope.push_dynamic("cpu_percent", float(self.cpu_percent));
        scope.push_dynamic("memory_bytes", int(self.memory_bytes));
        scope.push_dynamic("memory_peak_bytes", int(self.memory_peak_bytes));
        scope.push_dynamic("tasks", int(self.tasks));
        scope.push_dynamic("idle_secs", float(self.idle_secs));
        scope.push_dynamic("step_elapsed_secs", float(self.step_elapsed_secs));
        scope.push_dynamic("run_elapsed_secs", float(self.run_elapsed_secs));
        scope.push_dynamic("output_lines_per_sec", float(self.output_lines_per_sec));
        scope.push_dynamic("turns", int(self.turns));
        scope.push_dynamic("tokens_in", int(self.tokens_in));
        scope.push_dynamic("tokens_out", int(self.tokens_out));
        scope.push_dynamic("cost_usd", float(self.cost_usd));
        scope.push_dynamic("run_cost_usd", float(self.run_cost_usd));
        scope.push_dynamic("tool", text(&self.tool));
        scope.push_dynamic("same_tool_calls", int(self.same_tool_calls.map(u64::from)));
        scope.push_dynamic("step_p95_secs", float(self.history.step_p95_secs));
        scope.push_dynamic("recent_failures", int(self.history.recent_failures));
        scope
    }
}

/// How many of the step's latest successful durations its p95 is taken over.
pub const P95_WINDOW: u32 = 50;

/// What `view_of` reads from the state DB, kept between ticks: a run's workflow never
/// changes, and history moves slowly, so it is read again once a minute, not per tick.
#[derive(Default)]
pub struct ViewCache {
    workflows: std::collections::HashMap<String, Option<Workflow>>,
    p95: std::collections::HashMap<(String, String), (std::time::Instant, Option<f64>)>,
    failures: std::collections::HashMap<String, (std::time::Instant, Option<u64>)>,
}

/// How long history read for the rules is used before it is read again.
const HISTORY_TTL: std::time::Duration = std::time::Duration::from_secs(60);

impl ViewCache {
    /// Forgets the runs not in `runs` (ended and out of view).
    pub fn retain_runs(&mut self, runs: &[Run]) {
        self.workflows
            .retain(|id, _| runs.iter().any(|r| &r.id == id));
    }
}

/// The view of `run` as the agent builds it each tick: its stored workflow from the
/// engine and its history from `store` (both through `cache`), `metrics` from the monitor. What cannot be read is
/// logged and left unknown (`()`), so one bad run never stops the tick.
pub fn view_of(
    engine: &crate::engine::Engine,
    store: &crate::store::StoreReader,
    run: &Run,
    metrics: Option<&RunMetrics>,
    cache: &mut ViewCache,
) -> RunView {
    let workflow = cache
        .workflows
        .entry(run.id.clone())
        .or_insert_with(|| {
            engine
                .workflow_of(&run.id)
                .map_err(
                    |e| tracing::warn!(drover_run = %run.id, "rules: no workflow for the run: {e}"),
                )
                .ok()
        })
        .clone();
    let mut view = RunView::new(run, workflow.as_ref(), metrics, History::default());
    let fresh = |at: &std::time::Instant| at.elapsed() < HISTORY_TTL;
    if let Some(step) = &view.step {
        let key = (run.workflow.clone(), step.clone());
        view.history.step_p95_secs = match cache.p95.get(&key) {
            Some((at, p95)) if fresh(at) => *p95,
            _ => {
                let read = store
                    .step_durations(&run.workflow, step, &run.id, P95_WINDOW)
                    .map_err(|e| tracing::warn!(drover_run = %run.id, "rules: step durations: {e}"))
                    .ok()
                    .and_then(|durations| p95(&durations));
                cache.p95.insert(key, (std::time::Instant::now(), read));
                read
            }
        };
    }
    view.history.recent_failures = match cache.failures.get(&run.workflow) {
        Some((at, n)) if fresh(at) => *n,
        _ => {
            let since = crate::model::Timestamp(
                crate::model::Timestamp::now().0 - RECENT_FAILURES_WINDOW.as_millis() as i64,
            );
            let read = store
                .failed_runs_since(&run.workflow, since)
                .map_err(|e| tracing::warn!(drover_run = %run.id, "rules: recent failures: {e}"))
                .ok();
            cache
                .failures
                .insert(run.workflow.clone(), (std::time::Instant::now(), read));
            read
        }
    };
    view
}

fn text(value: &Option<String>) -> Dynamic {
    value.clone().map_or(Dynamic::UNIT, Dynamic::from)
}

fn int(value: Option<u64>) -> Dynamic {
    // Rhai integers are i64; byte counts past 8 EiB do not happen, saturate if they do.
    value.map_or(Dynamic::UNIT, |v| {
        Dynamic::from(INT::try_from(v).unwrap_or(INT::MAX))
    })
}

fn float(value: Option<f64>) -> Dynamic {
    value.map_or(Dynamic::UNIT, |v| Dynamic::from(v as FLOAT))
}

/// The 95th percentile (nearest rank) of `durations`, or `None` with fewer than
/// [`MIN_DURATIONS_FOR_P95`] of them.
pub fn p95(durations: &[f64]) -> Option<f64> {
    if durations.len() < MIN_DURATIONS_FOR_P95 {
        return None;
    }
    let mut sorted: Vec<f64> = durations
        .iter()
        .copied()
        .filter(|d| d.is_finite())
        .collect();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() as f64) * 0.95).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_needs_enough_samples_and_takes_the_nearest_rank() {
        assert_eq!(p95(&[1.0, 2.0, 3.0]), None);
        let durations: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(p95(&durations), Some(19.0));
        assert_eq!(p95(&[5.0, 1.0, 4.0, 2.0, 3.0]), Some(5.0));
    }
}
