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

/// A caller as the agent sees it (`whoami`): the user, the role held now (the lesser of the
/// token's and the user's), the door, and the token it came with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Identity {
    /// As the audit trail names the caller: "uid 65534 (nobody) via http (token ci)".
    pub caller: String,
    pub uid: Option<u32>,
    pub user: Option<String>,
    /// "viewer", "operator" or "admin"; `None`: no role (every call but this is refused).
    pub role: Option<String>,
    pub channel: String,
    /// The bearer token's name.
    pub token: Option<String>,
}
