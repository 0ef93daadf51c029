//! The agent's configuration file: `/etc/drover/drover.toml` for the system agent,
//! `$XDG_CONFIG_HOME/drover/drover.toml` for a user agent. A missing file means defaults;
//! a malformed one is refused with its line and reason.
//!
//! [`Config::load`] is the one validation: the agent at start and on reload, and
//! `drover config check`, all go through it. Every check runs while the file is
//! deserialised, so a bad value is reported at its own line and column.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::alerts::AlertsConfig;
use crate::auth::AuthConfig;
use crate::monitor::MonitorConfig;
use crate::rules::RulesConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The reason is in the message rather than a `source`: callers show this one line
    // (the D-Bus reply, the CLI), and a source would print the reason twice.
    #[error("{path}: cannot read: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the state DB, step logs and worktrees live.
    #[serde(default, deserialize_with = "crate::quantity::absolute_path")]
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

/// `[http]`: the agent's HTTP listener (`/metrics`, `/healthz`, the API). Defined here, not by
/// `api::http`: the doors sit above the config that `reload` reads, so a section of theirs
/// defined in `api` would tie `config` to them in a circle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on; loopback unless the operator says otherwise.
    #[serde(deserialize_with = "socket_addr")]
    pub listen: std::net::SocketAddr,
    /// `false` turns the listener off.
    pub enabled: bool,
    /// Host names (or IP addresses) a request's `Host` header may name besides `localhost`,
    /// `127.0.0.1`, `[::1]` and the listen address: anything else is refused, so a page
    /// whose name was rebound to this host's address (DNS rebinding) reaches nothing.
    #[serde(deserialize_with = "host_names")]
    pub allowed_hosts: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 7878)),
            enabled: true,
            allowed_hosts: Vec::new(),
        }
    }
}

/// Names as a `Host` header carries them, without a port, lowercased: `drover.example`,
/// `10.0.0.5`, `[fd00::5]`.
fn host_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    for name in &names {
        let bracketed_ipv6 = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
        let plain = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if !(bracketed_ipv6 || plain) {
            return Err(serde::de::Error::custom(format!(
                "{:?} is not a host name: give names such as \"drover.example\", \"10.0.0.5\" or \"[fd00::5]\", without a port",
                crate::quantity::truncated(name, crate::quantity::QUOTED_MAX)
            )));
        }
    }
    Ok(names.into_iter().map(|n| n.to_ascii_lowercase()).collect())
}

/// `IP:PORT`; std's own message ("invalid socket address syntax") does not say what the
/// syntax is.
fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<std::net::SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not an IP:PORT address such as \"127.0.0.1:7878\" or \"[::1]:7878\""
        ))
    })
}

