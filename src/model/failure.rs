//! Failures: the class of a failed attempt (retry policies select on it) and the evidence
//! it was concluded from.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The kind of a failure; retry policies select on it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FailureClass {
    /// Exited with a non-zero code.
    Exit,
    /// Died of a signal nobody in drover sent.
    Signal,
    /// The OOM killer ended it.
    Oom,
    /// systemd stopped it at its time limit.
    Timeout,
    /// Killed through drover, or from outside (its supervisor vanished).
    Killed,
    /// A requirement (`[requires]`) was not met. Only the engine assigns it (the attempt
    /// never ran); `recovery::failure::classify` never returns it.
    Dependency,
    /// The coding agent reported an error (its `result` event, or none at all).
    AgentError,
    /// A rate limit, an overloaded API or a network reset: worth retrying as is.
    Transient,
    /// drover stopped it for producing no output for too long.
    Stalled,
}

impl FailureClass {
    pub const ALL: [FailureClass; 9] = [
        FailureClass::Exit,
        FailureClass::Signal,
        FailureClass::Oom,
        FailureClass::Timeout,
        FailureClass::Killed,
        FailureClass::Dependency,
        FailureClass::AgentError,
        FailureClass::Transient,
        FailureClass::Stalled,
    ];

    /// The spelling in JSON, workflow files and the state DB.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Exit => "exit",
            FailureClass::Signal => "signal",
            FailureClass::Oom => "oom",
            FailureClass::Timeout => "timeout",
            FailureClass::Killed => "killed",
            FailureClass::Dependency => "dependency",
            FailureClass::AgentError => "agent-error",
            FailureClass::Transient => "transient",
            FailureClass::Stalled => "stalled",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A name that is no [`FailureClass`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown failure class {0:?}: expected one of exit, signal, oom, timeout, killed, dependency, agent-error, transient, stalled"
)]
pub struct UnknownFailureClass(pub String);

impl FromStr for FailureClass {
    type Err = UnknownFailureClass;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FailureClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownFailureClass(s.to_owned()))
    }
}

/// A failed attempt's class and what it was concluded from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Failure {
    pub class: FailureClass,
    pub evidence: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for class in FailureClass::ALL {
            assert_eq!(class.as_str().parse::<FailureClass>(), Ok(class));
            assert_eq!(class.to_string(), class.as_str());
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.as_str()));
            assert_eq!(serde_json::from_str::<FailureClass>(&json).unwrap(), class);
        }
        let err = "agent_error".parse::<FailureClass>().unwrap_err();
        assert!(
            err.to_string().contains("agent-error, transient, stalled"),
            "{err}"
        );
    }
}
