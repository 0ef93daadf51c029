//! The typed requests of the operations, one per thing a caller can ask. Every door decodes
//! its wire format into these (D-Bus arguments and `a{sv}` options today; JSON bodies
//! next), and every door encodes the results the same way: the `model` records, as JSON.

use std::collections::BTreeMap;
use std::time::Duration;

use super::error::InputError;
use crate::model::{RunState, Severity};
use crate::quantity::{QUOTED_MAX, bounded_duration, truncated};

/// The bounds of what a caller may send, in bytes unless said otherwise. A request beyond
/// one is refused whole, before anything is created or stored, so no caller can make the
/// agent allocate, store or pass to a step more than these.
pub mod limits {
    /// A run id (drover's are 10 characters).
    pub const RUN_ID: usize = 64;
    /// A workflow file's path (Linux's `PATH_MAX`).
    pub const PATH: usize = 4096;
    /// A workflow's name (a `History` filter).
    pub const WORKFLOW: usize = 256;
    /// Why a kill or a silence was asked for.
    pub const REASON: usize = 1024;
    /// A critical span's or a checkpoint's label.
    pub const LABEL: usize = 256;
    /// A rule's name, a silence's target (a rule name or a run id).
    pub const RULE: usize = 256;
    /// An alert's key, `<rule>/<run>`.
    pub const ALERT_KEY: usize = RULE + 1 + RUN_ID;
    /// An alert's summary raised by hand.
    pub const SUMMARY: usize = 4096;
    /// A step's name (the workflow format allows 64).
    pub const STEP: usize = 64;
    /// A chunk of a step's log (`Logs`): the most one call returns, and what it returns
    /// when the caller names no size.
    pub const LOG_CHUNK: u32 = 1 << 20;
    pub const LOG_CHUNK_DEFAULT: u32 = 256 * 1024;
    /// Parameters of one run: how many, a name, a value, and all names and values together.
    /// A step sees each as `DROVER_PARAM_<NAME>=<value>`: one environment string may not
    /// exceed Linux's `MAX_ARG_STRLEN` (128 KiB), and all of a step's arguments and
    /// environment share `ARG_MAX` (2 MiB here), with the workflow's own `run` and `env`.
    pub const PARAMS: usize = 256;
    pub const PARAM_NAME: usize = 64;
    pub const PARAM_VALUE: usize = 32 * 1024;
    pub const PARAMS_TOTAL: usize = 256 * 1024;
    /// A token's name, and the secret a door passes to be checked (drover's are 71).
    pub const TOKEN_NAME: usize = 64;
    pub const TOKEN_SECRET: usize = 256;
    /// A user's name, as the password database would have it.
    pub const USER: usize = 256;
    /// Runs in one page of a list: when the caller names no number, and the most.
    pub const PAGE_DEFAULT: u32 = 100;
    pub const PAGE_MAX: u32 = 500;
    /// A page's cursor, as the agent hands it out (a creation time and a run id).
    pub const CURSOR: usize = 128;
    /// States named in one filter (there are eight).
    pub const STATES: usize = 8;
}

/// `Err` when `text`, the caller's `field`, is longer than `limit`.
pub(super) fn check_len(field: &str, text: &str, limit: usize) -> Result<(), InputError> {
    if text.len() > limit {
        return Err(InputError::TooLong {
            field: field.to_owned(),
            len: text.len(),
            limit,
        });
    }
    Ok(())
}

/// `Err` when a run id is longer than any run's.
pub(super) fn check_run_id(run: &str) -> Result<(), InputError> {
    check_len("the run id", run, limits::RUN_ID)
}

/// `Err` when a duration from outside is beyond [`crate::quantity::MAX_DURATION`].
fn check_duration(field: &'static str, d: Duration) -> Result<(), InputError> {
    bounded_duration(d)
        .map(drop)
        .map_err(|reason| InputError::Duration { field, reason })
}

/// Parameters within [`limits`], without NUL bytes, and no two names that the steps would
/// see as one variable (`p` and `P` are both `$DROVER_PARAM_P`). Their names' syntax is the
/// engine's to check.
pub fn check_params(params: &BTreeMap<String, String>) -> Result<(), InputError> {
    if params.len() > limits::PARAMS {
        return Err(InputError::TooMany {
            field: "parameters",
            count: params.len(),
            limit: limits::PARAMS,
        });
    }
    let mut total = 0usize;
    let mut upper: BTreeMap<String, &str> = BTreeMap::new();
    for (name, value) in params {
        let quoted = truncated(name, QUOTED_MAX);
        check_len(
            &format!("parameter name {quoted:?}"),
            name,
            limits::PARAM_NAME,
        )?;
        check_len(
            &format!("the value of parameter {quoted:?}"),
            value,
            limits::PARAM_VALUE,
        )?;
        for (what, text) in [("name", name), ("value", value)] {
            if text.contains('\0') {
                return Err(InputError::Nul {
                    field: format!("the {what} of parameter {quoted:?}"),
                });
            }
        }
        total += name.len() + value.len();
        if let Some(first) = upper.insert(name.to_ascii_uppercase(), name) {
            return Err(InputError::ParamCollision {
                first: first.to_owned(),
                second: name.clone(),
                upper: name.to_ascii_uppercase(),
            });
        }
    }
    if total > limits::PARAMS_TOTAL {
        return Err(InputError::TooLong {
            field: "the parameters' names and values together".into(),
            len: total,
            limit: limits::PARAMS_TOTAL,
        });
    }
    Ok(())
}

