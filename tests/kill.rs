//! The chaos suite: hostile workflows, each killed and checked for zero surviving
//! processes (scanning every process's cgroups, not trusting drover's word) and a
//! complete audit record; critical sections, confirmations, refusals, kills from outside,
//! and kills interrupted by an agent restart.

use std::time::Duration;

use drover::model::{KillRecord, KillResult, RunState, StepState};

use crate::support::{DROVER, GitRepo, TestAgent, assert_state, wait_until};

/// Live processes anywhere on the machine whose cgroup belongs to the run.
fn processes_of(run: &str) -> Vec<String> {
    drover::cgroup::live_processes_in(&format!("drover-{run}"))
        .into_iter()
        .map(|pid| {
            let cmdline =
                std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            format!("{pid}: {}", cmdline.replace('\0', " "))
        })
        .collect()
}

/// Starts `text` and waits until its first step runs and `ready` (a file the step
/// touches) exists.
fn start(agent: &TestAgent, text: &str) -> String {
    let wf = agent.workflow("hostile.toml", text);
    let id = agent.run(&wf);
    let ready = agent.sandbox.dir.path().join("ready");
    wait_until(
        Duration::from_secs(20),
        "the hostile step to be ready",
        || ready.exists(),
    );
    id
}

/// `drover kill RUN --json ARGS…`; the outcome, after checking the CLI's exit status.
fn kill(agent: &TestAgent, run: &str, args: &[&str]) -> KillRecord {
    let mut all = vec!["kill", run, "--json", "--reason", "chaos test"];
    all.extend_from_slice(args);
    let out = agent.drover(&all);
    let record: KillRecord = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "kill output is not a record ({e}): {}\n{}\nagent log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            agent.agent_log()
        )
    });
    let clean = record.result == KillResult::Killed && record.processes_left == Some(0);
    assert_eq!(
        out.status.success(),
        clean,
        "exit status must say whether the kill was clean: {record:#?}"
    );
    record
}

/// The checks every kill must pass: killed, nothing left, audited with its phases.
fn assert_clean_kill(agent: &TestAgent, run: &str, record: &KillRecord) {
    assert_eq!(
        record.result,
        KillResult::Killed,
        "{record:#?}\nagent log:\n{}",
        agent.agent_log()
    );
    assert_eq!(record.processes_left, Some(0));
    assert!(
        processes_of(run).is_empty(),
        "survivors: {:?}",
        processes_of(run)
    );
    assert!(
        record.total_ms.is_some_and(|ms| ms < 10_000),
        "over the 10 s budget: {record:#?}"
    );
    assert!(record.requested_by.contains("uid 0"), "{record:#?}");
    assert!(
        record.phases.iter().any(|p| p.name == "verify"),
        "{record:#?}"
    );
    let shown = agent.show(run);
    assert_state(&shown, RunState::Killed);
    assert_eq!(
        shown.kill.as_ref().map(|k| k.id),
        Some(record.id),
        "show --json carries the kill"
    );
    let audit = agent.drover(&["audit", "--run", run, "--json"]);
    let audit: Vec<KillRecord> = audit_kills(&audit.stdout);
    assert_eq!(
        audit.last(),
        Some(record),
        "the audit trail holds the outcome"
    );
    let journal = agent.sandbox.journal(run);
    assert!(
        journal
            .iter()
            .any(|e| e["DROVER_EVENT"] == "kill"
                && e["MESSAGE_ID"] == drover::engine::KILL_MESSAGE_ID),
        "no kill record in the journal"
    );
}

fn signalled(record: &KillRecord, phase: &str) -> u32 {
    record
        .phases
        .iter()
        .find(|p| p.name == phase)
        .map_or(0, |p| p.signalled)
}

