//! Whole files: what they parse to, top-level keys, positions and wording of errors,
//! loading from disk, the examples and README, and the stored JSON.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{FULL, STEP, WITH_REQUIRES, WITH_RETRY, assert_rejected, ok, rejected};
use crate::spec::types::{Limits, RetryPolicy};
use crate::spec::validate::line_col;
use crate::spec::{AgentKind, StepCommand, Workflow, parse};

#[test]
fn full_file_parses_to_expected_values() {
    let w = ok(FULL);
    assert_eq!(w.name, "fix-bug.v2");
    // Relative workspace resolves against the workflow file's directory.
    assert_eq!(w.workspace, Some(PathBuf::from("/srv/flows/../repo")));
    assert_eq!(
        w.limits,
        Limits {
            memory_max: Some(512 * 1024 * 1024),
            cpu_quota_percent: Some(150),
            tasks_max: Some(64),
            timeout: Some(Duration::from_secs(90 * 60)),
        }
    );
    assert_eq!(w.steps.len(), 3);

    let build = &w.steps[0];
    assert_eq!(build.name, "build");
    assert_eq!(
        build.run,
        StepCommand::Argv(vec!["cargo".into(), "build".into(), "--release".into()])
    );
    assert_eq!(build.env.get("RUST_LOG").map(String::as_str), Some("debug"));
    assert_eq!(build.env.get("_X1").map(String::as_str), Some(""));
    assert_eq!(build.timeout, Some(Duration::from_secs(90)));
    assert!(build.critical);
    assert!(!build.checkpoint);
    assert_eq!(build.agent, None);

    let fix = &w.steps[1];
    assert_eq!(fix.name, "agent_fix-1");
    assert_eq!(
        fix.run,
        StepCommand::Shell("cargo test 2>&1 | tee log".into())
    );
    assert!(fix.checkpoint);
    assert!(!fix.critical);
    assert_eq!(fix.agent, Some(AgentKind::ClaudeCode));

    let defaults = &w.steps[2];
    assert!(defaults.env.is_empty());
    assert_eq!(defaults.timeout, None);
    assert!(!defaults.critical && !defaults.checkpoint);
}

#[test]
fn minimal_file_has_default_limits_and_no_workspace() {
    let w = ok(&format!("name = \"m\"\n{STEP}"));
    assert_eq!(w.limits, Limits::default());
    assert_eq!(w.workspace, None);
    assert_eq!(w.steps[0].run, StepCommand::Shell("true".into()));
}

#[test]
fn workspace_absolute_is_kept_and_relative_origin_becomes_absolute() {
    let w = ok(&format!("name = \"m\"\nworkspace = \"/abs/repo\"\n{STEP}"));
    assert_eq!(w.workspace, Some(PathBuf::from("/abs/repo")));

    // A bare file name as origin: resolved against the current directory.
    let w = parse(
        &format!("name = \"m\"\nworkspace = \"repo\"\n{STEP}"),
        Path::new("fix.toml"),
    )
    .expect("valid");
    let cwd = std::env::current_dir().expect("cwd");
    assert_eq!(w.workspace, Some(cwd.join("repo")));
    assert!(w.workspace.as_deref().is_some_and(Path::is_absolute));
}

#[test]
fn display_is_file_line_col_reason() {
    let text = format!("name = \"m\"\n\n[limits]\nmemory_max = \"12Q\"\n{STEP}");
    let e = parse(&text, Path::new("fix.toml")).expect_err("bad size");
    assert_eq!(
        e.to_string(),
        "fix.toml:4:14: invalid size \"12Q\": expected bytes or a number with K, M, G or T"
    );
    assert_eq!(e.line(), 4);
    assert_eq!(e.column(), 14);
}

#[test]
fn rejects_unknown_keys_naming_key_and_allowed_keys() {
    assert_rejected(
        &format!("name = \"m\"\nbogus = 1\n{STEP}"),
        2,
        &[
            "`bogus`",
            "top level",
            "`name`",
            "`workspace`",
            "`limits`",
            "`step`",
        ],
    );
    assert_rejected(
        &format!("name = \"m\"\n[limits]\ntasks_max = 3\nmemroy_max = \"1G\"\n{STEP}"),
        4,
        &[
            "`memroy_max`",
            "[limits]",
            "`memory_max`",
            "`cpu_quota`",
            "`timeout`",
        ],
    );
    assert_rejected(
        "name = \"m\"\n[[step]]\nname = \"s\"\nrun = \"true\"\ncommand = \"x\"\n",
        5,
        &[
            "`command`",
            "[[step]]",
            "`run`",
            "`env`",
            "`agent`",
            "`checkpoint`",
        ],
    );
}