/// `Run`: start a run of a workflow file (an absolute path).
#[derive(Debug, Clone)]
pub struct RunArgs {
    pub workflow_path: String,
    pub params: BTreeMap<String, String>,
}

impl RunArgs {
    pub(super) fn check(&self) -> Result<(), InputError> {
        check_len("the workflow path", &self.workflow_path, limits::PATH)?;
        if self.workflow_path.contains('\0') {
            return Err(InputError::Nul {
                field: "the workflow path".into(),
            });
        }
        check_params(&self.params)
    }
}

/// `Kill`.
#[derive(Debug, Clone)]
pub struct KillArgs {
    pub run: String,
    /// Empty: "no reason given".
    pub reason: String,
    /// Overrides the workflow's `[kill] grace`.
    pub grace: Option<Duration>,
    /// Needed for a `protected` workflow.
    pub confirm: bool,
}

impl KillArgs {
    pub(super) fn check(&self) -> Result<(), InputError> {
        check_run_id(&self.run)?;
        check_len("the reason", &self.reason, limits::REASON)?;
        self.grace.map_or(Ok(()), |g| check_duration("grace", g))
    }
}

/// A page of the runs list: filters, how many, and where the last page ended.
#[derive(Debug, Clone, Default)]
pub struct RunsArgs {
    /// Runs in any of these states; every state when empty.
    pub states: Vec<RunState>,
    /// Runs of this workflow (by name) only.
    pub workflow: Option<String>,
    /// `None`: [`limits::PAGE_DEFAULT`].
    pub limit: Option<u32>,
    /// The `next_cursor` of the page before.
    pub cursor: Option<String>,
}

impl RunsArgs {
    /// The number of runs to return, once the arguments are within bounds.
    pub(super) fn check(&self) -> Result<usize, InputError> {
        if self.states.len() > limits::STATES {
            return Err(InputError::TooMany {
                field: "states",
                count: self.states.len(),
                limit: limits::STATES,
            });
        }
        if let Some(workflow) = &self.workflow {
            check_len("the workflow", workflow, limits::WORKFLOW)?;
        }
        if let Some(cursor) = &self.cursor {
            check_len("the cursor", cursor, limits::CURSOR)?;
        }
        match self.limit {
            None => Ok(limits::PAGE_DEFAULT as usize),
            Some(n @ 1..=limits::PAGE_MAX) => Ok(n as usize),
            Some(n) => Err(InputError::Invalid {
                field: "the limit",
                reason: format!("is {n}: ask for 1 to {} runs", limits::PAGE_MAX),
            }),
        }
    }
}

/// `EnterCritical` / `LeaveCritical`.
#[derive(Debug, Clone)]
pub struct CriticalArgs {
    pub run: String,
    pub label: String,
}

impl CriticalArgs {
    pub(super) fn check(&self) -> Result<(), InputError> {
        check_run_id(&self.run)?;
        check_len("the label", &self.label, limits::LABEL)
    }
}

/// `Checkpoint`: take one now.
#[derive(Debug, Clone)]
pub struct CheckpointArgs {
    pub run: String,
    /// Blank: no label.
    pub label: String,
}

impl CheckpointArgs {
    pub(super) fn check(&self) -> Result<(), InputError> {
        check_run_id(&self.run)?;
        check_len("the label", &self.label, limits::LABEL)
    }
}

/// `Restart`.
#[derive(Debug, Clone)]
pub struct RestartArgs {
    pub run: String,
    /// The checkpoint number; `None`: the latest.
    pub from: Option<u32>,
    pub confirm: bool,
}

/// `Rollback`.
#[derive(Debug, Clone)]
pub struct RollbackArgs {
    pub run: String,
    pub to: u32,
    pub confirm: bool,
}

/// `History`.
#[derive(Debug, Clone)]
pub struct HistoryArgs {
    /// `None`: every workflow.
    pub workflow: Option<String>,
    /// How far back; `None`: 7 days.
    pub since: Option<Duration>,
}

/// `CreateToken`: a bearer token for a user, with a role, perhaps for a while.
#[derive(Debug, Clone)]
pub struct TokenArgs {
    /// Letters, digits, `.`, `_` and `-`.
    pub name: String,
    pub role: crate::auth::Role,
    /// Whose token it is, by name or uid: the caller when `None`.
    pub user: Option<String>,
    /// How long it admits its caller: for ever when `None`.
    pub expires: Option<Duration>,
}

impl TokenArgs {
    pub(super) fn check(&self) -> Result<(), InputError> {
        check_token_name(&self.name)?;
        if let Some(user) = &self.user {
            check_len("the user", user, limits::USER)?;
        }
        self.expires
            .map_or(Ok(()), |d| check_duration("the expiry", d))
    }
}

