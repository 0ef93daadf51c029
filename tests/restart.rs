//! Restart, rollback and checkpoints against real git repositories, a real systemd and the
//! real Claude Code CLI: a killed run goes on from its checkpoint without re-running what
//! was done, its Claude Code session resumed; the user's branch, HEAD and index are never
//! touched; a bad checkpoint or an unmet requirement changes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use drover::model::FailureClass;
use drover::model::{ActionRecord, CheckpointRecord, KillRecord, KillResult, Run, RunState};
use serde_json::Value;

use crate::support::anthropic::{
    Kind, ModelServer, Turn, claude_command, step_toml, transcript_path,
};
use crate::support::{GitRepo, TestAgent, assert_state, wait_until};

const END: Duration = Duration::from_secs(90);

/// What the user sees of their repository: HEAD, its branch, the status and the index.
fn user_view(repo: &GitRepo) -> [String; 4] {
    [
        repo.git(&["rev-parse", "HEAD"]),
        repo.git(&["symbolic-ref", "HEAD"]),
        repo.git(&["status", "--porcelain"]),
        repo.git(&["diff", "--cached"]),
    ]
}

/// A repository with a change the user has staged and one they have not: drover must
/// leave both alone.
fn user_repo(agent: &TestAgent) -> GitRepo {
    let repo = GitRepo::init(agent.sandbox.dir.path().join("repo"));
    std::fs::write(repo.path.join("README"), "hello, staged\n").unwrap();
    repo.git(&["add", "README"]);
    std::fs::write(repo.path.join("notes.txt"), "the user's own notes\n").unwrap();
    repo
}