#[test]
fn rejects_wrong_types() {
    assert_rejected(
        &format!("name = 5\n{STEP}"),
        1,
        &["`name`", "expected a string"],
    );
    assert_rejected(
        "name = \"m\"\n[[step]]\nname = \"s\"\nrun = \"true\"\ncritical = \"yes\"\n",
        5,
        &["`step.critical`", "expected a boolean"],
    );
    assert_rejected(
        &format!("name = \"m\"\n[limits]\ntasks_max = \"64\"\n{STEP}"),
        3,
        &["`limits.tasks_max`", "expected an integer"],
    );
    assert_rejected(
        "name = \"m\"\n[[step]]\nname = \"s\"\nrun = 5\n",
        4,
        &[
            "`step.run`",
            "argv array of strings or a shell command string",
        ],
    );
    assert_rejected(
        "name = \"m\"\n[[step]]\nname = \"s\"\nrun = [\"ls\", 1]\n",
        4,
        &["`step.run`", "expected a string"],
    );
    assert_rejected(
        "name = \"m\"\n[[step]]\nname = \"s\"\nrun = \"x\"\nenv = { A = 1 }\n",
        5,
        &["`step.env.A`", "expected a string"],
    );
    assert_rejected(
        &format!("name = \"m\"\n[limits]\nmemory_max = true\n{STEP}"),
        3,
        &["`limits.memory_max`", "a size such as"],
    );
    assert_rejected(
        "name = \"m\"\nstep = 3\n",
        2,
        &["`step`", "expected an array"],
    );
    assert_rejected(
        &format!("name = \"m\"\nlimits = 3\n{STEP}"),
        2,
        &["`limits`", "invalid type"],
    );
}

#[test]
fn rejects_missing_required_keys() {
    assert_rejected(STEP, 1, &["missing required key `name`"]);
    assert_rejected(
        "name = \"m\"\n[[step]]\nname = \"a\"\nrun = \"x\"\n\n[[step]]\nrun = \"y\"\n",
        6,
        &["step #2", "missing required key `name`"],
    );
    assert_rejected(
        "name = \"m\"\n\n[[step]]\nname = \"a\"\n",
        3,
        &["step \"a\"", "missing required key `run`"],
    );
}

#[test]
fn rejects_zero_steps() {
    assert_rejected("name = \"m\"\n", 1, &["no steps", "[[step]]"]);
    assert_rejected("name = \"m\"\n\nstep = []\n", 3, &["no steps"]);
    // An empty file lacks a name first; still a positioned error.
    assert_rejected("", 1, &["missing required key `name`"]);
}

#[test]
fn rejects_bad_names() {
    assert_rejected(
        &format!("name = \"\"\n{STEP}"),
        1,
        &["`name` must not be empty"],
    );
    assert_rejected(
        &format!("name = \"fix bug\"\n{STEP}"),
        1,
        &["invalid workflow name \"fix bug\""],
    );
    assert_rejected(
        &format!("name = \"..\"\n{STEP}"),
        1,
        &["invalid workflow name \"..\""],
    );
    let step_named = |n: &str| format!("name = \"m\"\n[[step]]\nname = \"{n}\"\nrun = \"x\"\n");
    assert_rejected(&step_named(""), 3, &["invalid step name \"\""]);
    assert_rejected(
        &step_named("a.b"),
        3,
        &["invalid step name \"a.b\"", "1 to 64"],
    );
    assert_rejected(&step_named(&"x".repeat(65)), 3, &["invalid step name"]);
    assert_eq!(ok(&step_named(&"x".repeat(64))).steps[0].name.len(), 64);
}

#[test]
fn rejects_bad_workspace_and_toml_syntax() {
    assert_rejected(
        &format!("name = \"m\"\nworkspace = \"\"\n{STEP}"),
        2,
        &["`workspace` must not be empty"],
    );
    assert_rejected(
        &format!("name = \"m\"\nname = \"n\"\n{STEP}"),
        2,
        &["duplicate key `name`"],
    );
    assert_rejected("name = \"m\"\n[[step]]\nname = \"s\"\nrun = \"x\n", 4, &[]);
    let (line, msg) = rejected("name = \"m\"\n\n[[step]\n");
    assert_eq!(line, 3, "{msg}");
}

#[test]
fn positions_count_characters_and_clamp() {
    assert_eq!(line_col("ab\ncd", 0), (1, 1));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
    assert_eq!(line_col("ab\ncd", 99), (2, 3));
    // "é" is two bytes but one column.
    assert_eq!(line_col("é = 1", 2), (1, 2));
    // An offset inside a multi-byte char snaps back instead of panicking.
    assert_eq!(line_col("é", 1), (1, 1));

    let text = format!("# café ☕\nname = \"m\"\n[limits]\n\"é\" = 1\n{STEP}");
    let (line, msg) = rejected(&text);
    assert_eq!(line, 4);
    assert!(msg.starts_with("fix.toml:4:1:"), "{msg}");
}

