//! Helpers for unit tests that need a real git repository.

use std::path::Path;
use std::process::Command;

/// `git ARGS…` in `dir` (with a committer identity); its trimmed stdout, after checking
/// it succeeded.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
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
