//! Who may do what: roles (viewer < operator < admin), and the mapping from a user's uid
//! to a role through the `[auth]` table of the config file.

use std::fmt;

use nix::unistd::{Gid, Group, Uid, User};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("unknown role {s:?}: viewer, operator or admin")),
        }
    }
}

/// The `[auth]` table: users and groups per role. Root and the agent's own user are admin.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The role of callers listed nowhere: "viewer" (the default) or "none".
    #[serde(default = "default_role")]
    pub default_role: DefaultRole,
    #[serde(default)]
    pub viewer: Principals,
    #[serde(default)]
    pub operator: Principals,
    #[serde(default)]
    pub admin: Principals,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            default_role: default_role(),
            viewer: Principals::default(),
            operator: Principals::default(),
            admin: Principals::default(),
        }
    }
}

fn default_role() -> DefaultRole {
    DefaultRole::Viewer
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultRole {
    Viewer,
    None,
}

/// Users (names or numeric uids) and groups (names) holding a role.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principals {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{caller} may not {action}: it needs the {needed} role, and has {}", held.map_or("none".to_owned(), |r| r.to_string()))]
pub struct Denied {
    pub caller: String,
    pub action: &'static str,
    pub needed: Role,
    pub held: Option<Role>,
}

pub struct Authorizer {
    /// Replaced whole by a reload, so a call sees either the old mapping or the new one.
    config: RwLock<AuthConfig>,
    agent_uid: u32,
}

impl Authorizer {
    pub fn new(config: AuthConfig) -> Authorizer {
        Authorizer {
            config: RwLock::new(config),
            agent_uid: Uid::effective().as_raw(),
        }
    }

    /// Puts a reloaded `[auth]` in force for the calls that follow.
    pub fn set_config(&self, config: AuthConfig) {
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
    }

    fn config(&self) -> RwLockReadGuard<'_, AuthConfig> {
        // Written only by a whole-value assignment: a panic cannot leave it half-updated.
        self.config.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The highest role the user `uid` (named `name`, if the system knows it) holds, if any.
    pub fn role_of(&self, uid: u32, name: Option<&str>) -> Option<Role> {
        if uid == 0 || uid == self.agent_uid {
            return Some(Role::Admin);
        }
        let groups = name.map(group_names).unwrap_or_default();
        let holds = |p: &Principals| {
            p.users
                .iter()
                .any(|u| u == &uid.to_string() || Some(u.as_str()) == name)
                || p.groups.iter().any(|g| groups.contains(g))
        };
        let config = self.config();
        if holds(&config.admin) {
            Some(Role::Admin)
        } else if holds(&config.operator) {
            Some(Role::Operator)
        } else if holds(&config.viewer) || config.default_role == DefaultRole::Viewer {
            Some(Role::Viewer)
        } else {
            None
        }
    }
}

/// The names of the groups the user `name` belongs to (primary and supplementary).
fn group_names(name: &str) -> Vec<String> {
    let Ok(Some(user)) = User::from_name(name) else {
        return Vec::new();
    };
    let Ok(cname) = std::ffi::CString::new(name) else {
        return Vec::new();
    };
    let gids = nix::unistd::getgrouplist(&cname, user.gid).unwrap_or_else(|_| vec![user.gid]);
    gids.into_iter()
        .filter_map(|gid: Gid| Group::from_gid(gid).ok().flatten().map(|g| g.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorizer(toml_text: &str) -> Authorizer {
        let config: AuthConfig = toml::from_str(toml_text).expect("auth config parses");
        Authorizer {
            config: RwLock::new(config),
            agent_uid: 4242,
        }
    }

    fn role(auth: &Authorizer, uid: u32) -> Option<Role> {
        let name = User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name);
        auth.role_of(uid, name.as_deref())
    }

    #[test]
    fn root_and_the_agent_user_are_admin() {
        let auth = authorizer("");
        assert_eq!(role(&auth, 0), Some(Role::Admin));
        assert_eq!(role(&auth, 4242), Some(Role::Admin));
    }

    #[test]
    fn listed_users_get_their_role_and_others_the_default() {
        let auth = authorizer("[operator]\nusers = [\"65534\"]\n");
        assert_eq!(role(&auth, 65534), Some(Role::Operator));
        assert_eq!(role(&auth, 1234), Some(Role::Viewer));
        let strict = authorizer("default_role = \"none\"\n");
        assert_eq!(role(&strict, 1234), None);
    }

    #[test]
    fn groups_grant_roles() {
        // Every system has root's group; uid 0 is admin anyway, so test via "nogroup"'s member.
        let auth = authorizer("[admin]\ngroups = [\"nogroup\"]\n");
        assert_eq!(
            role(&auth, 65534),
            Some(Role::Admin),
            "nobody's primary group is nogroup"
        );
    }

    #[test]
    fn a_reloaded_mapping_applies_to_the_next_call() {
        let auth = authorizer("default_role = \"none\"\n");
        assert_eq!(role(&auth, 1234), None);
        auth.set_config(toml::from_str("[operator]\nusers = [\"1234\"]\n").unwrap());
        assert_eq!(role(&auth, 1234), Some(Role::Operator));
    }
}
