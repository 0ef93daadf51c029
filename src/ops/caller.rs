//! Who is asking: a user (uid, name) or one of the agent's own principals (the rules, a
//! signal), the role they hold, and the door they came in by. Each door learns its caller
//! its own way (D-Bus asks the bus for the sender's uid); from here on every door's caller
//! is the same thing.

use std::fmt;

use nix::unistd::{Uid, User};

use crate::auth::{Authorizer, Denied, Role};
use crate::model::{Identity, Requester, Token};

/// The door a request came in by, as the audit trail names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Dbus,
    /// The HTTP API (a bearer token's user).
    Http,
    /// A rule's action (`kill()`, `restart()`, `checkpoint()`).
    Rules,
    /// SIGHUP: whoever may signal the agent may reload it.
    Signal,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Dbus => "dbus",
            Channel::Http => "http",
            Channel::Rules => "rules",
            Channel::Signal => "signal",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    User {
        uid: u32,
        name: Option<String>,
        /// The bearer token the user came with (HTTP), by name.
        token: Option<String>,
    },
    /// The agent acting on its own: "rules (<rule>)", "SIGHUP".
    Agent(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    who: Who,
    /// The highest role held, decided when the caller was identified (a reload applies
    /// from the next call on).
    pub role: Option<Role>,
    pub channel: Channel,
}

impl Caller {
    /// A user whose uid the door vouches for; the role is the `[auth]` mapping's.
    pub fn user(uid: u32, channel: Channel, auth: &Authorizer) -> Caller {
        let name = User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name);
        let role = auth.role_of(uid, name.as_deref());
        Caller {
            who: Who::User {
                uid,
                name,
                token: None,
            },
            role,
            channel,
        }
    }

    /// The user a bearer token is for, with the token's role, but never more than the
    /// `[auth]` mapping gives that user now: a user who loses a role loses it on their
    /// tokens too.
    pub fn token(token: &Token, role: Role, channel: Channel, auth: &Authorizer) -> Caller {
        let mut caller = Caller::user(token.uid, channel, auth);
        caller.role = caller.role.min(Some(role));
        if let Who::User { token: held, .. } = &mut caller.who {
            *held = Some(token.name.clone());
        }
        caller
    }

    /// The user's name, as the password database had it when the caller was identified.
    pub fn user_name(&self) -> Option<&str> {
        match &self.who {
            Who::User { name, .. } => name.as_deref(),
            Who::Agent(_) => None,
        }
    }

    /// The name of the token the caller came with, if any.
    pub fn token_name(&self) -> Option<&str> {
        match &self.who {
            Who::User { token, .. } => token.as_deref(),
            Who::Agent(_) => None,
        }
    }

    /// A rule acting with the config's `[rules] role`.
    pub fn rule(rule: &str, role: Role) -> Caller {
        Caller {
            who: Who::Agent(format!("rules ({rule})")),
            role: Some(role),
            channel: Channel::Rules,
        }
    }

    /// A SIGHUP to the agent (systemd's `ExecReload`, or `kill -HUP`).
    pub fn signal() -> Caller {
        Caller {
            who: Who::Agent("SIGHUP".to_owned()),
            role: Some(Role::Admin),
            channel: Channel::Signal,
        }
    }

    pub fn uid(&self) -> Option<u32> {
        match &self.who {
            Who::User { uid, .. } => Some(*uid),
            Who::Agent(_) => None,
        }
    }

    /// The caller as it is shown to itself (`whoami`).
    pub fn identity(&self) -> Identity {
        Identity {
            caller: self.to_string(),
            uid: self.uid(),
            user: self.user_name().map(str::to_owned),
            role: self.role.map(|r| r.to_string()),
            channel: self.channel.as_str().to_owned(),
            token: self.token_name().map(str::to_owned),
        }
    }

    /// Allows `action` when the caller holds at least `needed`.
    pub fn require(&self, needed: Role, action: &'static str) -> Result<(), Denied> {
        match self.role {
            Some(role) if role >= needed => Ok(()),
            held => Err(Denied {
                caller: self.to_string(),
                action,
                needed,
                held,
            }),
        }
    }

    /// The caller as the audit trail records it. A signal's role is not recorded: it is
    /// whoever could send it, not a role the config gave.
    pub fn requester(&self) -> Requester {
        Requester {
            requested_by: self.to_string(),
            uid: self.uid(),
            role: match self.channel {
                Channel::Signal => None,
                _ => self.role.map(|r| r.to_string()),
            },
            channel: self.channel.as_str().to_owned(),
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.who {
            Who::User { uid, name, token } => {
                write!(f, "uid {uid}")?;
                if let Some(name) = name {
                    write!(f, " ({name})")?;
                }
                write!(f, " via {}", self.channel)?;
                if let Some(token) = token {
                    write!(f, " (token {token})")?;
                }
                Ok(())
            }
            Who::Agent(principal) => f.write_str(principal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthConfig;

    #[test]
    fn a_user_is_audited_by_uid_name_and_door() {
        let auth = Authorizer::new(AuthConfig::default());
        let root = Caller::user(0, Channel::Dbus, &auth);
        assert_eq!(root.to_string(), "uid 0 (root) via dbus");
        let by = root.requester();
        assert_eq!(
            (by.uid, by.role.as_deref(), by.channel.as_str()),
            (Some(0), Some("admin"), "dbus")
        );
    }

    #[test]
    fn a_rule_acts_with_its_configured_role_and_no_uid() {
        let rule = Caller::rule("reaper", Role::Viewer);
        assert_eq!(rule.to_string(), "rules (reaper)");
        let denied = rule.require(Role::Operator, "kill a run").unwrap_err();
        assert_eq!(denied.held, Some(Role::Viewer));
        assert!(
            denied
                .to_string()
                .starts_with("rules (reaper) may not kill a run"),
            "{denied}"
        );
        assert_eq!(rule.requester().uid, None);
    }

    #[test]
    fn a_signal_may_reload_and_records_no_role() {
        let hup = Caller::signal();
        assert!(hup.require(Role::Admin, "reload the configuration").is_ok());
        let by = hup.requester();
        assert_eq!(
            (by.requested_by.as_str(), by.role, by.channel.as_str()),
            ("SIGHUP", None, "signal")
        );
    }

    #[test]
    fn a_refusal_names_the_role_needed() {
        let auth = Authorizer::new(AuthConfig::default());
        let err = Caller::user(1234, Channel::Dbus, &auth)
            .require(Role::Operator, "start a run")
            .unwrap_err();
        assert_eq!(err.needed, Role::Operator);
        assert!(err.to_string().contains("needs the operator role"), "{err}");
    }
}
