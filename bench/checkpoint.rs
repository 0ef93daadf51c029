//! Checkpoint cost: `drover::snapshot::write` (warm private index, chained) after 10
//! files changed in a worktree of 10,000 files / 200 MB, beside `git add -A && git commit`
//! (git CLI, warm index) on an identical second repository, interleaved round by round.
//! Also once each: the first checkpoint (no private index yet) and the first commit, and
//! both with no index at all; and `restore` beside `git reset --hard`. No systemd needed.
//! `cargo bench --bench checkpoint`; `DROVER_BENCH_ROUNDS=N` (default 20),
//! `DROVER_BENCH_DIR=DIR` (default: a temp dir under /tmp).

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::percentile;
use common::testing::git;
use drover::snapshot::{self, Snapshot};
use git2::Oid;

const FILES: usize = 10_000;
/// Every `LARGE_EVERY`th file is a large binary one (40 of 3.5 MB: 140 MB); the rest are
/// small source-like files (~6 KB on average: 60 MB).
const LARGE_EVERY: usize = 250;
const LARGE_SIZE: usize = 3_500_000;
const CHANGED_PER_ROUND: usize = 10;

fn main() {
    let rounds = common::count("DROVER_BENCH_ROUNDS", 20);
    let base = match std::env::var_os("DROVER_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir_in("/tmp"),
    }
    .expect("bench dir");
    let drover_repo = base.path().join("drover");
    let git_repo = base.path().join("git");
    let index = base.path().join("state/checkpoint.index");
    let mut bytes = 0;
    for repo in [&drover_repo, &git_repo] {
        bytes = generate(repo);
        git(repo, &["init", "-q", "-b", "main"]);
        // An automatic gc after the first commit's 10,000 loose objects would run in the
        // background of the timed rounds.
        git(repo, &["config", "gc.auto", "0"]);
        git(repo, &["add", "-A"]);
        git(repo, &["commit", "-q", "-m", "init"]);
    }
    eprintln!(
        "two repositories of {FILES} files, {:.0} MB each, in {}",
        bytes as f64 / 1e6,
        base.path().display()
    );

    // The first checkpoint has no private index yet: it starts from the worktree's own.
    change_files(&drover_repo, 0);
    change_files(&git_repo, 0);
    let (first, _, first_ms) = drover_write(&drover_repo, &index, 0, None);
    let first_git_ms = git_commit(&git_repo);
    check_same_tree(&drover_repo, first, &git_repo);

    let mut drover_ms = Vec::new();
    let mut git_ms = Vec::new();
    let mut files_changed = Vec::new();
    let mut commits = vec![first];
    for round in 1..=rounds {
        change_files(&drover_repo, round);
        change_files(&git_repo, round);
        let parent = commits.last().copied();
        // Alternate which side goes first, so neither always runs on a warmer cache.
        let ((commit, changed, ms), git) = if round.is_multiple_of(2) {
            let written = drover_write(&drover_repo, &index, round, parent);
            (written, git_commit(&git_repo))
        } else {
            let git = git_commit(&git_repo);
            (drover_write(&drover_repo, &index, round, parent), git)
        };
        check_same_tree(&drover_repo, commit, &git_repo);
        drover_ms.push(ms);
        git_ms.push(git);
        files_changed.push(changed);
        commits.push(commit);
        if round.is_multiple_of(10) {
            eprintln!("{round} rounds");
        }
    }

    // Restore: back to the previous checkpoint and forward again, 10 files each way.
    let mut restore_ms = Vec::new();
    let mut open_ms = Vec::new();
    let mut reset_ms = Vec::new();
    let last = commits.len() - 1;
    let git_tips: Vec<String> = ["HEAD~1", "HEAD"]
        .iter()
        .map(|rev| git(&git_repo, &["rev-parse", rev]))
        .collect();
    for i in 0..rounds.max(2) {
        let (n, tip) = if i.is_multiple_of(2) {
            (last - 1, &git_tips[0])
        } else {
            (last, &git_tips[1])
        };
        let t0 = Instant::now();
        snapshot::open(&drover_repo, &reference(n), Some(commits[n])).expect("open");
        open_ms.push(ms_since(t0));
        let t0 = Instant::now();
        snapshot::restore(&drover_repo, commits[n], &index).expect("restore");
        restore_ms.push(ms_since(t0));
        let t0 = Instant::now();
        git(&git_repo, &["reset", "-q", "--hard", tip]);
        reset_ms.push(ms_since(t0));
        assert_eq!(
            snapshot::worktree_tree(&drover_repo, &index).expect("worktree tree"),
            snapshot::content_tree(&drover_repo, commits[n]).expect("content tree")
        );
    }

    // No index at all: every file read and hashed, on both sides.
    change_files(&drover_repo, rounds + 1);
    change_files(&git_repo, rounds + 1);
    std::fs::remove_file(&index).expect("remove the private index");
    std::fs::remove_file(drover_repo.join(".git/index")).expect("remove the index");
    std::fs::remove_file(git_repo.join(".git/index")).expect("remove the index");
    let (_, _, bare_ms) = drover_write(&drover_repo, &index, rounds + 1, commits.last().copied());
    let bare_git_ms = git_commit(&git_repo);

    println!(
        "\nCheckpoint of a worktree of {FILES} files / {:.0} MB after {CHANGED_PER_ROUND} files changed, {rounds} rounds (files changed per checkpoint, at most: {})\n",
        bytes as f64 / 1e6,
        files_changed.iter().max().unwrap_or(&0)
    );
    println!(
        "| operation | method | runs | p50 (ms) | p99 (ms) | max (ms) | p50 / git | p99 / git |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    row(
        "checkpoint, warm index",
        "drover `snapshot::write`",
        &drover_ms,
        &git_ms,
    );
    row(
        "checkpoint, warm index",
        "`git add -A && git commit` (baseline)",
        &git_ms,
        &git_ms,
    );
    row(
        "first checkpoint",
        "drover `snapshot::write`, private index seeded from the worktree's",
        &[first_ms],
        &[first_git_ms],
    );
    row(
        "first checkpoint",
        "`git add -A && git commit` (baseline)",
        &[first_git_ms],
        &[first_git_ms],
    );
    row(
        "no index at all",
        "drover `snapshot::write`",
        &[bare_ms],
        &[bare_git_ms],
    );
    row(
        "no index at all",
        "`git add -A && git commit` (baseline)",
        &[bare_git_ms],
        &[bare_git_ms],
    );
    row(
        "restore 10 files",
        "drover `snapshot::restore` (verifies, stages, checks out, re-stages)",
        &restore_ms,
        &reset_ms,
    );
    row(
        "restore 10 files",
        "`git reset --hard` (baseline)",
        &reset_ms,
        &reset_ms,
    );
    row(
        "verify",
        "drover `snapshot::open` (reads every tree, checks every blob)",
        &open_ms,
        &reset_ms,
    );
}

