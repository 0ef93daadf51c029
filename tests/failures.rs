//! Failure analysis and retries, for real: each failure class produced by a real step
//! (real signals, a real OOM kill, systemd's own timeout, the real Claude Code CLI against
//! the scripted API) and classified from its evidence; transient failures retried with
//! the configured backoff, permanent ones not; a scheduled retry cancelled by a kill.

use std::path::Path;
use std::time::Duration;

use drover::model::FailureClass;
use drover::model::{Run, RunState, StepAttempt};

use crate::support::anthropic::{ModelServer, Turn, claude_command, step_toml};
use crate::support::{TestAgent, assert_state, wait_until};

const END: Duration = Duration::from_secs(90);

/// A one-step workflow whose step is `step` (TOML lines after `name`), plus `extra` at the
/// top level.
fn one_step(agent: &TestAgent, name: &str, extra: &str, step: &str) -> String {
    let wf = agent.workflow(
        &format!("{name}.toml"),
        &format!("name = \"{name}\"\n{extra}\n[[step]]\nname = \"s\"\n{step}\n"),
    );
    agent.run(&wf)
}

/// The step's class and evidence, after checking the run failed with the same class.
fn failure_of(run: &Run) -> (FailureClass, String) {
    assert_state(run, RunState::Failed);
    let step: &StepAttempt = &run.steps[0];
    let class = step
        .failure_class
        .unwrap_or_else(|| panic!("no failure class: {run:#?}"));
    assert_eq!(run.failure_class, Some(class), "{run:#?}");
    (class, step.failure_evidence.clone().unwrap_or_default())
}

#[test]
fn each_failure_class_is_produced_for_real_and_classified_from_its_evidence() {
    let agent = TestAgent::start();
    let dir = agent.sandbox.dir.path();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    // Claude Code stops at --max-turns: a result event with is_error and its subtype.
    let max_turns = ModelServer::start(vec![Turn::bash("true"), Turn::text("never reached")]);
    let mut turns = claude_command(&max_turns, &home, dir);
    turns.args(["--max-turns", "1", "Do two things"]);
    // The API stays overloaded and Claude Code gives up at once.
    let overloaded = ModelServer::start(vec![Turn::Error { status: 529 }; 4]);
    let mut busy = claude_command(&overloaded, &home, dir);
    busy.env("CLAUDE_CODE_MAX_RETRIES", "0").arg("Say hello");

    let cases: Vec<(FailureClass, &str, String, &str)> = vec![
        (FailureClass::Exit, "", "run = \"exit 3\"".into(), "3"),
        (
            FailureClass::Signal,
            "",
            "run = \"kill -SEGV $$\"".into(),
            "11",
        ),
        (
            FailureClass::Oom,
            "[limits]\nmemory_max = \"32M\"",
            "run = [\"python3\", \"-c\", \"x = bytearray(256 * 1024 * 1024)\"]".into(),
            "oom",
        ),
        (
            FailureClass::Timeout,
            "",
            "run = \"sleep 30\"\ntimeout = \"1s\"".into(),
            "timeout",
        ),
        (
            FailureClass::Stalled,
            "",
            "run = \"echo started; sleep 30\"\nstall_after = \"1s\"".into(),
            "no output",
        ),
        (
            // Ignores the SIGTERM of drover's stop: the SIGKILL takes the shim too.
            FailureClass::Stalled,
            "[kill]\ngrace = \"1s\"",
            "run = \"trap '' TERM; echo started; sleep 30\"\nstall_after = \"1s\"".into(),
            "no output",
        ),
        (
            FailureClass::Transient,
            "",
            "run = \"echo 'upstream: HTTP 429 Too Many Requests' >&2; exit 1\"".into(),
            "429",
        ),
        (
            FailureClass::Dependency,
            "",
            "run = \"true\"\n[step.requires]\ncommands = [\"drover-no-such-command\"]".into(),
            "drover-no-such-command",
        ),
        (
            FailureClass::AgentError,
            "",
            format!("agent = \"claude-code\"\n{}", step_toml(&turns)),
            "error_max_turns",
        ),
        (
            FailureClass::Transient,
            "",
            format!("agent = \"claude-code\"\n{}", step_toml(&busy)),
            "529",
        ),
    ];
    let runs: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, (class, extra, step, _))| one_step(&agent, &format!("{class}-{i}"), extra, step))
        .collect();
    for ((class, _, _, needle), id) in cases.iter().zip(&runs) {
        let run = agent.wait_for_end(id, END);
        let (got, evidence) = failure_of(&run);
        assert_eq!(
            got,
            *class,
            "run {id}: {evidence}\n{run:#?}\n{}",
            agent.agent_log()
        );
        assert!(
            evidence.to_lowercase().contains(&needle.to_lowercase()),
            "{class}: {needle:?} not in the evidence {evidence:?}"
        );
    }

    // Killed, by drover (the evidence names who) and from outside (systemd).
    let ready = dir.join("ready");
    let by_drover = one_step(&agent, "killed", "", "run = \"touch ready; sleep 300\"");
    wait_until(Duration::from_secs(20), "the step to run", || {
        ready.exists()
    });
    let out = agent.drover(&["kill", &by_drover, "--reason", "class test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = agent.show(&by_drover);
    assert_state(&run, RunState::Killed);
    assert_eq!(run.steps[0].failure_class, Some(FailureClass::Killed));
    let evidence = run.steps[0].failure_evidence.clone().unwrap_or_default();
    assert!(
        evidence.contains("uid 0") && evidence.contains("class test"),
        "{evidence}"
    );

    std::fs::remove_file(&ready).unwrap();
    let outside = one_step(&agent, "outside", "", "run = \"touch ready; sleep 300\"");
    wait_until(Duration::from_secs(20), "the step to run", || {
        ready.exists()
    });
    let scope = format!("drover-{outside}-s-1.scope");
    let out = agent
        .sandbox
        .output("systemctl", &["--user", "kill", "--signal=TERM", &scope]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (class, evidence) = failure_of(&agent.wait_for_end(&outside, END));
    assert_eq!(class, FailureClass::Killed, "{evidence}");
    assert!(evidence.contains("outside drover"), "{evidence}");
}

/// Appends the time (ms since the epoch) and `what` to `file`, from a step.
fn stamp(file: &Path, what: &str) -> String {
    format!("echo \"$(date +%s%3N) {what}\" >> {}", file.display())
}

/// The stamps of `file`: (ms, what).
fn stamps(file: &Path) -> Vec<(i64, String)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let (ms, what) = l.split_once(' ').expect("a stamp");
            (ms.parse().expect("ms"), what.to_owned())
        })
        .collect()
}

