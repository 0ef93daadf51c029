//! Each shipped rule (`rules/*.rhai`) against runs it should and should not act on.

use super::*;
use crate::model::Severity;

fn shipped() -> Rules {
    let rules = Rules::load(RuleDirs {
        shipped: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")),
        operator: None,
    })
    .unwrap();
    assert!(rules.load_errors().is_empty(), "{:?}", rules.load_errors());
    rules
}

/// What `rule` does to `view`: its firing (severity, summary) and its actions.
fn verdict(rule: &str, view: RunView) -> (Option<(Severity, String)>, Vec<ActionKind>) {
    let outcome = shipped().evaluate(&[view]);
    let errors: Vec<_> = outcome.errors.iter().filter(|e| e.rule == rule).collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        outcome.evaluated.iter().any(|(r, _)| r == rule),
        "{rule} not loaded"
    );
    let firing = outcome
        .firings
        .into_iter()
        .find(|f| f.rule == rule)
        .map(|f| (f.severity, f.summary));
    let actions = outcome
        .actions
        .into_iter()
        .filter(|a| a.rule == rule)
        .map(|a| a.kind)
        .collect();
    (firing, actions)
}

fn quiet(rule: &str, view: RunView) {
    assert_eq!(
        verdict(rule, view),
        (None, vec![]),
        "{rule} should stay quiet"
    );
}

fn is_kill(actions: &[ActionKind]) -> bool {
    matches!(actions, [ActionKind::Kill { .. }])
}

#[test]
fn every_shipped_rule_passes_the_check_and_copes_with_a_run_without_metrics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let files = rule_files(&dir).unwrap();
    assert_eq!(files.len(), 6, "{files:?}");
    for path in files.values() {
        check_file(path).unwrap_or_else(|e| panic!("{e:?}"));
        let header = std::fs::read_to_string(path).unwrap();
        assert!(
            header.starts_with("// "),
            "{}: no header comment",
            path.display()
        );
    }
    let outcome = shipped().evaluate(&[RunView::bare(), RunView::sample()]);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert!(outcome.firings.is_empty(), "{:?}", outcome.firings);
    assert!(outcome.actions.is_empty(), "{:?}", outcome.actions);
}

#[test]
fn stalled_agent() {
    let idle = |secs: f64, agent: bool| RunView {
        idle_secs: Some(secs),
        agent_step: agent,
        ..RunView::sample()
    };
    quiet("stalled-agent", idle(60.0, true));
    // The step's own stall_after (5 min in the sample) is shorter than 10 min.
    let (firing, actions) = verdict("stalled-agent", idle(6.0 * 60.0, true));
    let (severity, summary) = firing.unwrap();
    assert_eq!(severity, Severity::Warning);
    assert!(summary.contains("nothing for 6 min"), "{summary}");
    assert!(actions.is_empty());
    let (firing, actions) = verdict("stalled-agent", idle(31.0 * 60.0, true));
    assert_eq!(firing.unwrap().0, Severity::Critical);
    assert!(is_kill(&actions), "{actions:?}");
    // A silent shell step is alerted on, never killed.
    let (firing, actions) = verdict("stalled-agent", idle(60.0 * 60.0, false));
    assert_eq!(firing.unwrap().0, Severity::Warning);
    assert!(actions.is_empty());
    // Without a stall_after, 10 minutes.
    quiet(
        "stalled-agent",
        RunView {
            stall_after_secs: None,
            ..idle(9.0 * 60.0, true)
        },
    );
}

#[test]
fn memory_runaway() {
    let mem = |mib: u64| RunView {
        memory_bytes: Some(mib << 20),
        ..RunView::sample()
    };
    // The sample's memory_max is 2 GiB.
    quiet("memory-runaway", mem(1024));
    let (firing, actions) = verdict("memory-runaway", mem(1800));
    let (severity, summary) = firing.unwrap();
    assert_eq!(severity, Severity::Warning);
    assert!(summary.contains("1800 MiB of 2048 MiB (87%)"), "{summary}");
    assert!(actions.is_empty());
    assert_eq!(
        verdict("memory-runaway", mem(2000)).0.unwrap().0,
        Severity::Critical
    );
    // No memory_max: nothing to be near.
    let mut unlimited = mem(2000);
    unlimited.limits.memory_max = None;
    quiet("memory-runaway", unlimited);
}

