//! Workflow files: parses and validates a workflow TOML file into a [`Workflow`],
//! rejecting bad input with `FILE:LINE:COL: reason` before anything is started.
//!
//! Parsing happens in two layers. Private `Raw*` structs mirror the file exactly
//! (with `toml::Spanned` so every value keeps its byte range); `validate` then
//! turns them into the public, span-free types the engine stores as JSON. Keeping
//! the layers apart means the stored form never depends on TOML details.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::model::FailureClass;

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// A validated workflow, ready for the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    pub name: String,
    /// Absolute path of the git repository the steps run in; existence is checked
    /// by the engine, not here, so a workflow can be validated anywhere.
    pub workspace: Option<PathBuf>,
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
    #[serde(with = "duration")]
    pub grace: Duration,
    /// How long a critical section may hold the kill off.
    #[serde(with = "duration")]
    pub critical_max: Duration,
    /// From the request to `killed`, all phases included.
    #[serde(with = "duration")]
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
    #[serde(default, with = "opt_duration")]
    pub timeout: Option<Duration>,
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub run: StepCommand,
    pub env: BTreeMap<String, String>,
    #[serde(default, with = "opt_duration")]
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
    #[serde(default, with = "opt_duration")]
    pub stall_after: Option<Duration>,
}

/// When and how often a failed step is tried again (`[retry]`, `[step.retry]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in total, the first included; 1 means no automatic retry.
    pub max_attempts: u32,
    /// The wait before the first retry.
    #[serde(with = "duration")]
    pub initial: Duration,
    /// Multiplies the wait for each further retry.
    pub factor: f64,
    /// Cap on the wait, before jitter.
    #[serde(with = "duration")]
    pub max: Duration,
    /// Up to this much random extra wait, so retries of many runs spread out.
    #[serde(with = "duration")]
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

/// Why a workflow file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {reason}", file.display())]
    Invalid {
        file: PathBuf,
        /// 1-based.
        line: usize,
        /// 1-based, counted in characters.
        column: usize,
        reason: String,
    },
}

impl SpecError {
    /// 1-based line of the problem; `None` for I/O errors.
    pub fn line(&self) -> Option<usize> {
        match self {
            SpecError::Io { .. } => None,
            SpecError::Invalid { line, .. } => Some(*line),
        }
    }

    /// 1-based column of the problem; `None` for I/O errors.
    pub fn column(&self) -> Option<usize> {
        match self {
            SpecError::Io { .. } => None,
            SpecError::Invalid { column, .. } => Some(*column),
        }
    }
}

/// Reads and validates the workflow file at `path`.
pub fn load(path: &Path) -> Result<Workflow, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Validates workflow `text`. `origin` names the file in messages and is the base
/// for a relative `workspace`.
pub fn parse(text: &str, origin: &Path) -> Result<Workflow, SpecError> {
    let ctx = Ctx { text, origin };
    let raw: RawWorkflow = toml::from_str(text).map_err(|e| ctx.toml_error(&e))?;
    ctx.validate(raw)
}

/// Parses a size like systemd does: plain bytes (`"2048"`) or a number with a
/// base-1024 suffix `K`, `M`, `G` or `T` (`"512M"`, `"1.5G"`). Zero is allowed
/// here; callers decide whether it makes sense.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {s:?}: expected bytes or a number with K, M, G or T");
    let t = s.trim();
    let (number, multiplier): (&str, u128) = match t.char_indices().next_back() {
        None => return Err(bad()),
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(bad()),
            };
            (&t[..i], m)
        }
        Some(_) => (t, 1),
    };
    let (int_part, frac_part) = match number.split_once('.') {
        // A fraction of a byte is meaningless, so decimals need a suffix.
        Some(_) if multiplier == 1 => return Err(bad()),
        Some((i, f)) => (i, Some(f)),
        None => (number, None),
    };
    let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int_part) || frac_part.is_some_and(|f| !all_digits(f)) {
        return Err(bad());
    }
    let too_large = || format!("invalid size {s:?}: too large");
    let int: u128 = int_part.parse().map_err(|_| too_large())?;
    let mut bytes = int.checked_mul(multiplier).ok_or_else(too_large)?;
    if let Some(frac) = frac_part {
        // Exact integer arithmetic (no floats), floored to whole bytes. 18 digits
        // keep 10^digits * 2^40 well inside u128.
        if frac.len() > 18 {
            return Err(format!("invalid size {s:?}: too many decimal places"));
        }
        let frac_value: u128 = frac.parse().map_err(|_| bad())?;
        let scale = 10u128.pow(frac.len() as u32);
        bytes += frac_value * multiplier / scale;
    }
    u64::try_from(bytes).map_err(|_| too_large())
}

/// Parses a humantime duration (`"90s"`, `"5m"`, `"1h 30m"`). Zero is allowed
/// here; callers decide whether it makes sense.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("invalid duration {s:?}: {e} (expected e.g. \"90s\", \"5m\" or \"1h 30m\")")
    })
}

// ---------------------------------------------------------------------------
// Serde helper: durations stored as humantime strings ("1h 30m"), which are
// readable in the database and, unlike whole milliseconds, round-trip exactly.
// ---------------------------------------------------------------------------

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_some(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Text(#[serde(with = "super::duration")] Duration);
        Ok(Option::<Text>::deserialize(d)?.map(|Text(d)| d))
    }
}

