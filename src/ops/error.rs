//! What an operation's failure is, once for every door: [`OpsError`] keeps the part's own
//! error (and its message, which callers read), and [`ErrorKind`] says which kind of
//! failure it is, so D-Bus can name its error, and HTTP choose its status, from one table.

use crate::alerts::AlertsError;
use crate::auth::Denied;
use crate::credentials::ReadError;
use crate::engine::EngineError;
use crate::reload::ReloadError;
use crate::tokens::TokenError;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Denied(#[from] Denied),
    /// The call does not apply to the run as it is now.
    #[error("{0}")]
    InvalidState(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Alerts(#[from] AlertsError),
    #[error("configuration not reloaded, the running one stays in force: {0}")]
    Reload(#[from] ReloadError),
    #[error(transparent)]
    Input(#[from] InputError),
    /// A door could not tell who the caller is: no token, or one that admits nobody.
    #[error("{0}")]
    Unauthenticated(String),
    #[error(transparent)]
    Tokens(#[from] TokenError),
    /// No live token of that name (to revoke).
    #[error("{0}")]
    NoSuchToken(String),
}

/// A request outside the bounds every door's input is held to (`types::limits`); it is
/// refused before anything is created or stored. Messages name the field and the limit and
/// quote no more of the caller's text than a short, marked prefix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    #[error("{field} is {len} bytes long: at most {limit} are accepted")]
    TooLong {
        field: String,
        len: usize,
        limit: usize,
    },
    #[error("{field} is {value} bytes: at most {limit} are accepted")]
    TooLarge {
        field: &'static str,
        value: u64,
        limit: u64,
    },
    #[error("{count} {field} given: at most {limit} are accepted")]
    TooMany {
        field: &'static str,
        count: usize,
        limit: usize,
    },
    #[error("{field} contains a NUL byte, which no program's argument or environment can hold")]
    Nul { field: String },
    #[error(
        "parameters {first:?} and {second:?} would both be $DROVER_PARAM_{upper}: names must differ in more than case"
    )]
    ParamCollision {
        first: String,
        second: String,
        upper: String,
    },
    #[error("{field}: {reason}")]
    Duration {
        field: &'static str,
        reason: crate::quantity::DurationReason,
    },
    #[error("{field} is longer than the maximum of {max}")]
    WindowTooLong {
        field: &'static str,
        max: &'static str,
    },
    #[error("{field} {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// The kinds of failure a caller can tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller lacks the role the call needs; the message names it.
    PermissionDenied,
    /// The request is malformed (bad workflow file, bad parameter, a string or a duration
    /// beyond its bound); nothing was changed.
    InvalidArgument,
    NoSuchRun,
    /// The run is not in a state that allows the call (finished, already being killed).
    InvalidState,
    /// A protected workflow's kill, restart or rollback needs a confirmation.
    ConfirmationRequired,
    /// A start or restart was refused: the message names each requirement not met.
    RequirementsUnmet,
    /// A checkpoint's ref, commit or state is missing or damaged; nothing was changed.
    CorruptCheckpoint,
    /// The config file does not validate; the running configuration stays in force.
    InvalidConfig,
    /// The caller is not known (HTTP: no valid bearer token).
    Unauthenticated,
    /// No live token of that name (to revoke).
    NoSuchToken,
    Failed,
}

impl OpsError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            OpsError::Denied(_) => ErrorKind::PermissionDenied,
            OpsError::InvalidState(_) => ErrorKind::InvalidState,
            OpsError::Engine(e) => engine_kind(e),
            OpsError::Alerts(AlertsError::InvalidArgument(_) | AlertsError::NoSuchAlert(_)) => {
                ErrorKind::InvalidArgument
            }
            OpsError::Alerts(_) => ErrorKind::Failed,
            OpsError::Reload(ReloadError::Config(_)) => ErrorKind::InvalidConfig,
            OpsError::Reload(ReloadError::Rules(_) | ReloadError::Compare(_)) => ErrorKind::Failed,
            OpsError::Input(_) => ErrorKind::InvalidArgument,
            OpsError::Unauthenticated(_) => ErrorKind::Unauthenticated,
            OpsError::Tokens(_) => ErrorKind::Failed,
            OpsError::NoSuchToken(_) => ErrorKind::NoSuchToken,
        }
    }
}

fn engine_kind(e: &EngineError) -> ErrorKind {
    match e {
        EngineError::WorkflowFile(ReadError::PermissionDenied(_)) => ErrorKind::PermissionDenied,
        EngineError::Spec(_)
        | EngineError::WorkflowFile(_)
        | EngineError::NotUtf8(_)
        | EngineError::Credentials(_)
        | EngineError::InvalidParam(_)
        | EngineError::RelativePath(_)
        | EngineError::Worktree(_)
        | EngineError::NoSuchCheckpoint { .. }
        | EngineError::NoSuchStep { .. }
        | EngineError::NoSuchAttempt { .. }
        | EngineError::GraceTooLong { .. } => ErrorKind::InvalidArgument,
        EngineError::NoSuchRun(_) => ErrorKind::NoSuchRun,
        EngineError::AlreadyEnded { .. }
        | EngineError::KillInProgress(_)
        | EngineError::NotRunning { .. }
        | EngineError::NoCriticalSpan { .. }
        | EngineError::NotEnded { .. }
        | EngineError::NoWorktree { .. }
        | EngineError::NothingToRestart { .. } => ErrorKind::InvalidState,
        EngineError::RequirementsUnmet { .. } => ErrorKind::RequirementsUnmet,
        EngineError::CorruptCheckpoint { .. } => ErrorKind::CorruptCheckpoint,
        EngineError::Unconfirmed(_) => ErrorKind::ConfirmationRequired,
        _ => ErrorKind::Failed,
    }
}