#[test]
fn cost_budget() {
    let cost = |usd: f64| RunView {
        run_cost_usd: Some(usd),
        ..RunView::sample()
    };
    quiet("cost-budget", cost(1.0));
    let (firing, actions) = verdict("cost-budget", cost(6.0));
    assert_eq!(firing.unwrap().0, Severity::Warning);
    assert!(actions.is_empty());
    let (firing, actions) = verdict("cost-budget", cost(12.345));
    let (severity, summary) = firing.unwrap();
    assert_eq!(severity, Severity::Critical);
    assert!(summary.contains("12.35"), "{summary}");
    assert!(is_kill(&actions), "{actions:?}");
    // A run's own budget.
    let mut own = cost(3.0);
    own.params.insert("budget_usd".into(), "2.5".into());
    assert!(is_kill(&verdict("cost-budget", own).1));
    // Over budget in a shell step: alerted, the kill waits for a Claude Code step.
    let shell = RunView {
        agent_step: false,
        ..cost(12.0)
    };
    let (firing, actions) = verdict("cost-budget", shell);
    assert_eq!(firing.unwrap().0, Severity::Warning);
    assert!(actions.is_empty());
}

#[test]
fn slow_step() {
    let slow = |elapsed: f64, p95: Option<f64>| RunView {
        step_elapsed_secs: Some(elapsed),
        history: History {
            step_p95_secs: p95,
            recent_failures: Some(0),
        },
        ..RunView::sample()
    };
    quiet("slow-step", slow(500.0, Some(600.0)));
    quiet("slow-step", slow(5000.0, None));
    // Short steps are left alone even over their p95.
    quiet("slow-step", slow(50.0, Some(10.0)));
    let (firing, actions) = verdict("slow-step", slow(700.0, Some(600.0)));
    let (severity, summary) = firing.unwrap();
    assert_eq!(severity, Severity::Warning);
    assert!(
        summary.contains("700s") && summary.contains("600s"),
        "{summary}"
    );
    assert!(actions.is_empty());
    assert_eq!(
        verdict("slow-step", slow(2000.0, Some(600.0))).0.unwrap().0,
        Severity::Critical
    );
}

#[test]
fn repeated_failures() {
    let failures = |n: u64| RunView {
        history: History {
            step_p95_secs: None,
            recent_failures: Some(n),
        },
        ..RunView::sample()
    };
    quiet("repeated-failures", failures(2));
    let (firing, actions) = verdict("repeated-failures", failures(3));
    let (severity, summary) = firing.unwrap();
    assert_eq!(severity, Severity::Warning);
    assert!(summary.contains("failed 3 times"), "{summary}");
    assert!(actions.is_empty());
    assert_eq!(
        verdict("repeated-failures", failures(12)).0.unwrap().0,
        Severity::Critical
    );
}

#[test]
fn tool_loop() {
    let calls = |n: u32| RunView {
        same_tool_calls: Some(n),
        ..RunView::sample()
    };
    quiet("tool-loop", calls(4));
    let (firing, actions) = verdict("tool-loop", calls(5));
    assert_eq!(firing.unwrap().0, Severity::Warning);
    assert!(actions.is_empty());
    let (firing, actions) = verdict("tool-loop", calls(10));
    let (severity, summary) = firing.unwrap();
    assert_eq!(severity, Severity::Critical);
    assert!(summary.contains("Bash 10 times"), "{summary}");
    assert!(is_kill(&actions), "{actions:?}");
    quiet(
        "tool-loop",
        RunView {
            same_tool_calls: None,
            ..RunView::sample()
        },
    );
}
