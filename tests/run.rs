//! Runs to their end: steps in scopes under the run's slice, output in the log and the
//! journal, and each way a step can fail.

use std::time::Duration;

use drover::model::{RunState, StepState};

use crate::support::{GitRepo, TestAgent, assert_state};

#[test]
fn a_multi_step_workflow_succeeds_with_each_step_in_its_scope() {
    let agent = TestAgent::start();
    let wf = agent.workflow(
        "multi.toml",
        r#"
name = "multi"
[[step]]
name = "first"
run = "echo first-out; cat /proc/self/cgroup"
[[step]]
name = "second"
run = ["sh", "-c", "echo second-out >&2; cat /proc/self/cgroup; echo param=$DROVER_PARAM_COLOUR"]
"#,
    );
    let out = agent.drover(&[
        "run",
        &wf.to_string_lossy(),
        "--param",
        "colour=blue",
        "--wait",
    ]);
    assert!(
        out.status.success(),
        "run --wait: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{id:?}"
    );

    let run = agent.show(&id);
    assert_state(&run, RunState::Succeeded);
    assert_eq!(run.steps.len(), 2);
    for step in &run.steps {
        let unit = format!("drover-{id}-{}-1.scope", step.name);
        assert_eq!(step.unit.as_deref(), Some(unit.as_str()));
        assert_eq!(
            (step.state, step.exit_code, step.result.as_deref()),
            (StepState::Succeeded, Some(0), Some("success"))
        );
        assert!(step.started_at.is_some() && step.ended_at.is_some());
        // The step's own /proc/self/cgroup: inside its scope, under the run's slice.
        let log = agent.log_of(&run, &step.name);
        let in_scope = format!("drover.slice/drover-{id}.slice/{unit}");
        let memory_line = log
            .lines()
            .find(|l| l.contains(":memory:"))
            .unwrap_or_else(|| panic!("no memory line in {log}"));
        assert!(
            memory_line.ends_with(&in_scope),
            "memory cgroup {memory_line} is not {in_scope}"
        );
        let pids_line = log
            .lines()
            .find(|l| l.contains(":pids:"))
            .expect("pids line");
        assert!(
            pids_line.ends_with(&in_scope),
            "pids cgroup {pids_line} is not {in_scope}"
        );
    }
    assert!(agent.log_of(&run, "first").starts_with("first-out\n"));
    for step in &run.steps {
        let log = agent.log_of(&run, &step.name);
        assert_eq!(
            step.output.bytes,
            log.len() as u64,
            "bytes counted for {}",
            step.name
        );
        assert_eq!(
            step.output.lines,
            log.lines().count() as u64,
            "lines counted for {}",
            step.name
        );
        assert!(step.output.last_output_at.is_some());
    }
    let second = agent.log_of(&run, "second");
    // stdout and stderr are separate pipes: only the order within each is kept, so
    // stdout's last line is the last one once stderr's is left out.
    let stdout_last = second.lines().rfind(|l| *l != "second-out");
    assert!(
        second.contains("second-out\n") && stdout_last == Some("param=blue"),
        "{second}"
    );

    // The same output is in the journal, with drover's fields.
    let journal = agent.sandbox.journal(&id);
    let line = |text: &str| {
        journal
            .iter()
            .find(|e| e["MESSAGE"] == text)
            .unwrap_or_else(|| panic!("no journal line {text:?} for run {id}: {journal:#?}"))
            .clone()
    };
    let first = line("first-out");
    assert_eq!(first["DROVER_STEP"], "first");
    assert_eq!(first["DROVER_WORKFLOW"], "multi");
    assert_eq!(first["SYSLOG_IDENTIFIER"], "drover");
    assert_eq!(line("second-out")["DROVER_STREAM"], "stderr");
    // And `drover logs` prints both steps' output in order.
    let logs = agent.drover(&["logs", &id]);
    let logs = String::from_utf8_lossy(&logs.stdout);
    let (a, b) = (
        logs.find("first-out").expect("first in logs"),
        logs.find("second-out").expect("second in logs"),
    );
    assert!(a < b, "{logs}");
    let only_second = agent.drover(&["logs", &id, "--step", "second"]);
    assert!(!String::from_utf8_lossy(&only_second.stdout).contains("first-out"));

    // Nothing of the run is left in systemd.
    let units = agent.sandbox.output(
        "systemctl",
        &[
            "--user",
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            &format!("drover-{id}*"),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&units.stdout).trim(),
        "",
        "units left behind"
    );
}

#[test]
fn a_failing_step_fails_the_run_and_later_steps_never_start() {
    let agent = TestAgent::start();
    let wf = agent.workflow(
        "fail.toml",
        "name = \"fail\"\n[[step]]\nname = \"breaks\"\nrun = \"echo about-to-fail; exit 3\"\n[[step]]\nname = \"never\"\nrun = \"touch never-ran\"\n",
    );
    let out = agent.drover(&["run", &wf.to_string_lossy(), "--wait"]);
    assert!(!out.status.success(), "--wait must fail for a failed run");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let run = agent.show(&id);
    assert_state(&run, RunState::Failed);
    let breaks = &run.steps[0];
    assert_eq!(
        (breaks.state, breaks.exit_code, breaks.result.as_deref()),
        (StepState::Failed, Some(3), Some("exit-code"))
    );
    let never = &run.steps[1];
    assert_eq!(
        (never.state, never.attempt, never.unit.as_deref()),
        (StepState::Pending, 0, None)
    );
    assert!(!agent.sandbox.dir.path().join("never-ran").exists());
    assert!(
        run.error.as_deref().is_some_and(|e| e.contains("breaks")),
        "{:?}",
        run.error
    );
}

