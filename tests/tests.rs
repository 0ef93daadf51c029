//! The integration suite: every test runs against a real systemd user manager, a real
//! D-Bus bus and a real journald in a private sandbox of its own (`drover sandbox`), with
//! real git repositories and a real SQLite state DB.

mod support;

mod alerts;
mod api;
mod automation;
mod claude;
mod config;
mod dashboard;
mod dbus_policy;
mod disk_full;
mod events;
mod failures;
mod history;
mod hostile_input;
mod http;
mod http_api;
mod kill;
mod least_privilege;
mod monitor;
mod package;
mod restart;
mod rules;
mod run;
mod runbook;
mod sandbox;
mod survive_restart;
mod tokens;
mod units;
mod workflow_errors;