#[test]
fn a_cooperative_step_dies_on_sigterm_without_sigkill() {
    let agent = TestAgent::start();
    let id = start(
        &agent,
        "name = \"coop\"\n[[step]]\nname = \"s\"\nrun = \"touch ready; exec sleep 300\"\non_kill = [\"echo cleaned-up $DROVER_STEP\"]\n",
    );
    let record = kill(&agent, &id, &[]);
    assert_clean_kill(&agent, &id, &record);
    assert!(signalled(&record, "sigterm") >= 1, "{record:#?}");
    assert_eq!(
        signalled(&record, "sigkill"),
        0,
        "no SIGKILL needed: {record:#?}"
    );
    assert!(record.total_ms.unwrap_or(u64::MAX) < 1_000, "{record:#?}");
    assert_eq!(record.cleanup[0].detail, "exit status: 0: cleaned-up s");
    let step = &agent.show(&id).steps[0];
    assert_eq!(
        (step.state, step.result.as_deref()),
        (StepState::Killed, Some("killed"))
    );
}

#[test]
fn processes_that_ignore_or_block_sigterm_are_sigkilled_after_the_grace() {
    let agent = TestAgent::start();
    let id = start(
        &agent,
        r#"
name = "stubborn"
[kill]
grace = "1s"
[[step]]
name = "s"
run = ["python3", "-c", "import os, signal, time\nsignal.pthread_sigmask(signal.SIG_BLOCK, set(signal.Signals))\nif os.fork() == 0:\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    time.sleep(300)\nopen('ready', 'w').close()\ntime.sleep(300)"]
"#,
    );
    let record = kill(&agent, &id, &[]);
    assert_clean_kill(&agent, &id, &record);
    let sigterm = record
        .phases
        .iter()
        .find(|p| p.name == "sigterm")
        .expect("a sigterm phase");
    assert!(
        (950..2_000).contains(&sigterm.duration_ms),
        "the grace was not waited out: {record:#?}"
    );
    assert!(signalled(&record, "sigkill") >= 2, "{record:#?}");
}

#[test]
fn double_forked_setsid_and_regrouped_children_are_all_killed() {
    let agent = TestAgent::start();
    let id = start(
        &agent,
        r#"
name = "escapers"
[kill]
grace = "1s"
[[step]]
name = "s"
run = "(sh -c 'trap \"\" TERM; sleep 300' &) ; setsid sh -c 'trap \"\" TERM HUP; sleep 301' & python3 -c 'import os, time; os.setpgid(0, 0); time.sleep(302)' & sleep 0.3; touch ready; wait"
"#,
    );
    assert!(
        processes_of(&id).len() >= 5,
        "the escapers did not start: {:?}",
        processes_of(&id)
    );
    let record = kill(&agent, &id, &[]);
    assert_clean_kill(&agent, &id, &record);
}

#[test]
fn a_fork_loop_bounded_by_tasks_max_is_emptied() {
    let agent = TestAgent::start();
    let id = start(
        &agent,
        "name = \"forker\"\n[limits]\ntasks_max = 40\n[kill]\ngrace = \"500ms\"\n[[step]]\nname = \"s\"\nrun = \"touch ready; trap '' TERM; while true; do (trap '' TERM; sleep 300) & done\"\n",
    );
    wait_until(
        Duration::from_secs(10),
        "the fork loop to fill the scope",
        || processes_of(&id).len() >= 20,
    );
    let record = kill(&agent, &id, &["--grace", "300ms"]);
    assert_clean_kill(&agent, &id, &record);
    assert!(signalled(&record, "sigkill") >= 2, "{record:#?}");
    assert_eq!(
        record.grace_ms,
        Some(300),
        "--grace overrides the workflow's"
    );
    let sigterm = record
        .phases
        .iter()
        .find(|p| p.name == "sigterm")
        .expect("a sigterm phase");
    assert!((290..1_000).contains(&sigterm.duration_ms), "{record:#?}");
}

#[test]
fn a_shell_pipeline_is_killed_whole() {
    let agent = TestAgent::start();
    let id = start(
        &agent,
        "name = \"pipe\"\n[[step]]\nname = \"s\"\nrun = \"touch ready; yes | tr y n | grep -v x > /dev/null\"\n",
    );
    let record = kill(&agent, &id, &[]);
    assert_clean_kill(&agent, &id, &record);
    assert!(
        signalled(&record, "sigterm") >= 4,
        "shell, yes, tr, grep and the shim: {record:#?}"
    );
}