#[test]
fn transient_failures_are_retried_with_backoff_and_permanent_ones_are_not() {
    let agent = TestAgent::start();
    let dir = agent.sandbox.dir.path();
    let log = dir.join("attempts");
    let count = dir.join("count");
    // Attempts 1 and 2 hit a rate limit, attempt 3 gets through.
    let script = format!(
        "{start}; n=$(($(cat {count} 2>/dev/null || echo 0) + 1)); echo $n > {count}; \
         if [ $n -lt 3 ]; then echo 'HTTP 529: overloaded' >&2; {end}; exit 1; fi; {ok}",
        start = stamp(&log, "start"),
        count = count.display(),
        end = stamp(&log, "end"),
        ok = stamp(&log, "ok"),
    );
    let retry = "[retry]\nmax_attempts = 4\ninitial = \"1s\"\nfactor = 2.0\nmax = \"1m\"";
    let id = one_step(
        &agent,
        "flaky",
        retry,
        &format!("run = {}", serde_json::to_string(&script).unwrap()),
    );
    // The scheduled retry is visible while it waits.
    let mut seen_next = false;
    wait_until(Duration::from_secs(30), "a scheduled retry", || {
        seen_next = agent.show(&id).next_attempt_at.is_some();
        seen_next
    });
    let run = agent.wait_for_end(&id, END);
    assert_state(&run, RunState::Succeeded);
    assert_eq!(run.steps[0].attempt, 3, "{run:#?}");
    assert_eq!(run.next_attempt_at, None);
    let stamps = stamps(&log);
    let what: Vec<&str> = stamps.iter().map(|(_, w)| w.as_str()).collect();
    assert_eq!(what, ["start", "end", "start", "end", "start", "ok"]);
    // Backoff: 1 s before the first retry, 2 s before the second (factor 2), from the
    // failure's end to the next start; the slack covers the scope start and shell.
    let gap = |end: usize| stamps[end + 1].0 - stamps[end].0;
    assert!(
        (1000..2500).contains(&gap(1)),
        "first backoff {} ms",
        gap(1)
    );
    assert!(
        (2000..3500).contains(&gap(3)),
        "second backoff {} ms",
        gap(3)
    );

    // A permanent failure (exit) is not retried under the same policy.
    let permanent = one_step(&agent, "permanent", retry, "run = \"exit 2\"");
    let run = agent.wait_for_end(&permanent, END);
    let (class, _) = failure_of(&run);
    assert_eq!((class, run.steps[0].attempt), (FailureClass::Exit, 1));

    // A retry waiting for its time is cancelled by a kill: no further attempt starts.
    let slow = "[retry]\nmax_attempts = 3\ninitial = \"1m\"";
    let waiting = one_step(
        &agent,
        "waiting",
        slow,
        "run = \"echo 'connection reset by peer' >&2; exit 1\"",
    );
    wait_until(Duration::from_secs(30), "the retry to be scheduled", || {
        agent.show(&waiting).next_attempt_at.is_some()
    });
    let out = agent.drover(&["kill", &waiting]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = agent.show(&waiting);
    assert_state(&run, RunState::Killed);
    assert_eq!(
        (run.steps[0].attempt, run.next_attempt_at),
        (1, None),
        "{run:#?}"
    );
}

#[test]
fn a_transient_agent_failure_is_retried_from_the_latest_checkpoint() {
    use crate::support::GitRepo;
    let agent = TestAgent::start();
    let dir = agent.sandbox.dir.path();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let retry = "[retry]\nmax_attempts = 2\ninitial = \"1s\"";

    // With a workspace: the retry restores the checkpoint taken after step 1, which
    // predates the conversation, so the conversation starts over in a new session; what
    // the failed attempt wrote is kept in a checkpoint, not in the worktree.
    let repo = GitRepo::init(dir.join("repo"));
    let server = ModelServer::start(vec![
        Turn::bash("echo partial > partial.txt"),
        Turn::Error { status: 529 },
        Turn::text("Done on the second try."),
    ]);
    let mut claude = claude_command(&server, &home, &repo.path);
    claude
        .env("CLAUDE_CODE_MAX_RETRIES", "0")
        .arg("Do the work");
    let wf = agent.workflow(
        "agent-retry.toml",
        &format!(
            "name = \"agent-retry\"\nworkspace = \"{}\"\n{retry}\n[[step]]\nname = \"prepare\"\nrun = \"echo a > a.txt\"\ncheckpoint = true\n[[step]]\nname = \"code\"\nagent = \"claude-code\"\n{}",
            repo.path.display(),
            step_toml(&claude)
        ),
    );
    let id = agent.run(&wf);
    let mut first_session = None;
    wait_until(Duration::from_secs(60), "the first attempt to fail", || {
        let run = agent.show(&id);
        let code = &run.steps[1];
        if code.failure_class.is_some() {
            first_session = code.session_id.clone();
        }
        run.next_attempt_at.is_some() || run.state.is_terminal() || code.attempt > 1
    });
    let run = agent.wait_for_end(&id, END);
    assert_state(&run, RunState::Succeeded);
    let code = &run.steps[1];
    assert_eq!(code.attempt, 2, "{run:#?}");
    assert!(
        code.note
            .as_deref()
            .unwrap_or("")
            .contains("new Claude Code session"),
        "{code:#?}"
    );
    let worktree = std::path::PathBuf::from(run.worktree.clone().unwrap());
    assert!(
        !worktree.join("partial.txt").exists(),
        "the retry did not start from the checkpoint"
    );
    let kept = repo.git(&[
        "for-each-ref",
        "--format=%(refname)",
        &format!("refs/drover/{id}/"),
    ]);
    assert!(
        kept.lines().any(|r| repo
            .git(&["ls-tree", "--name-only", r])
            .lines()
            .any(|f| f == "partial.txt")),
        "the failed attempt's work is kept in a checkpoint: {kept}"
    );
    if let Some(first) = first_session {
        assert_ne!(code.session_id.as_deref(), Some(first.as_str()));
    }

    // Without a workspace there is no checkpoint: the retry resumes the same session.
    let server = ModelServer::start(vec![
        Turn::bash("true"),
        Turn::Error { status: 529 },
        Turn::text("Resumed after the overload."),
    ]);
    let mut claude = claude_command(&server, &home, dir);
    claude.env("CLAUDE_CODE_MAX_RETRIES", "0").arg("Keep going");
    let id = one_step(
        &agent,
        "agent-resume",
        retry,
        &format!("agent = \"claude-code\"\n{}", step_toml(&claude)),
    );
    let run = agent.wait_for_end(&id, END);
    assert_state(&run, RunState::Succeeded);
    let step = &run.steps[0];
    assert_eq!(step.attempt, 2, "{run:#?}");
    let session = step.session_id.clone().expect("a session");
    assert!(
        step.note
            .as_deref()
            .unwrap_or("")
            .contains(&format!("resumes Claude Code session {session}")),
        "{step:#?}"
    );
    let last = server.main_requests().last().cloned().expect("requests");
    assert!(
        last["messages"].to_string().contains("Keep going"),
        "{last}"
    );
}

#[test]
fn a_retry_keeps_the_work_of_the_steps_since_the_latest_checkpoint() {
    use crate::support::GitRepo;
    let agent = TestAgent::start();
    let dir = agent.sandbox.dir.path();
    let repo = GitRepo::init(dir.join("repo"));
    let count = dir.join("count");
    let flaky = format!(
        "n=$(($(cat {c} 2>/dev/null || echo 0) + 1)); echo $n > {c}; \
         if [ $n -lt 2 ]; then echo partial > partial.txt; echo 'HTTP 503 overloaded' >&2; exit 1; fi; \
         test -f b.txt && echo c > c.txt",
        c = count.display()
    );
    let wf = agent.workflow(
        "keep.toml",
        &format!(
            "name = \"keep\"\nworkspace = \"{}\"\n[retry]\nmax_attempts = 2\ninitial = \"0s\"\n\
             [[step]]\nname = \"a\"\nrun = \"echo a > a.txt\"\ncheckpoint = true\n\
             [[step]]\nname = \"b\"\nrun = \"echo b > b.txt\"\n\
             [[step]]\nname = \"c\"\nrun = {}\n",
            repo.path.display(),
            serde_json::to_string(&flaky).unwrap()
        ),
    );
    let id = agent.run(&wf);
    let run = agent.wait_for_end(&id, END);
    assert_state(&run, RunState::Succeeded);
    assert_eq!(run.steps[2].attempt, 2, "{run:#?}");
    let worktree = std::path::PathBuf::from(run.worktree.clone().unwrap());
    // The latest checkpoint (after a) predates step b: restoring it would undo b, so the
    // retry goes on from the worktree as it is.
    assert!(worktree.join("b.txt").exists() && worktree.join("c.txt").exists());
}

#[test]
fn a_scheduled_retry_survives_an_agent_restart_and_keeps_its_time() {
    let mut agent = TestAgent::start();
    let dir = agent.sandbox.dir.path().to_owned();
    let log = dir.join("attempts");
    let count = dir.join("count");
    let script = format!(
        "{start}; n=$(($(cat {count} 2>/dev/null || echo 0) + 1)); echo $n > {count}; \
         if [ $n -lt 2 ]; then echo 'HTTP 429 Too Many Requests' >&2; exit 1; fi",
        start = stamp(&log, "start"),
        count = count.display(),
    );
    let id = one_step(
        &agent,
        "survivor",
        "[retry]\nmax_attempts = 2\ninitial = \"3s\"",
        &format!("run = {}", serde_json::to_string(&script).unwrap()),
    );
    let mut next = None;
    wait_until(Duration::from_secs(30), "the retry to be scheduled", || {
        next = agent.show(&id).next_attempt_at;
        next.is_some()
    });
    let next = next.unwrap();
    agent.restart_agent();
    assert_eq!(
        agent.show(&id).next_attempt_at,
        Some(next),
        "the schedule moved"
    );
    let run = agent.wait_for_end(&id, END);
    assert_state(&run, RunState::Succeeded);
    assert_eq!(run.steps[0].attempt, 2);
    let second_start = stamps(&log)[1].0;
    assert!(
        second_start >= next.0,
        "the retry started at {second_start}, before its time {}",
        next.0
    );
}