/// A duration as its humantime text ("1m 30s"), exact to the nanosecond.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        humantime::parse_duration(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------
// Raw, file-shaped structs. Field names are the TOML keys, so serde's
// "unknown field ... expected one of ..." lists exactly the allowed keys.
// Required keys are `Option` so we can report them with our own span and text.
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkflow {
    name: Option<Spanned<String>>,
    workspace: Option<Spanned<String>>,
    limits: Option<RawLimits>,
    protected: Option<bool>,
    kill: Option<RawKill>,
    retry: Option<RawRetry>,
    requires: Option<RawRequires>,
    step: Option<Spanned<Vec<Spanned<RawStep>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_attempts: Option<Spanned<i64>>,
    initial: Option<Spanned<String>>,
    // serde's f64 also accepts TOML integers, so `factor = 2` works.
    factor: Option<Spanned<f64>>,
    max: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    retry_on: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequires {
    commands: Option<Vec<Spanned<String>>>,
    files: Option<Vec<Spanned<String>>>,
    env: Option<Vec<Spanned<String>>>,
    runs: Option<Vec<Spanned<String>>>,
    git: Option<Spanned<RawGit>>,
}

/// `git = "clean"` or `git = { clean = true, branch = "main", commit = "abc123" }`.
enum RawGit {
    Word(String),
    Table(RawGitTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGitTable {
    clean: Option<bool>,
    branch: Option<Spanned<String>>,
    commit: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for RawGit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawGit;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"clean\" or a table such as { clean = true, branch = \"main\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawGit, E> {
                Ok(RawGit::Word(v.to_owned()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawGit, A::Error> {
                RawGitTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawGit::Table)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKill {
    grace: Option<Spanned<String>>,
    critical_max: Option<Spanned<String>>,
    budget: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory_max: Option<Spanned<SizeValue>>,
    cpu_quota: Option<Spanned<PercentValue>>,
    tasks_max: Option<Spanned<i64>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: Option<Spanned<String>>,
    run: Option<Spanned<RawRun>>,
    env: Option<BTreeMap<Spanned<String>, String>>,
    timeout: Option<Spanned<String>>,
    critical: Option<bool>,
    checkpoint: Option<bool>,
    agent: Option<Spanned<String>>,
    on_kill: Option<Vec<Spanned<String>>>,
    retry: Option<RawRetry>,
    requires: Option<RawRequires>,
    stall_after: Option<Spanned<String>>,
}

/// `run` is either an argv array or a shell string; a hand-written visitor gives
/// a clearer type error than `#[serde(untagged)]` ("did not match any variant").
enum RawRun {
    Argv(Vec<Spanned<String>>),
    Shell(String),
}

impl<'de> Deserialize<'de> for RawRun {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRun;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an argv array of strings or a shell command string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawRun, E> {
                Ok(RawRun::Shell(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawRun, A::Error> {
                let mut argv = Vec::new();
                while let Some(arg) = seq.next_element::<Spanned<String>>()? {
                    argv.push(arg);
                }
                Ok(RawRun::Argv(argv))
            }
        }
        d.deserialize_any(V)
    }
}

/// A TOML integer or string, kept raw so validation can report it with its span.
enum IntOrStr {
    Int(i64),
    Str(String),
}

fn deserialize_int_or_str<'de, D: Deserializer<'de>>(
    d: D,
    expecting: &'static str,
) -> Result<IntOrStr, D::Error> {
    struct V(&'static str);
    impl Visitor<'_> for V {
        type Value = IntOrStr;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrStr, E> {
            Ok(IntOrStr::Int(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrStr, E> {
            i64::try_from(v)
                .map(IntOrStr::Int)
                .map_err(|_| E::custom("integer too large"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrStr, E> {
            Ok(IntOrStr::Str(v.to_owned()))
        }
    }
    d.deserialize_any(V(expecting))
}

/// `memory_max`: `"512M"` or a plain integer of bytes.
struct SizeValue(IntOrStr);

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_int_or_str(d, "a size such as \"512M\" or an integer number of bytes")
            .map(SizeValue)
    }
}

/// `cpu_quota`: `"150%"`. Integers are accepted by the parser only to be
/// rejected with a hint, since a bare `150` is ambiguous.
struct PercentValue(IntOrStr);

impl<'de> Deserialize<'de> for PercentValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_int_or_str(d, "a percentage string such as \"150%\"").map(PercentValue)
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

const AGENTS: &[AgentKind] = &[AgentKind::ClaudeCode];

struct Ctx<'a> {
    text: &'a str,
    origin: &'a Path,
}

impl Ctx<'_> {
    /// An error at byte offset `at` of the text.
    fn err_at(&self, at: usize, reason: impl Into<String>) -> SpecError {
        let (line, column) = line_col(self.text, at);
        SpecError::Invalid {
            file: self.origin.to_path_buf(),
            line,
            column,
            reason: reason.into(),
        }
    }

    fn err(&self, span: &Range<usize>, reason: impl Into<String>) -> SpecError {
        self.err_at(span.start, reason)
    }

    /// Rewords toml/serde errors for workflow authors and pins them to a position.
    fn toml_error(&self, e: &toml::de::Error) -> SpecError {
        let span = e.span().unwrap_or(0..0);
        // toml only reveals the key path (`limits.tasks_max`) in its Display,
        // and only when it has no input to render a snippet from.
        let mut bare = e.clone();
        bare.set_input(None);
        let rendered = bare.to_string();
        let key_path = rendered
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("in `")?.strip_suffix('`'))
            .map(str::to_owned);

        let message = e.message().replace('\n', " ");
        let reason = if let Some(rest) = message.strip_prefix("unknown field ") {
            // serde: "unknown field `x`, expected one of `a`, `b`"
            let (key, allowed) = rest.split_once(", expected ").unwrap_or((rest, ""));
            let allowed = allowed.strip_prefix("one of ").unwrap_or(allowed);
            let place = match key_path.as_deref() {
                None => "at the top level".to_owned(),
                Some("limits") => "in [limits]".to_owned(),
                Some("kill") => "in [kill]".to_owned(),
                Some("retry") => "in [retry]".to_owned(),
                Some("requires") => "in [requires]".to_owned(),
                Some("step.retry") => "in [step.retry]".to_owned(),
                Some("step.requires") => "in [step.requires]".to_owned(),
                Some("step") => "in [[step]]".to_owned(),
                Some(other) => format!("in `{other}`"),
            };
            format!("unknown key {key} {place}; allowed keys: {allowed}")
        } else {
            let message = message
                .replace("expected i64", "expected an integer")
                .replace("expected f64", "expected a number")
                .replace("expected a sequence", "expected an array")
                .replace("expected a map", "expected a table");
            let message = if message == "duplicate key" {
                match self.text.get(span.clone()) {
                    Some(key) if !key.is_empty() => format!("duplicate key `{key}`"),
                    _ => message,
                }
            } else {
                message
            };
            match key_path {
                Some(path) => format!("`{path}`: {message}"),
                None => message,
            }
        };
        self.err_at(span.start, reason)
    }

    fn validate(&self, raw: RawWorkflow) -> Result<Workflow, SpecError> {
        let name = match raw.name {
            Some(n) => {
                self.check_workflow_name(&n)?;
                n.into_inner()
            }
            None => return Err(self.err_at(0, "missing required key `name`")),
        };

        let workspace = match raw.workspace {
            Some(ws) => Some(self.resolve_workspace(&ws)?),
            None => None,
        };

        let limits = match raw.limits {
            Some(l) => self.validate_limits(l)?,
            None => Limits::default(),
        };

        let kill = match raw.kill {
            Some(k) => self.validate_kill(k)?,
            None => KillPolicy::default(),
        };

        let retry = match raw.retry {
            Some(r) => self.validate_retry(&RetryPolicy::default(), r, "retry", "")?,
            None => RetryPolicy::default(),
        };

        let requires = match raw.requires {
            Some(r) => self.validate_requires(r, "requires", "")?,
            None => Requirements::default(),
        };

        let Some(raw_steps) = raw.step else {
            return Err(self.err_at(
                0,
                "workflow has no steps: add at least one [[step]] with `name` and `run`",
            ));
        };
        if raw_steps.get_ref().is_empty() {
            return Err(self.err(
                &raw_steps.span(),
                "workflow has no steps: add at least one [[step]] with `name` and `run`",
            ));
        }
        let mut steps = Vec::with_capacity(raw_steps.get_ref().len());
        // name -> span of its first definition, for the duplicate message.
        let mut seen: BTreeMap<String, Range<usize>> = BTreeMap::new();
        for (index, raw_step) in raw_steps.into_inner().into_iter().enumerate() {
            let step = self.validate_step(index, raw_step, &retry, &mut seen)?;
            steps.push(step);
        }

        Ok(Workflow {
            name,
            workspace,
            limits,
            protected: raw.protected.unwrap_or(false),
            kill,
            retry,
            requires,
            steps,
        })
    }

    /// Lays the keys of `raw` over `base`. `key` is the table's path for messages
    /// (`retry`, `step.retry`) and `who` prefixes them (`step "s": `).
    fn validate_retry(
        &self,
        base: &RetryPolicy,
        raw: RawRetry,
        key: &str,
        who: &str,
    ) -> Result<RetryPolicy, SpecError> {
        let mut policy = base.clone();
        if let Some(n) = &raw.max_attempts {
            policy.max_attempts = match u32::try_from(*n.get_ref()) {
                Ok(v) if v >= 1 => v,
                _ => {
                    return Err(self.err(
                        &n.span(),
                        format!(
                            "{who}`{key}.max_attempts` must be between 1 and {}, got {}",
                            u32::MAX,
                            n.get_ref()
                        ),
                    ));
                }
            };
        }
        for (value, slot) in [
            (&raw.initial, &mut policy.initial),
            (&raw.max, &mut policy.max),
            (&raw.jitter, &mut policy.jitter),
        ] {
            if let Some(v) = value {
                *slot = parse_duration(v.get_ref()).map_err(|m| self.err(&v.span(), m))?;
            }
        }
        if let Some(f) = &raw.factor {
            let factor = *f.get_ref();
            // `>=` is false for NaN, which TOML can spell.
            if !(factor >= 1.0 && factor.is_finite()) {
                return Err(self.err(
                    &f.span(),
                    format!(
                        "{who}`{key}.factor` must be a finite number of at least 1.0, got {factor}"
                    ),
                ));
            }
            policy.factor = factor;
        }
        if let Some(names) = raw.retry_on {
            policy.retry_on.clear();
            for name in names {
                let class: FailureClass = name
                    .get_ref()
                    .parse()
                    .map_err(|e| self.err(&name.span(), format!("{who}`{key}.retry_on`: {e}")))?;
                if !policy.retry_on.contains(&class) {
                    policy.retry_on.push(class);
                }
            }
        }
        if policy.max < policy.initial {
            // `base` was valid, so one of these two keys is set here.
            let at = raw
                .max
                .as_ref()
                .or(raw.initial.as_ref())
                .map_or(0, |v| v.span().start);
            let inherited = if who.is_empty() {
                ""
            } else {
                " (keys the step does not set come from [retry] or the defaults)"
            };
            return Err(self.err_at(
                at,
                format!(
                    "{who}`{key}.max` ({}) must be at least `{key}.initial` ({}){inherited}",
                    humantime::format_duration(policy.max),
                    humantime::format_duration(policy.initial),
                ),
            ));
        }
        Ok(policy)
    }

    /// `key` is the table's path for messages (`requires`, `step.requires`) and
    /// `who` prefixes them (`step "s": `).
    fn validate_requires(
        &self,
        raw: RawRequires,
        key: &str,
        who: &str,
    ) -> Result<Requirements, SpecError> {
        // Each list's entries, checked for blanks and then by `check`.
        let list = |entries: Option<Vec<Spanned<String>>>,
                    field: &str,
                    check: &dyn Fn(&str) -> Option<String>|
         -> Result<Vec<String>, SpecError> {
            let mut out = Vec::new();
            for entry in entries.unwrap_or_default() {
                let problem = if entry.get_ref().trim().is_empty() {
                    Some("entries must not be empty".to_owned())
                } else {
                    check(entry.get_ref())
                };
                if let Some(problem) = problem {
                    return Err(self.err(&entry.span(), format!("{who}`{key}.{field}`: {problem}")));
                }
                out.push(entry.into_inner());
            }
            Ok(out)
        };
        let commands = list(raw.commands, "commands", &|c| {
            // A relative path would depend on the directory the check runs in.
            (c.contains('/') && !Path::new(c).is_absolute()).then(|| {
                format!("{c:?} must be a command name (looked up on PATH) or an absolute path")
            })
        })?;
        let files = list(raw.files, "files", &|_| None)?;
        let env = list(raw.env, "env", &|e| {
            (!valid_env_name(e)).then(|| {
                format!("invalid environment variable name {e:?}: expected [A-Za-z_][A-Za-z0-9_]*")
            })
        })?;
        let runs = list(raw.runs, "runs", &|r| {
            (!valid_workflow_name(r)).then(|| {
                format!("invalid workflow name {r:?}: use only letters, digits, '_', '-' and '.'")
            })
        })?;
        let git = match raw.git {
            None => None,
            Some(g) => Some(self.validate_git(g, key, who)?),
        };
        Ok(Requirements {
            commands,
            files,
            env,
            runs,
            git,
        })
    }

    fn validate_git(
        &self,
        raw: Spanned<RawGit>,
        key: &str,
        who: &str,
    ) -> Result<GitRequirement, SpecError> {
        let span = raw.span();
        match raw.into_inner() {
            RawGit::Word(word) if word == "clean" => Ok(GitRequirement {
                clean: true,
                ..GitRequirement::default()
            }),
            RawGit::Word(word) => Err(self.err(
                &span,
                format!(
                    "{who}`{key}.git` must be \"clean\" or a table such as {{ clean = true, branch = \"main\", commit = \"abc123\" }}, got {word:?}"
                ),
            )),
            RawGit::Table(t) => {
                let branch = match t.branch {
                    Some(b) if b.get_ref().trim().is_empty() => {
                        return Err(self.err(
                            &b.span(),
                            format!("{who}`{key}.git.branch` must not be empty"),
                        ));
                    }
                    b => b.map(Spanned::into_inner),
                };
                let commit = match t.commit {
                    None => None,
                    Some(c) => {
                        let hex = c.get_ref();
                        if !(4..=40).contains(&hex.len())
                            || !hex.bytes().all(|b| b.is_ascii_hexdigit())
                        {
                            return Err(self.err(
                                &c.span(),
                                format!(
                                    "{who}`{key}.git.commit` must be 4 to 40 hexadecimal digits, got {hex:?}"
                                ),
                            ));
                        }
                        // git prints ids in lowercase; comparing that way keeps `ABC1` working.
                        Some(hex.to_ascii_lowercase())
                    }
                };
                let clean = t.clean.unwrap_or(false);
                if !clean && branch.is_none() && commit.is_none() {
                    return Err(self.err(
                        &span,
                        format!(
                            "{who}`{key}.git` requires nothing: set `clean = true`, `branch` or `commit`"
                        ),
                    ));
                }
                Ok(GitRequirement {
                    clean,
                    branch,
                    commit,
                })
            }
        }
    }

    fn validate_kill(&self, raw: RawKill) -> Result<KillPolicy, SpecError> {
        let mut policy = KillPolicy::default();
        for (value, key, slot) in [
            (&raw.grace, "kill.grace", &mut policy.grace),
            (
                &raw.critical_max,
                "kill.critical_max",
                &mut policy.critical_max,
            ),
            (&raw.budget, "kill.budget", &mut policy.budget),
        ] {
            if let Some(v) = value {
                *slot = self.positive_duration(v, key)?;
            }
        }
        // The phases before SIGKILL must leave it time within the budget.
        if policy.critical_max + policy.grace >= policy.budget {
            let at = raw
                .budget
                .or(raw.grace)
                .or(raw.critical_max)
                .map_or(0, |v| v.span().start);
            return Err(self.err_at(
                at,
                format!(
                    "kill.critical_max ({}) + kill.grace ({}) must be less than kill.budget ({}), leaving time for SIGKILL",
                    humantime::format_duration(policy.critical_max),
                    humantime::format_duration(policy.grace),
                    humantime::format_duration(policy.budget)
                ),
            ));
        }
        Ok(policy)
    }

    fn check_workflow_name(&self, n: &Spanned<String>) -> Result<(), SpecError> {
        let value = n.get_ref();
        if value.is_empty() {
            return Err(self.err(&n.span(), "workflow `name` must not be empty"));
        }
        if !valid_workflow_name(value) {
            return Err(self.err(
                &n.span(),
                format!(
                    "invalid workflow name {value:?}: use only letters, digits, '_', '-' and '.'"
                ),
            ));
        }
        Ok(())
    }

    fn resolve_workspace(&self, ws: &Spanned<String>) -> Result<PathBuf, SpecError> {
        let raw = ws.get_ref();
        if raw.trim().is_empty() {
            return Err(self.err(&ws.span(), "`workspace` must not be empty"));
        }
        let given = Path::new(raw);
        let joined = if given.is_absolute() {
            given.to_path_buf()
        } else {
            // Relative to the workflow file, not to wherever drover was started.
            self.origin
                .parent()
                .unwrap_or_else(|| Path::new(""))
                .join(given)
        };
        // `absolute` is lexical: `..` is kept because resolving it without the
        // filesystem is wrong across symlinks; the engine canonicalises later.
        let abs = std::path::absolute(&joined).map_err(|e| {
            self.err(
                &ws.span(),
                format!("cannot make workspace {raw:?} absolute: {e}"),
            )
        })?;
        // The workflow is stored as JSON, which cannot hold non-UTF-8 paths.
        if abs.to_str().is_none() {
            return Err(self.err(
                &ws.span(),
                format!(
                    "workspace resolves to a path that is not valid UTF-8: {}",
                    abs.display()
                ),
            ));
        }
        Ok(abs)
    }

    fn validate_limits(&self, raw: RawLimits) -> Result<Limits, SpecError> {
        let memory_max = match raw.memory_max {
            None => None,
            Some(v) => {
                let span = v.span();
                let bytes = match &v.get_ref().0 {
                    IntOrStr::Int(n) => u64::try_from(*n).map_err(|_| {
                        self.err(&span, format!("`memory_max` must not be negative, got {n}"))
                    })?,
                    IntOrStr::Str(s) => parse_size(s).map_err(|m| self.err(&span, m))?,
                };
                if bytes == 0 {
                    return Err(self.err(&span, "`memory_max` must be greater than 0"));
                }
                Some(bytes)
            }
        };

        let cpu_quota_percent = match raw.cpu_quota {
            None => None,
            Some(v) => {
                let span = v.span();
                match &v.get_ref().0 {
                    IntOrStr::Int(n) => {
                        return Err(self.err(
                            &span,
                            format!("`cpu_quota` must be a string such as \"{n}%\", got {n}"),
                        ));
                    }
                    IntOrStr::Str(s) => Some(parse_percent(s).map_err(|m| self.err(&span, m))?),
                }
            }
        };

        let tasks_max = match raw.tasks_max {
            None => None,
            Some(v) => {
                let n = *v.get_ref();
                match u64::try_from(n) {
                    Ok(n) if n >= 1 => Some(n),
                    _ => {
                        return Err(self.err(
                            &v.span(),
                            format!("`tasks_max` must be at least 1, got {n}"),
                        ));
                    }
                }
            }
        };

        let timeout = match raw.timeout {
            None => None,
            Some(t) => Some(self.positive_duration(&t, "limits.timeout")?),
        };

        Ok(Limits {
            memory_max,
            cpu_quota_percent,
            tasks_max,
            timeout,
        })
    }

    fn positive_duration(&self, t: &Spanned<String>, key: &str) -> Result<Duration, SpecError> {
        let d = parse_duration(t.get_ref()).map_err(|m| self.err(&t.span(), m))?;
        if d.is_zero() {
            return Err(self.err(
                &t.span(),
                format!("`{key}` must be greater than 0, got {:?}", t.get_ref()),
            ));
        }
        Ok(d)
    }

    fn validate_step(
        &self,
        index: usize,
        raw: Spanned<RawStep>,
        workflow_retry: &RetryPolicy,
        seen: &mut BTreeMap<String, Range<usize>>,
    ) -> Result<Step, SpecError> {
        // The step's own span is its `[[step]]` header: the best place to point
        // at when a required key is missing.
        let header = raw.span();
        let raw = raw.into_inner();
        let ordinal = index + 1;

        let Some(name) = raw.name else {
            return Err(self.err(
                &header,
                format!("step #{ordinal} is missing required key `name`"),
            ));
        };
        let name_span = name.span();
        let name = name.into_inner();
        if !valid_step_name(&name) {
            return Err(self.err(
                &name_span,
                format!(
                    "invalid step name {name:?}: use 1 to 64 characters of letters, digits, '_' and '-'"
                ),
            ));
        }
        if let Some(first) = seen.get(&name) {
            let (first_line, _) = line_col(self.text, first.start);
            return Err(self.err(
                &name_span,
                format!("duplicate step name {name:?} (first defined at line {first_line})"),
            ));
        }
        seen.insert(name.clone(), name_span);

        let Some(run) = raw.run else {
            return Err(self.err(
                &header,
                format!("step {name:?} is missing required key `run`"),
            ));
        };
        let run_span = run.span();
        // Where `run` passes a session option, rejected below for agent steps.
        let session_option_at: Option<(Range<usize>, &str)>;
        let run = match run.into_inner() {
            RawRun::Shell(script) => {
                if script.trim().is_empty() {
                    return Err(self.err(
                        &run_span,
                        format!("step {name:?}: `run` must not be a blank string"),
                    ));
                }
                // Words split at blanks, quotes and shell operators: enough to spot
                // an option without a full shell parser.
                session_option_at = script
                    .split(|c: char| c.is_whitespace() || "'\"`;&|()<>".contains(c))
                    .find_map(session_option)
                    .map(|opt| (run_span.clone(), opt));
                StepCommand::Shell(script)
            }
            RawRun::Argv(argv) => {
                let Some(program) = argv.first() else {
                    return Err(self.err(
                        &run_span,
                        format!("step {name:?}: `run` must not be an empty array"),
                    ));
                };
                if program.get_ref().is_empty() {
                    return Err(self.err(
                        &program.span(),
                        format!(
                            "step {name:?}: the program (first element of `run`) must not be empty"
                        ),
                    ));
                }
                session_option_at = argv
                    .iter()
                    .find_map(|arg| session_option(arg.get_ref()).map(|opt| (arg.span(), opt)));
                StepCommand::Argv(argv.into_iter().map(Spanned::into_inner).collect())
            }
        };

        let mut env = BTreeMap::new();
        for (key, value) in raw.env.unwrap_or_default() {
            if !valid_env_name(key.get_ref()) {
                return Err(self.err(
                    &key.span(),
                    format!(
                        "step {name:?}: invalid environment variable name {:?}: expected [A-Za-z_][A-Za-z0-9_]*",
                        key.get_ref()
                    ),
                ));
            }
            env.insert(key.into_inner(), value);
        }

        let timeout = match raw.timeout {
            None => None,
            Some(t) => Some(self.positive_duration(&t, "step.timeout")?),
        };

        let agent = match raw.agent {
            None => None,
            Some(a) => {
                let found = AGENTS.iter().copied().find(|k| k.as_str() == a.get_ref());
                match found {
                    Some(kind) => Some(kind),
                    None => {
                        let allowed: Vec<String> =
                            AGENTS.iter().map(|k| format!("{:?}", k.as_str())).collect();
                        return Err(self.err(
                            &a.span(),
                            format!(
                                "step {name:?}: unknown agent {:?}: supported agents: {}",
                                a.get_ref(),
                                allowed.join(", ")
                            ),
                        ));
                    }
                }
            }
        };

        if let (Some(kind), Some((span, opt))) = (agent, session_option_at) {
            return Err(self.err(
                &span,
                format!(
                    "step {name:?}: `run` must not pass {opt}: drover gives {} steps --session-id or --resume itself",
                    kind.as_str()
                ),
            ));
        }

        let who = format!("step {name:?}: ");
        let retry = match raw.retry {
            Some(r) => self.validate_retry(workflow_retry, r, "step.retry", &who)?,
            None => workflow_retry.clone(),
        };
        let requires = match raw.requires {
            Some(r) => self.validate_requires(r, "step.requires", &who)?,
            None => Requirements::default(),
        };
        let stall_after = match raw.stall_after {
            None => None,
            Some(t) => Some(self.positive_duration(&t, "step.stall_after")?),
        };

        let mut on_kill = Vec::new();
        for command in raw.on_kill.unwrap_or_default() {
            if command.get_ref().trim().is_empty() {
                return Err(self.err(
                    &command.span(),
                    format!("step {name:?}: `on_kill` commands must not be blank"),
                ));
            }
            on_kill.push(command.into_inner());
        }

        Ok(Step {
            name,
            run,
            env,
            timeout,
            critical: raw.critical.unwrap_or(false),
            checkpoint: raw.checkpoint.unwrap_or(false),
            agent,
            on_kill,
            retry,
            requires,
            stall_after,
        })
    }
}

/// `"150%"` -> 150. Whole percents only: that is what we store.
fn parse_percent(s: &str) -> Result<u32, String> {
    let bad = || {
        format!(
            "invalid CPU quota {s:?}: expected a whole percentage of one CPU such as \"50%\" or \"200%\""
        )
    };
    let digits = s.trim().strip_suffix('%').ok_or_else(bad)?.trim_end();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let percent: u32 = digits
        .parse()
        .map_err(|_| format!("invalid CPU quota {s:?}: too large"))?;
    if percent == 0 {
        return Err(format!("invalid CPU quota {s:?}: must be greater than 0%"));
    }
    Ok(percent)
}

fn valid_step_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn valid_workflow_name(name: &str) -> bool {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    // "." and ".." would be dangerous if the name ever becomes a path component.
    ok && name != "." && name != ".."
}

/// Claude Code options that pick a session; drover passes its own, so a step's
/// `run` may not. Returns the option `word` spells, also as `--opt=value`.
fn session_option(word: &str) -> Option<&'static str> {
    ["--session-id", "--resume", "--continue", "--fork-session"]
        .into_iter()
        .find(|opt| {
            word.strip_prefix(opt)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('='))
        })
}

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Byte offset -> 1-based (line, column); columns count characters so they match
/// what an editor shows. Offsets past the end clamp to the end of the text.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "/srv/flows/fix.toml";

    fn ok(text: &str) -> Workflow {
        match parse(text, Path::new(ORIGIN)) {
            Ok(w) => w,
            Err(e) => panic!("expected a valid workflow, got: {e}"),
        }
    }

    /// Parses `text` (as `fix.toml`), expects a rejection, returns (line, message).
    fn rejected(text: &str) -> (usize, String) {
        match parse(text, Path::new("fix.toml")) {
            Ok(w) => panic!("expected an error, got {w:?}"),
            Err(e) => {
                let line = e.line().expect("parse errors always carry a line");
                let msg = e.to_string();
                assert!(
                    msg.starts_with(&format!("fix.toml:{line}:")),
                    "message must start with FILE:LINE: {msg}"
                );
                assert!(!msg.contains('\n'), "message must be one line: {msg:?}");
                (line, msg)
            }
        }
    }

    fn assert_rejected(text: &str, line: usize, needles: &[&str]) {
        let (got_line, msg) = rejected(text);
        assert_eq!(got_line, line, "wrong line in: {msg}");
        for needle in needles {
            assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
        }
    }

    const STEP: &str = "[[step]]\nname = \"s\"\nrun = \"true\"\n";

    const FULL: &str = r#"name = "fix-bug.v2"
workspace = "../repo"

[limits]
memory_max = "512M"
cpu_quota = "150%"
tasks_max = 64
timeout = "1h 30m"

[[step]]
name = "build"
run = ["cargo", "build", "--release"]
env = { RUST_LOG = "debug", _X1 = "" }
timeout = "90s"
critical = true

[[step]]
name = "agent_fix-1"
run = "cargo test 2>&1 | tee log"
checkpoint = true
agent = "claude-code"

[[step]]
name = "defaults"
run = ["true"]
"#;

    #[test]
    fn full_file_parses_to_expected_values() {
        let w = ok(FULL);
        assert_eq!(w.name, "fix-bug.v2");
        // Relative workspace resolves against the workflow file's directory.
        assert_eq!(w.workspace, Some(PathBuf::from("/srv/flows/../repo")));
        assert_eq!(
            w.limits,
            Limits {
                memory_max: Some(512 * 1024 * 1024),
                cpu_quota_percent: Some(150),
                tasks_max: Some(64),
                timeout: Some(Duration::from_secs(90 * 60)),
            }
        );
        assert_eq!(w.steps.len(), 3);

        let build = &w.steps[0];
        assert_eq!(build.name, "build");
        assert_eq!(
            build.run,
            StepCommand::Argv(vec!["cargo".into(), "build".into(), "--release".into()])
        );
        assert_eq!(build.env.get("RUST_LOG").map(String::as_str), Some("debug"));
        assert_eq!(build.env.get("_X1").map(String::as_str), Some(""));
        assert_eq!(build.timeout, Some(Duration::from_secs(90)));
        assert!(build.critical);
        assert!(!build.checkpoint);
        assert_eq!(build.agent, None);

        let fix = &w.steps[1];
        assert_eq!(fix.name, "agent_fix-1");
        assert_eq!(
            fix.run,
            StepCommand::Shell("cargo test 2>&1 | tee log".into())
        );
        assert!(fix.checkpoint);
        assert!(!fix.critical);
        assert_eq!(fix.agent, Some(AgentKind::ClaudeCode));

        let defaults = &w.steps[2];
        assert!(defaults.env.is_empty());
        assert_eq!(defaults.timeout, None);
        assert!(!defaults.critical && !defaults.checkpoint);
    }

    #[test]
    fn minimal_file_has_default_limits_and_no_workspace() {
        let w = ok(&format!("name = \"m\"\n{STEP}"));
        assert_eq!(w.limits, Limits::default());
        assert_eq!(w.workspace, None);
        assert_eq!(w.steps[0].run, StepCommand::Shell("true".into()));
    }

    #[test]
    fn workspace_absolute_is_kept_and_relative_origin_becomes_absolute() {
        let w = ok(&format!("name = \"m\"\nworkspace = \"/abs/repo\"\n{STEP}"));
        assert_eq!(w.workspace, Some(PathBuf::from("/abs/repo")));

        // A bare file name as origin: resolved against the current directory.
        let w = parse(
            &format!("name = \"m\"\nworkspace = \"repo\"\n{STEP}"),
            Path::new("fix.toml"),
        )
        .expect("valid");
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(w.workspace, Some(cwd.join("repo")));
        assert!(w.workspace.as_deref().is_some_and(Path::is_absolute));
    }

    #[test]
    fn step_command_argv() {
        assert_eq!(
            StepCommand::Shell("echo hi".into()).argv(),
            vec!["/bin/sh", "-c", "echo hi"]
        );
        assert_eq!(
            StepCommand::Argv(vec!["git".into(), "status".into()]).argv(),
            vec!["git", "status"]
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size(" 2k "), Ok(2048));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in [
            "12Q", "", "M", "-5", "+5", "1.5", "5KB", "1.G", ".5G", "5 M", "0x10",
        ] {
            let e = parse_size(bad).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        assert!(
            parse_size("99999999999T")
                .expect_err("overflow")
                .contains("too large")
        );

        // In a file: string with suffix and plain TOML integer.
        for (value, bytes) in [("\"1G\"", 1u64 << 30), ("2048", 2048), ("\"1T\"", 1 << 40)] {
            let w = ok(&format!(
                "name = \"m\"\n[limits]\nmemory_max = {value}\n{STEP}"
            ));
            assert_eq!(w.limits.memory_max, Some(bytes), "{value}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["5x", "", "90", "soon"] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.starts_with(&format!("invalid duration {bad:?}")), "{e}");
        }
    }

    #[test]
    fn percents() {
        assert_eq!(parse_percent("50%"), Ok(50));
        assert_eq!(parse_percent("200%"), Ok(200));
        assert_eq!(parse_percent(" 7 %"), Ok(7));
        for bad in ["150", "0%", "-5%", "1.5%", "%", "abc%", "99999999999%"] {
            assert!(parse_percent(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn display_is_file_line_col_reason() {
        let text = format!("name = \"m\"\n\n[limits]\nmemory_max = \"12Q\"\n{STEP}");
        let e = parse(&text, Path::new("fix.toml")).expect_err("bad size");
        assert_eq!(
            e.to_string(),
            "fix.toml:4:14: invalid size \"12Q\": expected bytes or a number with K, M, G or T"
        );
        assert_eq!(e.line(), Some(4));
        assert_eq!(e.column(), Some(14));
    }

    #[test]
    fn rejects_unknown_keys_naming_key_and_allowed_keys() {
        assert_rejected(
            &format!("name = \"m\"\nbogus = 1\n{STEP}"),
            2,
            &[
                "`bogus`",
                "top level",
                "`name`",
                "`workspace`",
                "`limits`",
                "`step`",
            ],
        );
        assert_rejected(
            &format!("name = \"m\"\n[limits]\ntasks_max = 3\nmemroy_max = \"1G\"\n{STEP}"),
            4,
            &[
                "`memroy_max`",
                "[limits]",
                "`memory_max`",
                "`cpu_quota`",
                "`timeout`",
            ],
        );
        assert_rejected(
            "name = \"m\"\n[[step]]\nname = \"s\"\nrun = \"true\"\ncommand = \"x\"\n",
            5,
            &[
                "`command`",
                "[[step]]",
                "`run`",
                "`env`",
                "`agent`",
                "`checkpoint`",
            ],
        );
    }

    #[test]
    fn rejects_wrong_types() {
        assert_rejected(
            &format!("name = 5\n{STEP}"),
            1,
            &["`name`", "expected a string"],
        );
        assert_rejected(
            "name = \"m\"\n[[step]]\nname = \"s\"\nrun = \"true\"\ncritical = \"yes\"\n",
            5,
            &["`step.critical`", "expected a boolean"],
        );
        assert_rejected(
            &format!("name = \"m\"\n[limits]\ntasks_max = \"64\"\n{STEP}"),
            3,
            &["`limits.tasks_max`", "expected an integer"],
        );
        assert_rejected(
            "name = \"m\"\n[[step]]\nname = \"s\"\nrun = 5\n",
            4,
            &[
                "`step.run`",
                "argv array of strings or a shell command string",
            ],
        );
        assert_rejected(
            "name = \"m\"\n[[step]]\nname = \"s\"\nrun = [\"ls\", 1]\n",
            4,
            &["`step.run`", "expected a string"],
        );
        assert_rejected(
            "name = \"m\"\n[[step]]\nname = \"s\"\nrun = \"x\"\nenv = { A = 1 }\n",
            5,
            &["`step.env.A`", "expected a string"],
        );
        assert_rejected(
            &format!("name = \"m\"\n[limits]\nmemory_max = true\n{STEP}"),
            3,
            &["`limits.memory_max`", "a size such as"],
        );
        assert_rejected(
            "name = \"m\"\nstep = 3\n",
            2,
            &["`step`", "expected an array"],
        );
        assert_rejected(
            &format!("name = \"m\"\nlimits = 3\n{STEP}"),
            2,
            &["`limits`", "invalid type"],
        );
    }

    #[test]
    fn rejects_duplicate_step_names_with_first_line() {
        let text = "name = \"m\"\n\n[[step]]\nname = \"build\"\nrun = \"a\"\n\n[[step]]\nname = \"build\"\nrun = \"b\"\n";
        let (line, msg) = rejected(text);
        assert_eq!(line, 8);
        assert!(
            msg.ends_with("duplicate step name \"build\" (first defined at line 4)"),
            "{msg}"
        );
        assert!(msg.starts_with("fix.toml:8:8:"), "{msg}");
    }

    #[test]
    fn rejects_empty_run() {
        assert_rejected(
            "name = \"m\"\n[[step]]\nname = \"s\"\nrun = []\n",
            4,
            &["\"s\"", "`run` must not be an empty array"],
        );
        assert_rejected(
            "name = \"m\"\n[[step]]\nname = \"s\"\nrun = \"  \\t \"\n",
            4,
            &["\"s\"", "`run` must not be a blank string"],
        );
        assert_rejected(
            "name = \"m\"\n[[step]]\nname = \"s\"\nrun = [\n  \"\",\n  \"x\",\n]\n",
            5,
            &["\"s\"", "first element of `run`", "must not be empty"],
        );
    }

    #[test]
    fn rejects_missing_required_keys() {
        assert_rejected(STEP, 1, &["missing required key `name`"]);
        assert_rejected(
            "name = \"m\"\n[[step]]\nname = \"a\"\nrun = \"x\"\n\n[[step]]\nrun = \"y\"\n",
            6,
            &["step #2", "missing required key `name`"],
        );
        assert_rejected(
            "name = \"m\"\n\n[[step]]\nname = \"a\"\n",
            3,
            &["step \"a\"", "missing required key `run`"],
        );
    }

    #[test]
    fn rejects_zero_steps() {
        assert_rejected("name = \"m\"\n", 1, &["no steps", "[[step]]"]);
        assert_rejected("name = \"m\"\n\nstep = []\n", 3, &["no steps"]);
        // An empty file lacks a name first; still a positioned error.
        assert_rejected("", 1, &["missing required key `name`"]);
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
    fn rejects_bad_step_fields() {
        let step =
            |extra: &str| format!("name = \"m\"\n[[step]]\nname = \"s\"\nrun = \"x\"\n{extra}\n");
        assert_rejected(
            &step("timeout = \"fast\""),
            5,
            &["invalid duration \"fast\""],
        );
        assert_rejected(
            &step("timeout = \"0ms\""),
            5,
            &["`step.timeout` must be greater than 0"],
        );
        assert_rejected(
            &step("agent = \"codex\""),
            5,
            &["unknown agent \"codex\"", "\"claude-code\""],
        );
        assert_rejected(
            &step("env = { \"1BAD\" = \"x\" }"),
            5,
            &["invalid environment variable name \"1BAD\""],
        );
        assert_rejected(
            &step("[step.env]\nOK = \"1\"\n\"A-B\" = \"2\""),
            7,
            &["invalid environment variable name \"A-B\""],
        );
    }

    #[test]
    fn rejects_bad_names() {
        assert_rejected(
            &format!("name = \"\"\n{STEP}"),
            1,
            &["`name` must not be empty"],
        );
        assert_rejected(
            &format!("name = \"fix bug\"\n{STEP}"),
            1,
            &["invalid workflow name \"fix bug\""],
        );
        assert_rejected(
            &format!("name = \"..\"\n{STEP}"),
            1,
            &["invalid workflow name \"..\""],
        );
        let step_named = |n: &str| format!("name = \"m\"\n[[step]]\nname = \"{n}\"\nrun = \"x\"\n");
        assert_rejected(&step_named(""), 3, &["invalid step name \"\""]);
        assert_rejected(
            &step_named("a.b"),
            3,
            &["invalid step name \"a.b\"", "1 to 64"],
        );
        assert_rejected(&step_named(&"x".repeat(65)), 3, &["invalid step name"]);
        assert_eq!(ok(&step_named(&"x".repeat(64))).steps[0].name.len(), 64);
    }

    #[test]
    fn rejects_bad_workspace_and_toml_syntax() {
        assert_rejected(
            &format!("name = \"m\"\nworkspace = \"\"\n{STEP}"),
            2,
            &["`workspace` must not be empty"],
        );
        assert_rejected(
            &format!("name = \"m\"\nname = \"n\"\n{STEP}"),
            2,
            &["duplicate key `name`"],
        );
        assert_rejected("name = \"m\"\n[[step]]\nname = \"s\"\nrun = \"x\n", 4, &[]);
        let (line, msg) = rejected("name = \"m\"\n\n[[step]\n");
        assert_eq!(line, 3, "{msg}");
    }

    #[test]
    fn positions_count_characters_and_clamp() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab\ncd", 99), (2, 3));
        // "é" is two bytes but one column.
        assert_eq!(line_col("é = 1", 2), (1, 2));
        // An offset inside a multi-byte char snaps back instead of panicking.
        assert_eq!(line_col("é", 1), (1, 1));

        let text = format!("# café ☕\nname = \"m\"\n[limits]\n\"é\" = 1\n{STEP}");
        let (line, msg) = rejected(&text);
        assert_eq!(line, 4);
        assert!(msg.starts_with("fix.toml:4:1:"), "{msg}");
    }

    #[test]
    fn json_round_trip_is_exact() {
        let mut w = ok(FULL);
        // Durations that whole milliseconds could not represent.
        w.steps[2].timeout = Some(Duration::new(400 * 86_400 + 7, 123_456_789));
        w.limits.timeout = Some(Duration::from_nanos(1));
        let json = serde_json::to_string(&w).expect("serialise");
        let back: Workflow = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, w);

        // The stored shape is plain JSON.
        let value: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(value["steps"][0]["run"][0], "cargo");
        assert_eq!(value["steps"][1]["run"], "cargo test 2>&1 | tee log");
        assert_eq!(value["steps"][1]["agent"], "claude-code");
        assert_eq!(value["steps"][0]["timeout"], "1m 30s");
        assert_eq!(value["limits"]["memory_max"], 512 * 1024 * 1024);
        assert_eq!(value["workspace"], "/srv/flows/../repo");
        assert!(value["steps"][2]["agent"].is_null());
    }

    #[test]
    fn duration_serde_round_trips_many_values() {
        // Cheap deterministic spread of values, from nanoseconds to years.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..500 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let d = Duration::new(x % (200 * 31_557_600), (x % 1_000_000_000) as u32);
            let limits = Limits {
                timeout: Some(d),
                ..Limits::default()
            };
            let json = serde_json::to_string(&limits).expect("serialise");
            let back: Limits = serde_json::from_str(&json).expect("deserialise");
            assert_eq!(back, limits, "{json}");
        }
    }

    #[test]
    fn load_reports_io_errors_with_path() {
        let missing = Path::new("/nonexistent/drover/flow.toml");
        let e = load(missing).expect_err("missing file");
        assert_eq!(e.line(), None);
        let msg = e.to_string();
        assert!(
            msg.starts_with("/nonexistent/drover/flow.toml: cannot read: "),
            "{msg}"
        );
    }

    #[test]
    fn load_reads_file_and_reports_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "name = \"m\"\n").expect("write");
        let e = load(&path).expect_err("no steps");
        assert_eq!(e.to_string().split(':').next(), path.to_str());
        assert_eq!(e.line(), Some(1));
    }

    #[test]
    fn example_files_parse() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");

        let hello = load(&examples.join("hello.toml")).expect("hello.toml is valid");
        assert_eq!(hello.name, "hello");
        assert_eq!(hello.workspace, None);
        assert_eq!(hello.steps.len(), 2);
        assert!(
            hello
                .steps
                .iter()
                .all(|s| matches!(s.run, StepCommand::Shell(_)))
        );

        let ws = load(&examples.join("workspace.toml")).expect("workspace.toml is valid");
        assert_eq!(ws.workspace, Some(examples.join("..")));
        assert_eq!(
            ws.steps[0].run,
            StepCommand::Argv(vec!["git".into(), "status".into(), "--short".into()])
        );
        assert_eq!(ws.steps.len(), 2);
        assert_eq!(ws.limits.memory_max, Some(256 << 20));

        let retry = load(&examples.join("retry.toml")).expect("retry.toml is valid");
        assert_eq!(retry.retry.max_attempts, 3);
        assert_eq!(retry.steps[0].retry, retry.retry);
        assert_eq!(retry.steps[0].stall_after, Some(Duration::from_secs(30)));
        assert_eq!(retry.steps[1].retry.max_attempts, 1);
        assert_eq!(retry.steps[1].retry.initial, Duration::from_secs(2));
        assert_eq!(retry.requires.files, ["hello.toml"]);
        assert_eq!(retry.steps[1].requires.commands, ["/bin/sh"]);
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
    }

    #[test]
    fn the_readme_workflow_example_parses() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("## Workflow files")
            .nth(1)
            .expect("a Workflow files section");
        let block = section
            .split("```toml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("a toml block");
        let w = ok(block);
        assert_eq!(w.name, "fix-bug");
        assert_eq!(w.steps[0].on_kill, ["rm -f /tmp/build.lock"]);
        // The [retry] shown is the default; the step's overrides one key.
        assert_eq!(w.retry, RetryPolicy::default());
        assert_eq!(
            w.steps[0].retry,
            RetryPolicy {
                max_attempts: 3,
                ..RetryPolicy::default()
            }
        );
        assert_eq!(w.steps[0].requires.env, ["RUST_LOG"]);
        assert_eq!(w.requires.git.as_ref().map(|g| g.clean), Some(true));
    }

    const WITH_RETRY: &str = r#"name = "r"

[retry]
max_attempts = 3
initial = "1s"
factor = 3
max = "1m"
jitter = "500ms"
retry_on = ["exit", "agent-error", "exit"]

[[step]]
name = "inherits"
run = "true"

[[step]]
name = "overrides"
run = "true"
stall_after = "10m"
[step.retry]
max_attempts = 5
factor = 1.5
retry_on = []
"#;

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
            &format!(
                "name = \"m\"\n[retry]\ninitial = \"1m\"\n{STEP}[step.retry]\nmax = \"30s\"\n"
            ),
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

    #[test]
    fn rejects_bad_stall_after() {
        assert_rejected(
            &format!("name = \"m\"\n{STEP}stall_after = \"0s\"\n"),
            5,
            &[
                "fix.toml:5:15:",
                "`step.stall_after` must be greater than 0",
            ],
        );
        assert_rejected(
            &format!("name = \"m\"\n{STEP}stall_after = \"later\"\n"),
            5,
            &["invalid duration \"later\""],
        );
    }

    const WITH_REQUIRES: &str = r#"name = "q"

[requires]
commands = ["git", "/usr/bin/jq"]
files = ["Cargo.toml", "/etc/ssl/certs"]
env = ["ANTHROPIC_API_KEY"]
runs = ["build-image", "a.b_c"]
git = "clean"

[[step]]
name = "s"
run = "true"
[step.requires]
env = ["TOKEN"]
git = { branch = "main", commit = "ABC123" }

[[step]]
name = "t"
run = "true"
[step.requires.git]
clean = true
commit = "abcd"
"#;

    #[test]
    fn requires_parse_and_stay_separate() {
        let w = ok(WITH_REQUIRES);
        assert_eq!(
            w.requires,
            Requirements {
                commands: vec!["git".into(), "/usr/bin/jq".into()],
                files: vec!["Cargo.toml".into(), "/etc/ssl/certs".into()],
                env: vec!["ANTHROPIC_API_KEY".into()],
                runs: vec!["build-image".into(), "a.b_c".into()],
                git: Some(GitRequirement {
                    clean: true,
                    branch: None,
                    commit: None
                }),
            }
        );
        assert_eq!(
            w.steps[0].requires,
            Requirements {
                env: vec!["TOKEN".into()],
                git: Some(GitRequirement {
                    clean: false,
                    branch: Some("main".into()),
                    // Lowercased, as git prints ids.
                    commit: Some("abc123".into()),
                }),
                ..Requirements::default()
            }
        );
        assert_eq!(
            w.steps[1].requires.git,
            Some(GitRequirement {
                clean: true,
                branch: None,
                commit: Some("abcd".into())
            })
        );
        assert!(!w.requires.is_empty());

        let defaults = ok(&format!("name = \"m\"\n{STEP}"));
        assert!(defaults.requires.is_empty());
        assert!(defaults.steps[0].requires.is_empty());
        assert_eq!(defaults.requires, Requirements::default());
    }

    #[test]
    fn rejects_bad_requirements() {
        let req = |body: &str| format!("name = \"m\"\n[requires]\n{body}\n{STEP}");
        assert_rejected(
            &req("commands = [\"git\", \"\"]"),
            3,
            &[
                "fix.toml:3:20:",
                "`requires.commands`: entries must not be empty",
            ],
        );
        assert_rejected(
            &req("commands = [\"bin/tool\"]"),
            3,
            &[
                "fix.toml:3:13:",
                "`requires.commands`: \"bin/tool\" must be a command name (looked up on PATH) or an absolute path",
            ],
        );
        assert_rejected(
            &req("files = [\" \"]"),
            3,
            &["`requires.files`: entries must not be empty"],
        );
        assert_rejected(
            &req("env = [\"OK\", \"1BAD\"]"),
            3,
            &[
                "fix.toml:3:14:",
                "`requires.env`: invalid environment variable name \"1BAD\"",
            ],
        );
        assert_rejected(
            &req("runs = [\"build image\"]"),
            3,
            &[
                "fix.toml:3:9:",
                "`requires.runs`: invalid workflow name \"build image\"",
            ],
        );
        assert_rejected(
            &req("runs = [\"..\"]"),
            3,
            &["invalid workflow name \"..\""],
        );
        assert_rejected(
            &req("git = \"dirty\""),
            3,
            &[
                "fix.toml:3:7:",
                "`requires.git` must be \"clean\" or a table",
                "got \"dirty\"",
            ],
        );
        assert_rejected(
            &req("git = 5"),
            3,
            &["`requires.git`", "\"clean\" or a table"],
        );
        assert_rejected(
            &req("git = { commit = \"xyz1\" }"),
            3,
            &[
                "fix.toml:3:18:",
                "`requires.git.commit` must be 4 to 40 hexadecimal digits, got \"xyz1\"",
            ],
        );
        assert_rejected(
            &req("git = { commit = \"abc\" }"),
            3,
            &["4 to 40 hexadecimal digits"],
        );
        assert_rejected(
            &req(&format!("git = {{ commit = \"{}\" }}", "a".repeat(41))),
            3,
            &["4 to 40 hexadecimal digits"],
        );
        assert_rejected(
            &req("git = { branch = \"\" }"),
            3,
            &["fix.toml:3:18:", "`requires.git.branch` must not be empty"],
        );
        assert_rejected(
            &req("git = { clean = false }"),
            3,
            &["fix.toml:3:7:", "`requires.git` requires nothing"],
        );
        assert_rejected(
            &req("git = { clean = true, dirty = 1 }"),
            3,
            &["unknown key `dirty` in `requires.git`", "`branch`"],
        );
        assert_rejected(
            &req("binaries = [\"x\"]"),
            3,
            &[
                "unknown key `binaries` in [requires]",
                "`commands`",
                "`git`",
            ],
        );
        assert_rejected(
            &format!("name = \"m\"\n{STEP}[step.requires]\nenv = [\"A-B\"]\n"),
            6,
            &["step \"s\": `step.requires.env`: invalid environment variable name \"A-B\""],
        );
        assert_rejected(
            &format!("name = \"m\"\n{STEP}[step.requires]\nenvs = []\n"),
            6,
            &["unknown key `envs` in [step.requires]"],
        );
    }

    #[test]
    fn agent_steps_must_not_pick_their_own_session() {
        let agent = |run: &str| {
            format!("name = \"m\"\n[[step]]\nname = \"a\"\nagent = \"claude-code\"\nrun = {run}\n")
        };
        for (run, col, opt) in [
            (
                r#"["claude", "-p", "x", "--resume", "abc"]"#,
                29,
                "--resume",
            ),
            (r#"["claude", "--session-id=1234"]"#, 18, "--session-id"),
            (r#""claude -p hi --continue""#, 7, "--continue"),
            (r#""cd x && claude --fork-session""#, 7, "--fork-session"),
            (r#""claude '--resume' x""#, 7, "--resume"),
        ] {
            let (line, msg) = rejected(&agent(run));
            assert_eq!(line, 5, "{msg}");
            assert!(msg.starts_with(&format!("fix.toml:5:{col}: ")), "{msg}");
            assert!(
                msg.ends_with(&format!(
                    "step \"a\": `run` must not pass {opt}: drover gives claude-code steps --session-id or --resume itself"
                )),
                "{msg}"
            );
        }
        // Look-alikes, and the options on steps that are not agent steps, are fine.
        ok(&agent(r#""claude -p 'do not --resumeX' --model x""#));
        ok(&agent(r#"["claude", "-p", "--continued"]"#));
        ok("name = \"m\"\n[[step]]\nname = \"a\"\nrun = \"claude --resume x\"\n");
    }

    #[test]
    fn stored_json_without_the_new_keys_still_loads() {
        let old = r#"{"name":"w","workspace":null,"limits":{"memory_max":null,"cpu_quota_percent":null,"tasks_max":null},"steps":[{"name":"s","run":"true","env":{},"critical":false,"checkpoint":false,"agent":null}]}"#;
        let w: Workflow = serde_json::from_str(old).expect("old JSON loads");
        assert_eq!(w.retry, RetryPolicy::default());
        assert!(w.requires.is_empty());
        assert_eq!(w.steps[0].retry, RetryPolicy::default());
        assert!(w.steps[0].requires.is_empty());
        assert_eq!(w.steps[0].stall_after, None);

        let new = ok(WITH_REQUIRES);
        let json = serde_json::to_string(&new).expect("serialise");
        assert_eq!(serde_json::from_str::<Workflow>(&json).expect("load"), new);
        let w = ok(WITH_RETRY);
        let json = serde_json::to_string(&w).expect("serialise");
        let value: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(value["retry"]["retry_on"][1], "agent-error");
        assert_eq!(value["retry"]["jitter"], "500ms");
        assert_eq!(value["steps"][1]["stall_after"], "10m");
        assert_eq!(serde_json::from_str::<Workflow>(&json).expect("load"), w);
    }
}
