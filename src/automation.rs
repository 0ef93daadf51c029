//! What the agent does on its own, tick by tick: after each monitor tick the rules
//! evaluate every unfinished run (and those ended in the last ten minutes, which a rule
//! may restart); what fires goes to the alerts part (which dedupes and
//! resolves), what they ask for goes to the operations as the `rules` caller (authorised by
//! its configured role and audited like an operator's request, refusals included); a run's
//! end resolves its alerts; a rule file that
//! fails to compile raises an alert of its own until it compiles again.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::watch;

use crate::alerts::Alerts;
use crate::auth::Role;
use crate::engine::Engine;
use crate::model::{EngineEvent, Severity, Timestamp};
use crate::monitor::Monitor;
use crate::ops::types::{CheckpointArgs, KillArgs, RestartArgs};
use crate::ops::{Caller, Ops};
use crate::rules::{ActionKind, RuleAction, Rules, view};
use crate::selfmetrics;
use crate::store::StoreReader;

/// The rule name of drover's own alerts about rule files.
const RULES_LOAD: &str = "rules-load";

/// What the automation works with.
pub struct Parts {
    pub ops: Ops,
    pub engine: Engine,
    /// What the rules read of history (a query-only connection).
    pub history: StoreReader,
    pub monitor: Monitor,
    pub rules: Rules,
    pub alerts: Alerts,
    /// The rules' `[rules] role`, which a config reload may change.
    pub role: watch::Receiver<Role>,
}

/// Starts the tasks; they end with the agent.
pub fn start(parts: Parts) {
    tokio::spawn(resolve_ended_runs(
        parts.engine.clone(),
        parts.alerts.clone(),
    ));
    tokio::spawn(evaluate_each_tick(parts));
}

async fn evaluate_each_tick(parts: Parts) {
    let Parts {
        ops,
        engine,
        history,
        monitor,
        rules,
        alerts,
        role,
    } = parts;
    let mut ticks = monitor.subscribe();
    let mut load_errors = BTreeSet::new();
    let mut cache = view::ViewCache::default();
    loop {
        match ticks.recv().await {
            Ok(()) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
        report_load_errors(&rules, &alerts, &mut load_errors);
        let since = Timestamp(Timestamp::now().0 - ENDED_IN_VIEW.as_millis() as i64);
        let Ok(runs) = engine.runs_ended_since(Some(since)) else {
            continue;
        };
        cache.retain_runs(&runs);
        let views: Vec<_> = runs
            .iter()
            .map(|run| {
                let metrics = monitor.latest(&run.id);
                view::view_of(&engine, &history, run, metrics.as_ref(), &mut cache)
            })
            .collect();
        // Off the async threads: a tick waits for each rule up to its time cap per run.
        let evaluating = rules.clone();
        let mut outcome =
            match tokio::task::spawn_blocking(move || evaluating.evaluate(&views)).await {
                Ok(outcome) => outcome,
                Err(e) => {
                    tracing::error!(
                        drover_event = "rule-error",
                        "the rules' evaluation failed: {e}"
                    );
                    continue;
                }
            };
        // Alerts are about unfinished runs (a run's end resolves its alerts); ended runs
        // are in view only for what a rule does with them.
        let unfinished: BTreeSet<&str> = runs
            .iter()
            .filter(|run| !run.state.is_terminal())
            .map(|run| run.id.as_str())
            .collect();
        outcome
            .evaluated
            .retain(|(_, run)| unfinished.contains(run.as_str()));
        outcome
            .firings
            .retain(|firing| unfinished.contains(firing.run.as_str()));
        selfmetrics::global()
            .set_rule_evaluation_duration(Duration::from_micros(rules.stats().last_tick_micros));
        if let Err(e) = alerts.observe(&outcome.evaluated, &outcome.firings) {
            tracing::error!(drover_event = "alert-failed", "cannot record alerts: {e}");
        }
        let role = *role.borrow();
        for action in outcome.actions {
            // A kill takes seconds: the next tick does not wait for it.
            let ops = ops.clone();
            tokio::spawn(async move {
                if let Err(e) = execute(&ops, role, &action).await {
                    tracing::warn!(
                        drover_run = %action.run,
                        drover_event = "rule-action",
                        "rule {}: {e}",
                        action.rule
                    );
                }
            });
        }
    }
}

/// Carries out what a rule asked for, as the `rules` caller with the config's `[rules]
/// role`, through the same operations as an operator's request.
async fn execute(ops: &Ops, role: Role, action: &RuleAction) -> crate::ops::Result<()> {
    let caller = Caller::rule(&action.rule, role);
    let run = action.run.clone();
    match &action.kind {
        ActionKind::Kill { reason } => {
            let args = KillArgs {
                run,
                reason: format!("rule {}: {reason}", action.rule),
                grace: None,
                // A rule cannot confirm: a protected workflow's kill is refused (and
                // audited), and left to a person.
                confirm: false,
            };
            ops.kill(&caller, args).await.map(drop)
        }
        ActionKind::Restart => {
            let args = RestartArgs {
                run,
                from: None,
                confirm: false,
            };
            ops.restart(&caller, args).await.map(drop)
        }
        ActionKind::Checkpoint { label } => {
            let args = CheckpointArgs {
                run,
                label: label.clone(),
            };
            ops.checkpoint(&caller, args).await.map(drop)
        }
    }
}

/// How long an ended run stays before the rules (so a rule can `restart()` it); a rule's
/// action is given once per run while the run stays in view, so a run it restarted that
/// fails again is not restarted by it again.
const ENDED_IN_VIEW: Duration = Duration::from_secs(10 * 60);

/// Raises an alert for each rule file that fails to compile, and resolves it once the
/// file compiles again (or is gone).
fn report_load_errors(rules: &Rules, alerts: &Alerts, reported: &mut BTreeSet<String>) {
    let now: BTreeSet<String> = rules
        .load_errors()
        .into_iter()
        .map(|error| {
            let file = error.path.display().to_string();
            if !reported.contains(&file)
                && let Err(e) = alerts.raise(
                    RULES_LOAD,
                    Some(&file),
                    Severity::Critical,
                    &error.to_string(),
                )
            {
                tracing::error!(drover_event = "alert-failed", "cannot raise an alert: {e}");
            }
            file
        })
        .collect();
    for fixed in reported.difference(&now) {
        let _ = alerts.resolve(&format!("{RULES_LOAD}/{fixed}"));
    }
    *reported = now;
}

async fn resolve_ended_runs(engine: Engine, alerts: Alerts) {
    let mut events = engine.subscribe();
    loop {
        match events.recv().await {
            Ok(EngineEvent::Run(event)) if event.state.is_terminal() => {
                if let Err(e) = alerts.resolve_run(&event.run) {
                    tracing::warn!(drover_run = %event.run, "cannot resolve the run's alerts: {e}");
                }
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}