#[test]
fn a_step_over_its_timeout_is_stopped_and_recorded_as_timeout() {
    let agent = TestAgent::start();
    let wf = agent.workflow(
        "slow.toml",
        "name = \"slow\"\n[[step]]\nname = \"sleeps\"\nrun = \"echo start; exec sleep 60\"\ntimeout = \"1s\"\n",
    );
    let id = agent.run(&wf);
    let run = agent.wait_for_end(&id, Duration::from_secs(30));
    assert_state(&run, RunState::Failed);
    let step = &run.steps[0];
    assert_eq!(step.result.as_deref(), Some("timeout"), "{step:#?}");
    assert_eq!(step.signal, Some(15), "stopped by systemd's SIGTERM");
    let took = step.ended_at.expect("ended").0 - step.started_at.expect("started").0;
    assert!((900..10_000).contains(&took), "timeout after {took} ms");
}

#[test]
fn a_step_over_memory_max_is_recorded_as_oom() {
    let agent = TestAgent::start();
    let wf = agent.workflow(
        "hog.toml",
        r#"
name = "hog"
[limits]
memory_max = "32M"
[[step]]
name = "allocates"
run = ["python3", "-c", "x = bytearray(256 * 1024 * 1024); print('survived', len(x))"]
"#,
    );
    let id = agent.run(&wf);
    let run = agent.wait_for_end(&id, Duration::from_secs(30));
    assert_state(&run, RunState::Failed);
    let step = &run.steps[0];
    assert_eq!(step.result.as_deref(), Some("oom-kill"), "{step:#?}");
    let kill = run
        .kill
        .as_ref()
        .expect("the OOM kill is recorded as a kill from outside");
    assert_eq!(
        (kill.result, kill.requested_by.as_str()),
        (drover::model::KillResult::External, "systemd")
    );
    assert_eq!(step.signal, Some(9));
    assert!(!agent.log_of(&run, "allocates").contains("survived"));
}

#[test]
fn a_workspace_run_works_in_its_own_worktree_and_leaves_the_users_checkout_alone() {
    let agent = TestAgent::start();
    let repo = GitRepo::init(agent.sandbox.dir.path().join("repo"));
    let git = |args: &[&str]| repo.git(args);
    let head_before = git(&["rev-parse", "HEAD"]);

    let wf = agent.workflow(
        "ws.toml",
        "name = \"ws\"\nworkspace = \"repo\"\n[[step]]\nname = \"edit\"\nrun = \"pwd; cat README; echo changed > README; echo new > NEW\"\n",
    );
    let id = agent.run(&wf);
    let run = agent.wait_for_end(&id, Duration::from_secs(30));
    assert_state(&run, RunState::Succeeded);
    let worktree = run.worktree.clone().expect("a worktree");
    assert!(
        agent
            .log_of(&run, "edit")
            .starts_with(&format!("{worktree}\nhello\n"))
    );
    assert_eq!(
        std::fs::read_to_string(format!("{worktree}/NEW")).unwrap(),
        "new\n"
    );
    // The user's checkout: same HEAD, same branch, clean.
    assert_eq!(git(&["rev-parse", "HEAD"]), head_before);
    assert_eq!(git(&["symbolic-ref", "HEAD"]), "refs/heads/main");
    assert_eq!(git(&["status", "--porcelain"]), "");
    assert_eq!(
        std::fs::read_to_string(repo.path.join("README")).unwrap(),
        "hello\n"
    );
}

#[test]
fn logs_follow_prints_output_as_it_comes_and_ends_with_the_run() {
    let agent = TestAgent::start();
    let gate = agent.sandbox.dir.path().join("gate");
    let wf = agent.workflow(
        "chatty.toml",
        &format!(
            "name = \"chatty\"\n[[step]]\nname = \"one\"\nrun = \"echo early; while [ ! -e {gate} ]; do sleep 0.1; done; echo late\"\n[[step]]\nname = \"two\"\nrun = \"echo second-step\"\n",
            gate = gate.display()
        ),
    );
    let id = agent.run(&wf);
    let mut follow = agent
        .sandbox
        .command(crate::support::DROVER)
        .args(["logs", &id, "-f"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("drover logs -f");
    let mut stdout = std::io::BufReader::new(follow.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("first line");
    assert_eq!(
        line, "early\n",
        "the first line arrives while the step still runs"
    );
    let running = agent.show(&id);
    assert_eq!(running.steps[0].state, StepState::Running);
    assert_eq!(
        running.steps[0].output.lines, 1,
        "live output count: {:?}",
        running.steps[0].output
    );
    std::fs::write(&gate, "").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("rest");
    assert_eq!(rest, "late\nsecond-step\n");
    assert!(
        follow.wait().expect("logs -f exits").success(),
        "logs -f must end when the run ends"
    );
}
