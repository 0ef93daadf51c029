//! The arguments that start or resume a Claude Code step's session.

use crate::spec::StepCommand;

/// How a Claude Code step begins its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStart {
    /// A first attempt: `--session-id <id>` (2.1.197 refuses an id already used).
    New(String),
    /// A later attempt continuing the session: `--resume <id>`.
    Resume(String),
}

/// The step's argv with the session flag appended. For the shell form the flag is appended
/// to the script text (quoted), so the script must end with the `claude` invocation.
pub fn session_argv(command: &StepCommand, start: &SessionStart) -> Vec<String> {
    let (flag, id) = match start {
        SessionStart::New(id) => ("--session-id", id),
        SessionStart::Resume(id) => ("--resume", id),
    };
    match command {
        StepCommand::Argv(argv) => {
            let mut argv = argv.clone();
            argv.extend([flag.to_owned(), id.clone()]);
            argv
        }
        StepCommand::Shell(script) => {
            // Trailing newlines would put the flag on a command line of its own.
            let script = format!("{} {flag} {}", script.trim_end(), shell_quote(id));
            StepCommand::Shell(script).argv()
        }
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_flags_are_appended() {
        let argv = StepCommand::Argv(vec!["claude".into(), "-p".into(), "fix it".into()]);
        assert_eq!(
            session_argv(&argv, &SessionStart::New("abc".into())),
            ["claude", "-p", "fix it", "--session-id", "abc"]
        );
        assert_eq!(
            session_argv(&argv, &SessionStart::Resume("abc".into())),
            ["claude", "-p", "fix it", "--resume", "abc"]
        );
        let shell = StepCommand::Shell("cd sub && claude -p 'fix it'\n".into());
        assert_eq!(
            session_argv(&shell, &SessionStart::Resume("a'b".into())),
            [
                "/bin/sh",
                "-c",
                r"cd sub && claude -p 'fix it' --resume 'a'\''b'"
            ]
        );
    }
}
