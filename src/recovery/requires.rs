//! Checks a workflow's or step's `requires` against the host: commands on `PATH`,
//! files, environment variables, earlier runs and the workspace repository's state.
//! Every unmet requirement is reported, not just the first, so one look fixes them all.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use git2::{Repository, StatusOptions};
use serde::Serialize;

use crate::model::RunState;
use crate::spec::{GitRequirement, Requirements};

/// Used when the step's environment has no `PATH`: what a login shell would give.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How many changed files a `clean` failure names.
const LISTED_CHANGES: usize = 5;

/// One requirement that does not hold, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unmet {
    /// What was required: "command `jq`", "file Cargo.toml", "git: clean worktree".
    pub requirement: String,
    /// What was found instead: "not found on PATH (/usr/bin:/bin)".
    pub reason: String,
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.requirement, self.reason)
    }
}

/// What the requirements are checked against.
pub struct Context<'a> {
    /// The step's whole environment (agent env + step env).
    pub env: &'a BTreeMap<String, String>,
    /// Relative files resolve here (the run's worktree or the workflow's directory).
    pub base_dir: &'a Path,
    /// The repository `git` requirements look at; `None` when there is no workspace.
    pub git_dir: Option<&'a Path>,
    /// Workflow name -> (id, state as text) of its latest run on this host.
    pub latest_run: &'a (dyn Fn(&str) -> Option<(String, String)> + Sync),
}

/// Every unmet requirement in one line, for errors and the audit trail.
pub fn describe(unmet: &[Unmet]) -> String {
    unmet
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every requirement of `req` that does not hold, in the order of `Requirements`'
/// fields and each list's order; empty when all are met.
pub fn check(req: &Requirements, ctx: &Context<'_>) -> Vec<Unmet> {
    let mut unmet = Vec::new();
    let mut fail = |requirement: String, reason: String| {
        unmet.push(Unmet {
            requirement,
            reason,
        })
    };

    let path = ctx.env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
    for command in &req.commands {
        if let Err(reason) = check_command(command, path, ctx.base_dir) {
            fail(format!("command `{command}`"), reason);
        }
    }

    for file in &req.files {
        let full = ctx.base_dir.join(file);
        match std::fs::metadata(&full) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fail(
                    format!("file {file}"),
                    format!("does not exist ({})", full.display()),
                );
            }
            Err(e) => fail(
                format!("file {file}"),
                format!("cannot be checked ({}): {e}", full.display()),
            ),
        }
    }

    for name in &req.env {
        match ctx.env.get(name) {
            None => fail(format!("env {name}"), "not set".to_owned()),
            Some(value) if value.is_empty() => fail(format!("env {name}"), "empty".to_owned()),
            Some(_) => {}
        }
    }

    for workflow in &req.runs {
        let reason = match (ctx.latest_run)(workflow) {
            None => "no run on this host".to_owned(),
            Some((_, state)) if state == RunState::Succeeded.as_str() => continue,
            Some((id, state))
                if state == RunState::Failed.as_str() || state == RunState::Killed.as_str() =>
            {
                format!("latest run {id} {state}")
            }
            Some((id, state)) => format!("latest run {id} is {state}"),
        };
        fail(format!("run of workflow {workflow}"), reason);
    }

    if let Some(git) = &req.git {
        for (requirement, reason) in check_git(git, ctx.git_dir) {
            fail(requirement, reason);
        }
    }
    unmet
}

/// `Ok` if `command` names an executable file, as is (absolute) or on `path`.
fn check_command(command: &str, path: &str, base_dir: &Path) -> Result<(), String> {
    if command.contains('/') {
        let file = base_dir.join(command);
        return if is_executable(&file) {
            Ok(())
        } else if file.exists() {
            Err(format!("not an executable file ({})", file.display()))
        } else {
            Err(format!("does not exist ({})", file.display()))
        };
    }
    // Empty entries (the current directory, to a shell) are skipped: a requirement
    // should not depend on where the check happens to run.
    let found = path
        .split(':')
        .filter(|dir| !dir.is_empty())
        .any(|dir| is_executable(&base_dir.join(dir).join(command)));
    if found {
        Ok(())
    } else {
        Err(format!("not found on PATH ({path})"))
    }
}

