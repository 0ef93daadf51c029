//! Workflow files: parses and validates a workflow TOML file into a [`Workflow`],
//! rejecting bad input with `FILE:LINE:COL: reason` before anything is started.
//!
//! Parsing happens in two layers. Private `Raw*` structs (`raw`) mirror the file
//! exactly (with `toml::Spanned` so every value keeps its byte range); `validate` then
//! turns them into the public, span-free types (`types`) the engine stores as JSON.
//! Keeping the layers apart means the stored form never depends on TOML details.

mod raw;
#[cfg(test)]
mod tests;
mod types;
mod validate;

use std::path::{Path, PathBuf};

pub use types::{AgentKind, GitRequirement, Requirements, Step, StepCommand, Workflow};

/// Why a workflow file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{}:{line}:{column}: {reason}", file.display())]
    Invalid {
        file: PathBuf,
        /// 1-based.
        line: usize,
        /// 1-based, counted in characters.
        column: usize,
        reason: String,
    },
}

impl SpecError {
    /// 1-based line of the problem.
    pub fn line(&self) -> usize {
        match self {
            SpecError::Invalid { line, .. } => *line,
        }
    }

    /// 1-based column of the problem.
    pub fn column(&self) -> usize {
        match self {
            SpecError::Invalid { column, .. } => *column,
        }
    }
}

/// Validates workflow `text`. `origin` names the file in messages and is the base
/// for a relative `workspace`.
pub fn parse(text: &str, origin: &Path) -> Result<Workflow, SpecError> {
    let ctx = validate::Ctx { text, origin };
    let raw: raw::RawWorkflow = toml::from_str(text).map_err(|e| ctx.toml_error(&e))?;
    ctx.validate(raw)
}
