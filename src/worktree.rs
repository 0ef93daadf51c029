//! Per-run git worktrees: each run of a workflow with a `workspace` works in a detached
//! worktree of the workspace's HEAD, so the user's branch, HEAD and index stay untouched.

use std::path::{Path, PathBuf};
use std::process::Command;

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

/// Checks that `workspace` is a git repository with a commit to work from.
pub fn check_workspace(workspace: &Path) -> Result<(), WorktreeError> {
    git(
        workspace,
        &["rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
    )
    .map_err(|detail| WorktreeError::NotARepository {
        path: workspace.to_owned(),
        detail: if detail.is_empty() {
            "it has no commit at HEAD".into()
        } else {
            detail
        },
    })
}

/// Creates a detached worktree of `workspace`'s HEAD at `path`, or reuses it if a previous
/// agent already made it (the agent may restart between the two) or if it is still there.
pub fn create(workspace: &Path, path: &Path) -> Result<(), WorktreeError> {
    if path.join(".git").exists() {
        return Ok(());
    }
    let target = path.to_string_lossy();
    // A worktree deleted by hand is still registered until pruned, and `add` refuses it.
    let _ = git(workspace, &["worktree", "prune"]);
    git(
        workspace,
        &["worktree", "add", "--detach", "--quiet", &target, "HEAD"],
    )
    .map_err(|detail| WorktreeError::Add {
        workspace: workspace.to_owned(),
        path: path.to_owned(),
        detail,
    })
}

fn git(repo: &Path, args: &[&str]) -> Result<(), String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}
