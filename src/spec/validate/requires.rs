//! `[requires]` and `[step.requires]`: commands, files, env, earlier runs, the repository.

use std::path::Path;

use toml::Spanned;

use super::{Ctx, env_name_problem, workflow_name_problem};
use crate::spec::SpecError;
use crate::spec::raw::{RawGit, RawRequires};
use crate::spec::types::{GitRequirement, Requirements};

impl Ctx<'_> {
    /// `key` is the table's path for messages (`requires`, `step.requires`) and
    /// `who` prefixes them (`step "s": `).
    pub(super) fn validate_requires(
        &self,
        raw: RawRequires,
        key: &str,
        who: &str,
    ) -> Result<Requirements, SpecError> {
        // Each list's entries, checked for blanks and then by `check`.
        let list = |entries: Option<Vec<Spanned<String>>>,
                    field: &str,
                    check: &dyn Fn(&str) -> Option<String>|
         -> Result<Vec<String>, SpecError> {
            let mut out = Vec::new();
            for entry in entries.unwrap_or_default() {
                let problem = if entry.get_ref().trim().is_empty() {
                    Some("entries must not be empty".to_owned())
                } else {
                    check(entry.get_ref())
                };
                if let Some(problem) = problem {
                    return Err(self.err(&entry.span(), format!("{who}`{key}.{field}`: {problem}")));
                }
                out.push(entry.into_inner());
            }
            Ok(out)
        };
        let commands = list(raw.commands, "commands", &|c| {
            // A relative path would depend on the directory the check runs in.
            (c.contains('/') && !Path::new(c).is_absolute()).then(|| {
                format!("{c:?} must be a command name (looked up on PATH) or an absolute path")
            })
        })?;
        let files = list(raw.files, "files", &|_| None)?;
        let env = list(raw.env, "env", &env_name_problem)?;
        let runs = list(raw.runs, "runs", &workflow_name_problem)?;
        let git = match raw.git {
            None => None,
            Some(g) => Some(self.validate_git(g, key, who)?),
        };
        Ok(Requirements {
            commands,
            files,
            env,
            runs,
            git,
        })
    }

    fn validate_git(
        &self,
        raw: Spanned<RawGit>,
        key: &str,
        who: &str,
    ) -> Result<GitRequirement, SpecError> {
        let span = raw.span();
        match raw.into_inner() {
            RawGit::Word(word) if word == "clean" => Ok(GitRequirement {
                clean: true,
                ..GitRequirement::default()
            }),
            RawGit::Word(word) => Err(self.err(
                &span,
                format!(
                    "{who}`{key}.git` must be \"clean\" or a table such as {{ clean = true, branch = \"main\", commit = \"abc123\" }}, got {word:?}"
                ),
            )),
            RawGit::Table(t) => {
                let branch = match t.branch {
                    Some(b) if b.get_ref().trim().is_empty() => {
                        return Err(self.err(
                            &b.span(),
                            format!("{who}`{key}.git.branch` must not be empty"),
                        ));
                    }
                    b => b.map(Spanned::into_inner),
                };
                let commit = match t.commit {
                    None => None,
                    Some(c) => {
                        let hex = c.get_ref();
                        if !(4..=40).contains(&hex.len())
                            || !hex.bytes().all(|b| b.is_ascii_hexdigit())
                        {
                            return Err(self.err(
                                &c.span(),
                                format!(
                                    "{who}`{key}.git.commit` must be 4 to 40 hexadecimal digits, got {hex:?}"
                                ),
                            ));
                        }
                        // git prints ids in lowercase; comparing that way keeps `ABC1` working.
                        Some(hex.to_ascii_lowercase())
                    }
                };
                let clean = t.clean.unwrap_or(false);
                if !clean && branch.is_none() && commit.is_none() {
                    return Err(self.err(
                        &span,
                        format!(
                            "{who}`{key}.git` requires nothing: set `clean = true`, `branch` or `commit`"
                        ),
                    ));
                }
                Ok(GitRequirement {
                    clean,
                    branch,
                    commit,
                })
            }
        }
    }
}