#[test]
fn a_step_holding_the_git_index_lock_leaves_no_lock_and_a_final_checkpoint() {
    let agent = TestAgent::start();
    let repo = GitRepo::init(agent.sandbox.dir.path().join("repo"));
    let git = |args: &[&str]| repo.git(args);
    let head = git(&["rev-parse", "HEAD"]);
    let ready = agent.sandbox.dir.path().join("ready");
    let id = start(
        &agent,
        &format!(
            "name = \"locker\"\nworkspace = \"repo\"\n[[step]]\nname = \"s\"\nrun = \"echo work > b.txt; touch $(git rev-parse --git-dir)/index.lock; touch {}; sleep 300\"\n",
            ready.display()
        ),
    );
    let record = kill(&agent, &id, &[]);
    assert_clean_kill(&agent, &id, &record);
    let lock = record
        .cleanup
        .iter()
        .find(|c| c.action.contains("index.lock"))
        .expect("the lock was cleaned up");
    assert!(lock.ok, "{lock:?}");
    let worktree = agent.show(&id).worktree.expect("a worktree");
    let gitdir = crate::support::git(worktree.as_ref(), &["rev-parse", "--git-dir"]);
    assert!(!std::path::Path::new(&gitdir).join("index.lock").exists());
    let snapshot = record.snapshot.clone().expect("a final checkpoint");
    let reference = snapshot.split(' ').next().unwrap();
    assert_eq!(
        reference,
        format!("refs/drover/{id}/1"),
        "the kill's checkpoint"
    );
    assert_eq!(
        git(&["show", &format!("{reference}:b.txt")]),
        "work",
        "the work done is in the snapshot"
    );
    assert_eq!(git(&["rev-parse", "HEAD"]), head, "the user's HEAD moved");
    assert_eq!(
        git(&["status", "--porcelain"]),
        "",
        "the user's checkout changed"
    );
}

#[test]
fn a_critical_step_that_ends_in_time_is_not_signalled_and_later_steps_never_start() {
    let agent = TestAgent::start();
    let id = start(
        &agent,
        "name = \"push\"\n[kill]\ncritical_max = \"4s\"\n[[step]]\nname = \"push\"\ncritical = true\nrun = \"touch ready; sleep 1; echo pushed\"\n[[step]]\nname = \"after\"\nrun = \"touch after-ran\"\n",
    );
    let record = kill(&agent, &id, &[]);
    assert_clean_kill(&agent, &id, &record);
    let wait = record.critical.clone().expect("a critical wait");
    assert_eq!(wait.outcome, "ended");
    assert!((500..4_000).contains(&wait.waited_ms), "{wait:?}");
    assert_eq!(
        signalled(&record, "sigterm") + signalled(&record, "sigkill"),
        0,
        "{record:#?}"
    );
    let run = agent.show(&id);
    assert_eq!(
        run.steps[0].state,
        StepState::Succeeded,
        "the critical step finished untorn"
    );
    assert!(agent.log_of(&run, "push").contains("pushed"));
    assert_eq!(run.steps[1].state, StepState::Pending);
    assert!(!agent.sandbox.dir.path().join("after-ran").exists());
}

#[test]
fn a_critical_step_that_overruns_critical_max_is_killed_at_the_deadline() {
    let agent = TestAgent::start();
    let id = start(
        &agent,
        "name = \"migrate\"\n[kill]\ncritical_max = \"1s\"\n[[step]]\nname = \"m\"\ncritical = true\nrun = \"touch ready; sleep 300\"\n",
    );
    let record = kill(&agent, &id, &[]);
    assert_clean_kill(&agent, &id, &record);
    let wait = record.critical.clone().expect("a critical wait");
    assert_eq!(wait.outcome, "overridden");
    assert!((1_000..2_000).contains(&wait.waited_ms), "{wait:?}");
}

