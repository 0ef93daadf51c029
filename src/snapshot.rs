//! Checkpoints of a run: commits on `refs/drover/<run>/<n>` whose tree is the run's
//! worktree, as `git add -A` would stage it, plus a reserved top-level [`STATE_DIR`]
//! holding the run's state and copies of its agents' transcripts.
//!
//! Every checkpoint is written through a private, persistent index file, so the worktree's
//! own index, HEAD and branches are never touched, and the index's stat cache means only
//! files changed since the previous checkpoint are read and hashed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use git2::build::CheckoutBuilder;
use git2::{
    Commit, Delta, DiffOptions, ErrorCode, FileMode, Index, ObjectType, Oid, Repository, Signature,
    Tree,
};

/// The reserved top-level directory of a checkpoint's tree.
pub const STATE_DIR: &str = ".drover-state";
const STATE_FILE: &str = ".drover-state/state.json";
const TRANSCRIPTS: &str = "transcripts";

/// Pathspec of a checkpoint's worktree part: everything but a top-level `STATE_DIR` (the
/// worktree's own one must not leak into or clash with the reserved one). libgit2 takes
/// the first pattern that matches, so the exclusion comes first.
const CONTENT: [&str; 2] = ["!.drover-state", "*"];

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("checkpoint in {worktree}: {source}")]
    Git {
        worktree: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("checkpoint {reference} does not exist in {worktree}")]
    MissingRef {
        worktree: PathBuf,
        reference: String,
    },
    #[error("checkpoint {reference} in {worktree} points to {found}, expected {expected}")]
    Moved {
        worktree: PathBuf,
        reference: String,
        expected: Oid,
        found: Oid,
    },
    #[error("checkpoint {checkpoint} in {worktree} is damaged: object {object} {problem}")]
    Damaged {
        worktree: PathBuf,
        checkpoint: String,
        object: Oid,
        problem: String,
    },
    #[error("checkpoint {checkpoint} in {worktree} has no {STATE_FILE}")]
    MissingState {
        worktree: PathBuf,
        checkpoint: String,
    },
    #[error("checkpoint in {worktree}: transcript name {name:?} is not a file name")]
    TranscriptName { worktree: PathBuf, name: String },
    #[error("checkpoint in {worktree}: {path}: {source}")]
    Io {
        worktree: PathBuf,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "restore of {worktree} to checkpoint {commit} incomplete: the worktree holds tree {found}, the checkpoint {expected}"
    )]
    Incomplete {
        worktree: PathBuf,
        commit: Oid,
        expected: Oid,
        found: Oid,
    },
}

/// What to write as a checkpoint.
pub struct Snapshot<'a> {
    pub worktree: &'a Path,
    /// The private index: kept between checkpoints of a run (its stat cache is what makes
    /// them fast), one writer at a time. Created if missing.
    pub index_file: &'a Path,
    /// `refs/drover/<run>/<n>`; overwritten if it exists.
    pub reference: &'a str,
    /// The previous checkpoint; `None`: the worktree's HEAD commit, or none if unborn.
    pub parent: Option<Oid>,
    pub message: &'a str,
    /// Stored as `STATE_DIR/state.json`.
    pub state_json: &'a [u8],
    /// (name, path): stored as `STATE_DIR/transcripts/<name>.jsonl`; missing files are skipped.
    pub transcripts: &'a [(String, PathBuf)],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub commit: Oid,
    /// Files added, modified or deleted since the parent's tree, `STATE_DIR` excluded.
    pub files_changed: u32,
    pub took: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub files_written: u32,
    pub files_removed: u32,
}

/// Writes a checkpoint: the commit, then `reference` pointing at it.
pub fn write(c: &Snapshot<'_>) -> Result<Written, SnapshotError> {
    let started = Instant::now();
    let git = git_error(c.worktree);
    let repo = open_repo(c.worktree)?;
    let content = stage(&repo, c.worktree, c.index_file)?;
    let parent = match c.parent {
        Some(id) => Some(find_commit(&repo, c.worktree, &id.to_string(), id)?),
        None => head_commit(&repo).map_err(git)?,
    };
    let parent_content = match &parent {
        Some(commit) => Some(without_state(&repo, &commit.tree().map_err(git)?).map_err(git)?),
        None => None,
    };
    let files_changed = changes(&repo, parent_content, content)
        .map_err(git)?
        .deltas()
        .len() as u32;

    let state = state_tree(&repo, c)?;
    let tree = (|| {
        let mut root = repo.treebuilder(Some(&repo.find_tree(content)?))?;
        root.insert(STATE_DIR, state, FileMode::Tree.into())?;
        repo.find_tree(root.write()?)
    })()
    .map_err(git)?;
    let signature = Signature::now("drover", "drover@localhost").map_err(git)?;
    let parents: Vec<&Commit<'_>> = parent.iter().collect();
    let commit = repo
        .commit(None, &signature, &signature, c.message, &tree, &parents)
        .map_err(git)?;
    repo.reference(c.reference, commit, true, c.message)
        .map_err(git)?;
    Ok(Written {
        commit,
        files_changed,
        took: started.elapsed(),
    })
}

