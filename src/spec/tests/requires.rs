//! `[requires]` and `[step.requires]`.

use super::{STEP, WITH_REQUIRES, assert_rejected, ok};
use crate::spec::{GitRequirement, Requirements};

#[test]
fn requires_parse_and_stay_separate() {
    let w = ok(WITH_REQUIRES);
    assert_eq!(
        w.requires,
        Requirements {
            commands: vec!["git".into(), "/usr/bin/jq".into()],
            files: vec!["Cargo.toml".into(), "/etc/ssl/certs".into()],
            env: vec!["ANTHROPIC_API_KEY".into()],
            runs: vec!["build-image".into(), "a.b_c".into()],
            git: Some(GitRequirement {
                clean: true,
                branch: None,
                commit: None
            }),
        }
    );
    assert_eq!(
        w.steps[0].requires,
        Requirements {
            env: vec!["TOKEN".into()],
            git: Some(GitRequirement {
                clean: false,
                branch: Some("main".into()),
                // Lowercased, as git prints ids.
                commit: Some("abc123".into()),
            }),
            ..Requirements::default()
        }
    );
    assert_eq!(
        w.steps[1].requires.git,
        Some(GitRequirement {
            clean: true,
            branch: None,
            commit: Some("abcd".into())
        })
    );
    assert!(!w.requires.is_empty());

    let defaults = ok(&format!("name = \"m\"\n{STEP}"));
    assert!(defaults.requires.is_empty());
    assert!(defaults.steps[0].requires.is_empty());
    assert_eq!(defaults.requires, Requirements::default());
}

#[test]
fn rejects_bad_requirements() {
    let req = |body: &str| format!("name = \"m\"\n[requires]\n{body}\n{STEP}");
    assert_rejected(
        &req("commands = [\"git\", \"\"]"),
        3,
        &[
            "fix.toml:3:20:",
            "`requires.commands`: entries must not be empty",
        ],
    );
    assert_rejected(
        &req("commands = [\"bin/tool\"]"),
        3,
        &[
            "fix.toml:3:13:",
            "`requires.commands`: \"bin/tool\" must be a command name (looked up on PATH) or an absolute path",
        ],
    );
    assert_rejected(
        &req("files = [\" \"]"),
        3,
        &["`requires.files`: entries must not be empty"],
    );
    assert_rejected(
        &req("env = [\"OK\", \"1BAD\"]"),
        3,
        &[
            "fix.toml:3:14:",
            "`requires.env`: invalid environment variable name \"1BAD\"",
        ],
    );
    assert_rejected(
        &req("runs = [\"build image\"]"),
        3,
        &[
            "fix.toml:3:9:",
            "`requires.runs`: invalid workflow name \"build image\"",
        ],
    );
    assert_rejected(
        &req("runs = [\"..\"]"),
        3,
        &["invalid workflow name \"..\""],
    );
    assert_rejected(
        &req("git = \"dirty\""),
        3,
        &[
            "fix.toml:3:7:",
            "`requires.git` must be \"clean\" or a table",
            "got \"dirty\"",
        ],
    );
    assert_rejected(
        &req("git = 5"),
        3,
        &["`requires.git`", "\"clean\" or a table"],
    );
    assert_rejected(
        &req("git = { commit = \"xyz1\" }"),
        3,
        &[
            "fix.toml:3:18:",
            "`requires.git.commit` must be 4 to 40 hexadecimal digits, got \"xyz1\"",
        ],
    );
    assert_rejected(
        &req("git = { commit = \"abc\" }"),
        3,
        &["4 to 40 hexadecimal digits"],
    );
    assert_rejected(
        &req(&format!("git = {{ commit = \"{}\" }}", "a".repeat(41))),
        3,
        &["4 to 40 hexadecimal digits"],
    );
    assert_rejected(
        &req("git = { branch = \"\" }"),
        3,
        &["fix.toml:3:18:", "`requires.git.branch` must not be empty"],
    );
    assert_rejected(
        &req("git = { clean = false }"),
        3,
        &["fix.toml:3:7:", "`requires.git` requires nothing"],
    );
    assert_rejected(
        &req("git = { clean = true, dirty = 1 }"),
        3,
        &["unknown key `dirty` in `requires.git`", "`branch`"],
    );
    assert_rejected(
        &req("binaries = [\"x\"]"),
        3,
        &[
            "unknown key `binaries` in [requires]",
            "`commands`",
            "`git`",
        ],
    );
    assert_rejected(
        &format!("name = \"m\"\n{STEP}[step.requires]\nenv = [\"A-B\"]\n"),
        6,
        &["step \"s\": `step.requires.env`: invalid environment variable name \"A-B\""],
    );
    assert_rejected(
        &format!("name = \"m\"\n{STEP}[step.requires]\nenvs = []\n"),
        6,
        &["unknown key `envs` in [step.requires]"],
    );
}