#[test]
fn drover_critical_holds_a_kill_until_its_command_ends() {
    let agent = TestAgent::start();
    let id = start(
        &agent,
        &format!(
            "name = \"span\"\n[[step]]\nname = \"s\"\nrun = \"{DROVER} critical --label push -- sh -c 'touch ready; sleep 1; echo span-done'; sleep 300\"\n"
        ),
    );
    let record = kill(&agent, &id, &[]);
    assert_clean_kill(&agent, &id, &record);
    let wait = record.critical.clone().expect("a critical wait");
    assert_eq!(
        (wait.outcome.as_str(), wait.labels.as_slice()),
        ("ended", ["push".to_owned()].as_slice())
    );
    assert!(
        agent.log_of(&agent.show(&id), "s").contains("span-done"),
        "the span's command finished"
    );
}

#[test]
fn a_kill_right_after_run_stops_the_run_before_its_later_steps() {
    let agent = TestAgent::start();
    let wf = agent.workflow(
        "two.toml",
        "name = \"two\"\n[[step]]\nname = \"a\"\nrun = \"sleep 300\"\n[[step]]\nname = \"b\"\nrun = \"touch b-ran\"\n",
    );
    let id = agent.run(&wf);
    let record = kill(&agent, &id, &[]);
    assert_clean_kill(&agent, &id, &record);
    // What is checked is that nothing more happens, which no condition can signal: a
    // driver the kill failed to stop gets half a second to start step b.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!agent.sandbox.dir.path().join("b-ran").exists());
    assert_eq!(agent.show(&id).steps[1].state, StepState::Pending);
}