/// Where a worktree's private index is kept: in the worktree's own git directory
/// (`<repo>/.git/worktrees/<name>/drover.index`), so it belongs to whoever owns the
/// worktree and goes when the worktree is removed.
pub fn private_index_path(worktree: &Path) -> Result<PathBuf, SnapshotError> {
    Ok(open_repo(worktree)?.path().join("drover.index"))
}

/// The tree the worktree would get in a checkpoint now, `STATE_DIR` excluded (no commit):
/// compare with [`content_tree`] to learn whether anything changed since a checkpoint.
pub fn worktree_tree(worktree: &Path, index_file: &Path) -> Result<Oid, SnapshotError> {
    let repo = open_repo(worktree)?;
    stage(&repo, worktree, index_file)
}

/// A checkpoint's tree without `STATE_DIR`.
pub fn content_tree(worktree: &Path, commit: Oid) -> Result<Oid, SnapshotError> {
    let repo = open_repo(worktree)?;
    let tree = checkpoint_tree(&repo, worktree, &commit.to_string(), commit)?;
    without_state(&repo, &tree).map_err(git_error(worktree))
}

/// Resolves `reference` and verifies the checkpoint it names before anything relies on
/// it: the ref exists (and points to `expected`, if given), every object of its tree is
/// there, and it holds a state. Returns the commit.
pub fn open(worktree: &Path, reference: &str, expected: Option<Oid>) -> Result<Oid, SnapshotError> {
    let repo = open_repo(worktree)?;
    let found = match repo.refname_to_id(reference) {
        Ok(id) => id,
        Err(e) if e.code() == ErrorCode::NotFound => {
            return Err(SnapshotError::MissingRef {
                worktree: worktree.to_owned(),
                reference: reference.to_owned(),
            });
        }
        Err(e) => return Err(git_error(worktree)(e)),
    };
    if let Some(expected) = expected.filter(|&e| e != found) {
        return Err(SnapshotError::Moved {
            worktree: worktree.to_owned(),
            reference: reference.to_owned(),
            expected,
            found,
        });
    }
    verify(&repo, worktree, &format!("{reference} ({found})"), found)?;
    Ok(found)
}

/// The state stored in a checkpoint.
pub fn read_state(worktree: &Path, commit: Oid) -> Result<Vec<u8>, SnapshotError> {
    let repo = open_repo(worktree)?;
    let label = commit.to_string();
    let tree = checkpoint_tree(&repo, worktree, &label, commit)?;
    match read_file(&repo, worktree, &label, &tree, STATE_FILE)? {
        Some(state) => Ok(state),
        None => Err(SnapshotError::MissingState {
            worktree: worktree.to_owned(),
            checkpoint: label,
        }),
    }
}

/// A transcript stored in a checkpoint, if it holds one of that name.
pub fn read_transcript(
    worktree: &Path,
    commit: Oid,
    name: &str,
) -> Result<Option<Vec<u8>>, SnapshotError> {
    let repo = open_repo(worktree)?;
    let label = commit.to_string();
    let tree = checkpoint_tree(&repo, worktree, &label, commit)?;
    let path = format!("{STATE_DIR}/{TRANSCRIPTS}/{name}.jsonl");
    read_file(&repo, worktree, &label, &tree, &path)
}