#[test]
fn json_round_trip_is_exact() {
    let mut w = ok(FULL);
    // Durations that whole milliseconds could not represent.
    w.steps[2].timeout = Some(Duration::new(400 * 86_400 + 7, 123_456_789));
    w.limits.timeout = Some(Duration::from_nanos(1));
    let json = serde_json::to_string(&w).expect("serialise");
    let back: Workflow = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(back, w);

    // The stored shape is plain JSON.
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(value["steps"][0]["run"][0], "cargo");
    assert_eq!(value["steps"][1]["run"], "cargo test 2>&1 | tee log");
    assert_eq!(value["steps"][1]["agent"], "claude-code");
    assert_eq!(value["steps"][0]["timeout"], "1m 30s");
    assert_eq!(value["limits"]["memory_max"], 512 * 1024 * 1024);
    assert_eq!(value["workspace"], "/srv/flows/../repo");
    assert!(value["steps"][2]["agent"].is_null());
}

#[test]
fn duration_serde_round_trips_many_values() {
    // Cheap deterministic spread of values, from nanoseconds to years.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..500 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let d = Duration::new(x % (200 * 31_557_600), (x % 1_000_000_000) as u32);
        let limits = Limits {
            timeout: Some(d),
            ..Limits::default()
        };
        let json = serde_json::to_string(&limits).expect("serialise");
        let back: Limits = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, limits, "{json}");
    }
}

/// Reads and validates a workflow file the way the tests' examples are given.
fn load(path: &Path) -> Result<Workflow, crate::spec::SpecError> {
    parse(
        &std::fs::read_to_string(path).expect("readable example"),
        path,
    )
}

#[test]
fn example_files_parse() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");

    let hello = load(&examples.join("hello.toml")).expect("hello.toml is valid");
    assert_eq!(hello.name, "hello");
    assert_eq!(hello.workspace, None);
    assert_eq!(hello.steps.len(), 2);
    assert!(
        hello
            .steps
            .iter()
            .all(|s| matches!(s.run, StepCommand::Shell(_)))
    );

    let ws = load(&examples.join("workspace.toml")).expect("workspace.toml is valid");
    assert_eq!(ws.workspace, Some(examples.join("..")));
    assert_eq!(
        ws.steps[0].run,
        StepCommand::Argv(vec!["git".into(), "status".into(), "--short".into()])
    );
    assert_eq!(ws.steps.len(), 2);
    assert_eq!(ws.limits.memory_max, Some(256 << 20));

    let retry = load(&examples.join("retry.toml")).expect("retry.toml is valid");
    assert_eq!(retry.retry.max_attempts, 3);
    assert_eq!(retry.steps[0].retry, retry.retry);
    assert_eq!(retry.steps[0].stall_after, Some(Duration::from_secs(30)));
    assert_eq!(retry.steps[1].retry.max_attempts, 1);
    assert_eq!(retry.steps[1].retry.initial, Duration::from_secs(2));
    assert_eq!(retry.requires.files, ["hello.toml"]);
    assert_eq!(retry.steps[1].requires.commands, ["/bin/sh"]);
}

#[test]
fn the_readme_workflow_example_parses() {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("## Workflow files")
        .nth(1)
        .expect("a Workflow files section");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a toml block");
    let w = ok(block);
    assert_eq!(w.name, "fix-bug");
    assert_eq!(w.steps[0].on_kill, ["rm -f /tmp/build.lock"]);
    // The [retry] shown is the default; the step's overrides one key.
    assert_eq!(w.retry, RetryPolicy::default());
    assert_eq!(
        w.steps[0].retry,
        RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        }
    );
    assert_eq!(w.steps[0].requires.env, ["RUST_LOG"]);
    assert_eq!(w.requires.git.as_ref().map(|g| g.clean), Some(true));
}

#[test]
fn stored_json_without_the_new_keys_still_loads() {
    let old = r#"{"name":"w","workspace":null,"limits":{"memory_max":null,"cpu_quota_percent":null,"tasks_max":null},"steps":[{"name":"s","run":"true","env":{},"critical":false,"checkpoint":false,"agent":null}]}"#;
    let w: Workflow = serde_json::from_str(old).expect("old JSON loads");
    assert_eq!(w.retry, RetryPolicy::default());
    assert!(w.requires.is_empty());
    assert_eq!(w.steps[0].retry, RetryPolicy::default());
    assert!(w.steps[0].requires.is_empty());
    assert_eq!(w.steps[0].stall_after, None);

    let new = ok(WITH_REQUIRES);
    let json = serde_json::to_string(&new).expect("serialise");
    assert_eq!(serde_json::from_str::<Workflow>(&json).expect("load"), new);
    let w = ok(WITH_RETRY);
    let json = serde_json::to_string(&w).expect("serialise");
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(value["retry"]["retry_on"][1], "agent-error");
    assert_eq!(value["retry"]["jitter"], "500ms");
    assert_eq!(value["steps"][1]["stall_after"], "10m");
    assert_eq!(serde_json::from_str::<Workflow>(&json).expect("load"), w);
}
