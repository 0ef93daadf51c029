//! The agent can die at any moment: its steps live on in their scopes, and the next agent
//! re-adopts them and finishes the run, with every transition recorded exactly once.

use std::time::Duration;

use drover::model::RunState;
use drover::store::Store;

use crate::support::{TestAgent, assert_state, wait_until};

#[test]
fn a_sigkilled_agent_is_restarted_and_the_run_completes_with_each_transition_once() {
    let mut agent = TestAgent::start();
    let marker = agent.sandbox.dir.path().join("step-started");
    let wf = agent.workflow(
        "long.toml",
        &format!(
            "name = \"long\"\n[[step]]\nname = \"sleeper\"\nrun = \"echo begin; touch {}; sleep 3; echo end\"\n[[step]]\nname = \"after\"\nrun = \"echo after\"\n",
            marker.display()
        ),
    );
    let id = agent.run(&wf);
    wait_until(Duration::from_secs(20), "the first step to start", || {
        marker.exists()
    });
    agent.kill_agent();

    // The step keeps running in its scope without the agent.
    let scope = format!("drover-{id}-sleeper-1.scope");
    let active = agent
        .sandbox
        .output("systemctl", &["--user", "is-active", &scope]);
    assert_eq!(
        String::from_utf8_lossy(&active.stdout).trim(),
        "active",
        "the scope died with the agent"
    );

    agent.restart_agent();
    let run = agent.wait_for_end(&id, Duration::from_secs(30));
    assert_state(&run, RunState::Succeeded);
    assert_eq!(
        agent.log_of(&run, "sleeper"),
        "begin\nend\n",
        "output lost or doubled"
    );
    assert_eq!(agent.log_of(&run, "after"), "after\n");
    let log = agent.agent_log();
    assert!(
        log.contains(&format!(
            "scope {scope} (active) of run {id} is still there"
        )) && log.contains(&format!("re-adopting run {id}")),
        "{log}"
    );

    let store = Store::open(&agent.state_dir.join("state.db")).expect("open the state DB");
    let moves: Vec<String> = store
        .transitions(&id)
        .expect("transitions")
        .iter()
        .map(|t| format!("{}:{}", t.step.as_deref().unwrap_or("run"), t.to))
        .collect();
    assert_eq!(
        moves,
        [
            "run:pending",
            "run:running",
            "sleeper:starting",
            "sleeper:running",
            "sleeper:succeeded",
            "after:starting",
            "after:running",
            "after:succeeded",
            "run:succeeded"
        ]
    );
}

#[test]
fn a_run_that_ended_while_no_agent_was_up_is_finished_by_the_next_agent() {
    let mut agent = TestAgent::start();
    let wf = agent.workflow(
        "quick.toml",
        "name = \"quick\"\n[[step]]\nname = \"short\"\nrun = \"sleep 1; exit 4\"\n",
    );
    let id = agent.run(&wf);
    wait_until(Duration::from_secs(20), "the step to start", || {
        agent.show(&id).steps[0].state == drover::model::StepState::Running
    });
    agent.kill_agent();
    // Let the step end with no agent to see it: only its exit file tells how.
    let exit_file = agent.state_dir.join(format!("runs/{id}/short.1.exit"));
    let scope = format!("drover-{id}-short-1.scope");
    wait_until(Duration::from_secs(20), "the step to end", || {
        let state = agent
            .sandbox
            .output("systemctl", &["--user", "is-active", &scope]);
        exit_file.exists() && String::from_utf8_lossy(&state.stdout).trim() != "active"
    });
    agent.restart_agent();
    let run = agent.wait_for_end(&id, Duration::from_secs(30));
    assert_state(&run, RunState::Failed);
    assert_eq!(run.steps[0].exit_code, Some(4));
    assert_eq!(run.steps[0].result.as_deref(), Some("exit-code"));
}

#[test]
fn a_second_agent_on_the_same_state_directory_is_refused() {
    let agent = TestAgent::start();
    let second = agent
        .sandbox
        .command(crate::support::DROVER)
        .args(["agent", "--state-dir"])
        .arg(&agent.state_dir)
        .output()
        .expect("run a second agent");
    assert!(!second.status.success(), "a second agent started");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another drover agent is using"), "{err}");
    // The first one still serves.
    assert!(agent.drover(&["ps"]).status.success());
}
