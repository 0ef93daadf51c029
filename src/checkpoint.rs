//! Snapshots of a run's worktree as git commits on `refs/drover/<run>/…`, written through
//! an index of their own so the user's branch, HEAD and index are never touched.

use std::path::Path;

use git2::{IndexAddOption, Oid, Repository, Signature};

#[derive(Debug, thiserror::Error)]
#[error("snapshot of {worktree}: {source}")]
pub struct CheckpointError {
    worktree: String,
    #[source]
    source: git2::Error,
}

/// Commits everything in `worktree` (tracked and untracked files, `.gitignore` respected)
/// onto `reference`, with the worktree's HEAD as parent, and returns the commit.
pub fn snapshot(worktree: &Path, reference: &str, message: &str) -> Result<Oid, CheckpointError> {
    let wrap = |source| CheckpointError {
        worktree: worktree.display().to_string(),
        source,
    };
    let repo = Repository::open(worktree).map_err(wrap)?;
    // A private index file, attached to this handle only: `git add -A` without touching
    // the worktree's own index on disk.
    let index_dir = private_dir(&repo).map_err(wrap)?;
    let tree_id = (|| {
        let mut index = git2::Index::open(&index_dir.join("index"))?;
        repo.set_index(&mut index)?;
        index.add_all(["*"], IndexAddOption::DEFAULT, None)?;
        index.write_tree()
    })();
    let _ = std::fs::remove_dir_all(&index_dir);
    let tree_id = tree_id.map_err(wrap)?;
    let tree = repo.find_tree(tree_id).map_err(wrap)?;
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let signature = Signature::now("drover", "drover@localhost").map_err(wrap)?;
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let commit = repo
        .commit(None, &signature, &signature, message, &tree, &parents)
        .map_err(wrap)?;
    repo.reference(reference, commit, true, message)
        .map_err(wrap)?;
    Ok(commit)
}

/// A fresh directory inside the repository's git dir for a throwaway index.
fn private_dir(repo: &Repository) -> Result<std::path::PathBuf, git2::Error> {
    let dir = repo
        .path()
        .join(format!("drover-index-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| git2::Error::from_str(&e.to_string()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[test]
    fn a_snapshot_holds_tracked_and_untracked_files_and_leaves_head_and_index_alone() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        git(repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join(".gitignore"), "ignored.txt\n").unwrap();
        std::fs::write(repo.join("tracked.txt"), "v1\n").unwrap();
        git(repo, &["add", "."]);
        git(
            repo,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                "init",
            ],
        );
        let head = git(repo, &["rev-parse", "HEAD"]);
        std::fs::write(repo.join("tracked.txt"), "v2\n").unwrap();
        std::fs::write(repo.join("new.txt"), "new\n").unwrap();
        std::fs::write(repo.join("ignored.txt"), "secret\n").unwrap();
        git(repo, &["add", "tracked.txt"]); // the user's own staged change
        let status_before = git(repo, &["status", "--porcelain"]);

        let commit = snapshot(repo, "refs/drover/r1/killed-1", "drover: killed").unwrap();

        assert_eq!(
            git(repo, &["rev-parse", "refs/drover/r1/killed-1"]),
            commit.to_string()
        );
        assert_eq!(git(repo, &["rev-parse", "refs/drover/r1/killed-1^"]), head);
        assert_eq!(
            git(repo, &["show", "refs/drover/r1/killed-1:tracked.txt"]),
            "v2"
        );
        assert_eq!(
            git(repo, &["show", "refs/drover/r1/killed-1:new.txt"]),
            "new"
        );
        assert!(
            git(repo, &["ls-tree", "--name-only", "refs/drover/r1/killed-1"])
                .lines()
                .all(|f| f != "ignored.txt")
        );
        assert_eq!(git(repo, &["rev-parse", "HEAD"]), head, "HEAD moved");
        assert_eq!(git(repo, &["symbolic-ref", "HEAD"]), "refs/heads/main");
        assert_eq!(
            git(repo, &["status", "--porcelain"]),
            status_before,
            "index or worktree changed"
        );
    }
}
