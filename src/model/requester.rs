//! Who asked for something, as the audit trail records it (kills, actions, reloads,
//! silences): the caller's own words for itself, its uid and role, and the door it came in by.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    /// "uid 1000 (alice) via dbus", "rules (stalled-agent)", "SIGHUP".
    pub requested_by: String,
    pub uid: Option<u32>,
    pub role: Option<String>,
    /// "dbus", "rules", "signal" (and the doors to come: "http", "slack", "mcp").
    pub channel: String,
}