fn row(operation: &str, method: &str, samples: &[f64], base: &[f64]) {
    let max = samples.iter().copied().fold(0.0, f64::max);
    let (p50, p99) = (percentile(samples, 50.0), percentile(samples, 99.0));
    println!(
        "| {operation} | {method} | {} | {p50:.1} | {p99:.1} | {max:.1} | {:.2}× | {:.2}× |",
        samples.len(),
        p50 / percentile(base, 50.0),
        p99 / percentile(base, 99.0)
    );
}

fn reference(n: usize) -> String {
    format!("refs/drover/bench/{n}")
}

/// A chained checkpoint: (commit, files changed, ms).
fn drover_write(repo: &Path, index: &Path, n: usize, parent: Option<Oid>) -> (Oid, u32, f64) {
    let state = format!("{{\"round\":{n}}}");
    let t0 = Instant::now();
    let written = snapshot::write(&Snapshot {
        worktree: repo,
        index_file: index,
        reference: &reference(n),
        parent,
        message: "checkpoint",
        state_json: state.as_bytes(),
        transcripts: &[],
    })
    .expect("checkpoint");
    let ms = ms_since(t0);
    (written.commit, written.files_changed, ms)
}

fn git_commit(repo: &Path) -> f64 {
    let t0 = Instant::now();
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", "x"]);
    ms_since(t0)
}

/// The checkpoint holds exactly what git committed from the same files.
fn check_same_tree(drover_repo: &Path, commit: Oid, git_repo: &Path) {
    let content = snapshot::content_tree(drover_repo, commit).expect("content tree");
    assert_eq!(
        content.to_string(),
        git(git_repo, &["rev-parse", "HEAD^{tree}"]),
        "the checkpoint and git's commit differ"
    );
}

fn ms_since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1e3
}

/// xorshift64*: the same tree on every run and in both repositories.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn file_path(i: usize) -> PathBuf {
    if i.is_multiple_of(LARGE_EVERY) {
        PathBuf::from(format!("assets/a{:02}/blob{i:05}.bin", i / LARGE_EVERY % 8))
    } else {
        PathBuf::from(format!(
            "src/m{:02}/s{:02}/f{i:05}.rs",
            i % 20,
            (i / 20) % 25
        ))
    }
}

/// Writes the worktree: 10,000 files (mostly small source-like ones, 40 large binary
/// ones) in 500-odd nested directories, plus ignored build output. Returns its size.
fn generate(root: &Path) -> u64 {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut total = 0;
    for i in 0..FILES {
        let path = root.join(file_path(i));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let content = if i.is_multiple_of(LARGE_EVERY) {
            (0..LARGE_SIZE / 8)
                .flat_map(|_| rng.next().to_le_bytes())
                .collect::<Vec<u8>>()
        } else {
            let size = 200 + (rng.next() % 11_600) as usize;
            let mut text = String::with_capacity(size + 64);
            while text.len() < size {
                let n = rng.next();
                text.push_str(&format!(
                    "pub fn item_{i}_{}(x: u64) -> u64 {{ x.wrapping_mul({n}) }}\n",
                    text.len()
                ));
            }
            text.into_bytes()
        };
        total += content.len() as u64;
        std::fs::write(&path, content).expect("write");
    }
    std::fs::write(root.join(".gitignore"), "/target/\n*.tmp\n").expect("write");
    for i in 0..200 {
        let path = root.join(format!("target/debug/deps/o{i:03}.o"));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, format!("object {i}\n")).expect("write");
    }
    total
}

/// Appends a line to 10 small files chosen for the round (the same on both sides).
fn change_files(root: &Path, round: usize) {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ (round as u64 + 1));
    let mut changed = std::collections::BTreeSet::new();
    while changed.len() < CHANGED_PER_ROUND {
        let i = (rng.next() % FILES as u64) as usize;
        if i.is_multiple_of(LARGE_EVERY) || !changed.insert(i) {
            continue;
        }
        let path = root.join(file_path(i));
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str(&format!("// round {round}\n"));
        std::fs::write(&path, text).expect("write");
    }
}
