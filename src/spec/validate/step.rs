//! `[[step]]`: name, `run`, env, timeout, agent, and the step's own retry and requirements.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;

use super::{Ctx, env_name_problem, line_col};
use crate::spec::SpecError;
use crate::spec::raw::{RawRun, RawStep};
use crate::spec::types::{AgentKind, Requirements, RetryPolicy, Step, StepCommand};

/// The agents a step's `agent` may name.
const AGENTS: &[AgentKind] = &[AgentKind::ClaudeCode];

/// The longest string a program's argument or environment may be: Linux's
/// `MAX_ARG_STRLEN` (32 pages) less the terminating NUL. A shell `run` is one argument
/// (`sh -c`), an `env` entry one `KEY=VALUE` string.
pub(in crate::spec) const MAX_ARG: usize = 128 * 1024 - 1;
/// What a step's `run`, `env` and each `on_kill` command may take together: half of
/// `ARG_MAX` (2 MiB here, shared by arguments and environment), which leaves room for the
/// agent's environment, the `DROVER_*` variables and the run's parameters (256 KiB at most).
pub(in crate::spec) const MAX_STEP_EXEC: usize = 1024 * 1024;

impl Ctx<'_> {
    /// Step number `index` (0-based); `seen` holds the names before it with their spans,
    /// for the duplicate message.
    pub(super) fn validate_step(
        &self,
        index: usize,
        raw: Spanned<RawStep>,
        workflow_retry: &RetryPolicy,
        seen: &mut BTreeMap<String, Range<usize>>,
    ) -> Result<Step, SpecError> {
        // The step's own span is its `[[step]]` header: the best place to point
        // at when a required key is missing.
        let header = raw.span();
        let raw = raw.into_inner();
        let ordinal = index + 1;

        let Some(name) = raw.name else {
            return Err(self.err(
                &header,
                format!("step #{ordinal} is missing required key `name`"),
            ));
        };
        let name_span = name.span();
        let name = name.into_inner();
        if !valid_step_name(&name) {
            return Err(self.err(
                &name_span,
                format!(
                    "invalid step name {name:?}: use 1 to 64 characters of letters, digits, '_' and '-'"
                ),
            ));
        }
        if let Some(first) = seen.get(&name) {
            let (first_line, _) = line_col(self.text, first.start);
            return Err(self.err(
                &name_span,
                format!("duplicate step name {name:?} (first defined at line {first_line})"),
            ));
        }
        seen.insert(name.clone(), name_span);

        let Some(run) = raw.run else {
            return Err(self.err(
                &header,
                format!("step {name:?} is missing required key `run`"),
            ));
        };
        let run_span = run.span();
        // Where `run` passes a session option, rejected below for agent steps.
        let session_option_at: Option<(Range<usize>, &str)>;
        let run = match run.into_inner() {
            RawRun::Shell(script) => {
                self.check_exec_string(&run_span, &name, "`run`", &script)?;
                if script.trim().is_empty() {
                    return Err(self.err(
                        &run_span,
                        format!("step {name:?}: `run` must not be a blank string"),
                    ));
                }
                // Words split at blanks, quotes and shell operators: enough to spot
                // an option without a full shell parser.
                session_option_at = script
                    .split(|c: char| c.is_whitespace() || "'\"`;&|()<>".contains(c))
                    .find_map(session_option)
                    .map(|opt| (run_span.clone(), opt));
                StepCommand::Shell(script)
            }
            RawRun::Argv(argv) => {
                let Some(program) = argv.first() else {
                    return Err(self.err(
                        &run_span,
                        format!("step {name:?}: `run` must not be an empty array"),
                    ));
                };
                if program.get_ref().is_empty() {
                    return Err(self.err(
                        &program.span(),
                        format!(
                            "step {name:?}: the program (first element of `run`) must not be empty"
                        ),
                    ));
                }
                for arg in &argv {
                    self.check_exec_string(
                        &arg.span(),
                        &name,
                        "an argument of `run`",
                        arg.get_ref(),
                    )?;
                }
                session_option_at = argv
                    .iter()
                    .find_map(|arg| session_option(arg.get_ref()).map(|opt| (arg.span(), opt)));
                StepCommand::Argv(argv.into_iter().map(Spanned::into_inner).collect())
            }
        };

        // Bytes the step's exec takes: arguments, and `KEY=VALUE` strings; each with its NUL.
        let mut exec_bytes: usize = run.argv().iter().map(|a| a.len() + 1).sum();
        let mut env = BTreeMap::new();
        for (key, value) in raw.env.unwrap_or_default() {
            if let Some(problem) = env_name_problem(key.get_ref()) {
                return Err(self.err(&key.span(), format!("step {name:?}: {problem}")));
            }
            let entry_len = key.get_ref().len() + 1 + value.get_ref().len();
            if entry_len > MAX_ARG {
                return Err(self.err(
                    &value.span(),
                    format!(
                        "step {name:?}: `env.{}` is {entry_len} bytes as KEY=VALUE: a program's environment string may be at most {MAX_ARG}",
                        key.get_ref()
                    ),
                ));
            }
            self.check_exec_string(
                &value.span(),
                &name,
                &format!("`env.{}`", key.get_ref()),
                value.get_ref(),
            )?;
            exec_bytes += entry_len + 1;
            env.insert(key.into_inner(), value.into_inner());
        }
        if exec_bytes > MAX_STEP_EXEC {
            return Err(self.err(
                &run_span,
                format!(
                    "step {name:?}: `run` and `env` take {exec_bytes} bytes together: a step may pass at most {MAX_STEP_EXEC} to its program"
                ),
            ));
        }

        let timeout = match raw.timeout {
            None => None,
            Some(t) => Some(self.positive_duration(&t, "step.timeout")?),
        };

        let agent = match raw.agent {
            None => None,
            Some(a) => {
                let found = AGENTS.iter().copied().find(|k| k.as_str() == a.get_ref());
                match found {
                    Some(kind) => Some(kind),
                    None => {
                        let allowed: Vec<String> =
                            AGENTS.iter().map(|k| format!("{:?}", k.as_str())).collect();
                        return Err(self.err(
                            &a.span(),
                            format!(
                                "step {name:?}: unknown agent {:?}: supported agents: {}",
                                a.get_ref(),
                                allowed.join(", ")
                            ),
                        ));
                    }
                }
            }
        };

        if let (Some(kind), Some((span, opt))) = (agent, session_option_at) {
            return Err(self.err(
                &span,
                format!(
                    "step {name:?}: `run` must not pass {opt}: drover gives {} steps --session-id or --resume itself",
                    kind.as_str()
                ),
            ));
        }

        let who = format!("step {name:?}: ");
        let retry = match raw.retry {
            Some(r) => self.validate_retry(workflow_retry, r, "step.retry", &who)?,
            None => workflow_retry.clone(),
        };
        let requires = match raw.requires {
            Some(r) => self.validate_requires(r, "step.requires", &who)?,
            None => Requirements::default(),
        };
        let stall_after = match raw.stall_after {
            None => None,
            Some(t) => Some(self.positive_duration(&t, "step.stall_after")?),
        };

        let mut on_kill = Vec::new();
        for command in raw.on_kill.unwrap_or_default() {
            self.check_exec_string(
                &command.span(),
                &name,
                "an `on_kill` command",
                command.get_ref(),
            )?;
            if command.get_ref().trim().is_empty() {
                return Err(self.err(
                    &command.span(),
                    format!("step {name:?}: `on_kill` commands must not be blank"),
                ));
            }
            on_kill.push(command.into_inner());
        }

        Ok(Step {
            name,
            run,
            env,
            timeout,
            critical: raw.critical.unwrap_or(false),
            checkpoint: raw.checkpoint.unwrap_or(false),
            agent,
            on_kill,
            retry,
            requires,
            stall_after,
        })
    }
}

impl Ctx<'_> {
    /// A string the step's program receives (an argument, an environment value): no NUL
    /// byte, which no such string can hold, and at most [`MAX_ARG`] bytes.
    fn check_exec_string(
        &self,
        span: &Range<usize>,
        step: &str,
        what: &str,
        text: &str,
    ) -> Result<(), SpecError> {
        if text.contains('\0') {
            return Err(self.err(
                span,
                format!("step {step:?}: {what} contains a NUL byte, which no program's argument or environment can hold"),
            ));
        }
        if text.len() > MAX_ARG {
            return Err(self.err(
                span,
                format!(
                    "step {step:?}: {what} is {} bytes: a program's argument or environment string may be at most {MAX_ARG}",
                    text.len()
                ),
            ));
        }
        Ok(())
    }
}

fn valid_step_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Claude Code options that pick a session; drover passes its own, so a step's
/// `run` may not. Returns the option `word` spells, also as `--opt=value`.
fn session_option(word: &str) -> Option<&'static str> {
    ["--session-id", "--resume", "--continue", "--fork-session"]
        .into_iter()
        .find(|opt| {
            word.strip_prefix(opt)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('='))
        })
}
