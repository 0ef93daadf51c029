//! `[limits]` and `[kill]`.

use std::time::Duration;

use super::{STEP, assert_rejected, ok};
use crate::spec::types::KillPolicy;

#[test]
fn memory_max_takes_a_size_string_or_bytes() {
    // In a file: string with suffix and plain TOML integer.
    for (value, bytes) in [("\"1G\"", 1u64 << 30), ("2048", 2048), ("\"1T\"", 1 << 40)] {
        let w = ok(&format!(
            "name = \"m\"\n[limits]\nmemory_max = {value}\n{STEP}"
        ));
        assert_eq!(w.limits.memory_max, Some(bytes), "{value}");
    }
}

#[test]
fn rejects_bad_limits() {
    let limits = |body: &str| format!("name = \"m\"\n[limits]\n{body}\n{STEP}");
    assert_rejected(
        &limits("memory_max = \"12Q\""),
        3,
        &["invalid size \"12Q\""],
    );
    assert_rejected(
        &limits("memory_max = 0"),
        3,
        &["`memory_max` must be greater than 0"],
    );
    assert_rejected(
        &limits("memory_max = \"0M\""),
        3,
        &["`memory_max` must be greater than 0"],
    );
    assert_rejected(
        &limits("memory_max = -1"),
        3,
        &["`memory_max` must not be negative"],
    );
    assert_rejected(
        &limits("cpu_quota = \"150\""),
        3,
        &["invalid CPU quota \"150\""],
    );
    assert_rejected(&limits("cpu_quota = \"0%\""), 3, &["greater than 0%"]);
    assert_rejected(
        &limits("cpu_quota = 150"),
        3,
        &["`cpu_quota` must be a string", "\"150%\""],
    );
    assert_rejected(
        &limits("tasks_max = 0"),
        3,
        &["`tasks_max` must be at least 1, got 0"],
    );
    assert_rejected(
        &limits("tasks_max = -3"),
        3,
        &["`tasks_max` must be at least 1"],
    );
    assert_rejected(
        &limits("timeout = \"30 parsecs\""),
        3,
        &["invalid duration \"30 parsecs\""],
    );
    assert_rejected(
        &limits("timeout = \"0s\""),
        3,
        &["`limits.timeout` must be greater than 0"],
    );
    assert_rejected(
        &limits("timeout = 30"),
        3,
        &["`limits.timeout`", "expected a string"],
    );
}

#[test]
fn kill_policy_protection_and_on_kill() {
    let w = ok(&format!(
        "name = \"w\"\nprotected = true\n[kill]\ngrace = \"2s\"\ncritical_max = \"1s\"\nbudget = \"8s\"\n{STEP}on_kill = [\"rm -f x.lock\", \"echo bye\"]\n"
    ));
    assert!(w.protected);
    assert_eq!(
        w.kill,
        KillPolicy {
            grace: Duration::from_secs(2),
            critical_max: Duration::from_secs(1),
            budget: Duration::from_secs(8)
        }
    );
    assert_eq!(w.steps[0].on_kill, ["rm -f x.lock", "echo bye"]);
    let defaults = ok(&format!("name = \"w\"\n{STEP}"));
    assert!(!defaults.protected);
    assert_eq!(defaults.kill, KillPolicy::default());
    assert!(defaults.steps[0].on_kill.is_empty());
}

#[test]
fn rejects_bad_kill_settings() {
    assert_rejected(
        &format!("name = \"w\"\n[kill]\ngrace = \"9s\"\n{STEP}"),
        3,
        &["kill.grace", "kill.budget", "SIGKILL"],
    );
    assert_rejected(
        &format!("name = \"w\"\n[kill]\nsigterm = \"1s\"\n{STEP}"),
        3,
        &["unknown key `sigterm` in [kill]", "`grace`"],
    );
    assert_rejected(
        &format!("name = \"w\"\n[kill]\ngrace = \"0s\"\n{STEP}"),
        3,
        &["kill.grace", "greater than 0"],
    );
    assert_rejected(
        &format!("name = \"w\"\n{STEP}on_kill = [\"  \"]\n"),
        5,
        &["on_kill", "blank"],
    );
    // Added to critical_max, it overflowed: refused where it is read instead.
    assert_rejected(
        &format!("name = \"w\"\n[kill]\ngrace = \"18446744073709551615s\"\n{STEP}"),
        3,
        &["invalid duration", "maximum of 100 years"],
    );
}
