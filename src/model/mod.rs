//! The records every part shares: runs, step attempts, kills, checkpoints, alerts, metrics
//! and failures. These are also the JSON shapes `Get`/`List` and the HTTP API return (their
//! `ToSchema` makes the API's OpenAPI description), so renaming a field is a wire change. A
//! leaf: nothing here imports from the rest of the crate (`src/layering.rs` checks), so
//! every part may use it without an import circle.

use std::fmt;
use std::str::FromStr;

macro_rules! text_enum {
    ($ty:ty, $($variant:ident),+) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $(if s == <$ty>::$variant.as_str() { return Ok(<$ty>::$variant); })+
                Err(format!("unknown state {s:?}"))
            }
        }
    };
}
text_enum!(
    RunState, Pending, Running, Stopping, Killing, Restarting, Succeeded, Failed, Killed
);
text_enum!(
    StepState, Pending, Starting, Running, Succeeded, Failed, Killed
);
text_enum!(KillResult, Pending, Killed, Failed, Refused, External);

mod action;
mod agent;
mod alert;
mod attempt;
mod checkpoint;
mod event;
mod failure;
mod history;
mod kill;
mod log;
mod metrics;
mod requester;
mod run;
mod time;
mod token;

pub use action::{ActionRecord, ReloadOutcome};
pub use agent::{ResultEvent, StreamReport};
pub use alert::{
    Alert, AlertState, AlertUpdate, Change, Firing, OutboxItem, Severity, Silence, parse_severity,
    severity_str,
};
pub use attempt::{StepAttempt, StepOutput, StepState};
pub use checkpoint::{CheckpointRecord, CheckpointState};
pub use event::{
    AlertChange, EngineEvent, LogLines, MetricsTick, RunTransition, StepChange, StreamNotice,
};
pub use failure::{Failure, FailureClass, UnknownFailureClass};
pub use history::{History, HistoryDay};
pub use kill::{CleanupAction, CriticalWait, KillPhase, KillRecord, KillResult};
pub use log::{LogChunk, LogMeta};
pub use metrics::{AgentLive, MetricsMinute, MetricsReport, RunMetrics, Sample};
pub use requester::{Identity, Requester};
pub use run::{RestartPoint, Run, RunPage, RunState, RunUser};
pub use time::Timestamp;
pub use token::{NewToken, Token};
