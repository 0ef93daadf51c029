//! `[[step]]`: names, `run`, env, fields, stalls and agent steps.

use super::{STEP, assert_rejected, ok, rejected};
use crate::spec::StepCommand;

#[test]
fn step_command_argv() {
    assert_eq!(
        StepCommand::Shell("echo hi".into()).argv(),
        vec!["/bin/sh", "-c", "echo hi"]
    );
    assert_eq!(
        StepCommand::Argv(vec!["git".into(), "status".into()]).argv(),
        vec!["git", "status"]
    );
}

#[test]
fn rejects_duplicate_step_names_with_first_line() {
    let text = "name = \"m\"\n\n[[step]]\nname = \"build\"\nrun = \"a\"\n\n[[step]]\nname = \"build\"\nrun = \"b\"\n";
    let (line, msg) = rejected(text);
    assert_eq!(line, 8);
    assert!(
        msg.ends_with("duplicate step name \"build\" (first defined at line 4)"),
        "{msg}"
    );
    assert!(msg.starts_with("fix.toml:8:8:"), "{msg}");
}

#[test]
fn rejects_empty_run() {
    assert_rejected(
        "name = \"m\"\n[[step]]\nname = \"s\"\nrun = []\n",
        4,
        &["\"s\"", "`run` must not be an empty array"],
    );
    assert_rejected(
        "name = \"m\"\n[[step]]\nname = \"s\"\nrun = \"  \\t \"\n",
        4,
        &["\"s\"", "`run` must not be a blank string"],
    );
    assert_rejected(
        "name = \"m\"\n[[step]]\nname = \"s\"\nrun = [\n  \"\",\n  \"x\",\n]\n",
        5,
        &["\"s\"", "first element of `run`", "must not be empty"],
    );
}

#[test]
fn rejects_bad_step_fields() {
    let step =
        |extra: &str| format!("name = \"m\"\n[[step]]\nname = \"s\"\nrun = \"x\"\n{extra}\n");
    assert_rejected(
        &step("timeout = \"fast\""),
        5,
        &["invalid duration \"fast\""],
    );
    assert_rejected(
        &step("timeout = \"0ms\""),
        5,
        &["`step.timeout` must be greater than 0"],
    );
    assert_rejected(
        &step("agent = \"codex\""),
        5,
        &["unknown agent \"codex\"", "\"claude-code\""],
    );
    assert_rejected(
        &step("env = { \"1BAD\" = \"x\" }"),
        5,
        &["invalid environment variable name \"1BAD\""],
    );
    assert_rejected(
        &step("[step.env]\nOK = \"1\"\n\"A-B\" = \"2\""),
        7,
        &["invalid environment variable name \"A-B\""],
    );
}

#[test]
fn rejects_bad_stall_after() {
    assert_rejected(
        &format!("name = \"m\"\n{STEP}stall_after = \"0s\"\n"),
        5,
        &[
            "fix.toml:5:15:",
            "`step.stall_after` must be greater than 0",
        ],
    );
    assert_rejected(
        &format!("name = \"m\"\n{STEP}stall_after = \"later\"\n"),
        5,
        &["invalid duration \"later\""],
    );
}

#[test]
fn agent_steps_must_not_pick_their_own_session() {
    let agent = |run: &str| {
        format!("name = \"m\"\n[[step]]\nname = \"a\"\nagent = \"claude-code\"\nrun = {run}\n")
    };
    for (run, col, opt) in [
        (
            r#"["claude", "-p", "x", "--resume", "abc"]"#,
            29,
            "--resume",
        ),
        (r#"["claude", "--session-id=1234"]"#, 18, "--session-id"),
        (r#""claude -p hi --continue""#, 7, "--continue"),
        (r#""cd x && claude --fork-session""#, 7, "--fork-session"),
        (r#""claude '--resume' x""#, 7, "--resume"),
    ] {
        let (line, msg) = rejected(&agent(run));
        assert_eq!(line, 5, "{msg}");
        assert!(msg.starts_with(&format!("fix.toml:5:{col}: ")), "{msg}");
        assert!(
            msg.ends_with(&format!(
                "step \"a\": `run` must not pass {opt}: drover gives claude-code steps --session-id or --resume itself"
            )),
            "{msg}"
        );
    }
    // Look-alikes, and the options on steps that are not agent steps, are fine.
    ok(&agent(r#""claude -p 'do not --resumeX' --model x""#));
    ok(&agent(r#"["claude", "-p", "--continued"]"#));
    ok("name = \"m\"\n[[step]]\nname = \"a\"\nrun = \"claude --resume x\"\n");
}

#[test]
fn rejects_nul_bytes_where_the_step_execs_them() {
    assert_rejected(
        "name = \"m\"\n[[step]]\nname = \"s\"\nrun = \"echo \\u0000 hi\"\n",
        4,
        &["\"s\"", "`run` contains a NUL byte"],
    );
    assert_rejected(
        "name = \"m\"\n[[step]]\nname = \"s\"\nrun = [\"echo\",\n  \"a\\u0000\"]\n",
        5,
        &["an argument of `run` contains a NUL byte"],
    );
    assert_rejected(
        "name = \"m\"\n[[step]]\nname = \"s\"\nrun = \"true\"\nenv = { A = \"1\",\n B = \"x\\u0000\" }\n",
        6,
        &["`env.B` contains a NUL byte"],
    );
    assert_rejected(
        "name = \"m\"\n[[step]]\nname = \"s\"\nrun = \"true\"\non_kill = [\"\\u0000\"]\n",
        5,
        &["an `on_kill` command contains a NUL byte"],
    );
}

#[test]
fn rejects_strings_a_program_cannot_be_given() {
    use crate::spec::validate::{MAX_ARG, MAX_STEP_EXEC};
    let long = "x".repeat(MAX_ARG + 1);
    assert_rejected(
        &format!("name = \"m\"\n[[step]]\nname = \"s\"\nrun = \"{long}\"\n"),
        4,
        &["`run` is 131072 bytes", "at most 131071"],
    );
    let entry = "y".repeat(MAX_ARG - 2);
    assert_rejected(
        &format!(
            "name = \"m\"\n[[step]]\nname = \"s\"\nrun = \"true\"\n[step.env]\nAB = \"{entry}\"\n"
        ),
        6,
        &["`env.AB` is 131072 bytes as KEY=VALUE"],
    );
    // Each string within bounds, all of them together beyond what a step may pass.
    let value = "z".repeat(MAX_ARG / 2);
    let env: String = (0..(MAX_STEP_EXEC / value.len() + 1))
        .map(|i| format!("V{i} = \"{value}\"\n"))
        .collect();
    assert_rejected(
        &format!("name = \"m\"\n[[step]]\nname = \"s\"\nrun = \"true\"\n[step.env]\n{env}"),
        4,
        &["`run` and `env` take", "at most 1048576"],
    );
    // At the bound, accepted.
    let exact = "x".repeat(MAX_ARG);
    ok(&format!(
        "name = \"m\"\n[[step]]\nname = \"s\"\nrun = \"{exact}\"\n"
    ));
}
