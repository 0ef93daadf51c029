//! Validation: turns the raw, spanned file into the validated types, pinning every
//! rejection to `FILE:LINE:COL`. A file per subject adds its part to [`Ctx`].

mod limits;
mod requires;
mod retry;
mod step;
mod workflow;

#[cfg(test)]
pub(super) use step::{MAX_ARG, MAX_STEP_EXEC};

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::SpecError;
use crate::quantity::parse_duration;

/// The file being validated, for pinning errors to positions in it.
pub(super) struct Ctx<'a> {
    pub(super) text: &'a str,
    /// Names the file in messages; the base for a relative `workspace`.
    pub(super) origin: &'a Path,
}

impl Ctx<'_> {
    /// An error at byte offset `at` of the text.
    fn err_at(&self, at: usize, reason: impl fmt::Display) -> SpecError {
        let (line, column) = line_col(self.text, at);
        SpecError::Invalid {
            file: self.origin.to_path_buf(),
            line,
            column,
            reason: reason.to_string(),
        }
    }

    fn err(&self, span: &Range<usize>, reason: impl fmt::Display) -> SpecError {
        self.err_at(span.start, reason)
    }

    /// Rewords toml/serde errors for workflow authors and pins them to a position.
    pub(super) fn toml_error(&self, e: &toml::de::Error) -> SpecError {
        let span = e.span().unwrap_or(0..0);
        // toml only reveals the key path (`limits.tasks_max`) in its Display,
        // and only when it has no input to render a snippet from.
        let mut bare = e.clone();
        bare.set_input(None);
        let rendered = bare.to_string();
        let key_path = rendered
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("in `")?.strip_suffix('`'))
            .map(str::to_owned);

        let message = e.message().replace('\n', " ");
        let reason = if let Some(rest) = message.strip_prefix("unknown field ") {
            // serde: "unknown field `x`, expected one of `a`, `b`"
            let (key, allowed) = rest.split_once(", expected ").unwrap_or((rest, ""));
            let allowed = allowed.strip_prefix("one of ").unwrap_or(allowed);
            let place = match key_path.as_deref() {
                None => "at the top level".to_owned(),
                Some("limits") => "in [limits]".to_owned(),
                Some("kill") => "in [kill]".to_owned(),
                Some("retry") => "in [retry]".to_owned(),
                Some("requires") => "in [requires]".to_owned(),
                Some("step.retry") => "in [step.retry]".to_owned(),
                Some("step.requires") => "in [step.requires]".to_owned(),
                Some("step") => "in [[step]]".to_owned(),
                Some(other) => format!("in `{other}`"),
            };
            format!("unknown key {key} {place}; allowed keys: {allowed}")
        } else {
            let message = message
                .replace("expected i64", "expected an integer")
                .replace("expected f64", "expected a number")
                .replace("expected a sequence", "expected an array")
                .replace("expected a map", "expected a table");
            let message = if message == "duplicate key" {
                match self.text.get(span.clone()) {
                    Some(key) if !key.is_empty() => format!("duplicate key `{key}`"),
                    _ => message,
                }
            } else {
                message
            };
            match key_path {
                Some(path) => format!("`{path}`: {message}"),
                None => message,
            }
        };
        self.err_at(span.start, reason)
    }

    /// A duration above zero; `key` names it in the message.
    fn positive_duration(&self, t: &Spanned<String>, key: &str) -> Result<Duration, SpecError> {
        let d = parse_duration(t.get_ref()).map_err(|m| self.err(&t.span(), m))?;
        if d.is_zero() {
            return Err(self.err(
                &t.span(),
                format!("`{key}` must be greater than 0, got {:?}", t.get_ref()),
            ));
        }
        Ok(d)
    }
}

/// Why `name` cannot name a workflow (in `name` or `requires.runs`), or `None`.
fn workflow_name_problem(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    // "." and ".." would be dangerous if the name ever becomes a path component.
    (!valid || name == "." || name == "..").then(|| {
        format!("invalid workflow name {name:?}: use only letters, digits, '_', '-' and '.'")
    })
}

/// Why `name` cannot name an environment variable (in a step's `env` or
/// `requires.env`), or `None`.
fn env_name_problem(name: &str) -> Option<String> {
    let mut bytes = name.bytes();
    let valid = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    (!valid).then(|| {
        format!("invalid environment variable name {name:?}: expected [A-Za-z_][A-Za-z0-9_]*")
    })
}

/// Byte offset -> 1-based (line, column); columns count characters so they match
/// what an editor shows. Offsets past the end clamp to the end of the text.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
