//! drover: a host agent that runs coding-agent workflows in systemd scopes and lets
//! operators kill, restart and monitor them. See `docs/architecture.md` for the map.

pub(crate) mod agent;
pub(crate) mod alerts;
pub mod api;
pub(crate) mod auth;
pub(crate) mod automation;
pub mod cgroup;
pub mod claude;
pub mod cli;
pub(crate) mod config;
pub(crate) mod credentials;
pub mod engine;
pub(crate) mod history;
#[cfg(test)]
mod layering;
pub mod model;
pub(crate) mod monitor;
pub(crate) mod ops;
pub(crate) mod quantity;
pub(crate) mod recovery;
pub(crate) mod reload;
pub mod rules;
pub mod sandbox;
pub mod selfmetrics;
pub mod snapshot;
pub(crate) mod spec;
pub(crate) mod state_dir;
pub mod store;
mod sync;
pub mod systemd;
pub(crate) mod terminate;
#[cfg(test)]
mod testing;
pub(crate) mod tokens;
pub(crate) mod worktree;