/// Makes the worktree's files those of a checkpoint (without `STATE_DIR`): changed and
/// deleted files are written back, files it lacks are removed, ignored files that it lacks
/// are kept (like `git clean -fd`). HEAD and the worktree's own index stay as they are;
/// the private index is left matching the worktree. Verifies the checkpoint first, so a
/// damaged one changes nothing.
pub fn restore(worktree: &Path, commit: Oid, index_file: &Path) -> Result<Restored, SnapshotError> {
    let git = git_error(worktree);
    let repo = open_repo(worktree)?;
    verify(&repo, worktree, &commit.to_string(), commit)?;
    let tree = checkpoint_tree(&repo, worktree, &commit.to_string(), commit)?;
    let target = without_state(&repo, &tree).map_err(git)?;

    // Stage first: with every non-ignored file in the (checkout's) index, checkout removes
    // what the checkpoint lacks file by file. Left untracked, a new directory would be
    // removed whole, ignored files in it too.
    let current = stage(&repo, worktree, index_file)?;
    let mut restored = Restored {
        files_written: 0,
        files_removed: 0,
    };
    let mut checkout = CheckoutBuilder::new();
    // Only the paths that differ: libgit2 would otherwise stat the whole worktree again,
    // and the worktree's own `STATE_DIR` is in neither tree, so it is left alone.
    checkout.force().disable_pathspec_match(true);
    for delta in changes(&repo, Some(current), target).map_err(git)?.deltas() {
        match delta.status() {
            Delta::Deleted => restored.files_removed += 1,
            _ => restored.files_written += 1,
        }
        if let Some(path) = delta.new_file().path().or(delta.old_file().path()) {
            checkout.path(path);
        }
    }
    if restored.files_written + restored.files_removed == 0 {
        return Ok(restored);
    }
    let target_tree = repo.find_tree(target).map_err(git)?;
    repo.checkout_tree(target_tree.as_object(), Some(&mut checkout))
        .map_err(git)?;

    // Checkout updated the private index for what it wrote, so this hashes nothing new;
    // it proves the worktree now is the checkpoint.
    let found = stage(&repo, worktree, index_file)?;
    if found != target {
        return Err(SnapshotError::Incomplete {
            worktree: worktree.to_owned(),
            commit,
            expected: target,
            found,
        });
    }
    Ok(restored)
}

fn git_error(worktree: &Path) -> impl Fn(git2::Error) -> SnapshotError + Copy + '_ {
    move |source| SnapshotError::Git {
        worktree: worktree.to_owned(),
        source,
    }
}

fn damaged(worktree: &Path, checkpoint: &str, object: Oid, e: &git2::Error) -> SnapshotError {
    SnapshotError::Damaged {
        worktree: worktree.to_owned(),
        checkpoint: checkpoint.to_owned(),
        object,
        problem: if e.code() == ErrorCode::NotFound {
            "missing".to_owned()
        } else {
            format!("unreadable: {}", e.message())
        },
    }
}

fn open_repo(worktree: &Path) -> Result<Repository, SnapshotError> {
    Repository::open(worktree).map_err(git_error(worktree))
}

fn find_commit<'r>(
    repo: &'r Repository,
    worktree: &Path,
    label: &str,
    id: Oid,
) -> Result<Commit<'r>, SnapshotError> {
    repo.find_commit(id)
        .map_err(|e| damaged(worktree, label, id, &e))
}

fn checkpoint_tree<'r>(
    repo: &'r Repository,
    worktree: &Path,
    label: &str,
    commit: Oid,
) -> Result<Tree<'r>, SnapshotError> {
    let commit = find_commit(repo, worktree, label, commit)?;
    let id = commit.tree_id();
    repo.find_tree(id)
        .map_err(|e| damaged(worktree, label, id, &e))
}

/// Reads every tree of a checkpoint and checks that every blob is there, so a damaged
/// checkpoint is refused before a restore has changed anything.
fn verify(
    repo: &Repository,
    worktree: &Path,
    label: &str,
    commit: Oid,
) -> Result<(), SnapshotError> {
    let root = checkpoint_tree(repo, worktree, label, commit)?;
    let odb = repo.odb().map_err(git_error(worktree))?;
    let mut trees = vec![root.id()];
    while let Some(id) = trees.pop() {
        let tree = repo
            .find_tree(id)
            .map_err(|e| damaged(worktree, label, id, &e))?;
        for entry in tree.iter() {
            match entry.kind() {
                Some(ObjectType::Tree) => trees.push(entry.id()),
                Some(ObjectType::Blob) if !odb.exists(entry.id()) => {
                    return Err(SnapshotError::Damaged {
                        worktree: worktree.to_owned(),
                        checkpoint: label.to_owned(),
                        object: entry.id(),
                        problem: format!("missing ({})", entry.name().unwrap_or("?")),
                    });
                }
                // Blobs that are there, and submodule commits (another repository's).
                _ => {}
            }
        }
    }
    match root.get_path(Path::new(STATE_FILE)) {
        Ok(entry) if entry.kind() == Some(ObjectType::Blob) => Ok(()),
        _ => Err(SnapshotError::MissingState {
            worktree: worktree.to_owned(),
            checkpoint: label.to_owned(),
        }),
    }
}