#[test]
fn a_kill_interrupted_by_an_agent_restart_is_finished_by_the_next_agent() {
    let mut agent = TestAgent::start();
    let id = start(
        &agent,
        "name = \"restart\"\n[kill]\ngrace = \"3s\"\n[[step]]\nname = \"s\"\nrun = \"trap '' TERM; touch ready; while true; do sleep 1; done\"\n",
    );
    let mut cli = agent
        .sandbox
        .command(DROVER)
        .args(["kill", &id, "--reason", "interrupted"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("drover kill");
    wait_until(Duration::from_secs(10), "the kill to reach killing", || {
        agent.show(&id).state == RunState::Killing
    });
    agent.restart_agent();
    let _ = cli.wait();
    let run = agent.wait_for_end(&id, Duration::from_secs(20));
    assert_state(&run, RunState::Killed);
    let record = run.kill.expect("the kill record");
    assert_eq!(
        (record.result, record.processes_left),
        (KillResult::Killed, Some(0)),
        "{record:#?}"
    );
    assert_eq!(
        record.reason, "interrupted",
        "the resumed kill is the same request"
    );
    assert!(
        processes_of(&id).is_empty(),
        "survivors: {:?}",
        processes_of(&id)
    );
}

#[test]
fn a_caller_without_the_operator_role_is_refused_and_the_refusal_is_audited() {
    let agent = TestAgent::start();
    let id = start(
        &agent,
        "name = \"r\"\n[[step]]\nname = \"s\"\nrun = \"touch ready; sleep 300\"\n",
    );
    let out = agent.busctl(true, "Kill", &["ssa{sv}", &id, "because", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs the operator role"));
    assert_eq!(
        agent.show(&id).state,
        RunState::Running,
        "the refused kill changed the run"
    );
    let audit = audit_kills(&agent.drover(&["audit", "--json"]).stdout);
    let refused = audit.last().expect("the refusal is audited");
    assert_eq!(
        (refused.result, refused.uid),
        (KillResult::Refused, Some(65534))
    );
    assert_eq!(refused.reason, "because");
    assert!(
        processes_of(&id).len() >= 2,
        "the run's processes are untouched"
    );
}

#[test]
fn a_protected_workflow_needs_a_confirmation_and_finished_runs_are_a_clear_no_op() {
    let agent = TestAgent::start();
    let id = start(
        &agent,
        "name = \"prod\"\nprotected = true\n[[step]]\nname = \"s\"\nrun = \"touch ready; sleep 300\"\n",
    );
    let refused = agent.drover(&["kill", &id]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is protected"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(agent.show(&id).state, RunState::Running);
    let record = kill(&agent, &id, &["--yes"]);
    assert_clean_kill(&agent, &id, &record);
    let audit = audit_kills(&agent.drover(&["audit", "--run", &id, "--json"]).stdout);
    assert_eq!(
        audit.iter().map(|k| k.result).collect::<Vec<_>>(),
        [KillResult::Refused, KillResult::Killed]
    );

    let again = agent.drover(&["kill", &id]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already ended (killed)"));
}

#[test]
fn kills_from_outside_drover_are_recorded_and_the_run_does_not_hang() {
    let agent = TestAgent::start();
    for (how, args) in [
        ("kill", vec!["kill", "--signal=KILL"]),
        ("stop", vec!["stop"]),
    ] {
        let ready = agent.sandbox.dir.path().join("ready");
        let _ = std::fs::remove_file(&ready);
        let id = start(
            &agent,
            "name = \"outside\"\n[[step]]\nname = \"s\"\nrun = \"touch ready; sleep 300\"\n",
        );
        let scope = format!("drover-{id}-s-1.scope");
        let mut cmd = vec!["--user"];
        cmd.extend(args.iter().copied());
        cmd.push(&scope);
        let out = agent.sandbox.output("systemctl", &cmd);
        assert!(
            out.status.success(),
            "systemctl {how}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let run = agent.wait_for_end(&id, Duration::from_secs(20));
        assert_state(&run, RunState::Failed);
        let record = run
            .kill
            .unwrap_or_else(|| panic!("systemctl {how}: no kill record"));
        assert_eq!(
            (record.result, record.requested_by.as_str()),
            (KillResult::External, "systemd"),
            "{record:#?}"
        );
        assert!(processes_of(&id).is_empty());
    }
}

#[test]
fn a_claude_code_step_killed_mid_bash_leaves_no_process_and_an_intact_transcript() {
    use crate::support::anthropic::{
        ModelServer, Turn, claude_command, step_toml, transcript_path,
    };
    let agent = TestAgent::start();
    let dir = agent.sandbox.dir.path();
    let ready = dir.join("ready");
    let server = ModelServer::start(vec![Turn::bash(&format!(
        "touch {}; sleep 300",
        ready.display()
    ))]);
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut claude = claude_command(&server, &home, dir);
    claude.arg("run the long command");
    let id = start(
        &agent,
        &format!(
            "name = \"agent\"\n[kill]\ngrace = \"4s\"\n[[step]]\nname = \"claude\"\nagent = \"claude-code\"\n{}",
            step_toml(&claude)
        ),
    );
    let before = processes_of(&id);
    assert!(
        before.iter().any(|p| p.contains("sleep 300")),
        "the Bash tool is not running: {before:?}"
    );

    let record = kill(&agent, &id, &[]);
    assert_clean_kill(&agent, &id, &record);
    let main = record
        .phases
        .iter()
        .find(|p| p.name == "sigterm-main")
        .expect("SIGTERM to claude first");
    assert_eq!(main.signalled, 1, "{record:#?}");
    // drover assigned the session up front; the transcript ends in a complete line:
    // claude had time to finish writing it.
    let session = agent.show(&id).steps[0]
        .session_id
        .clone()
        .expect("drover assigned a session id");
    let transcript =
        std::fs::read_to_string(transcript_path(&home, dir, &session)).expect("the transcript");
    assert!(transcript.ends_with('\n'), "the transcript ends mid-line");
    for line in transcript.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("a torn transcript line ({e}): {line}"));
    }
}

/// The kills of `drover audit --json`.
fn audit_kills(stdout: &[u8]) -> Vec<KillRecord> {
    let trail: serde_json::Value = serde_json::from_slice(stdout).expect("audit --json");
    serde_json::from_value(trail["kills"].clone()).expect("audit --json has kills")
}
