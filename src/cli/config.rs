//! `drover config check [FILE]`: validates a config file the way the agent does
//! ([`Config::load`]), without an agent.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{self, Bus, Config};

/// Checks `file`, or the file the agent on `bus` would read. An error is returned (and
/// printed as `FILE:LINE:COL: reason`) exactly as the agent would refuse to start with it.
pub fn check(file: Option<PathBuf>, bus: Bus) -> anyhow::Result<ExitCode> {
    let (path, required) = match file {
        Some(path) => (path, true),
        None => (config::default_path(bus)?, false),
    };
    // The agent runs with the defaults when its default file is absent: so may the check.
    if !required && !path.exists() {
        outln!("{}: not found; the agent uses the defaults", path.display())?;
        return Ok(ExitCode::SUCCESS);
    }
    Config::load(&path, true)?;
    outln!("{}: ok", path.display())?;
    Ok(ExitCode::SUCCESS)
}