/// `Err` unless `name` is a token's name: 1 to 64 letters, digits, `.`, `_` and `-`.
pub(super) fn check_token_name(name: &str) -> Result<(), InputError> {
    check_len("the token name", name, limits::TOKEN_NAME)?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || !name.chars().all(allowed) {
        return Err(InputError::Invalid {
            field: "the token name",
            reason: format!(
                "{:?}: use 1 to {} letters, digits, '.', '_' and '-'",
                truncated(name, QUOTED_MAX),
                limits::TOKEN_NAME
            ),
        });
    }
    Ok(())
}

/// `Silence`: hold back a rule's or a run's alerts for a while.
#[derive(Debug, Clone)]
pub struct SilenceArgs {
    /// A rule name or a run id.
    pub target: String,
    pub duration: Duration,
    pub reason: String,
}

impl SilenceArgs {
    pub(super) fn check(&self) -> Result<(), InputError> {
        check_len("the target", &self.target, limits::RULE)?;
        check_len("the reason", &self.reason, limits::REASON)?;
        check_duration("the duration", self.duration)
    }
}

/// `RaiseAlert`: an alert raised by hand (operators' scripts, tests).
#[derive(Debug, Clone)]
pub struct RaiseAlertArgs {
    pub rule: String,
    /// `None`: an alert about no run.
    pub run: Option<String>,
    pub severity: Severity,
    pub summary: String,
}

impl RaiseAlertArgs {
    pub(super) fn check(&self) -> Result<(), InputError> {
        check_len("the rule", &self.rule, limits::RULE)?;
        if let Some(run) = &self.run {
            check_run_id(run)?;
        }
        check_len("the summary", &self.summary, limits::SUMMARY)
    }
}

/// `Logs`: a chunk of one step attempt's log.
#[derive(Debug, Clone)]
pub struct LogsArgs {
    pub run: String,
    pub step: String,
    /// 0: the step's latest attempt.
    pub attempt: u32,
    /// Where in the file the chunk starts.
    pub offset: u64,
    /// At most this many bytes; 0: [`limits::LOG_CHUNK_DEFAULT`].
    pub max: u32,
}

impl LogsArgs {
    /// The number of bytes to read, once the arguments are within bounds.
    pub(super) fn check(&self) -> Result<usize, InputError> {
        check_run_id(&self.run)?;
        check_len("the step name", &self.step, limits::STEP)?;
        let max = match self.max {
            0 => limits::LOG_CHUNK_DEFAULT,
            n if n > limits::LOG_CHUNK => {
                return Err(InputError::TooLarge {
                    field: "the chunk size",
                    value: u64::from(n),
                    limit: u64::from(limits::LOG_CHUNK),
                });
            }
            n => n,
        };
        Ok(max as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs(run: &str, step: &str, max: u32) -> LogsArgs {
        LogsArgs {
            run: run.into(),
            step: step.into(),
            attempt: 0,
            offset: u64::MAX,
            max,
        }
    }

    #[test]
    fn log_chunks_are_bounded_and_zero_asks_for_the_default() {
        assert_eq!(logs("r", "s", 0).check(), Ok(256 * 1024));
        assert_eq!(logs("r", "s", 10).check(), Ok(10));
        assert_eq!(logs("r", "s", 1 << 20).check(), Ok(1 << 20));
        let too_large = logs("r", "s", u32::MAX).check().unwrap_err();
        assert_eq!(
            too_large.to_string(),
            "the chunk size is 4294967295 bytes: at most 1048576 are accepted"
        );
        let long_run = logs(&"r".repeat(65), "s", 0).check().unwrap_err();
        assert!(
            long_run
                .to_string()
                .starts_with("the run id is 65 bytes long"),
            "{long_run}"
        );
        let long_step = logs("r", &"s".repeat(65), 0).check().unwrap_err();
        assert!(
            long_step
                .to_string()
                .starts_with("the step name is 65 bytes long"),
            "{long_step}"
        );
    }
}

/// `Events`: where a client resumes and whose logs it follows.
#[derive(Debug, Clone, Default)]
pub struct EventsArgs {
    /// The last event id the client saw (`Last-Event-ID`), as it sent it.
    pub last_event_id: Option<String>,
    /// Runs whose log lines the client wants, at most [`super::events::MAX_LOG_RUNS`].
    pub logs: Vec<String>,
}

impl EventsArgs {
    /// The id to resume after. One that is no number is no id this agent gave: it is
    /// resumed as the oldest possible, which the hub answers with a reset.
    pub(super) fn check(&self) -> Result<Option<u64>, InputError> {
        if self.logs.len() > super::events::MAX_LOG_RUNS {
            return Err(InputError::TooMany {
                field: "runs to follow the logs of",
                count: self.logs.len(),
                limit: super::events::MAX_LOG_RUNS,
            });
        }
        Ok(self
            .last_event_id
            .as_deref()
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(|id| id.parse().unwrap_or(0)))
    }
}
