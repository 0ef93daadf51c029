//! Helpers for code that tests drover against a real git repository. Plain std, so that
//! the unit tests (`crate::testing`), the integration tests (`tests/support`) and the
//! benchmarks (`bench/common`) compile this one file, the last two by `#[path]`: they
//! are crates of their own, and the library ships no test code.

use std::path::Path;
use std::process::Command;

/// `git ARGS…` in `dir`, with a committer identity and none of the host's git config;
/// its trimmed stdout, after checking it succeeded.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
