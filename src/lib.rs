//! drover: a host agent that runs coding-agent workflows in systemd scopes and lets
//! operators kill, restart and monitor them. See `docs/architecture.md` for the map.

pub mod agent;
pub mod alerts;
pub mod api;
pub mod automation;
pub mod cgroup;
pub mod claude;
pub mod cli;
pub mod config;
pub mod engine;
pub mod history;
#[cfg(test)]
mod layering;
pub mod model;
pub mod monitor;
pub mod recovery;
pub mod reload;
pub mod rules;
pub mod sandbox;
pub mod selfmetrics;
pub mod snapshot;
pub mod spec;
pub mod store;
pub mod systemd;
pub mod terminate;
#[cfg(test)]
mod testing;
pub mod worktree;
