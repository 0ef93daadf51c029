//! `[retry]` and `[step.retry]`, and the delay a policy gives.

use std::time::Duration;

use super::{STEP, WITH_RETRY, assert_rejected, ok};
use crate::model::FailureClass;
use crate::spec::types::RetryPolicy;

#[test]
fn retry_defaults_and_step_keys_override_the_workflow_key_by_key() {
    let defaults = ok(&format!("name = \"m\"\n{STEP}"));
    let expected_default = RetryPolicy {
        max_attempts: 1,
        initial: Duration::from_secs(10),
        factor: 2.0,
        max: Duration::from_secs(300),
        jitter: Duration::ZERO,
        retry_on: vec![FailureClass::Transient, FailureClass::Stalled],
    };
    assert_eq!(RetryPolicy::default(), expected_default);
    assert_eq!(defaults.retry, expected_default);
    assert_eq!(defaults.steps[0].retry, expected_default);
    assert_eq!(defaults.steps[0].stall_after, None);

    let w = ok(WITH_RETRY);
    let workflow = RetryPolicy {
        max_attempts: 3,
        initial: Duration::from_secs(1),
        factor: 3.0,
        max: Duration::from_secs(60),
        jitter: Duration::from_millis(500),
        // Duplicates are dropped, order kept.
        retry_on: vec![FailureClass::Exit, FailureClass::AgentError],
    };
    assert_eq!(w.retry, workflow);
    assert_eq!(w.steps[0].retry, workflow);
    assert_eq!(
        w.steps[1].retry,
        RetryPolicy {
            max_attempts: 5,
            factor: 1.5,
            retry_on: vec![],
            ..workflow
        }
    );
    assert_eq!(w.steps[1].stall_after, Some(Duration::from_secs(600)));

    // A step's [step.retry] alone lays over the defaults; zero delays are fine.
    let w = ok(&format!(
        "name = \"m\"\n{STEP}[step.retry]\nmax_attempts = 2\ninitial = \"0s\"\nmax = \"0s\"\n"
    ));
    assert_eq!(w.retry, RetryPolicy::default());
    assert_eq!(
        w.steps[0].retry,
        RetryPolicy {
            max_attempts: 2,
            initial: Duration::ZERO,
            max: Duration::ZERO,
            ..RetryPolicy::default()
        }
    );
}

#[test]
fn retry_delay_grows_caps_and_adds_jitter_without_panicking() {
    let p = RetryPolicy {
        initial: Duration::from_secs(10),
        factor: 2.0,
        max: Duration::from_secs(60),
        jitter: Duration::from_secs(4),
        ..RetryPolicy::default()
    };
    let secs = |d: Duration| d.as_secs_f64();
    assert_eq!(p.delay(1, 0.0), Duration::from_secs(10));
    assert_eq!(p.delay(2, 0.0), Duration::from_secs(20));
    assert_eq!(p.delay(3, 0.0), Duration::from_secs(40));
    assert_eq!(p.delay(4, 0.0), Duration::from_secs(60));
    assert_eq!(p.delay(u32::MAX, 0.0), Duration::from_secs(60));
    // Retry 0 is treated as the first.
    assert_eq!(p.delay(0, 0.0), Duration::from_secs(10));
    assert_eq!(p.delay(1, 0.5), Duration::from_secs(12));
    assert_eq!(p.delay(4, 1.0), Duration::from_secs(64));
    // The fraction is clamped; NaN adds nothing.
    assert_eq!(p.delay(1, 7.0), Duration::from_secs(14));
    assert_eq!(p.delay(1, -1.0), Duration::from_secs(10));
    assert_eq!(p.delay(1, f64::NAN), Duration::from_secs(10));
    assert_eq!(secs(p.delay(1, 0.25)), 11.0);

    let exact = RetryPolicy {
        initial: Duration::from_millis(100),
        factor: 3.0,
        ..RetryPolicy::default()
    };
    assert_eq!(exact.delay(3, 0.0), Duration::from_millis(900));

    // Policies from stored JSON are not validated: no panics on nonsense.
    let zero = RetryPolicy {
        initial: Duration::ZERO,
        factor: f64::INFINITY,
        ..RetryPolicy::default()
    };
    assert_eq!(zero.delay(u32::MAX, 0.0), Duration::ZERO);
    let huge = RetryPolicy {
        initial: Duration::MAX,
        factor: f64::NAN,
        max: Duration::MAX,
        jitter: Duration::MAX,
        ..RetryPolicy::default()
    };
    assert_eq!(huge.delay(9, 1.0), Duration::MAX);
    let shrinking = RetryPolicy {
        factor: -2.0,
        ..RetryPolicy::default()
    };
    assert!(shrinking.delay(2, 0.0) <= shrinking.max);
}

