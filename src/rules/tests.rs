use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;
use crate::model::Severity;

/// Rules loaded from a temporary operator directory holding `files`.
fn rules_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Rules) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let rules = Rules::load(RuleDirs {
        shipped: None,
        operator: Some(dir.path().to_owned()),
    })
    .unwrap();
    (dir, rules)
}

fn fired(outcome: &TickOutcome, rule: &str) -> Vec<String> {
    outcome
        .firings
        .iter()
        .filter(|f| f.rule == rule)
        .map(|f| f.summary.clone())
        .collect()
}

#[test]
fn a_rule_sees_the_run_and_its_alert_becomes_a_firing() {
    let (_dir, rules) = rules_with(&[(
        "big.rhai",
        r#"if memory_bytes > mib(200) && params.ticket == "1234" {
               alert("critical", `${run} ${workflow} ${step} uses ${memory_bytes / mib(1)} MiB`);
           }"#,
    )]);
    let outcome = rules.evaluate(&[RunView::sample()]);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(
        outcome.evaluated,
        vec![("big".to_owned(), "sample-run".to_owned())]
    );
    assert_eq!(outcome.micros.len(), 1);
    assert_eq!(outcome.firings.len(), 1);
    let firing = &outcome.firings[0];
    assert_eq!(firing.severity, Severity::Critical);
    assert_eq!(firing.workflow, "sample");
    assert_eq!(firing.summary, "sample-run sample fix uses 300 MiB");
    let stats = rules.stats();
    assert_eq!(stats.evaluations, 1);
    assert_eq!(stats.per_rule["big"].0, 1);
}

#[test]
fn missing_values_are_unit_and_comparisons_with_them_are_false() {
    let (_dir, rules) = rules_with(&[(
        "unit.rhai",
        r#"if memory_bytes > 0 || idle_secs > 0.0 { alert("info", "known"); }
           if !has(memory_bytes) && step == () && limits.memory_max == () { alert("warning", "unknown"); }"#,
    )]);
    let outcome = rules.evaluate(&[RunView::bare()]);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(fired(&outcome, "unit"), vec!["unknown".to_owned()]);
}

