//! The validated workflow: what the engine runs and stores as JSON, span-free and
//! independent of the TOML it came from.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::FailureClass;
use crate::quantity::{duration_text, opt_duration_text};

/// A validated workflow, ready for the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    pub name: String,
    /// Absolute path of the git repository the steps run in; existence is checked
    /// by the engine, not here, so a workflow can be validated anywhere.
    pub workspace: Option<PathBuf>,
    /// `user = "NAME"`: the account the steps run as instead of the submitter's (an
    /// admin's request only; the account is looked up at submit, not here).
    #[serde(default)]
    pub user: Option<String>,
    pub limits: Limits,
    /// Killing a protected workflow needs an explicit confirmation.
    #[serde(default)]
    pub protected: bool,
    #[serde(default)]
    pub kill: KillPolicy,
    /// The workflow's own `[retry]`; each step holds its effective policy.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Checked before the run starts.
    #[serde(default)]
    pub requires: Requirements,
    pub steps: Vec<Step>,
}

/// How a kill of this workflow's runs proceeds (`[kill]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KillPolicy {
    /// From SIGTERM to SIGKILL.
    #[serde(with = "duration_text")]
    pub grace: Duration,
    /// How long a critical section may hold the kill off.
    #[serde(with = "duration_text")]
    pub critical_max: Duration,
    /// From the request to `killed`, all phases included.
    #[serde(with = "duration_text")]
    pub budget: Duration,
}

impl Default for KillPolicy {
    fn default() -> KillPolicy {
        KillPolicy {
            grace: Duration::from_secs(5),
            critical_max: Duration::from_secs(3),
            budget: Duration::from_secs(10),
        }
    }
}

/// Resource limits for the whole run (mapped onto systemd properties).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// `MemoryMax=` in bytes.
    pub memory_max: Option<u64>,
    /// `CPUQuota=` as percent of one CPU (200 = two full CPUs).
    pub cpu_quota_percent: Option<u32>,
    /// `TasksMax=`.
    pub tasks_max: Option<u64>,
    /// Wall-clock limit for the whole run.
    #[serde(default, with = "opt_duration_text")]
    pub timeout: Option<Duration>,
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub run: StepCommand,
    pub env: BTreeMap<String, String>,
    #[serde(default, with = "opt_duration_text")]
    pub timeout: Option<Duration>,
    pub critical: bool,
    pub checkpoint: bool,
    pub agent: Option<AgentKind>,
    /// Shell commands run (outside the step's scope) after the step was killed.
    #[serde(default)]
    pub on_kill: Vec<String>,
    /// The workflow's `[retry]` with this step's `[step.retry]` keys laid over it.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Checked before this step starts, in addition to the workflow's.
    #[serde(default)]
    pub requires: Requirements,
    /// A running step with no output for this long counts as stalled.
    #[serde(default, with = "opt_duration_text")]
    pub stall_after: Option<Duration>,
}

/// When and how often a failed step is tried again (`[retry]`, `[step.retry]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in total, the first included; 1 means no automatic retry.
    pub max_attempts: u32,
    /// The wait before the first retry.
    #[serde(with = "duration_text")]
    pub initial: Duration,
    /// Multiplies the wait for each further retry.
    pub factor: f64,
    /// Cap on the wait, before jitter.
    #[serde(with = "duration_text")]
    pub max: Duration,
    /// Up to this much random extra wait, so retries of many runs spread out.
    #[serde(with = "duration_text")]
    pub jitter: Duration,
    /// Failure classes that are retried.
    pub retry_on: Vec<FailureClass>,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            initial: Duration::from_secs(10),
            factor: 2.0,
            max: Duration::from_secs(5 * 60),
            jitter: Duration::ZERO,
            retry_on: vec![FailureClass::Transient, FailureClass::Stalled],
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 = the first retry):
    /// `min(initial * factor^(retry-1), max) + jitter * jitter_fraction`, with the
    /// fraction clamped to [0, 1]. Never panics, whatever the policy holds: it may
    /// come from stored JSON rather than a validated file.
    pub fn delay(&self, retry: u32, jitter_fraction: f64) -> Duration {
        let exponent = f64::from(retry.saturating_sub(1));
        // In nanoseconds so integer factors give exact results; an overflow to
        // infinity (or NaN from a nonsense factor) falls back to `max`.
        let nanos = self.initial.as_nanos() as f64 * self.factor.powf(exponent);
        let base = if self.initial.is_zero() {
            Duration::ZERO
        } else if nanos < self.max.as_nanos() as f64 {
            Duration::from_nanos(nanos.round() as u64).min(self.max)
        } else {
            self.max
        };
        let fraction = if jitter_fraction.is_nan() {
            0.0
        } else {
            jitter_fraction.clamp(0.0, 1.0)
        };
        let extra = Duration::try_from_secs_f64(self.jitter.as_secs_f64() * fraction)
            .unwrap_or(self.jitter);
        base.saturating_add(extra)
    }

    /// Whether a failure of `class` is retried (attempts left aside).
    pub fn retries(&self, class: FailureClass) -> bool {
        self.retry_on.contains(&class)
    }
}

/// What must hold before a run (`[requires]`) or a step (`[step.requires]`) starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Requirements {
    /// Names looked up on `PATH`, or absolute paths of executable files.
    #[serde(default)]
    pub commands: Vec<String>,
    /// Files or directories; relative ones resolve against the run's working directory.
    #[serde(default)]
    pub files: Vec<String>,
    /// Variables that must be set and non-empty in the step's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Workflows whose latest run on this host must have succeeded.
    #[serde(default)]
    pub runs: Vec<String>,
    #[serde(default)]
    pub git: Option<GitRequirement>,
}

impl Requirements {
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
            && self.files.is_empty()
            && self.env.is_empty()
            && self.runs.is_empty()
            && self.git.is_none()
    }
}

/// The state the workspace repository must be in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitRequirement {
    /// No changed tracked files and no untracked, non-ignored ones.
    #[serde(default)]
    pub clean: bool,
    /// HEAD is this branch.
    #[serde(default)]
    pub branch: Option<String>,
    /// HEAD's commit id starts with this (lowercase) hex.
    #[serde(default)]
    pub commit: Option<String>,
}

/// What a step executes. Serialised untagged (array or string), mirroring the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StepCommand {
    /// Executed directly, no shell involved.
    Argv(Vec<String>),
    /// Executed with `/bin/sh -c`.
    Shell(String),
}

impl StepCommand {
    /// The argv to execute; shell strings go through `/bin/sh -c`.
    pub fn argv(&self) -> Vec<String> {
        match self {
            StepCommand::Argv(argv) => argv.clone(),
            StepCommand::Shell(script) => {
                vec!["/bin/sh".to_owned(), "-c".to_owned(), script.clone()]
            }
        }
    }
}

/// Coding agents a step may declare it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentKind {
    ClaudeCode,
}

impl AgentKind {
    /// The spelling used in workflow files and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::ClaudeCode => "claude-code",
        }
    }
}