/// A regular file (after symlinks) with an execute bit: what `execve` would run.
fn is_executable(file: &Path) -> bool {
    std::fs::metadata(file).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// (requirement, reason) for each part of `git` that does not hold.
fn check_git(git: &GitRequirement, dir: Option<&Path>) -> Vec<(String, String)> {
    let mut parts: Vec<(String, Check<'_>)> = Vec::new();
    if git.clean {
        parts.push(("clean worktree".to_owned(), Check::Clean));
    }
    if let Some(branch) = &git.branch {
        parts.push((format!("branch {branch}"), Check::Branch(branch)));
    }
    if let Some(commit) = &git.commit {
        parts.push((format!("commit {commit}"), Check::Commit(commit)));
    }
    // Without a repository no part can hold: one entry names them all.
    let all = || {
        let names: Vec<&str> = parts.iter().map(|(name, _)| name.as_str()).collect();
        format!("git: {}", names.join(", "))
    };
    let Some(dir) = dir else {
        return vec![(all(), "the workflow has no workspace".to_owned())];
    };
    let repo = match Repository::open(dir) {
        Ok(repo) => repo,
        Err(e) => {
            return vec![(
                all(),
                format!("cannot open repository {}: {}", dir.display(), e.message()),
            )];
        }
    };
    parts
        .into_iter()
        .filter_map(|(name, part)| {
            let result = match part {
                Check::Clean => check_clean(&repo),
                Check::Branch(branch) => check_branch(&repo, branch),
                Check::Commit(prefix) => check_commit(&repo, prefix),
            };
            result.err().map(|reason| (format!("git: {name}"), reason))
        })
        .collect()
}

enum Check<'a> {
    Clean,
    Branch(&'a str),
    Commit(&'a str),
}

fn check_clean(repo: &Repository) -> Result<(), String> {
    let mut options = StatusOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false);
    let statuses = repo
        .statuses(Some(&mut options))
        .map_err(|e| format!("cannot read status: {}", e.message()))?;
    let changed: Vec<String> = statuses
        .iter()
        .filter(|s| !s.status().is_ignored() && s.status() != git2::Status::CURRENT)
        .map(|s| String::from_utf8_lossy(s.path_bytes()).into_owned())
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let noun = if changed.len() == 1 { "file" } else { "files" };
    let mut listed = changed[..changed.len().min(LISTED_CHANGES)].join(", ");
    if changed.len() > LISTED_CHANGES {
        listed.push_str(&format!(" and {} more", changed.len() - LISTED_CHANGES));
    }
    Err(format!("{} {noun} changed: {listed}", changed.len()))
}

fn check_branch(repo: &Repository, branch: &str) -> Result<(), String> {
    // HEAD itself, not `repo.head()`: that fails on a branch with no commit yet,
    // which is still the branch the user is on.
    let head = repo
        .find_reference("HEAD")
        .map_err(|e| format!("cannot read HEAD: {}", e.message()))?;
    match head.symbolic_target_bytes() {
        Some(target) => {
            let target = String::from_utf8_lossy(target);
            let actual = target.strip_prefix("refs/heads/").unwrap_or(&target);
            if actual == branch {
                Ok(())
            } else {
                Err(format!("HEAD is on branch {actual}"))
            }
        }
        None => Err(match head.target() {
            Some(id) => format!("HEAD is detached at {}", short(id)),
            None => "HEAD points nowhere".to_owned(),
        }),
    }
}

fn check_commit(repo: &Repository, prefix: &str) -> Result<(), String> {
    let id = repo
        .head()
        .ok()
        .and_then(|h| h.target())
        .ok_or_else(|| "HEAD has no commit yet".to_owned())?;
    // Validation lowercases the prefix; stored JSON might not have.
    if id.to_string().starts_with(&prefix.to_ascii_lowercase()) {
        Ok(())
    } else {
        Err(format!("HEAD is at {}", short(id)))
    }
}

fn short(id: git2::Oid) -> String {
    let mut text = id.to_string();
    text.truncate(12);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::git;

    fn commit(dir: &Path, message: &str) {
        git(
            dir,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                message,
            ],
        );
    }

    /// A repository on `main` with one commit of `tracked.txt` and an ignore rule.
    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path();
        git(repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join(".gitignore"), "ignored.txt\n").expect("write");
        std::fs::write(repo.join("tracked.txt"), "v1\n").expect("write");
        git(repo, &["add", "."]);
        commit(repo, "init");
        dir
    }

    fn no_runs(_: &str) -> Option<(String, String)> {
        None
    }

    fn check_in(req: &Requirements, base_dir: &Path, git_dir: Option<&Path>) -> Vec<Unmet> {
        let env = BTreeMap::new();
        let ctx = Context {
            env: &env,
            base_dir,
            git_dir,
            latest_run: &no_runs,
        };
        check(req, &ctx)
    }

    fn git_req(clean: bool, branch: Option<&str>, commit: Option<&str>) -> Requirements {
        Requirements {
            git: Some(GitRequirement {
                clean,
                branch: branch.map(str::to_owned),
                commit: commit.map(str::to_owned),
            }),
            ..Requirements::default()
        }
    }

    fn reasons(unmet: &[Unmet]) -> Vec<String> {
        unmet.iter().map(Unmet::to_string).collect()
    }

    #[test]
    fn nothing_required_is_met() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(check_in(&Requirements::default(), dir.path(), None).is_empty());
    }

    #[test]
    fn commands_are_looked_up_on_the_step_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let tool = bin.join("tool");
        std::fs::write(&tool, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let plain = bin.join("plain");
        std::fs::write(&plain, "data").expect("write");
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::create_dir(bin.join("adir")).expect("mkdir");

        let path = format!("/nonexistent::{}", bin.display());
        let env = BTreeMap::from([("PATH".to_owned(), path.clone())]);
        let req = Requirements {
            commands: vec![
                "tool".into(),
                "plain".into(),
                "adir".into(),
                "missing".into(),
                tool.display().to_string(),
                plain.display().to_string(),
                "/nonexistent/x".into(),
            ],
            ..Requirements::default()
        };
        let ctx = Context {
            env: &env,
            base_dir: dir.path(),
            git_dir: None,
            latest_run: &no_runs,
        };
        assert_eq!(
            reasons(&check(&req, &ctx)),
            [
                format!("command `plain`: not found on PATH ({path})"),
                format!("command `adir`: not found on PATH ({path})"),
                format!("command `missing`: not found on PATH ({path})"),
                format!(
                    "command `{0}`: not an executable file ({0})",
                    plain.display()
                ),
                "command `/nonexistent/x`: does not exist (/nonexistent/x)".to_owned(),
            ]
        );

        // No PATH in the step's environment: the default one.
        let unmet = check_in(
            &Requirements {
                commands: vec!["sh".into(), "no-such-command-drover".into()],
                ..Requirements::default()
            },
            dir.path(),
            None,
        );
        assert_eq!(
            reasons(&unmet),
            ["command `no-such-command-drover`: not found on PATH (/usr/local/bin:/usr/bin:/bin)"]
        );
    }

    #[test]
    fn files_resolve_against_the_base_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("Cargo.toml"), "").expect("write");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        let req = Requirements {
            files: vec![
                "Cargo.toml".into(),
                "sub".into(),
                "/".into(),
                "missing.txt".into(),
                "/nonexistent/drover".into(),
            ],
            ..Requirements::default()
        };
        let unmet = check_in(&req, dir.path(), None);
        assert_eq!(
            reasons(&unmet),
            [
                format!(
                    "file missing.txt: does not exist ({})",
                    dir.path().join("missing.txt").display()
                ),
                "file /nonexistent/drover: does not exist (/nonexistent/drover)".to_owned(),
            ]
        );
        assert_eq!(unmet[0].requirement, "file missing.txt");
    }

    #[test]
    fn env_must_be_set_and_non_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = BTreeMap::from([
            ("SET".to_owned(), "1".to_owned()),
            ("EMPTY".to_owned(), String::new()),
        ]);
        let req = Requirements {
            env: vec!["SET".into(), "EMPTY".into(), "UNSET".into()],
            ..Requirements::default()
        };
        let ctx = Context {
            env: &env,
            base_dir: dir.path(),
            git_dir: None,
            latest_run: &no_runs,
        };
        assert_eq!(
            reasons(&check(&req, &ctx)),
            ["env EMPTY: empty", "env UNSET: not set"]
        );
    }

    #[test]
    fn runs_need_a_succeeded_latest_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = BTreeMap::new();
        let latest = |name: &str| {
            let state = match name {
                "ok" => "succeeded",
                "bad" => "failed",
                "busy" => "running",
                _ => return None,
            };
            Some((format!("{name}-id"), state.to_owned()))
        };
        let req = Requirements {
            runs: vec!["ok".into(), "bad".into(), "busy".into(), "never".into()],
            ..Requirements::default()
        };
        let ctx = Context {
            env: &env,
            base_dir: dir.path(),
            git_dir: None,
            latest_run: &latest,
        };
        assert_eq!(
            reasons(&check(&req, &ctx)),
            [
                "run of workflow bad: latest run bad-id failed",
                "run of workflow busy: latest run busy-id is running",
                "run of workflow never: no run on this host",
            ]
        );
    }

    #[test]
    fn git_clean_lists_changed_and_untracked_files_but_not_ignored_ones() {
        let dir = repo();
        let path = dir.path();
        let clean = git_req(true, None, None);
        std::fs::write(path.join("ignored.txt"), "x").expect("write");
        assert!(check_in(&clean, path, Some(path)).is_empty());

        std::fs::write(path.join("tracked.txt"), "v2\n").expect("write");
        std::fs::create_dir(path.join("new")).expect("mkdir");
        std::fs::write(path.join("new/a.txt"), "a").expect("write");
        assert_eq!(
            reasons(&check_in(&clean, path, Some(path))),
            ["git: clean worktree: 2 files changed: new/a.txt, tracked.txt"]
        );

        for i in 0..5 {
            std::fs::write(path.join(format!("u{i}.txt")), "u").expect("write");
        }
        let unmet = check_in(&clean, path, Some(path));
        assert_eq!(
            unmet[0].reason,
            "7 files changed: new/a.txt, tracked.txt, u0.txt, u1.txt, u2.txt and 2 more"
        );

        // A staged change alone counts too.
        let dir = repo();
        let path = dir.path();
        std::fs::write(path.join("tracked.txt"), "v3\n").expect("write");
        git(path, &["add", "tracked.txt"]);
        assert_eq!(
            reasons(&check_in(&clean, path, Some(path))),
            ["git: clean worktree: 1 file changed: tracked.txt"]
        );
    }

    #[test]
    fn git_branch_and_commit() {
        let dir = repo();
        let repo = dir.path();
        let head = git(repo, &["rev-parse", "HEAD"]);
        let ok = git_req(false, Some("main"), Some(&head[..7]));
        assert!(check_in(&ok, repo, Some(repo)).is_empty());
        assert!(check_in(&git_req(false, None, Some(&head)), repo, Some(repo)).is_empty());

        let wrong = git_req(false, Some("release"), Some("0000"));
        assert_eq!(
            reasons(&check_in(&wrong, repo, Some(repo))),
            [
                "git: branch release: HEAD is on branch main".to_owned(),
                format!("git: commit 0000: HEAD is at {}", &head[..12]),
            ]
        );

        git(repo, &["checkout", "-q", "--detach"]);
        assert_eq!(
            reasons(&check_in(
                &git_req(false, Some("main"), None),
                repo,
                Some(repo)
            )),
            [format!(
                "git: branch main: HEAD is detached at {}",
                &head[..12]
            )]
        );
    }

    #[test]
    fn git_on_a_branch_without_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path();
        git(repo, &["init", "-q", "-b", "main"]);
        let req = git_req(true, Some("main"), Some("abcd"));
        assert_eq!(
            reasons(&check_in(&req, repo, Some(repo))),
            ["git: commit abcd: HEAD has no commit yet"]
        );
    }

    #[test]
    fn git_without_a_repository() {
        let dir = tempfile::tempdir().expect("tempdir");
        let req = git_req(true, Some("main"), None);
        assert_eq!(
            reasons(&check_in(&req, dir.path(), None)),
            ["git: clean worktree, branch main: the workflow has no workspace"]
        );
        let missing = dir.path().join("nope");
        let unmet = check_in(&req, dir.path(), Some(&missing));
        assert_eq!(unmet.len(), 1);
        assert_eq!(unmet[0].requirement, "git: clean worktree, branch main");
        assert!(
            unmet[0]
                .reason
                .starts_with(&format!("cannot open repository {}: ", missing.display())),
            "{}",
            unmet[0].reason
        );
    }

    #[test]
    fn unmet_serialises_as_its_two_fields() {
        let unmet = Unmet {
            requirement: "env X".into(),
            reason: "not set".into(),
        };
        assert_eq!(
            serde_json::to_value(&unmet).expect("json"),
            serde_json::json!({"requirement": "env X", "reason": "not set"})
        );
    }
}