fn read_file(
    repo: &Repository,
    worktree: &Path,
    label: &str,
    tree: &Tree<'_>,
    path: &str,
) -> Result<Option<Vec<u8>>, SnapshotError> {
    let entry = match tree.get_path(Path::new(path)) {
        Ok(entry) => entry,
        Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(git_error(worktree)(e)),
    };
    let blob = repo
        .find_blob(entry.id())
        .map_err(|e| damaged(worktree, label, entry.id(), &e))?;
    Ok(Some(blob.content().to_vec()))
}

fn head_commit(repo: &Repository) -> Result<Option<Commit<'_>>, git2::Error> {
    match repo.head() {
        Ok(head) => head.peel_to_commit().map(Some),
        Err(e) if matches!(e.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `tree` without a top-level `STATE_DIR`.
fn without_state(repo: &Repository, tree: &Tree<'_>) -> Result<Oid, git2::Error> {
    if tree.get_name(STATE_DIR).is_none() {
        return Ok(tree.id());
    }
    let mut builder = repo.treebuilder(Some(tree))?;
    builder.remove(STATE_DIR)?;
    builder.write()
}

/// The diff between two trees (`None`: the empty tree).
fn changes(repo: &Repository, from: Option<Oid>, to: Oid) -> Result<git2::Diff<'_>, git2::Error> {
    let from = from.map(|id| repo.find_tree(id)).transpose()?;
    let to = repo.find_tree(to)?;
    repo.diff_tree_to_tree(from.as_ref(), Some(&to), None)
}

/// Brings the private index up to date with the worktree (`git add -A` without
/// `STATE_DIR`), saves it, and writes its tree. The index is attached to this `repo`
/// handle only; the worktree's own index file is never written.
fn stage(repo: &Repository, worktree: &Path, index_file: &Path) -> Result<Oid, SnapshotError> {
    let git = git_error(worktree);
    let mut index = private_index(repo, worktree, index_file)?;
    (|| {
        repo.set_index(&mut index)?;
        // Not `Index::add_all`: it leaves the stat data of a file whose content did not
        // change (touched, rewritten, checked out again) stale, so such a file would be
        // read and hashed again at every checkpoint. `update_index` refreshes it.
        let mut options = DiffOptions::new();
        options
            .include_untracked(true)
            .recurse_untracked_dirs(true)
            .include_typechange(true)
            .update_index(true);
        for pattern in CONTENT {
            options.pathspec(pattern);
        }
        let changed: Vec<(PathBuf, bool)> = repo
            .diff_index_to_workdir(Some(&index), Some(&mut options))?
            .deltas()
            .filter_map(|d| Some((d.new_file().path()?.to_owned(), d.new_file().exists())))
            .collect();
        for (path, exists) in changed {
            if exists {
                index.add_path(&path)?;
            } else {
                index.remove_path(&path)?;
            }
        }
        // Entries the worktree's own index had there, when it was the seed.
        index.remove_dir(Path::new(STATE_DIR), 0)?;
        let tree = index.write_tree()?;
        // After write_tree, so the saved index keeps the tree cache too.
        index.write()?;
        Ok(tree)
    })()
    .map_err(git)
}

/// Opens the private index, seeding a new one from the worktree's own index: its stat
/// data spares hashing every tracked file again, and its entries keep tracked files that
/// `.gitignore` matches, as `git add -A` does. Without a usable one, from HEAD's tree.
fn private_index(repo: &Repository, worktree: &Path, file: &Path) -> Result<Index, SnapshotError> {
    let git = git_error(worktree);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SnapshotError::Io {
            worktree: worktree.to_owned(),
            path,
            source,
        }
    };
    if file.exists() {
        return Index::open(file).map_err(git);
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let seed = file.with_extension("seed");
    if copy_with_mtime(&repo.path().join("index"), &seed).is_ok() {
        // libgit2 refuses split and sparse indexes; a merge in progress has conflicts.
        if Index::open(&seed).is_ok_and(|index| !index.has_conflicts()) {
            std::fs::rename(&seed, file).map_err(io(file))?;
            return Index::open(file).map_err(git);
        }
        std::fs::remove_file(&seed).map_err(io(&seed))?;
    }
    let mut index = Index::open(file).map_err(git)?;
    if let Some(head) = head_commit(repo).map_err(git)? {
        index.read_tree(&head.tree().map_err(git)?).map_err(git)?;
    }
    Ok(index)
}

/// Copies an index file with its mtime, which libgit2 compares entries' mtimes with to
/// spot files changed within the same tick as the index was written (racy git).
fn copy_with_mtime(from: &Path, to: &Path) -> std::io::Result<()> {
    let modified = std::fs::metadata(from)?.modified()?;
    std::fs::copy(from, to)?;
    std::fs::File::options()
        .write(true)
        .open(to)?
        .set_modified(modified)
}

/// The `STATE_DIR` tree: the state and the transcripts that exist.
fn state_tree(repo: &Repository, c: &Snapshot<'_>) -> Result<Oid, SnapshotError> {
    let git = git_error(c.worktree);
    let mut transcripts = repo.treebuilder(None).map_err(git)?;
    for (name, path) in c.transcripts {
        if name.is_empty() || name.contains(['/', '\0']) {
            return Err(SnapshotError::TranscriptName {
                worktree: c.worktree.to_owned(),
                name: name.clone(),
            });
        }
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(SnapshotError::Io {
                    worktree: c.worktree.to_owned(),
                    path: path.clone(),
                    source,
                });
            }
        };
        let blob = repo.blob(&bytes).map_err(git)?;
        transcripts
            .insert(format!("{name}.jsonl"), blob, FileMode::Blob.into())
            .map_err(git)?;
    }
    (|| {
        let mut dir = repo.treebuilder(None)?;
        dir.insert(
            "state.json",
            repo.blob(c.state_json)?,
            FileMode::Blob.into(),
        )?;
        if !transcripts.is_empty() {
            dir.insert(TRANSCRIPTS, transcripts.write()?, FileMode::Tree.into())?;
        }
        dir.write()
    })()
    .map_err(git)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::git;
    use std::os::unix::fs::PermissionsExt;

    fn put(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn read(root: &Path, path: &str) -> String {
        std::fs::read_to_string(root.join(path)).unwrap()
    }

    /// A repository with one commit: `.gitignore` (`*.log`, `build/`), `a.txt`,
    /// `src/lib.rs`, an executable `run.sh`, a symlink `link` → `a.txt`, and `keep.log`
    /// (tracked although ignored).
    fn repo() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        put(&repo, ".gitignore", "*.log\nbuild/\n");
        put(&repo, "a.txt", "a1\n");
        put(&repo, "src/lib.rs", "lib\n");
        put(&repo, "run.sh", "#!/bin/sh\n");
        std::fs::set_permissions(repo.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("a.txt", repo.join("link")).unwrap();
        put(&repo, "keep.log", "kept\n");
        git(&repo, &["add", "."]);
        git(&repo, &["add", "-f", "keep.log"]);
        git(&repo, &["commit", "-qm", "init"]);
        (dir, repo)
    }

    fn checkpoint<'a>(
        repo: &'a Path,
        index: &'a Path,
        reference: &'a str,
        parent: Option<Oid>,
        transcripts: &'a [(String, PathBuf)],
    ) -> Snapshot<'a> {
        Snapshot {
            worktree: repo,
            index_file: index,
            reference,
            parent,
            message: "drover: checkpoint",
            state_json: br#"{"step":"fix"}"#,
            transcripts,
        }
    }

    fn files(repo: &Path, rev: &str) -> Vec<String> {
        git(repo, &["ls-tree", "-r", "--name-only", rev])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_checkpoint_holds_the_worktree_and_the_state_and_leaves_the_users_git_alone() {
        let (dir, repo) = repo();
        let index = dir.path().join("state/checkpoint.index");
        let head = git(&repo, &["rev-parse", "HEAD"]);
        put(&repo, "a.txt", "a2\n");
        git(&repo, &["add", "a.txt"]); // the user's own staged change
        put(&repo, "a.txt", "a3\n");
        put(&repo, "new/deep/n.txt", "n\n");
        put(&repo, "debug.log", "ignored\n");
        put(&repo, "build/out.o", "ignored\n");
        put(&repo, ".drover-state/state.json", "the worktree's own\n");
        put(&repo, ".drover-state/mine.txt", "the worktree's own\n");
        put(dir.path(), "agent.jsonl", "{\"turn\":1}\n");
        let transcripts = [
            ("claude".to_owned(), dir.path().join("agent.jsonl")),
            ("gone".to_owned(), dir.path().join("missing.jsonl")),
        ];
        let status_before = git(&repo, &["status", "--porcelain"]);
        let user_index = std::fs::read(repo.join(".git/index")).unwrap();

        let reference = "refs/drover/r1/1";
        let written = write(&checkpoint(&repo, &index, reference, None, &transcripts)).unwrap();

        assert_eq!(
            git(&repo, &["rev-parse", reference]),
            written.commit.to_string()
        );
        assert_eq!(git(&repo, &["rev-parse", &format!("{reference}^")]), head);
        assert_eq!(
            files(&repo, reference),
            [
                ".drover-state/state.json",
                ".drover-state/transcripts/claude.jsonl",
                ".gitignore",
                "a.txt",
                "keep.log",
                "link",
                "new/deep/n.txt",
                "run.sh",
                "src/lib.rs",
            ]
        );
        assert_eq!(git(&repo, &["show", &format!("{reference}:a.txt")]), "a3");
        assert_eq!(written.files_changed, 2, "a.txt and new/deep/n.txt");
        assert_eq!(
            read_state(&repo, written.commit).unwrap(),
            br#"{"step":"fix"}"#
        );
        assert_eq!(
            read_transcript(&repo, written.commit, "claude")
                .unwrap()
                .unwrap(),
            b"{\"turn\":1}\n"
        );
        assert_eq!(
            read_transcript(&repo, written.commit, "gone").unwrap(),
            None
        );
        assert!(index.exists(), "the private index is kept");

        assert_eq!(git(&repo, &["rev-parse", "HEAD"]), head, "HEAD moved");
        assert_eq!(git(&repo, &["symbolic-ref", "HEAD"]), "refs/heads/main");
        assert_eq!(git(&repo, &["branch", "--list"]), "* main");
        assert_eq!(git(&repo, &["status", "--porcelain"]), status_before);
        assert_eq!(std::fs::read(repo.join(".git/index")).unwrap(), user_index);
    }

    #[test]
    fn checkpoints_chain_and_count_the_files_changed() {
        let (dir, repo) = repo();
        let index = dir.path().join("checkpoint.index");
        let first = write(&checkpoint(&repo, &index, "refs/drover/r1/1", None, &[])).unwrap();
        assert_eq!(first.files_changed, 0);

        put(&repo, "a.txt", "a2\n");
        std::fs::remove_file(repo.join("src/lib.rs")).unwrap();
        put(&repo, "b.txt", "b\n");
        std::fs::set_permissions(repo.join("run.sh"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let second = write(&checkpoint(
            &repo,
            &index,
            "refs/drover/r1/2",
            Some(first.commit),
            &[],
        ))
        .unwrap();
        assert_eq!(second.files_changed, 4);
        assert_eq!(
            git(&repo, &["rev-parse", "refs/drover/r1/2^"]),
            first.commit.to_string()
        );
        assert!(!files(&repo, "refs/drover/r1/2").contains(&"src/lib.rs".to_owned()));

        let third = write(&checkpoint(
            &repo,
            &index,
            "refs/drover/r1/3",
            Some(second.commit),
            &[],
        ))
        .unwrap();
        assert_eq!(third.files_changed, 0);
        assert_eq!(
            worktree_tree(&repo, &index).unwrap(),
            content_tree(&repo, third.commit).unwrap()
        );
        assert_ne!(
            content_tree(&repo, first.commit).unwrap(),
            content_tree(&repo, third.commit).unwrap()
        );
    }

    #[test]
    fn a_file_touched_but_unchanged_gets_fresh_stat_data_in_the_private_index() {
        let (dir, repo) = repo();
        let index = dir.path().join("checkpoint.index");
        write(&checkpoint(&repo, &index, "refs/drover/r1/1", None, &[])).unwrap();
        let touched = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(repo.join("a.txt"))
            .unwrap()
            .set_modified(touched)
            .unwrap();

        let written = write(&checkpoint(&repo, &index, "refs/drover/r1/2", None, &[])).unwrap();

        assert_eq!(written.files_changed, 0);
        let entry = Index::open(&index)
            .unwrap()
            .get_path(Path::new("a.txt"), 0)
            .unwrap();
        let seconds = touched
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert_eq!(
            i64::from(entry.mtime.seconds()),
            seconds,
            "stale stat data: the file would be hashed at every checkpoint"
        );
    }

    #[test]
    fn files_and_directories_may_swap_places() {
        let (dir, repo) = repo();
        let index = dir.path().join("checkpoint.index");
        let before = write(&checkpoint(&repo, &index, "refs/drover/r1/1", None, &[])).unwrap();
        std::fs::remove_file(repo.join("a.txt")).unwrap();
        put(&repo, "a.txt/inner.txt", "now a directory\n");
        std::fs::remove_dir_all(repo.join("src")).unwrap();
        put(&repo, "src", "now a file\n");
        let after = write(&checkpoint(
            &repo,
            &index,
            "refs/drover/r1/2",
            Some(before.commit),
            &[],
        ))
        .unwrap();
        assert_eq!(after.files_changed, 4);
        assert_eq!(
            git(&repo, &["show", "refs/drover/r1/2:a.txt/inner.txt"]),
            "now a directory"
        );

        restore(&repo, before.commit, &index).unwrap();
        assert_eq!(read(&repo, "a.txt"), "a1\n");
        assert_eq!(read(&repo, "src/lib.rs"), "lib\n");
        restore(&repo, after.commit, &index).unwrap();
        assert_eq!(read(&repo, "src"), "now a file\n");
        assert_eq!(
            worktree_tree(&repo, &index).unwrap(),
            content_tree(&repo, after.commit).unwrap()
        );
    }

    #[test]
    fn the_first_checkpoint_of_an_unborn_branch_has_no_parent() {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q", "-b", "main"]);
        put(dir.path(), "a.txt", "a\n");
        let index = dir.path().join(".git/drover.index");
        let written = write(&checkpoint(
            dir.path(),
            &index,
            "refs/drover/r1/1",
            None,
            &[],
        ))
        .unwrap();
        assert_eq!(written.files_changed, 1);
        assert_eq!(
            git(dir.path(), &["rev-list", "--count", "refs/drover/r1/1"]),
            "1"
        );
    }

    #[test]
    fn restore_brings_back_a_checkpoint_and_keeps_ignored_files() {
        let (dir, repo) = repo();
        let index = dir.path().join("checkpoint.index");
        put(&repo, "untracked.txt", "u1\n");
        let saved = write(&checkpoint(&repo, &index, "refs/drover/r1/1", None, &[])).unwrap();
        let head = git(&repo, &["rev-parse", "HEAD"]);
        let user_index = std::fs::read(repo.join(".git/index")).unwrap();

        put(&repo, "a.txt", "changed\n");
        std::fs::remove_file(repo.join("src/lib.rs")).unwrap();
        std::fs::remove_file(repo.join("link")).unwrap();
        std::fs::remove_file(repo.join("keep.log")).unwrap();
        std::fs::set_permissions(repo.join("run.sh"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        std::fs::remove_file(repo.join("untracked.txt")).unwrap();
        put(&repo, "new.txt", "new\n");
        put(&repo, "pkg/deep/mod.rs", "new\n");
        put(&repo, "pkg/build/out.o", "ignored\n");
        put(&repo, "debug.log", "ignored\n");
        put(&repo, ".drover-state/mine.txt", "the worktree's own\n");

        let restored = restore(&repo, saved.commit, &index).unwrap();

        assert_eq!(read(&repo, "a.txt"), "a1\n");
        assert_eq!(read(&repo, "src/lib.rs"), "lib\n");
        assert_eq!(read(&repo, "keep.log"), "kept\n");
        assert_eq!(read(&repo, "untracked.txt"), "u1\n");
        assert_eq!(
            std::fs::read_link(repo.join("link")).unwrap(),
            Path::new("a.txt")
        );
        let mode = std::fs::metadata(repo.join("run.sh"))
            .unwrap()
            .permissions();
        assert_eq!(mode.mode() & 0o111, 0o111, "run.sh executable again");
        assert!(!repo.join("new.txt").exists());
        assert!(
            !repo.join("pkg/deep").exists(),
            "emptied directories removed"
        );
        assert_eq!(read(&repo, "pkg/build/out.o"), "ignored\n");
        assert_eq!(read(&repo, "debug.log"), "ignored\n");
        assert_eq!(
            read(&repo, ".drover-state/mine.txt"),
            "the worktree's own\n"
        );
        assert_eq!(
            restored,
            Restored {
                files_written: 6,
                files_removed: 2
            }
        );

        assert_eq!(
            worktree_tree(&repo, &index).unwrap(),
            content_tree(&repo, saved.commit).unwrap()
        );
        assert_eq!(git(&repo, &["rev-parse", "HEAD"]), head, "HEAD moved");
        assert_eq!(std::fs::read(repo.join(".git/index")).unwrap(), user_index);
        // Restoring again finds nothing to do.
        assert_eq!(
            restore(&repo, saved.commit, &index).unwrap(),
            Restored {
                files_written: 0,
                files_removed: 0
            }
        );
    }

    #[test]
    fn open_resolves_a_checkpoint_and_refuses_a_missing_or_moved_ref() {
        let (dir, repo) = repo();
        let index = dir.path().join("checkpoint.index");
        let first = write(&checkpoint(&repo, &index, "refs/drover/r1/1", None, &[])).unwrap();
        put(&repo, "a.txt", "a2\n");
        let second = write(&checkpoint(&repo, &index, "refs/drover/r1/2", None, &[])).unwrap();

        assert_eq!(open(&repo, "refs/drover/r1/1", None).unwrap(), first.commit);
        assert_eq!(
            open(&repo, "refs/drover/r1/2", Some(second.commit)).unwrap(),
            second.commit
        );

        git(
            &repo,
            &["update-ref", "refs/drover/r1/1", &second.commit.to_string()],
        );
        let moved = open(&repo, "refs/drover/r1/1", Some(first.commit)).unwrap_err();
        assert!(matches!(moved, SnapshotError::Moved { found, .. } if found == second.commit));

        git(&repo, &["update-ref", "-d", "refs/drover/r1/2"]);
        let missing = open(&repo, "refs/drover/r1/2", Some(second.commit)).unwrap_err();
        assert_eq!(
            missing.to_string(),
            format!(
                "checkpoint refs/drover/r1/2 does not exist in {}",
                repo.display()
            )
        );
    }

    fn remove_object(repo: &Path, id: &str) {
        std::fs::remove_file(repo.join(".git/objects").join(&id[..2]).join(&id[2..])).unwrap();
    }

    #[test]
    fn a_damaged_checkpoint_is_refused_before_anything_changes() {
        let (dir, repo) = repo();
        let index = dir.path().join("checkpoint.index");
        put(&repo, "only-here.txt", "only in the checkpoint\n");
        let saved = write(&checkpoint(&repo, &index, "refs/drover/r1/1", None, &[])).unwrap();
        std::fs::remove_file(repo.join("only-here.txt")).unwrap();
        put(&repo, "a.txt", "changed\n");

        let blob = git(&repo, &["rev-parse", "refs/drover/r1/1:only-here.txt"]);
        remove_object(&repo, &blob);
        let damaged = open(&repo, "refs/drover/r1/1", Some(saved.commit)).unwrap_err();
        assert!(
            damaged
                .to_string()
                .contains(&format!("is damaged: object {blob} missing")),
            "{damaged}"
        );
        assert!(matches!(
            restore(&repo, saved.commit, &index),
            Err(SnapshotError::Damaged { .. })
        ));
        assert_eq!(
            read(&repo, "a.txt"),
            "changed\n",
            "restore changed the worktree"
        );

        remove_object(&repo, &saved.commit.to_string());
        assert!(matches!(
            open(&repo, "refs/drover/r1/1", None),
            Err(SnapshotError::Damaged { object, .. }) if object == saved.commit
        ));
        assert!(matches!(
            read_state(&repo, saved.commit),
            Err(SnapshotError::Damaged { .. })
        ));
    }

    #[test]
    fn a_commit_without_a_state_is_not_a_checkpoint() {
        let (_dir, repo) = repo();
        git(&repo, &["update-ref", "refs/drover/r1/1", "HEAD"]);
        let head: Oid = git(&repo, &["rev-parse", "HEAD"]).parse().unwrap();
        assert!(matches!(
            open(&repo, "refs/drover/r1/1", None),
            Err(SnapshotError::MissingState { .. })
        ));
        assert!(matches!(
            read_state(&repo, head),
            Err(SnapshotError::MissingState { .. })
        ));
    }

    #[test]
    fn transcript_names_must_be_file_names() {
        let (dir, repo) = repo();
        let index = dir.path().join("checkpoint.index");
        let transcripts = [("../x".to_owned(), dir.path().join("t.jsonl"))];
        assert!(matches!(
            write(&checkpoint(
                &repo,
                &index,
                "refs/drover/r1/1",
                None,
                &transcripts
            )),
            Err(SnapshotError::TranscriptName { .. })
        ));
    }
}
