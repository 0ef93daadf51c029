//! `drover history` and `Manager.History` over real runs: succeeded, failed (and
//! restarted), killed; filtered by workflow; the table, JSON and D-Bus forms.

use std::time::Duration;

use drover::model::History;
use drover::model::{RunState, StepState};

use crate::support::{TestAgent, assert_state, wait_until};

fn history(agent: &TestAgent, args: &[&str]) -> History {
    let mut all = vec!["history", "--json"];
    all.extend_from_slice(args);
    let out = agent.drover(&all);
    assert!(
        out.status.success(),
        "drover {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("history --json is a History")
}

#[test]
fn history_counts_real_runs_kills_and_restarts_per_day() {
    let agent = TestAgent::start();
    let good = agent.workflow(
        "good.toml",
        "name = \"good\"\n[[step]]\nname = \"ok\"\nrun = \"true\"\n",
    );
    let bad = agent.workflow(
        "bad.toml",
        "name = \"bad\"\n[[step]]\nname = \"boom\"\nrun = \"exit 3\"\n",
    );
    let slow = agent.workflow(
        "slow.toml",
        "name = \"slow\"\n[[step]]\nname = \"wait\"\nrun = \"sleep 300\"\n",
    );
    for _ in 0..2 {
        let id = agent.run(&good);
        assert_state(
            &agent.wait_for_end(&id, Duration::from_secs(30)),
            RunState::Succeeded,
        );
    }
    let failed = agent.run(&bad);
    assert_state(
        &agent.wait_for_end(&failed, Duration::from_secs(30)),
        RunState::Failed,
    );
    let killed = agent.run(&slow);
    wait_until(Duration::from_secs(20), "the slow step to run", || {
        agent.show(&killed).steps[0].state == StepState::Running
    });
    let out = agent.drover(&["kill", &killed, "--reason", "history test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_state(
        &agent.wait_for_end(&killed, Duration::from_secs(30)),
        RunState::Killed,
    );
    // A restart of the failed run: it fails again, and the restart is counted.
    let out = agent.drover(&["restart", &failed, "--yes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_state(
        &agent.wait_for_end(&failed, Duration::from_secs(30)),
        RunState::Failed,
    );

    let all = history(&agent, &["--since", "2d"]);
    assert!(all.days.len() >= 2, "{all:#?}");
    let today = all.days.last().expect("today");
    assert_eq!(
        (today.runs, today.succeeded, today.failed, today.killed),
        (4, 2, 1, 1),
        "{today:#?}"
    );
    assert_eq!(today.success_rate, Some(0.5));
    assert_eq!(today.kills, 1, "{today:#?}");
    assert_eq!(today.restarts, 1, "{today:#?}");
    assert_eq!(today.failure_classes.get("exit"), Some(&1), "{today:#?}");
    assert_eq!(today.failure_classes.values().sum::<u64>(), 2, "{today:#?}");
    let (p50, p95) = (
        today.duration_p50_secs.expect("p50"),
        today.duration_p95_secs.expect("p95"),
    );
    assert!(0.0 <= p50 && p50 <= p95 && p95 < 60.0, "{today:#?}");
    assert_eq!(today.cost_usd, 0.0);
    assert!(all.days[..all.days.len() - 1].iter().all(|d| d.runs == 0));

    let good_only = history(&agent, &["--workflow", "good"]);
    assert_eq!(
        good_only.days.len(),
        8,
        "7d spans 8 calendar days: {good_only:#?}"
    );
    let today = good_only.days.last().expect("today");
    assert_eq!((today.runs, today.succeeded), (2, 2));
    assert_eq!(today.success_rate, Some(1.0));
    assert_eq!((today.kills, today.restarts), (0, 0));

    // The table names today's row; a bad window is refused with a reason.
    let out = agent.drover(&["history", "--since", "1d"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("DAY"), "{table}");
    assert!(table.contains(&today.day), "{table}");
    assert!(table.contains("exit=1"), "{table}");
    let out = agent.drover(&["history", "--since", "lately"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expected a duration"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The same through D-Bus, for a viewer.
    let out = agent.busctl(true, "History", &["ss", "slow", "1d"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("busctl json");
    let slow_only: History =
        serde_json::from_str(reply["data"][0].as_str().expect("a string")).expect("History");
    let today = slow_only.days.last().expect("today");
    assert_eq!((today.runs, today.killed, today.kills), (1, 1, 1));
}
