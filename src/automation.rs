//! What the agent does on its own, tick by tick: after each monitor tick the rules
//! evaluate every unfinished run (and those ended in the last ten minutes, which a rule
//! may restart); what fires goes to the alerts part (which dedupes and
//! resolves), what they ask for goes to the engine as the `rules` principal (authorised by
//! its configured role and audited); a run's end resolves its alerts; a rule file that
//! fails to compile raises an alert of its own until it compiles again.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::watch;

use crate::alerts::Alerts;
use crate::api::auth::Role;
use crate::engine::Engine;
use crate::model::{Severity, Timestamp};
use crate::monitor::Monitor;
use crate::rules::{self, Rules, view};
use crate::selfmetrics;
use crate::store::StoreReader;

/// The rule name of drover's own alerts about rule files.
const RULES_LOAD: &str = "rules-load";

/// Starts the tasks; they end with the agent. `role` is the rules' `[rules] role`, which
/// a config reload may change.
pub fn start(
    engine: Engine,
    history: StoreReader,
    monitor: Monitor,
    rules: Rules,
    alerts: Alerts,
    role: watch::Receiver<Role>,
) {
    tokio::spawn(resolve_ended_runs(engine.clone(), alerts.clone()));
    tokio::spawn(evaluate_each_tick(
        engine, history, monitor, rules, alerts, role,
    ));
}

async fn evaluate_each_tick(
    engine: Engine,
    history: StoreReader,
    monitor: Monitor,
    rules: Rules,
    alerts: Alerts,
    role: watch::Receiver<Role>,
) {
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
        let mut outcome = rules.evaluate(&views);
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
        for error in &outcome.errors {
            tracing::warn!(drover_event = "rule-error", "{error}");
        }
        if let Err(e) = alerts.observe(&outcome.evaluated, &outcome.firings) {
            tracing::error!(drover_event = "alert-failed", "cannot record alerts: {e}");
        }
        let role = *role.borrow();
        for action in outcome.actions {
            // A kill takes seconds: the next tick does not wait for it.
            let engine = engine.clone();
            tokio::spawn(async move {
                if let Err(e) = rules::actions::execute(&engine, role, &action).await {
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
            Ok(event) if event.state.is_terminal() => {
                if let Err(e) = alerts.resolve_run(&event.run) {
                    tracing::warn!(drover_run = %event.run, "cannot resolve the run's alerts: {e}");
                }
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}