/// Every file under `dir` but `.git`, with its content.
fn files_in(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            let name = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if name == ".git" {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(name, std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The files a checkpoint holds of the worktree (its `.drover-state` left out).
fn files_of_checkpoint(repo: &GitRepo, reference: &str) -> BTreeMap<String, String> {
    repo.git(&["ls-tree", "-r", "--name-only", reference])
        .lines()
        .filter(|f| !f.starts_with(".drover-state/"))
        .map(|f| {
            (
                f.to_owned(),
                format!("{}\n", repo.git(&["show", &format!("{reference}:{f}")])),
            )
        })
        .map(|(f, content)| (f, content.trim_end().to_owned() + "\n"))
        .collect()
}

/// Trailing newlines differ between `git show` and the files; compare trimmed.
fn trimmed(files: BTreeMap<String, String>) -> BTreeMap<String, String> {
    files
        .into_iter()
        .map(|(f, c)| (f, c.trim_end().to_owned() + "\n"))
        .collect()
}

pub(crate) fn json_of<T: serde::de::DeserializeOwned>(agent: &TestAgent, args: &[&str]) -> T {
    let out = agent.drover(args);
    assert!(
        out.status.success(),
        "drover {args:?} failed: {}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.agent_log()
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "drover {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn checkpoints(agent: &TestAgent, run: &str) -> Vec<CheckpointRecord> {
    json_of(agent, &["checkpoints", run, "--json"])
}

/// `drover ARGS…` must fail, naming `needle` on stderr; returns stderr.
fn refused(agent: &TestAgent, args: &[&str], needle: &str) -> String {
    let out = agent.drover(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "drover {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains(needle),
        "drover {args:?}: {needle:?} not in {stderr:?}"
    );
    stderr
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub(crate) fn worktree_of(run: &Run) -> PathBuf {
    PathBuf::from(run.worktree.as_deref().expect("the run has a worktree"))
}

/// Every text in a request's messages (text blocks, tool inputs, tool results), as JSON.
pub(crate) fn conversation(request: &Value) -> String {
    request["messages"].to_string()
}

#[test]
fn a_run_killed_in_its_claude_step_restarts_from_the_checkpoint_and_resumes_the_session() {
    let agent = TestAgent::start();
    let dir = agent.sandbox.dir.path();
    let repo = user_repo(&agent);
    let before = user_view(&repo);
    let ready = dir.join("ready");
    let prepared = dir.join("prepared.count");
    let server = ModelServer::start(vec![
        Turn::bash("echo from-claude > code.txt"),
        Turn::bash(&format!("touch {}; sleep 300", ready.display())),
        Turn::text("The code is written."),
    ]);
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut claude = claude_command(&server, &home, &repo.path);
    claude.arg("Write the code");
    let wf = agent.workflow(
        "three.toml",
        &format!(
            r#"name = "three"
workspace = "{repo}"
[kill]
grace = "4s"
[[step]]
name = "prepare"
run = "echo one > one.txt; echo ran >> {prepared}"
checkpoint = true
[[step]]
name = "code"
agent = "claude-code"
checkpoint = true
{claude}
[[step]]
name = "check"
run = "test -f code.txt && echo three > three.txt"
"#,
            repo = repo.path.display(),
            prepared = prepared.display(),
            claude = step_toml(&claude)
        ),
    );
    let id = agent.run(&wf);
    wait_until(
        Duration::from_secs(60),
        "Claude Code to run its long Bash command",
        || ready.exists(),
    );
    let session = agent.show(&id).steps[1]
        .session_id
        .clone()
        .expect("drover assigned the session up front");

    let killed: KillRecord = json_of(&agent, &["kill", &id, "--json", "--reason", "restart test"]);
    assert_eq!(killed.result, KillResult::Killed, "{killed:#?}");
    let taken = checkpoints(&agent, &id);
    assert_eq!(
        taken
            .iter()
            .map(|c| (c.n, c.reason.as_str(), c.next_step))
            .collect::<Vec<_>>(),
        [(1, "step", 1), (2, "kill", 1)],
        "{taken:#?}"
    );
    let at_kill = &taken[1];
    assert_eq!(
        killed.snapshot.as_deref(),
        Some(format!("{} {}", at_kill.reference, at_kill.commit).as_str())
    );
    let killed_run = agent.show(&id);
    assert_eq!(
        killed_run.steps[1].failure_class,
        Some(FailureClass::Killed)
    );
    assert!(
        killed_run.steps[1]
            .failure_evidence
            .as_deref()
            .unwrap_or("")
            .contains("restart test"),
        "{killed_run:#?}"
    );
    // The kill checkpoint holds Claude's work and the conversation so far.
    let worktree = worktree_of(&killed_run);
    assert_eq!(
        repo.git(&["show", &format!("{}:code.txt", at_kill.reference)]),
        "from-claude"
    );
    assert!(
        repo.git(&[
            "show",
            &format!("{}:.drover-state/transcripts/code.jsonl", at_kill.reference)
        ])
        .contains("echo from-claude"),
        "the kill checkpoint holds the transcript"
    );

    // Things that happen to a worktree after a kill, which a restart must undo.
    std::fs::write(worktree.join("one.txt"), "scribbled over\n").unwrap();
    std::fs::write(worktree.join("junk.txt"), "left behind\n").unwrap();
    let requests_before = server.main_requests().len();

    let restarted: ActionRecord = json_of(&agent, &["restart", &id, "--json"]);
    assert_eq!(
        (restarted.action.as_str(), restarted.result.as_str()),
        ("restart", "done")
    );
    assert_eq!(restarted.checkpoint, Some(2), "{restarted:#?}");
    let run = agent.wait_for_end(&id, END);
    assert_state(&run, RunState::Succeeded);

    assert_eq!(lines_of(&prepared), ["ran"], "step 1 ran again");
    let code = &run.steps[1];
    assert_eq!(
        (code.attempt, code.session_id.as_deref()),
        (2, Some(session.as_str())),
        "{code:#?}"
    );
    assert!(
        code.note
            .as_deref()
            .unwrap_or("")
            .contains(&format!("resumes Claude Code session {session}")),
        "{code:#?}"
    );
    let result = code
        .agent
        .as_ref()
        .and_then(|a| a.result.as_ref())
        .expect("a result event");
    assert!(!result.is_error, "{code:#?}");
    // The resumed request carries the earlier turns of the same conversation.
    let requests = server.main_requests();
    assert!(
        requests.len() > requests_before,
        "Claude Code was not resumed"
    );
    let resumed = conversation(requests.last().unwrap());
    assert!(resumed.contains("Write the code"), "{resumed}");
    assert!(resumed.contains("echo from-claude > code.txt"), "{resumed}");
    let last = server
        .log()
        .into_iter()
        .rev()
        .find(|r| r.kind == Kind::Main)
        .unwrap();
    assert_eq!(
        last.header("x-claude-code-session-id"),
        Some(session.as_str()),
        "the resumed request belongs to session {session}"
    );

    // The worktree was the kill checkpoint's tree when the step went on (then step 3 added
    // three.txt); what the restart replaced is kept in a checkpoint of its own.
    let mut expected = files_of_checkpoint(&repo, &at_kill.reference);
    expected.insert("three.txt".into(), "three\n".into());
    assert_eq!(trimmed(files_in(&worktree)), expected);
    let after = checkpoints(&agent, &id);
    let kept = after
        .iter()
        .find(|c| c.reason == "before-restart")
        .expect("the replaced worktree is kept");
    assert_eq!(
        repo.git(&["show", &format!("{}:junk.txt", kept.reference)]),
        "left behind"
    );
    assert_eq!(
        user_view(&repo),
        before,
        "the user's HEAD, branch or index moved"
    );
    assert_eq!(
        std::fs::read_to_string(repo.path.join("notes.txt")).unwrap(),
        "the user's own notes\n"
    );
}

#[test]
fn a_restart_from_an_older_checkpoint_and_a_rollback_leave_the_users_branch_alone() {
    let agent = TestAgent::start();
    let dir = agent.sandbox.dir.path();
    let repo = user_repo(&agent);
    let before = user_view(&repo);
    let ran = dir.join("ran");
    let pass = dir.join("pass");
    let wf = agent.workflow(
        "chain.toml",
        &format!(
            r#"name = "chain"
workspace = "{repo}"
[[step]]
name = "a"
run = "echo a > a.txt; echo a >> {ran}"
checkpoint = true
[[step]]
name = "b"
run = "echo b > b.txt; echo b >> {ran}"
checkpoint = true
[[step]]
name = "c"
run = "echo c >> {ran}; test -f {pass} || exit 3; echo c > c.txt"
"#,
            repo = repo.path.display(),
            ran = ran.display(),
            pass = pass.display()
        ),
    );
    let id = agent.run(&wf);
    let run = agent.wait_for_end(&id, END);
    assert_state(&run, RunState::Failed);
    assert_eq!(run.failure_class, Some(FailureClass::Exit), "{run:#?}");
    assert_eq!(run.steps[2].failure_class, Some(FailureClass::Exit));
    assert!(
        run.steps[2]
            .failure_evidence
            .as_deref()
            .unwrap_or("")
            .contains('3'),
        "{run:#?}"
    );
    let worktree = worktree_of(&run);
    let taken = checkpoints(&agent, &id);
    assert_eq!(
        taken.iter().map(|c| c.next_step).collect::<Vec<_>>(),
        [1, 2],
        "{taken:#?}"
    );
    assert_eq!(
        taken[1].files_changed, 1,
        "b.txt is the one change since checkpoint 1"
    );

    let rolled: ActionRecord = json_of(&agent, &["rollback", &id, "--to", "1", "--json"]);
    assert_eq!(
        (rolled.action.as_str(), rolled.result.as_str()),
        ("rollback", "done")
    );
    assert_eq!(
        trimmed(files_in(&worktree)),
        files_of_checkpoint(&repo, &taken[0].reference)
    );
    assert!(!worktree.join("b.txt").exists());
    assert_state(&agent.show(&id), RunState::Failed);
    let after_rollback = checkpoints(&agent, &id);
    assert_eq!(
        after_rollback
            .iter()
            .map(|c| c.reason.as_str())
            .collect::<Vec<_>>(),
        ["step", "step", "before-rollback", "rollback"],
        "{after_rollback:#?}"
    );
    assert_eq!(
        repo.git(&["show", &format!("{}:b.txt", after_rollback[2].reference)]),
        "b"
    );
    assert_eq!(user_view(&repo), before);

    // From checkpoint 2: only step c runs again.
    std::fs::write(&pass, "").unwrap();
    json_of::<ActionRecord>(&agent, &["restart", &id, "--from", "2", "--json"]);
    let run = agent.wait_for_end(&id, END);
    assert_state(&run, RunState::Succeeded);
    assert_eq!(lines_of(&ran), ["a", "b", "c", "c"]);
    assert!(worktree.join("b.txt").exists() && worktree.join("c.txt").exists());

    // From the older checkpoint 1: steps b and c run again.
    json_of::<ActionRecord>(&agent, &["restart", &id, "--from", "1", "--yes", "--json"]);
    let run = agent.wait_for_end(&id, END);
    assert_state(&run, RunState::Succeeded);
    assert_eq!(lines_of(&ran), ["a", "b", "c", "c", "b", "c"]);
    assert_eq!(run.steps[0].attempt, 1, "{run:#?}");
    assert_eq!(
        user_view(&repo),
        before,
        "the user's HEAD, branch or index moved"
    );

    let trail: Value = json_of(&agent, &["audit", "--run", &id, "--json"]);
    let actions: Vec<ActionRecord> = serde_json::from_value(trail["actions"].clone()).unwrap();
    assert_eq!(
        actions
            .iter()
            .map(|a| (a.action.as_str(), a.result.as_str()))
            .collect::<Vec<_>>(),
        [
            ("rollback", "done"),
            ("restart", "done"),
            ("restart", "done")
        ]
    );
    assert!(
        actions.iter().all(|a| a.requested_by.starts_with("uid 0")),
        "{actions:#?}"
    );
    // A running run is neither restarted nor rolled back.
    let long = agent.workflow(
        "long.toml",
        &format!(
            "name = \"long\"\nworkspace = \"{}\"\n[[step]]\nname = \"s\"\nrun = \"sleep 300\"\n",
            repo.path.display()
        ),
    );
    let running = agent.run(&long);
    refused(&agent, &["restart", &running], "kill it first");
    refused(
        &agent,
        &["rollback", &running, "--to", "1"],
        "kill it first",
    );
}

#[test]
fn a_missing_or_damaged_checkpoint_is_refused_and_nothing_changes() {
    let agent = TestAgent::start();
    let repo = user_repo(&agent);
    let wf = agent.workflow(
        "damaged.toml",
        &format!(
            "name = \"damaged\"\nworkspace = \"{}\"\n[[step]]\nname = \"a\"\nrun = \"echo a > a.txt\"\ncheckpoint = true\n[[step]]\nname = \"b\"\nrun = \"echo b > b.txt; exit 1\"\n",
            repo.path.display()
        ),
    );
    let id = agent.run(&wf);
    let failed = agent.wait_for_end(&id, END);
    assert_state(&failed, RunState::Failed);
    let worktree = worktree_of(&failed);
    let files = files_in(&worktree);
    let taken = checkpoints(&agent, &id);
    assert_eq!(taken.len(), 1);

    refused(&agent, &["restart", &id, "--from", "7"], "no checkpoint 7");
    refused(&agent, &["rollback", &id, "--to", "7"], "no checkpoint 7");
    // The ref moved elsewhere, then gone.
    repo.git(&["update-ref", &taken[0].reference, "HEAD"]);
    refused(
        &agent,
        &["restart", &id, "--from", "1"],
        "checkpoint 1 of run",
    );
    repo.git(&["update-ref", "-d", &taken[0].reference]);
    let stderr = refused(&agent, &["restart", &id], "checkpoint 1 of run");
    assert!(stderr.contains(&taken[0].reference), "{stderr}");
    refused(&agent, &["rollback", &id, "--to", "1"], &taken[0].reference);

    let after = agent.show(&id);
    assert_state(&after, RunState::Failed);
    assert_eq!(after.steps, failed.steps, "the run's steps changed");
    assert_eq!(files_in(&worktree), files, "the worktree changed");
    assert_eq!(checkpoints(&agent, &id).len(), 1, "a checkpoint was added");
}

#[test]
fn unmet_requirements_refuse_a_restart_naming_each_one() {
    let agent = TestAgent::start();
    let dir = agent.sandbox.dir.path();
    let repo = user_repo(&agent);
    let flag = dir.join("flag");
    let tool_dir = dir.join("tools");
    std::fs::create_dir_all(&tool_dir).unwrap();
    std::fs::write(&flag, "").unwrap();
    let wf = agent.workflow(
        "needs.toml",
        &format!(
            r#"name = "needs"
workspace = "{repo}"
[requires]
files = ["{flag}"]
[[step]]
name = "a"
run = "echo a > a.txt"
checkpoint = true
[[step]]
name = "b"
run = "exit 1"
[step.requires]
files = ["a.txt"]
env = ["DROVER_TEST_NEVER_SET"]
runs = ["prep-never-ran"]
"#,
            repo = repo.path.display(),
            flag = flag.display()
        ),
    );
    let id = agent.run(&wf);
    let run = agent.wait_for_end(&id, END);
    assert_state(&run, RunState::Failed);
    // Step b's own requirement failed before it started.
    assert_eq!(
        run.steps[1].failure_class,
        Some(FailureClass::Dependency),
        "{run:#?}"
    );
    let evidence = run.steps[1].failure_evidence.clone().unwrap_or_default();
    assert!(evidence.contains("DROVER_TEST_NEVER_SET"), "{evidence}");
    assert!(evidence.contains("prep-never-ran"), "{evidence}");
    assert!(!evidence.contains("a.txt"), "a.txt exists: {evidence}");
    assert_eq!(
        run.steps[1].pid, None,
        "a step with unmet requirements must not start"
    );

    std::fs::remove_file(&flag).unwrap();
    let stderr = refused(&agent, &["restart", &id], "requirements not met");
    assert!(stderr.contains(&flag.display().to_string()), "{stderr}");
    assert!(stderr.contains("DROVER_TEST_NEVER_SET"), "{stderr}");
    let after = agent.show(&id);
    assert_state(&after, RunState::Failed);
    assert_eq!(
        after.failure_class,
        Some(FailureClass::Dependency),
        "{after:#?}"
    );
    assert_eq!(after.steps, run.steps, "nothing ran");
    let trail: Value = json_of(&agent, &["audit", "--run", &id, "--json"]);
    assert_eq!(trail["actions"][0]["result"], "refused", "{trail:#}");

    // The same requirement refuses a new run outright, and no run is created.
    let runs_before: Vec<Run> = json_of(&agent, &["ps", "--all", "--json"]);
    let stderr = refused(
        &agent,
        &["run", &wf.to_string_lossy()],
        "requirements not met",
    );
    assert!(stderr.contains("does not exist"), "{stderr}");
    let runs_after: Vec<Run> = json_of(&agent, &["ps", "--all", "--json"]);
    assert_eq!(runs_after.len(), runs_before.len());
}

#[test]
fn a_transcript_cut_mid_line_is_repaired_before_the_session_is_resumed() {
    let agent = TestAgent::start();
    let dir = agent.sandbox.dir.path();
    let ready = dir.join("ready");
    let server = ModelServer::start(vec![
        Turn::bash(&format!("touch {}; sleep 300", ready.display())),
        Turn::text("Resumed and finished."),
    ]);
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut claude = claude_command(&server, &home, dir);
    claude.arg("Run the long command");
    // No workspace: no checkpoints; a restart goes on from the killed step with the live
    // transcript.
    let wf = agent.workflow(
        "cut.toml",
        &format!(
            "name = \"cut\"\n[kill]\ngrace = \"4s\"\n[[step]]\nname = \"claude\"\nagent = \"claude-code\"\n{}",
            step_toml(&claude)
        ),
    );
    let id = agent.run(&wf);
    wait_until(Duration::from_secs(60), "the long Bash command", || {
        ready.exists()
    });
    let killed: KillRecord = json_of(&agent, &["kill", &id, "--json"]);
    assert_eq!(killed.result, KillResult::Killed);
    let session = agent.show(&id).steps[0]
        .session_id
        .clone()
        .expect("a session");
    let transcript = transcript_path(&home, dir, &session);
    let complete = std::fs::read_to_string(&transcript).expect("the transcript");
    // What a kill in the middle of a write leaves: half a line.
    let mut torn = complete.clone();
    torn.push_str(r#"{"parentUuid":"x","type":"assistant","message":{"role":"assis"#);
    std::fs::write(&transcript, &torn).unwrap();

    json_of::<ActionRecord>(&agent, &["restart", &id, "--json"]);
    let run = agent.wait_for_end(&id, END);
    assert_state(&run, RunState::Succeeded);
    let step = &run.steps[0];
    assert_eq!(step.session_id.as_deref(), Some(session.as_str()));
    let note = step.note.as_deref().unwrap_or("");
    assert!(
        note.contains("transcript repaired"),
        "the repair is recorded: {step:#?}"
    );
    let result = step
        .agent
        .as_ref()
        .and_then(|a| a.result.as_ref())
        .expect("a result");
    assert_eq!(
        result.text.as_deref(),
        Some("Resumed and finished."),
        "{step:#?}"
    );
    assert!(conversation(server.main_requests().last().unwrap()).contains("Run the long command"));
    for line in std::fs::read_to_string(&transcript).unwrap().lines() {
        serde_json::from_str::<Value>(line)
            .unwrap_or_else(|e| panic!("a torn line is left ({e}): {line}"));
    }
}

#[test]
fn restarts_rollbacks_and_checkpoints_need_the_operator_role_and_a_protected_run_a_yes() {
    let agent = TestAgent::start();
    let repo = user_repo(&agent);
    let wf = agent.workflow(
        "guarded.toml",
        &format!(
            "name = \"guarded\"\nworkspace = \"{}\"\nprotected = true\n[[step]]\nname = \"a\"\nrun = \"echo a > a.txt\"\ncheckpoint = true\n[[step]]\nname = \"b\"\nrun = \"exit 1\"\n",
            repo.path.display()
        ),
    );
    let id = agent.run(&wf);
    let failed = agent.wait_for_end(&id, END);
    assert_state(&failed, RunState::Failed);

    let as_nobody = |method: &str, signature: &str, args: &[&str]| {
        let mut call = vec![signature, id.as_str()];
        call.extend_from_slice(args);
        let out = agent.busctl(true, method, &call);
        assert!(!out.status.success(), "{method} as nobody succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            stderr.contains("needs the operator role"),
            "{method}: {stderr}"
        );
    };
    as_nobody("Restart", "sa{sv}", &["0"]);
    as_nobody("Rollback", "sua{sv}", &["1", "0"]);
    as_nobody("Checkpoint", "ss", &["mine"]);
    let trail: Value = json_of(&agent, &["audit", "--run", &id, "--json"]);
    let actions: Vec<ActionRecord> = serde_json::from_value(trail["actions"].clone()).unwrap();
    assert_eq!(
        actions
            .iter()
            .map(|a| (a.action.as_str(), a.result.as_str(), a.uid))
            .collect::<Vec<_>>(),
        [
            ("restart", "refused", Some(65534)),
            ("rollback", "refused", Some(65534)),
            ("checkpoint", "refused", Some(65534)),
        ]
    );

    // Malformed options are refused by name; a protected run needs a confirmation.
    let out = agent.busctl(false, "Restart", &["sa{sv}", &id, "1", "form", "u", "1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option \"form\""));
    refused(&agent, &["restart", &id], "is protected");
    refused(&agent, &["rollback", &id, "--to", "1"], "is protected");
    assert_eq!(
        agent.show(&id).steps,
        failed.steps,
        "a refused call changed the run"
    );
    let taken: CheckpointRecord =
        json_of(&agent, &["checkpoint", &id, "--label", "by hand", "--json"]);
    assert_eq!(
        (taken.n, taken.reason.as_str(), taken.label.as_str()),
        (2, "manual", "by hand")
    );
    json_of::<ActionRecord>(&agent, &["rollback", &id, "--to", "1", "--yes", "--json"]);
    json_of::<ActionRecord>(&agent, &["restart", &id, "--yes", "--json"]);
    let run = agent.wait_for_end(&id, END);
    assert_eq!(run.steps[1].attempt, 2, "{run:#?}");
}