#[test]
fn an_endless_loop_is_stopped_by_the_operation_limit_and_the_other_rules_go_on() {
    let (_dir, rules) = rules_with(&[
        ("a-loop.rhai", "let x = 0;\nloop { x += 1; }\n"),
        ("b-fine.rhai", r#"alert("info", "still here");"#),
    ]);
    let started = Instant::now();
    let outcome = rules.evaluate(&[RunView::sample()]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(outcome.errors.len(), 1, "{:?}", outcome.errors);
    let error = &outcome.errors[0];
    assert_eq!(error.rule, "a-loop");
    assert!(error.limit, "{error}");
    // The operation count stops it, or in a slow (debug, loaded) build the time cap first.
    assert!(error.message.starts_with("stopped"), "{error}");
    assert!(error.to_string().contains("a-loop.rhai:2:"), "{error}");
    assert_eq!(fired(&outcome, "b-fine"), vec!["still here".to_owned()]);
    assert_eq!(rules.stats().errors, 1);
}

#[test]
fn recursion_and_huge_values_hit_their_limits() {
    let (_dir, rules) = rules_with(&[
        ("deep.rhai", "fn f(x) { f(x + 1) }\nf(0);\n"),
        ("string.rhai", "let s = \"xxxxxxxx\";\nloop { s += s; }\n"),
        ("array.rhai", "let a = [];\nloop { a.push(1); }\n"),
        (
            "map.rhai",
            "let m = #{};\nlet i = 0;\nloop { m[`k${i}`] = i; i += 1; }\n",
        ),
    ]);
    let outcome = rules.evaluate(&[RunView::sample()]);
    let mut failed: Vec<&str> = outcome.errors.iter().map(|e| e.rule.as_str()).collect();
    failed.sort();
    assert_eq!(
        failed,
        ["array", "deep", "map", "string"],
        "{:?}",
        outcome.errors
    );
    for e in &outcome.errors {
        assert!(e.limit, "{e}");
    }
}

#[test]
fn files_processes_eval_and_imports_are_out_of_reach() {
    let attempts = [
        ("import", "import \"/etc/passwd\" as p;\n"),
        ("eval", "eval(\"1 + 1\");\n"),
        ("open", "let f = open_file(\"/etc/passwd\");\n"),
        ("read", "let t = read_file(\"/etc/passwd\");\n"),
        ("fs", "let t = fs::read_to_string(\"/etc/passwd\");\n"),
        ("system", "system(\"touch /tmp/drover-rule-was-here\");\n"),
        ("command", "let c = Command(\"id\");\n"),
        ("exec", "exec(\"/bin/sh\", [\"-c\", \"id\"]);\n"),
        ("spawn", "spawn(\"id\");\n"),
        ("env", "let h = env(\"HOME\");\n"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in attempts {
        let path = dir.path().join(format!("{name}.rhai"));
        std::fs::write(&path, text).unwrap();
        let errors = check_file(&path).expect_err(name);
        assert!(
            errors[0]
                .to_string()
                .starts_with(&format!("{}:1:", path.display())),
            "{name}: {errors:?}"
        );
    }
    // Loaded for real: each either fails to compile or fails at run time, asking nothing.
    let rules = Rules::load(RuleDirs {
        shipped: None,
        operator: Some(dir.path().to_owned()),
    })
    .unwrap();
    let outcome = rules.evaluate(&[RunView::sample()]);
    let failed = rules.load_errors().len() + outcome.errors.len();
    assert_eq!(
        failed,
        attempts.len(),
        "{:?} {:?}",
        rules.load_errors(),
        outcome.errors
    );
    assert!(outcome.actions.is_empty() && outcome.firings.is_empty());
    assert!(!Path::new("/tmp/drover-rule-was-here").exists());
    // `import` and `eval` are refused at compile time, with their position.
    let import = rules
        .load_errors()
        .into_iter()
        .find(|e| e.rule == "import")
        .expect("import refused at compile time");
    assert_eq!((import.line, import.column), (Some(1), Some(1)), "{import}");
    assert!(rules.load_errors().iter().any(|e| e.rule == "eval"));
}

#[test]
fn a_broken_file_is_reported_with_its_position_and_the_old_version_keeps_running() {
    let (dir, rules) = rules_with(&[("r.rhai", r#"alert("warning", "version 1");"#)]);
    assert_eq!(
        fired(&rules.evaluate(&[RunView::sample()]), "r"),
        ["version 1"]
    );
    let path = dir.path().join("r.rhai");
    std::fs::write(&path, "let x = 1;\nlet y = (x + ;\nalert(\"version 2\");\n").unwrap();
    let report = rules.reload().unwrap();
    assert!(report.loaded.is_empty());
    assert_eq!(report.errors.len(), 1);
    let error = &report.errors[0];
    assert!(error.previous_kept);
    assert_eq!(error.line, Some(2), "{error}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("{}:2:", path.display())),
        "{error}"
    );
    assert_eq!(rules.load_errors(), vec![error.clone()]);
    assert_eq!(
        fired(&rules.evaluate(&[RunView::sample()]), "r"),
        ["version 1"]
    );
    // A misspelt variable is a compile error too.
    std::fs::write(&path, "if memory_byts > 0 { alert(\"x\"); }\n").unwrap();
    let report = rules.reload().unwrap();
    assert!(
        report.errors[0].message.contains("memory_byts"),
        "{:?}",
        report
    );
    assert_eq!(report.errors[0].line, Some(1));
    // Fixed: the new version runs and the error is gone.
    std::fs::write(&path, r#"alert("warning", "version 3");"#).unwrap();
    let report = rules.reload().unwrap();
    assert_eq!(report.loaded, ["r"]);
    assert!(rules.load_errors().is_empty());
    assert_eq!(
        fired(&rules.evaluate(&[RunView::sample()]), "r"),
        ["version 3"]
    );
}

#[test]
fn the_operators_file_overrides_the_shipped_one_of_the_same_name() {
    let shipped = tempfile::tempdir().unwrap();
    let operator = tempfile::tempdir().unwrap();
    std::fs::write(
        shipped.path().join("a.rhai"),
        r#"alert("info", "shipped a");"#,
    )
    .unwrap();
    std::fs::write(
        shipped.path().join("b.rhai"),
        r#"alert("info", "shipped b");"#,
    )
    .unwrap();
    std::fs::write(operator.path().join("a.rhai"), r#"alert("info", "mine");"#).unwrap();
    std::fs::write(operator.path().join("notes.txt"), "not a rule").unwrap();
    let rules = Rules::load(RuleDirs {
        shipped: Some(shipped.path().to_owned()),
        operator: Some(operator.path().to_owned()),
    })
    .unwrap();
    let outcome = rules.evaluate(&[RunView::sample()]);
    assert_eq!(fired(&outcome, "a"), ["mine"]);
    assert_eq!(fired(&outcome, "b"), ["shipped b"]);
    assert_eq!(rules.rules().len(), 2);
    // Removing the override brings the shipped rule back.
    std::fs::remove_file(operator.path().join("a.rhai")).unwrap();
    rules.reload().unwrap();
    assert_eq!(
        fired(&rules.evaluate(&[RunView::sample()]), "a"),
        ["shipped a"]
    );
}

#[test]
fn an_action_is_given_once_per_run_until_the_run_leaves() {
    let (_dir, rules) = rules_with(&[(
        "k.rhai",
        r#"kill(`idle ${idle_secs}`); kill("again"); checkpoint("c1"); alert("critical", "k");"#,
    )]);
    let one = RunView::sample();
    let mut two = RunView::sample();
    two.run = "other-run".into();
    let first = rules.evaluate(&[one.clone(), two.clone()]);
    let kinds: Vec<(&str, &str)> = first
        .actions
        .iter()
        .map(|a| (a.run.as_str(), a.kind.name()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("sample-run", "kill"),
            ("sample-run", "checkpoint"),
            ("other-run", "kill"),
            ("other-run", "checkpoint")
        ]
    );
    assert_eq!(
        first.actions[0].kind,
        ActionKind::Kill {
            reason: "idle 3.0".into()
        }
    );
    // The alert goes on firing every tick; the actions are not given again.
    let second = rules.evaluate(&[one.clone(), two.clone()]);
    assert!(second.actions.is_empty(), "{:?}", second.actions);
    assert_eq!(second.firings.len(), 2);
    // A run that left (ended) and came back (restarted) can be acted on again.
    rules.evaluate(&[two.clone()]);
    let back = rules.evaluate(&[one, two]);
    assert_eq!(back.actions.len(), 2, "{:?}", back.actions);
    assert!(back.actions.iter().all(|a| a.run == "sample-run"));
}

#[test]
fn a_failed_evaluation_asks_for_nothing() {
    let (_dir, rules) = rules_with(&[(
        "half.rhai",
        "kill(\"first\");\nalert(\"loud\", \"bad severity\");\n",
    )]);
    let outcome = rules.evaluate(&[RunView::sample()]);
    assert!(outcome.actions.is_empty());
    assert_eq!(outcome.errors.len(), 1);
    assert!(
        outcome.errors[0].message.contains("severity"),
        "{:?}",
        outcome.errors
    );
    assert_eq!(outcome.errors[0].line, Some(2), "{:?}", outcome.errors);
}

#[test]
fn hot_reload_takes_effect_within_two_seconds() {
    let (dir, rules) = rules_with(&[]);
    let _watch = rules.watch().unwrap();
    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !cond() {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{what}: not within 2 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let summaries = || -> Vec<String> {
        rules
            .evaluate(&[RunView::sample()])
            .firings
            .into_iter()
            .map(|f| f.summary)
            .collect()
    };
    let path = dir.path().join("hot.rhai");
    std::fs::write(&path, r#"alert("info", "one");"#).unwrap();
    wait_for("added", &|| summaries() == ["one"]);
    // Written the way editors do: a new file renamed over the old one.
    let tmp = dir.path().join(".hot.rhai.tmp");
    std::fs::write(&tmp, r#"alert("info", "two");"#).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    wait_for("changed", &|| summaries() == ["two"]);
    std::fs::write(&path, "alert(\"info\", \n").unwrap();
    wait_for("broken", &|| !rules.load_errors().is_empty());
    assert_eq!(summaries(), ["two"]);
    std::fs::remove_file(&path).unwrap();
    wait_for("removed", &|| summaries().is_empty());
    assert!(rules.load_errors().is_empty());
}

#[test]
fn a_run_view_is_built_from_the_run_its_workflow_and_metrics() {
    use crate::model::{AgentLive, RunMetrics, RunState, Sample};
    let text = r#"
name = "fix"
[limits]
memory_max = "1G"
[[step]]
name = "build"
run = "true"
[[step]]
name = "agent"
run = ["claude", "-p", "hi"]
agent = "claude-code"
stall_after = "2m"
"#;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fix.toml");
    std::fs::write(&file, text).unwrap();
    let workflow = crate::spec::parse(text, &file).unwrap();
    let run: crate::model::Run = serde_json::from_value(serde_json::json!({
        "id": "r1", "workflow": "fix", "workflow_file": "/x/fix.toml", "state": "running",
        "params": {"ticket": "7"}, "worktree": null, "requested_by": "me",
        "created_at": "2026-01-01T00:00:00Z", "started_at": null, "ended_at": null,
        "error": null, "steps": []
    }))
    .unwrap();
    let metrics = RunMetrics {
        run: "r1".into(),
        workflow: "fix".into(),
        state: RunState::Running,
        step: Some("agent".into()),
        attempt: 2,
        unit: None,
        latest: Sample {
            memory_bytes: Some(512 << 20),
            idle_secs: 30.0,
            agent: Some(AgentLive {
                cost_usd: 1.5,
                tool: Some("Bash".into()),
                same_tool_calls: 3,
                ..AgentLive::default()
            }),
            ..Sample::default()
        },
    };
    let history = History {
        step_p95_secs: Some(90.0),
        recent_failures: Some(2),
    };
    let view = RunView::new(&run, Some(&workflow), Some(&metrics), history.clone());
    assert_eq!(view.step.as_deref(), Some("agent"));
    assert_eq!(view.attempt, Some(2));
    assert!(view.agent_step);
    assert_eq!(view.limits.memory_max, Some(1 << 30));
    assert_eq!(view.stall_after_secs, Some(120.0));
    assert_eq!(view.memory_bytes, Some(512 << 20));
    assert_eq!(view.cpu_percent, None);
    assert_eq!(view.cost_usd, Some(1.5));
    assert_eq!(view.run_cost_usd, Some(1.5));
    assert_eq!(view.same_tool_calls, Some(3));
    assert_eq!(view.params["ticket"], "7");
    assert_eq!(view.history, history);
    // Without metrics: the run's own facts, every metric unknown.
    let bare = RunView::new(&run, Some(&workflow), None, History::default());
    assert_eq!(bare.state, "running");
    assert_eq!(bare.idle_secs, None);
    assert!(!bare.agent_step);
}

#[test]
fn history_comes_from_the_state_db() {
    use crate::model::{RunState, StepState, Timestamp};
    use crate::store::{AttemptEnd, NewAttempt, NewRun, Store, TEST_USER};
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("state.db")).unwrap();
    let params = BTreeMap::new();
    for (i, outcome) in [
        StepState::Succeeded,
        StepState::Succeeded,
        StepState::Failed,
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("r{i}");
        store
            .create_run(&NewRun {
                id: &id,
                workflow: "wf",
                workflow_file: "/wf.toml",
                spec_json: "{}",
                params: &params,
                requested_by: "me",
                user: &TEST_USER,
            })
            .unwrap();
        store
            .set_run_state(&id, &[RunState::Pending], RunState::Running, "drover", None)
            .unwrap();
        store
            .start_attempt(&NewAttempt {
                run: &id,
                index: 0,
                name: "build",
                attempt: 1,
                unit: "u.scope",
                log_path: "/l",
                session_id: None,
                note: None,
            })
            .unwrap();
        store.attempt_running(&id, 0, 1, 1).unwrap();
        store
            .end_attempt(
                &id,
                0,
                1,
                &AttemptEnd {
                    state: outcome,
                    exit_code: Some(0),
                    signal: None,
                    result: "success",
                    output: &Default::default(),
                    failure: None,
                    agent: None,
                    log_cut: None,
                },
            )
            .unwrap();
        let end = if outcome == StepState::Failed {
            RunState::Failed
        } else {
            RunState::Succeeded
        };
        store
            .set_run_state(&id, &[RunState::Running], end, "drover", None)
            .unwrap();
    }
    let durations = store.step_durations("wf", "build", "r0", 10).unwrap();
    assert_eq!(durations.len(), 1, "r1 only: r0 excluded, r2 failed");
    assert!(durations[0] >= 0.0);
    assert!(
        store
            .step_durations("other", "build", "", 10)
            .unwrap()
            .is_empty()
    );
    let since = Timestamp(Timestamp::now().0 - 60_000);
    assert_eq!(store.failed_runs_since("wf", since).unwrap(), 1);
    assert_eq!(
        store
            .failed_runs_since("wf", Timestamp(Timestamp::now().0 + 60_000))
            .unwrap(),
        0
    );
}

#[test]
fn new_directories_replace_the_rules_and_an_unreadable_one_changes_nothing() {
    let (_old, rules) = rules_with(&[("old.rhai", "alert(\"info\", \"old\");\n")]);
    let new = tempfile::tempdir().unwrap();
    std::fs::write(new.path().join("new.rhai"), "alert(\"info\", \"new\");\n").unwrap();
    let dirs = RuleDirs {
        shipped: None,
        operator: Some(new.path().to_owned()),
    };
    let report = rules.set_dirs(dirs.clone()).unwrap();
    assert_eq!(report.loaded, ["new"]);
    assert_eq!(report.removed, ["old"]);
    assert_eq!(rules.dirs(), dirs);
    let outcome = rules.evaluate(&[RunView::sample()]);
    assert_eq!(fired(&outcome, "new"), ["new"]);

    // A file where a directory should be cannot be listed: the rules stay as they were.
    let not_a_dir = new.path().join("new.rhai");
    let err = rules.set_dirs(RuleDirs {
        shipped: None,
        operator: Some(not_a_dir),
    });
    assert!(err.is_err());
    assert_eq!(rules.dirs(), dirs);
    assert_eq!(rules.rules().len(), 1);
}

#[test]
fn a_rule_calling_sleep_is_refused_with_the_calls_position_when_checked_and_loaded() {
    let (dir, rules) = rules_with(&[
        ("direct.rhai", "let x = 1;\nif x > 0 {\n    sleep(20);\n}\n"),
        ("method.rhai", "let s = 20.0;\ns.sleep();\n"),
    ]);
    for (name, line, column) in [("direct", 3, 5), ("method", 2, 3)] {
        let path = dir.path().join(format!("{name}.rhai"));
        let errors = check_file(&path).expect_err(name);
        assert_eq!(
            errors[0].to_string(),
            format!(
                "{}:{line}:{column}: sleep is not available in rules (a rule must not wait)",
                path.display()
            )
        );
        let error = rules
            .load_errors()
            .into_iter()
            .find(|e| e.rule == name)
            .unwrap_or_else(|| panic!("{name} is refused when loaded"));
        assert_eq!((error.line, error.column), (Some(line), Some(column)));
    }
    assert!(rules.rules().is_empty(), "{:?}", rules.rules());
}

#[test]
fn sleep_reached_by_name_at_run_time_fails_at_once() {
    let (dir, rules) = rules_with(&[(
        "dynamic.rhai",
        "let f = Fn(\"sle\" + \"ep\");\nf.call(20);\n",
    )]);
    let started = Instant::now();
    let outcome = rules.evaluate(&[RunView::sample()]);
    let errors = check_file(&dir.path().join("dynamic.rhai")).expect_err("refused");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(outcome.errors.len(), 1, "{:?}", outcome.errors);
    let error = &outcome.errors[0];
    assert!(error.message.contains("sleep is not available"), "{error}");
    assert_eq!((error.line, error.column), (Some(2), Some(3)), "{error}");
    assert!(
        errors[0].message.contains("sleep is not available"),
        "{errors:?}"
    );
}

/// Compiles `source` as the rule `name` (at a made-up path) with `engine`.
fn compiled(engine: &Engine, name: &str, source: &str) -> (String, Rule) {
    let path = PathBuf::from(format!("/rules/{name}.rhai"));
    let ast = compile(engine, name, &path, source).unwrap();
    let rule = Rule {
        path,
        source: source.to_owned(),
        ast: Arc::new(ast),
    };
    (name.to_owned(), rule)
}

/// The threads of this process named `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

#[test]
fn a_function_that_blocks_holds_up_only_its_own_rule_and_only_up_to_the_cap() {
    // A native function that blocks until the test lets it go, as no time cap can stop.
    let mut engine = sandbox::engine();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = Mutex::new(released);
    engine.register_fn("block", move || {
        let _ = lock(&released).recv();
    });
    let rules = [
        compiled(&engine, "blocker", "block();"),
        compiled(&engine, "fine", r#"alert("info", "still here");"#),
    ];
    let mut other = RunView::sample();
    other.run = "other-run".to_owned();
    let views = [RunView::sample(), other];
    let mut evaluators = evaluator::Evaluators::new(Arc::new(engine));
    let results = |evaluations: &[evaluator::Evaluation], rule: usize| -> Vec<String> {
        let mut mine: Vec<_> = evaluations.iter().filter(|e| e.rule == rule).collect();
        mine.sort_by_key(|e| e.view);
        mine.iter()
            .map(|e| match &e.result {
                Ok(collected) => format!("ok {}", collected.len()),
                Err(error) => {
                    assert!(error.limit, "{error}");
                    error.message.clone()
                }
            })
            .collect()
    };

    let started = Instant::now();
    let first = evaluators.evaluate(&rules, &views);
    let waited = started.elapsed();
    assert!(
        waited >= evaluator::MAX_WAIT && waited < evaluator::MAX_WAIT + Duration::from_secs(1),
        "waited {waited:?}"
    );
    assert_eq!(results(&first, 1), ["ok 1", "ok 1"]);
    let blocked = results(&first, 0);
    assert!(
        blocked[0].starts_with("did not return within"),
        "{blocked:?}"
    );
    assert_eq!(
        blocked[1],
        "skipped: its evaluation of run sample-run has not returned"
    );

    // While it stays stuck, the rule is skipped at once, on the same thread.
    for _ in 0..3 {
        let started = Instant::now();
        let next = evaluators.evaluate(&rules, &views);
        assert!(
            started.elapsed() < evaluator::MAX_WAIT,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(results(&next, 1), ["ok 1", "ok 1"]);
        for skipped in results(&next, 0) {
            assert!(
                skipped
                    .starts_with("skipped: its evaluation of run sample-run has not returned for"),
                "{skipped}"
            );
        }
        assert!(
            next.iter()
                .filter(|e| e.rule == 0)
                .all(|e| e.micros.is_none())
        );
    }
    assert_eq!(threads_named("rule blocker"), 1);

    // Once it returns, the rule runs again (`block` returns at once from now on).
    drop(release);
    let started = Instant::now();
    loop {
        let next = evaluators.evaluate(&rules, &views);
        if results(&next, 0) == ["ok 0", "ok 0"] {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            results(&next, 0)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(threads_named("rule blocker"), 1);
}

#[test]
fn an_evaluation_prints_at_most_a_few_lines() {
    use tracing_subscriber::layer::SubscriberExt;

    /// Counts the events it sees.
    struct Count(Arc<Mutex<usize>>);
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
        fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            *lock(&self.0) += 1;
        }
    }
    let engine = sandbox::engine();
    let (name, rule) = compiled(
        &engine,
        "chatty",
        "for i in 0..100 { print(`line ${i}`); debug(i); }",
    );
    let lines = Arc::new(Mutex::new(0));
    let subscriber = tracing_subscriber::registry().with(Count(lines.clone()));
    let result = tracing::subscriber::with_default(subscriber, || {
        run_rule(&engine, &name, &rule, &RunView::sample())
    });
    assert!(result.is_ok(), "{result:?}");
    // The limit, and one line saying the rest were dropped.
    assert_eq!(*lock(&lines), sandbox::MAX_PRINTED_LINES as usize + 1);
}

/// Pieces of Rhai meant to find the edges: unfinished syntax, deep nesting, huge numbers,
/// loops the operation cap must stop, calls that are not there, strings and arrays that
/// grow past their caps.
const RHAI_EDGES: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "\"",
    "`",
    "${",
    "//",
    "/*",
    ";",
    "fn",
    "let",
    "=",
    "==",
    "if",
    "else",
    "while true {}",
    "loop { }",
    "for x in 0..999999999 {}",
    "return",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "1e308",
    "0/0",
    "1 / 0",
    "\"\u{10FFFF}\u{202E}\"",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    "((((((((((((((((((((((((((((((((((((((((((((((((((",
    "\"x\".pad(99999999, \"y\")",
    "[0].pad(99999999, 0)",
    "eval(\"1\")",
    "Fn(\"sleep\").call(1)",
    "sleep(1)",
    "alert(\"critical\", \"x\")",
    "kill(\"x\")",
    "restart()",
    "checkpoint(\"x\")",
    "print(\"x\")",
    "debug(1)",
    "import \"x\" as y;",
    "this",
    "params",
    "memory_bytes",
];

/// `source` with a few random edits: a piece cut out, a piece repeated, an edge piece or
/// random bytes put in at a random place.
fn mangle_rhai(rng: &mut fastrand::Rng, source: &str) -> String {
    let mut text = source.to_owned();
    for _ in 0..rng.usize(1..4) {
        let at = rng.usize(..=text.len());
        if !text.is_char_boundary(at) {
            continue;
        }
        match rng.u8(..4) {
            0 => {
                let end = (at + rng.usize(..40)).min(text.len());
                if text.is_char_boundary(end) {
                    text.replace_range(at..end, "");
                }
            }
            1 => {
                let end = (at + rng.usize(..80)).min(text.len());
                if text.is_char_boundary(end) {
                    let piece = text[at..end].to_owned();
                    text.insert_str(at, &piece);
                }
            }
            2 => text.insert_str(at, rng.choice(RHAI_EDGES).unwrap()),
            _ => {
                let bytes: Vec<u8> = (0..rng.usize(1..8)).map(|_| rng.u8(..)).collect();
                text.insert_str(at, &String::from_utf8_lossy(&bytes));
            }
        }
    }
    text
}

/// Random rule files, seeded so a failure repeats (random bytes, the shipped rules mangled):
/// `drover rules check`'s compile and dry run accepts or refuses each, with a position
/// where there is one, never panics, and never takes longer than its time caps allow.
#[test]
fn random_bytes_and_mangled_rules_are_refused_or_run_never_a_panic_or_a_hang() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let sources: Vec<String> = rule_files(&shipped)
        .unwrap()
        .values()
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.rhai");
    let mut rng = fastrand::Rng::with_seed(0x7268_6169);
    let mut refused = 0;
    for round in 0..240 {
        let text = if round % 4 == 0 {
            let bytes: Vec<u8> = (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            let base = rng.choice(&sources).unwrap();
            mangle_rhai(&mut rng, base)
        };
        std::fs::write(&path, &text).unwrap();
        let started = Instant::now();
        let checked = check_file(&path);
        // Two dry runs, each at most the evaluation cap plus the tick's wait for a rule.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "round {round} took {:?}: {text:?}",
            started.elapsed()
        );
        if let Err(errors) = checked {
            refused += 1;
            for error in errors {
                let message = error.to_string();
                assert!(
                    message.starts_with(&path.display().to_string()),
                    "{message}"
                );
                assert!(
                    message.len() < 4000,
                    "round {round}: {} bytes",
                    message.len()
                );
            }
        }
    }
    // The mangling reaches the parser's errors, not only harmless edits.
    assert!(refused > 60, "only {refused} of 240 were refused");
}
