//! Bearer tokens for the HTTP door (and MCP over HTTP): whose a token is, with which
//! role, until when. The state DB keeps a hash of each secret, never the secret.

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// A token as listed: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Token {
    pub name: String,
    /// The account the token's caller acts as: its runs run as this user.
    pub uid: u32,
    pub user: String,
    /// The role it carries ("viewer", "operator", "admin"), never more than its user
    /// holds at the time of a request.
    pub role: String,
    /// Who created it: "uid 0 (root) via dbus".
    pub created_by: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub revoked_by: Option<String>,
}

impl Token {
    /// Why the token no longer admits anyone at `now`, if it does not.
    pub fn unusable(&self, now: Timestamp) -> Option<&'static str> {
        if self.revoked_at.is_some() {
            Some("revoked")
        } else if self.expires_at.is_some_and(|at| at <= now) {
            Some("expired")
        } else {
            None
        }
    }
}

/// A token just created: its secret, shown this once, and its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewToken {
    pub token: String,
    pub record: Token,
}
