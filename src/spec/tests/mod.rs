//! Unit tests of workflow files, a file per subject; the helpers and fixtures here
//! parse a text and expect it accepted, or rejected at a line with a message.

use std::path::Path;

use super::{Workflow, parse};

mod limits;
mod random_input;
mod requires;
mod retry;
mod step;
mod workflow;

const ORIGIN: &str = "/srv/flows/fix.toml";

fn ok(text: &str) -> Workflow {
    match parse(text, Path::new(ORIGIN)) {
        Ok(w) => w,
        Err(e) => panic!("expected a valid workflow, got: {e}"),
    }
}

/// Parses `text` (as `fix.toml`), expects a rejection, returns (line, message).
fn rejected(text: &str) -> (usize, String) {
    match parse(text, Path::new("fix.toml")) {
        Ok(w) => panic!("expected an error, got {w:?}"),
        Err(e) => {
            let line = e.line();
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("fix.toml:{line}:")),
                "message must start with FILE:LINE: {msg}"
            );
            assert!(!msg.contains('\n'), "message must be one line: {msg:?}");
            (line, msg)
        }
    }
}

fn assert_rejected(text: &str, line: usize, needles: &[&str]) {
    let (got_line, msg) = rejected(text);
    assert_eq!(got_line, line, "wrong line in: {msg}");
    for needle in needles {
        assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
    }
}

const STEP: &str = "[[step]]\nname = \"s\"\nrun = \"true\"\n";

const FULL: &str = r#"name = "fix-bug.v2"
workspace = "../repo"

[limits]
memory_max = "512M"
cpu_quota = "150%"
tasks_max = 64
timeout = "1h 30m"

[[step]]
name = "build"
run = ["cargo", "build", "--release"]
env = { RUST_LOG = "debug", _X1 = "" }
timeout = "90s"
critical = true

[[step]]
name = "agent_fix-1"
run = "cargo test 2>&1 | tee log"
checkpoint = true
agent = "claude-code"

[[step]]
name = "defaults"
run = ["true"]
"#;

const WITH_RETRY: &str = r#"name = "r"

[retry]
max_attempts = 3
initial = "1s"
factor = 3
max = "1m"
jitter = "500ms"
retry_on = ["exit", "agent-error", "exit"]

[[step]]
name = "inherits"
run = "true"

[[step]]
name = "overrides"
run = "true"
stall_after = "10m"
[step.retry]
max_attempts = 5
factor = 1.5
retry_on = []
"#;

const WITH_REQUIRES: &str = r#"name = "q"

[requires]
commands = ["git", "/usr/bin/jq"]
files = ["Cargo.toml", "/etc/ssl/certs"]
env = ["ANTHROPIC_API_KEY"]
runs = ["build-image", "a.b_c"]
git = "clean"

[[step]]
name = "s"
run = "true"
[step.requires]
env = ["TOKEN"]
git = { branch = "main", commit = "ABC123" }

[[step]]
name = "t"
run = "true"
[step.requires.git]
clean = true
commit = "abcd"
"#;
