//! `docs/runbook.md` works against this version: every `drover` command in it parses with
//! the real CLI, and every `sh` block (the commands that change nothing) runs without
//! error against a live agent that has an ended, checkpointed run.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use clap::Parser;
use drover::cli::Cli;
use drover::model::RunState;

use crate::support::{DROVER, GitRepo, TestAgent, assert_state};

const RUNBOOK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/runbook.md");

/// The runbook's fenced blocks: (language, text).
fn blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(lang)) => open = Some((lang.trim().to_owned(), String::new())),
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code block in the runbook");
    blocks
}

/// A shell line's words: quotes group, `$VAR`s stay as written, a `#` comment ends it.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut in_word = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '#') if !in_word => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[test]
fn every_drover_command_in_the_runbook_parses() {
    let text = std::fs::read_to_string(RUNBOOK).expect("docs/runbook.md");
    let mut checked = 0;
    for (_, body) in blocks(&text) {
        for line in body.lines() {
            let words = words(line);
            if words.first().map(String::as_str) != Some("drover") {
                continue;
            }
            // `man drover` and the like are not drover commands; `drover …` lines are.
            if let Err(e) = Cli::try_parse_from(&words) {
                // --help/--version "errors" are clap's way of printing them.
                use clap::error::ErrorKind::{DisplayHelp, DisplayVersion};
                assert!(
                    matches!(e.kind(), DisplayHelp | DisplayVersion),
                    "runbook line {line:?} does not parse: {e}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} drover commands found");
}

#[test]
fn the_runbooks_non_destructive_commands_run() {
    let agent = TestAgent::start();
    let dir = agent.sandbox.dir.path();
    let repo = GitRepo::init(dir.join("repo"));
    let wf = agent.workflow(
        "build.toml",
        &format!(
            "name = \"build\"\nworkspace = \"{}\"\n[[step]]\nname = \"build\"\nrun = \"echo built > out.txt\"\ncheckpoint = true\n",
            repo.path.display()
        ),
    );
    let run = agent.run(&wf);
    let ended = agent.wait_for_end(&run, Duration::from_secs(60));
    assert_state(&ended, RunState::Succeeded);

    // `drover` on PATH, talking to this test's agent on the sandbox's session bus.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    std::os::unix::fs::symlink(DROVER, bin.join("drover")).expect("symlink drover");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let backup = dir.join("backup");
    std::fs::create_dir_all(&backup).expect("mkdir backup");
    let config_home = dir.join("config");
    std::fs::create_dir_all(config_home.join("drover")).expect("mkdir config");
    std::fs::copy(&agent.config, config_home.join("drover/drover.toml")).expect("config");

    let text = std::fs::read_to_string(RUNBOOK).expect("docs/runbook.md");
    let mut ran = 0;
    for (lang, body) in blocks(&text) {
        if lang != "sh" {
            continue;
        }
        let out = agent
            .sandbox
            .command("bash")
            .args(["-euo", "pipefail", "-c", &body])
            .env("PATH", &path)
            .env("RUN", &run)
            .env("REPO", &repo.path)
            .env("STATE", &agent.state_dir)
            .env("BACKUP", &backup)
            .env("XDG_CONFIG_HOME", &config_home)
            .stdin(Stdio::null())
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "runbook block failed ({}):\n{body}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ran += 1;
    }
    assert!(ran >= 10, "only {ran} sh blocks ran");
    // The backups the runbook makes are real.
    assert!(Path::new(&backup.join("state.db")).exists());
    assert!(Path::new(&backup.join("checkpoints.bundle")).exists());
}
