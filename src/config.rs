//! The agent's configuration file: `/etc/drover/drover.toml` for the system agent,
//! `$XDG_CONFIG_HOME/drover/drover.toml` for a user agent. A missing file means defaults;
//! a malformed one is refused with its line and reason.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::api::auth::AuthConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("cannot tell where the {0} lives: set $HOME or $XDG_CONFIG_HOME/$XDG_STATE_HOME")]
    NoHome(&'static str),
}

/// Which bus, and so which manager, the agent serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    /// The session bus and the user's systemd manager.
    User,
    /// The system bus and PID 1.
    System,
}

impl Bus {
    /// `--user` unless this is root with no session bus in sight.
    pub fn default_for_this_process() -> Bus {
        let root = nix::unistd::Uid::effective().is_root();
        if root && std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none() {
            Bus::System
        } else {
            Bus::User
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the state DB, step logs and worktrees live.
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub monitor: MonitorConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub rules: RulesConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
}

/// `[monitor]`: how often running units are sampled and how long history is kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Sampling period, e.g. "1s".
    #[serde(with = "crate::spec::duration")]
    pub interval: std::time::Duration,
    /// How long the 1-minute history stays in the state DB, e.g. "30d".
    #[serde(with = "crate::spec::duration")]
    pub history: std::time::Duration,
}

impl Default for MonitorConfig {
    fn default() -> MonitorConfig {
        MonitorConfig {
            interval: std::time::Duration::from_secs(1),
            history: std::time::Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// `[http]`: the agent's HTTP listener (`/metrics`, `/healthz`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on; loopback unless the operator says otherwise.
    pub listen: std::net::SocketAddr,
    /// `false` turns the listener off.
    pub enabled: bool,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 7878)),
            enabled: true,
        }
    }
}

/// `[rules]`: the operator's rule directory and the role rules act with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// The operator's rules (`*.rhai`), beside the shipped ones; default `<config dir>/rules`.
    pub dir: Option<PathBuf>,
    /// The shipped rules' directory; default the `rules/` installed with drover.
    pub shipped_dir: Option<PathBuf>,
    /// The role of the `rules` principal: "viewer" (alerts only), "operator" or "admin".
    pub role: String,
}

impl Default for RulesConfig {
    fn default() -> RulesConfig {
        RulesConfig {
            dir: None,
            shipped_dir: None,
            role: "operator".to_owned(),
        }
    }
}

/// `[alerts]`: where alerts go besides the state DB and the journal.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// POST each alert change as JSON here.
    pub webhook: Option<String>,
}

impl Config {
    /// Reads `path`; a missing file gives the defaults unless `required`.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Config::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        toml::from_str(&text).map_err(|e| {
            let offset = e.span().map_or(0, |span| span.start);
            let before = &text[..offset.min(text.len())];
            ConfigError::Invalid {
                path: path.to_owned(),
                line: before.matches('\n').count() + 1,
                column: before.rsplit('\n').next().map_or(0, str::len) + 1,
                reason: e.message().to_owned(),
            }
        })
    }

    pub fn state_dir(&self, bus: Bus) -> Result<PathBuf, ConfigError> {
        match (&self.state_dir, bus) {
            (Some(dir), _) => Ok(dir.clone()),
            (None, Bus::System) => Ok(PathBuf::from("/var/lib/drover")),
            (None, Bus::User) => xdg_dir("XDG_STATE_HOME", ".local/state", "state directory"),
        }
    }
}

pub fn default_path(bus: Bus) -> Result<PathBuf, ConfigError> {
    match bus {
        Bus::System => Ok(PathBuf::from("/etc/drover/drover.toml")),
        Bus::User => {
            xdg_dir("XDG_CONFIG_HOME", ".config", "config file").map(|d| d.join("drover.toml"))
        }
    }
}

/// `$VAR/drover`, or `$HOME/<fallback>/drover`.
fn xdg_dir(var: &str, fallback: &str, what: &'static str) -> Result<PathBuf, ConfigError> {
    if let Some(dir) = std::env::var_os(var).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("drover"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(fallback).join("drover"))
        .ok_or(ConfigError::NoHome(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_optional_file_gives_defaults() {
        let config = Config::load(Path::new("/nonexistent/drover.toml"), false).unwrap();
        assert!(config.state_dir.is_none());
        assert!(Config::load(Path::new("/nonexistent/drover.toml"), true).is_err());
    }

    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("## Configuration and roles")
            .nth(1)
            .expect("the README has a configuration section");
        let block = section
            .split("```toml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("a toml block");
        let config: Config = toml::from_str(block).expect("the README's config parses");
        assert_eq!(config.monitor.interval, std::time::Duration::from_secs(1));
        assert_eq!(config.rules.role, "operator");
        assert!(config.alerts.webhook.is_some());
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drover.toml");
        std::fs::write(&path, "state_dir = \"/tmp/x\"\n[auth]\nadmins = []\n").unwrap();
        let err = Config::load(&path, true).unwrap_err().to_string();
        assert!(err.contains("drover.toml:3:"), "{err}");
        assert!(err.contains("admins"), "{err}");
    }
}
