//! Per-run git worktrees: each run of a workflow with a `workspace` works in a detached
//! worktree of the workspace's HEAD, so the user's branch, HEAD and index stay untouched.
//! The worktree lives in the repository's own git directory (`drover/worktrees/<run>`),
//! made by git running as the run's user: it belongs to that user, and the agent can make
//! one only in a repository that user may write.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::credentials::{self, Account};

#[derive(Debug, thiserror::Error)]
pub enum WorktreeError {
    #[error("workspace {path} is not a git repository: {detail}")]
    NotARepository { path: PathBuf, detail: String },
    #[error("cannot create a worktree of {workspace} at {path}: {detail}")]
    Add {
        workspace: PathBuf,
        path: PathBuf,
        detail: String,
    },
}

/// Checks, as `account`, that `workspace` is a git repository with a commit to work from.
pub fn check_workspace(workspace: &Path, account: &Account) -> Result<(), WorktreeError> {
    git(
        workspace,
        &["rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
        account,
    )
    .map(drop)
    .map_err(|detail| WorktreeError::NotARepository {
        path: workspace.to_owned(),
        detail: if detail.is_empty() {
            "it has no commit at HEAD".into()
        } else {
            detail
        },
    })
}

/// Where run `run`'s worktree of `workspace` goes: in the repository's common git
/// directory, asked of git as `account`.
pub fn path_for(workspace: &Path, run: &str, account: &Account) -> Result<PathBuf, WorktreeError> {
    let common = git(
        workspace,
        &["rev-parse", "--path-format=absolute", "--git-common-dir"],
        account,
    )
    .map_err(|detail| WorktreeError::NotARepository {
        path: workspace.to_owned(),
        detail,
    })?;
    Ok(PathBuf::from(common).join("drover/worktrees").join(run))
}

/// Creates, as `account`, a detached worktree of `workspace`'s HEAD at `path`, or reuses
/// it if a previous agent already made it (the agent may restart between the two) or if
/// it is still there.
pub fn create(workspace: &Path, path: &Path, account: &Account) -> Result<(), WorktreeError> {
    let target = path.to_string_lossy();
    let exists =
        credentials::with_rights_of(account, || path.join(".git").exists()).map_err(|e| {
            WorktreeError::Add {
                workspace: workspace.to_owned(),
                path: path.to_owned(),
                detail: e.to_string(),
            }
        })?;
    if exists {
        return Ok(());
    }
    // A worktree deleted by hand is still registered until pruned, and `add` refuses it.
    let _ = git(workspace, &["worktree", "prune"], account);
    git(
        workspace,
        &["worktree", "add", "--detach", "--quiet", &target, "HEAD"],
        account,
    )
    .map(drop)
    .map_err(|detail| WorktreeError::Add {
        workspace: workspace.to_owned(),
        path: path.to_owned(),
        detail,
    })
}

/// Runs git in `repo` as `account`; its trimmed stdout, or its stderr as the error.
fn git(repo: &Path, args: &[&str], account: &Account) -> Result<String, String> {
    let mut command = Command::new("git");
    command.args(args);
    // Started from the user's login environment: git reads their config by it.
    credentials::drop_before_exec(&mut command, account, repo);
    let output = command
        .output()
        .map_err(|e| format!("cannot run git in {}: {e}", repo.display()))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}
