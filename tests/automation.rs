//! Rules acting for real inside a real agent: a rule that kills a stalled run kills it (as
//! the `rules` principal, audited), alerts fire and resolve, a broken rule file is
//! reported while its previous version keeps working, an edited file is reloaded within
//! 2 s, a rule in an endless loop is stopped without stopping the agent, and a rule with
//! the viewer role is refused.

use std::path::Path;
use std::time::{Duration, Instant};

use drover::model::{Alert, AlertState, KillRecord, KillResult, RunState};

use crate::support::{TestAgent, assert_state, wait_until};

/// An agent whose only rules are the `*.rhai` files in `rules` (the shipped ones are
/// replaced by an empty directory), acting with `role`.
pub(crate) fn agent_with_rules(rules: &Path, role: &str) -> TestAgent {
    let shipped = rules.join("none");
    std::fs::create_dir_all(&shipped).unwrap();
    TestAgent::start_with_config(&format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[rules]\ndir = \"{}\"\nshipped_dir = \"{}\"\nrole = \"{role}\"\n",
        rules.display(),
        shipped.display()
    ))
}

fn alerts(agent: &TestAgent) -> Vec<Alert> {
    let out = agent.drover(&["alerts", "--all", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("alerts --json")
}

pub(crate) fn alert(agent: &TestAgent, key: &str) -> Option<Alert> {
    alerts(agent).into_iter().find(|a| a.key == key)
}

pub(crate) fn kills(agent: &TestAgent, run: &str) -> Vec<KillRecord> {
    let out = agent.drover(&["audit", "--run", run, "--json"]);
    let trail: serde_json::Value = serde_json::from_slice(&out.stdout).expect("audit --json");
    serde_json::from_value(trail["kills"].clone()).expect("kills")
}

pub(crate) fn sleeper(agent: &TestAgent, name: &str) -> String {
    let wf = agent.workflow(
        &format!("{name}.toml"),
        &format!(
            "name = \"{name}\"\n[kill]\ngrace = \"1s\"\n[[step]]\nname = \"s\"\nrun = \"echo started; sleep 300\"\n"
        ),
    );
    agent.run(&wf)
}

#[test]
fn a_rule_kills_a_stalled_run_as_the_rules_principal_and_its_alert_resolves() {
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("stall.rhai"),
        "if state == \"running\" && has(idle_secs) && idle_secs >= 2.0 {\n  alert(\"critical\", `no output for ${idle_secs} s`);\n  kill(\"stalled (test rule)\");\n}\n",
    )
    .unwrap();
    let agent = agent_with_rules(rules.path(), "operator");
    let id = sleeper(&agent, "stalls");
    let run = agent.wait_for_end(&id, Duration::from_secs(30));
    assert_state(&run, RunState::Killed);
    let kill = kills(&agent, &id).pop().expect("the kill is audited");
    assert_eq!(
        (
            kill.requested_by.as_str(),
            kill.channel.as_str(),
            kill.reason.as_str(),
            kill.result
        ),
        (
            "rules (stall)",
            "rules",
            "rule stall: stalled (test rule)",
            KillResult::Killed
        )
    );
    let key = format!("stall/{id}");
    wait_until(Duration::from_secs(10), "the alert to resolve", || {
        alert(&agent, &key).is_some_and(|a| a.state == AlertState::Resolved)
    });
    let fired = alert(&agent, &key).unwrap();
    assert!(fired.summary.starts_with("no output for"), "{fired:#?}");
}

#[test]
fn a_broken_rule_file_is_reported_the_old_version_keeps_working_and_edits_reload_fast() {
    let rules = tempfile::tempdir().unwrap();
    let file = rules.path().join("mark.rhai");
    std::fs::write(
        &file,
        "if state == \"running\" { alert(\"warning\", \"v1\"); }\n",
    )
    .unwrap();
    let agent = agent_with_rules(rules.path(), "operator");
    let id = sleeper(&agent, "marked");
    let key = format!("mark/{id}");
    wait_until(Duration::from_secs(20), "the v1 alert", || {
        alert(&agent, &key).is_some_and(|a| a.summary == "v1")
    });

    // Broken: reported (an alert of its own), and v1 keeps firing.
    std::fs::write(
        &file,
        "if state == \"running\" { alert(\"warning\", \"v2\" }\n",
    )
    .unwrap();
    let load_key = format!("rules-load/{}", file.display());
    wait_until(
        Duration::from_secs(5),
        "the rule file's error alert",
        || alert(&agent, &load_key).is_some_and(|a| a.state == AlertState::Firing),
    );
    let error = alert(&agent, &load_key).unwrap();
    assert!(error.summary.contains("mark.rhai:1:"), "{error:#?}");
    let before = alert(&agent, &key).unwrap();
    wait_until(Duration::from_secs(5), "v1 to keep firing", || {
        alert(&agent, &key).is_some_and(|a| a.count > before.count && a.summary == "v1")
    });

    // Fixed: reloaded within 2 s (plus a tick), and the error alert resolves.
    let written = Instant::now();
    std::fs::write(
        &file,
        "if state == \"running\" { alert(\"warning\", \"v2\"); }\n",
    )
    .unwrap();
    wait_until(Duration::from_secs(10), "the v2 alert", || {
        alert(&agent, &key).is_some_and(|a| a.summary == "v2")
    });
    assert!(
        written.elapsed() < Duration::from_secs(2) + Duration::from_millis(1500),
        "reloaded after {:?}",
        written.elapsed()
    );
    wait_until(Duration::from_secs(5), "the error alert to resolve", || {
        alert(&agent, &load_key).is_some_and(|a| a.state == AlertState::Resolved)
    });
}

#[test]
fn a_rule_in_an_endless_loop_is_stopped_and_everything_else_goes_on() {
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("spin.rhai"), "loop { }\n").unwrap();
    std::fs::write(
        rules.path().join("ok.rhai"),
        "if state == \"running\" { alert(\"info\", \"still here\"); }\n",
    )
    .unwrap();
    let agent = agent_with_rules(rules.path(), "operator");
    let id = sleeper(&agent, "spun");
    wait_until(Duration::from_secs(20), "the other rule's alert", || {
        alert(&agent, &format!("ok/{id}")).is_some()
    });
    let first = alert(&agent, &format!("ok/{id}")).unwrap();
    wait_until(Duration::from_secs(10), "later ticks", || {
        alert(&agent, &format!("ok/{id}")).is_some_and(|a| a.count >= first.count + 2)
    });
    // The agent still serves and drives runs.
    let quick = agent.workflow(
        "quick.toml",
        "name = \"quick\"\n[[step]]\nname = \"s\"\nrun = \"true\"\n",
    );
    let quick = agent.run(&quick);
    assert_state(
        &agent.wait_for_end(&quick, Duration::from_secs(20)),
        RunState::Succeeded,
    );
    assert!(
        agent.agent_log().contains("spin"),
        "the stopped rule is reported:\n{}",
        agent.agent_log()
    );
}