impl Config {
    /// Reads `path`; a missing file gives the defaults unless `required`.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Config::default());
            }
            Err(error) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    error,
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
    use crate::auth::Role;

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
        assert_eq!(config.rules.role, Role::Operator);
        assert!(config.alerts.webhook.is_some());
    }

    /// Loads `text` as a config file named drover.toml.
    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drover.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path, true)
    }

    fn refused(text: &str) -> String {
        load(text).expect_err("the config is refused").to_string()
    }

    #[test]
    fn bad_values_are_refused_at_their_line_and_column() {
        let cases = [
            ("[rules]\nrole = \"boss\"\n", "drover.toml:2:8:", "viewer"),
            (
                "[alerts]\nwebhook = \"alerts.example\"\n",
                "drover.toml:2:11:",
                "webhook URL",
            ),
            (
                "[alerts]\nwebhook = \"https://alerts.example/\"\n",
                "drover.toml:2:11:",
                "only http://",
            ),
            (
                "[http]\nlisten = \"localhost:80\"\n",
                "drover.toml:2:10:",
                "IP:PORT",
            ),
            (
                "[monitor]\ninterval = \"0s\"\n",
                "drover.toml:2:12:",
                "above zero",
            ),
            (
                "[monitor]\nhistory = \"0d\"\n",
                "drover.toml:2:11:",
                "above zero",
            ),
            (
                "[monitor]\ninterval = \"soon\"\n",
                "drover.toml:2:12:",
                "soon",
            ),
            (
                "\nstate_dir = \"var/drover\"\n",
                "drover.toml:2:13:",
                "absolute",
            ),
            ("[rules]\ndir = \"rules\"\n", "drover.toml:2:7:", "absolute"),
            (
                "[http]\nenabled = \"yes\"\n",
                "drover.toml:2:11:",
                "expected a boolean",
            ),
            (
                "[http]\nallowed_hosts = [\"evil.example:80\"]\n",
                "drover.toml:2:17:",
                "without a port",
            ),
        ];
        for (text, location, reason) in cases {
            let err = refused(text);
            assert!(err.contains(location), "{text:?}: {err}");
            assert!(err.contains(reason), "{text:?}: {err}");
        }
        let good = load(
            "state_dir = \"/srv/drover\"\n[http]\nlisten = \"[::1]:9000\"\n\
             allowed_hosts = [\"Drover.Example\", \"[fd00::5]\"]\n\
             [alerts]\nwebhook = \"http://127.0.0.1:9/hook\"\n[rules]\nrole = \"admin\"\n",
        )
        .expect("a good config loads");
        assert_eq!(good.http.allowed_hosts, ["drover.example", "[fd00::5]"]);
        assert_eq!(good.rules.role, Role::Admin);
        assert_eq!(good.http.listen.port(), 9000);
    }

    const EXAMPLE: &str = include_str!("../packaging/drover.toml");

    /// The example's settings as `(table.key, line)`: `#key = value` lines (commented
    /// out) or `key = value` lines, under the table header above them.
    fn example_settings() -> Vec<(String, usize)> {
        let mut table = String::new();
        let mut settings = Vec::new();
        for (n, line) in EXAMPLE.lines().enumerate() {
            if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                table = format!("{header}.");
            } else if let Some((key, _)) = line.trim_start_matches('#').split_once(" = ")
                && !line.starts_with("# ")
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                settings.push((format!("{table}{key}"), n));
            }
        }
        settings
    }

    /// Every setting of `Config` as a TOML key path, from its defaults serialised as JSON
    /// (where an unset optional key is still there, as null).
    fn config_keys() -> std::collections::BTreeSet<String> {
        fn walk(
            path: &str,
            value: &serde_json::Value,
            keys: &mut std::collections::BTreeSet<String>,
        ) {
            match value {
                serde_json::Value::Object(map) => {
                    for (key, value) in map {
                        let path = if path.is_empty() {
                            key.clone()
                        } else {
                            format!("{path}.{key}")
                        };
                        walk(&path, value, keys);
                    }
                }
                _ => {
                    keys.insert(path.to_owned());
                }
            }
        }
        let mut keys = std::collections::BTreeSet::new();
        walk(
            "",
            &serde_json::to_value(Config::default()).unwrap(),
            &mut keys,
        );
        keys
    }

    #[test]
    fn the_packaged_example_changes_nothing() {
        let example = Config::load(
            Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/packaging/drover.toml"
            )),
            true,
        )
        .expect("packaging/drover.toml loads");
        assert_eq!(
            serde_json::to_value(example).unwrap(),
            serde_json::to_value(Config::default()).unwrap(),
            "installing the example must leave every setting at its default"
        );
    }

    #[test]
    fn the_packaged_example_documents_every_key_with_its_default() {
        let settings = example_settings();
        let documented: std::collections::BTreeSet<String> =
            settings.iter().map(|(key, _)| key.clone()).collect();
        assert_eq!(
            documented.len(),
            settings.len(),
            "a key is documented twice"
        );
        assert_eq!(
            documented,
            config_keys(),
            "packaging/drover.toml must document exactly the keys of Config"
        );
        let lines: Vec<&str> = EXAMPLE.lines().collect();
        for (key, n) in &settings {
            // The comment block right above the setting.
            let comment: Vec<&str> = lines[..*n]
                .iter()
                .rev()
                .take_while(|l| l.starts_with("# "))
                .copied()
                .collect();
            assert!(
                comment.iter().any(|l| l.contains("Default")),
                "{key} (line {}) needs a comment saying what it does and its default",
                n + 1
            );
        }
    }

    #[test]
    fn the_packaged_examples_values_are_valid() {
        let uncommented: String = EXAMPLE
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(setting) if !setting.starts_with(' ') && setting.contains(" = ") => setting,
                _ => line,
            })
            .flat_map(|line| [line, "\n"])
            .collect();
        let config = load(&uncommented).expect("every example value is valid");
        assert_eq!(config.rules.role, Role::Viewer);
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
