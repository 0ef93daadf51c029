//! `drover rules check [DIR]`: compiles and dry-runs rule files without an agent.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::config::{self, Bus, Config};
use crate::rules::{self, RuleDirs};

/// Checks every rule in `dir`, or in the configured directories (the operator's files
/// over the shipped ones); prints `FILE:LINE:COL: reason` for each error.
pub fn check(dir: Option<&Path>, config: Option<PathBuf>, bus: Bus) -> anyhow::Result<ExitCode> {
    let files = match dir {
        Some(dir) => {
            if !dir.is_dir() {
                anyhow::bail!("{}: not a directory", dir.display());
            }
            rules::rule_files(dir)?
        }
        None => {
            let path = match config {
                Some(path) => path,
                None => config::default_path(bus)?,
            };
            let config = Config::load(&path, false)?;
            let dirs = RuleDirs::from_config(&config.rules, &path);
            dirs.files()
                .with_context(|| format!("reading the rules directories {dirs:?}"))?
        }
    };
    if files.is_empty() {
        outln!("no rules (*.{}) found", rules::EXTENSION)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = 0;
    for path in files.values() {
        match rules::check_file(path) {
            Ok(asked) if asked.is_empty() => outln!("ok {}", path.display())?,
            Ok(asked) => outln!(
                "ok {} (on the sample run: {})",
                path.display(),
                asked.join(", ")
            )?,
            Err(errors) => {
                failed += 1;
                for error in errors {
                    errln!("{error}");
                }
            }
        }
    }
    if failed > 0 {
        errln!("drover: {failed} of {} rule files have errors", files.len());
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}