#[test]
fn a_rule_acting_with_the_viewer_role_is_refused_and_audited() {
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("reaper.rhai"),
        "if state == \"running\" { kill(\"not allowed\"); }\n",
    )
    .unwrap();
    let agent = agent_with_rules(rules.path(), "viewer");
    let id = sleeper(&agent, "spared");
    wait_until(
        Duration::from_secs(20),
        "the refused kill in the audit trail",
        || {
            kills(&agent, &id)
                .iter()
                .any(|k| k.result == KillResult::Refused && k.requested_by == "rules (reaper)")
        },
    );
    assert_state(&agent.show(&id), RunState::Running);
}

#[test]
fn rules_restart_a_failed_run_once_and_checkpoint_a_running_one() {
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("again.rhai"),
        "if state == \"failed\" && failure_class == \"exit\" { restart(); }\n",
    )
    .unwrap();
    std::fs::write(
        rules.path().join("keep.rhai"),
        "if state == \"running\" && step == \"work\" { checkpoint(\"by rule\"); }\n",
    )
    .unwrap();
    let agent = agent_with_rules(rules.path(), "operator");
    let dir = agent.sandbox.dir.path();
    let repo = crate::support::GitRepo::init(dir.join("repo"));
    let count = dir.join("count");
    // Fails its first attempt, then works a while and succeeds.
    let script = format!(
        "n=$(($(cat {c} 2>/dev/null || echo 0) + 1)); echo $n > {c}; [ $n -ge 2 ] || exit 3; echo done > out.txt; sleep 3",
        c = count.display()
    );
    let wf = agent.workflow(
        "flaky.toml",
        &format!(
            "name = \"flaky\"\nworkspace = \"{}\"\n[[step]]\nname = \"work\"\nrun = {}\n",
            repo.path.display(),
            serde_json::to_string(&script).unwrap()
        ),
    );
    let id = agent.run(&wf);
    wait_until(Duration::from_secs(30), "the rule's restart", || {
        let run = agent.show(&id);
        run.steps[0].attempt >= 2 && run.state.is_terminal()
    });
    let run = agent.show(&id);
    assert_state(&run, RunState::Succeeded);
    let out = agent.drover(&["audit", "--run", &id, "--json"]);
    let trail: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let actions = trail["actions"].as_array().cloned().unwrap_or_default();
    assert!(
        actions
            .iter()
            .any(|a| a["action"] == "restart" && a["requested_by"] == "rules (again)"),
        "{trail:#}"
    );
    assert!(
        actions
            .iter()
            .any(|a| a["action"] == "checkpoint" && a["requested_by"] == "rules (keep)"),
        "{trail:#}"
    );
    let out = agent.drover(&["checkpoints", &id, "--json"]);
    let checkpoints: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        checkpoints.iter().any(|c| c["label"] == "by rule"),
        "{checkpoints:#?}"
    );
}