#[test]
fn retries_selects_on_failure_class() {
    let p = RetryPolicy::default();
    assert!(p.retries(FailureClass::Transient));
    assert!(p.retries(FailureClass::Stalled));
    assert!(!p.retries(FailureClass::Exit));
    assert!(!p.retries(FailureClass::Killed));
}

#[test]
fn rejects_bad_retry_settings() {
    let retry = |body: &str| format!("name = \"m\"\n[retry]\n{body}\n{STEP}");
    assert_rejected(
        &retry("max_attempts = 0"),
        3,
        &[
            "fix.toml:3:16:",
            "`retry.max_attempts` must be between 1 and 4294967295, got 0",
        ],
    );
    assert_rejected(
        &retry("max_attempts = 5000000000"),
        3,
        &["`retry.max_attempts` must be between 1"],
    );
    assert_rejected(
        &retry("factor = 0.5"),
        3,
        &[
            "fix.toml:3:10:",
            "`retry.factor` must be a finite number of at least 1.0, got 0.5",
        ],
    );
    assert_rejected(&retry("factor = inf"), 3, &["`retry.factor`", "got inf"]);
    assert_rejected(
        &retry("factor = \"2\""),
        3,
        &["`retry.factor`", "expected a number"],
    );
    assert_rejected(
        &retry("initial = \"soon\""),
        3,
        &["fix.toml:3:11:", "invalid duration \"soon\""],
    );
    assert_rejected(
        &retry("jitter = 5"),
        3,
        &["`retry.jitter`", "expected a string"],
    );
    assert_rejected(
        &retry("max = \"5s\""),
        3,
        &[
            "fix.toml:3:7:",
            "`retry.max` (5s) must be at least `retry.initial` (10s)",
        ],
    );
    assert_rejected(
        &retry("initial = \"10m\""),
        3,
        &[
            "fix.toml:3:11:",
            "`retry.max` (5m) must be at least `retry.initial` (10m)",
        ],
    );
    assert_rejected(
        &retry("retry_on = [\"transient\", \"flaky\"]"),
        3,
        &[
            "fix.toml:3:26:",
            "`retry.retry_on`: unknown failure class \"flaky\": expected one of exit, signal, oom, timeout, killed, dependency, agent-error, transient, stalled",
        ],
    );
    assert_rejected(
        &retry("tries = 3"),
        3,
        &[
            "unknown key `tries` in [retry]",
            "`max_attempts`",
            "`retry_on`",
        ],
    );

    // Step keys are checked against the merged policy and say so.
    assert_rejected(
        &format!("name = \"m\"\n[retry]\ninitial = \"1m\"\n{STEP}[step.retry]\nmax = \"30s\"\n"),
        8,
        &[
            "fix.toml:8:7:",
            "step \"s\": `step.retry.max` (30s) must be at least `step.retry.initial` (1m)",
            "from [retry]",
        ],
    );
    assert_rejected(
        &format!("name = \"m\"\n{STEP}[step.retry]\nmax_attempts = -1\n"),
        6,
        &["step \"s\": `step.retry.max_attempts` must be between 1"],
    );
    assert_rejected(
        &format!("name = \"m\"\n{STEP}[step.retry]\nretry_on = [\"Exit\"]\n"),
        6,
        &[
            "fix.toml:6:13:",
            "step \"s\": `step.retry.retry_on`: unknown failure class \"Exit\"",
        ],
    );
    assert_rejected(
        &format!("name = \"m\"\n{STEP}[step.retry]\nbackoff = 2\n"),
        6,
        &["unknown key `backoff` in [step.retry]"],
    );
}
