//! The command line: argument definitions and dispatch. Every client command talks to the
//! agent over D-Bus (`cli/<command>.rs` mirrors the API call of the same name).
//!
//! Commands print with [`outln!`] and [`out!`], which return the write's error rather than
//! panic as `println!` does: output to a closed pipe (`drover show RUN | head -1`) ends the
//! command quietly with status 0, as ripgrep does ([`main`]).

/// `println!` that returns the `io::Result` of the write.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
    }};
}

/// `print!` that returns the `io::Result` of the write.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout(), $($arg)*)
    }};
}

/// `eprintln!` that cannot panic: a message for a stderr nobody reads any more (a closed
/// pipe) is dropped, there being nowhere else to say it.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod alerts;
mod audit;
mod checkpoint;
mod config;
mod critical;
mod format;
mod history;
mod kill;
mod logs;
mod metrics;
mod ps;
mod reload;
mod restart;
mod rollback;
mod rules;
mod run;
mod show;
mod silence;
mod token;
mod top;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use std::collections::HashMap;

use zbus::{DBusError, OwnedVariant};

use crate::api::DroverProxy;
use crate::api::dbus::ApiError;
use crate::config::Bus;

#[derive(Debug, Parser)]
#[command(
    name = "drover",
    version,
    about = "Run coding-agent workflows under systemd: kill, restart, monitor"
)]
pub struct Cli {
    #[command(flatten)]
    bus: BusArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct BusArgs {
    /// Talk to the agent on the session bus (default for non-root users, or when
    /// DBUS_SESSION_BUS_ADDRESS is set).
    #[arg(long, global = true, conflicts_with = "system")]
    user: bool,
    /// Talk to the agent on the system bus (default for root without a session bus).
    #[arg(long, global = true)]
    system: bool,
}

impl BusArgs {
    fn bus(&self) -> Bus {
        match (self.user, self.system) {
            (true, _) => Bus::User,
            (_, true) => Bus::System,
            _ => Bus::default_for_this_process(),
        }
    }
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Compile and dry-run every rule against a sample run (no agent needed).
    Check {
        /// A directory of *.rhai files (default: the configured rules directories).
        dir: Option<PathBuf>,
        /// Configuration file naming the rules directories.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a bearer token for the HTTP API; prints it once.
    Create {
        /// Letters, digits, '.', '_' and '-'.
        name: String,
        /// viewer, operator or admin: at most your own.
        #[arg(long)]
        role: String,
        /// Whose token it is, by name or uid (default: yours; another user's needs admin).
        /// (Not `--user`: that chooses the bus.)
        #[arg(long = "for", value_name = "USER")]
        owner: Option<String>,
        /// How long it is valid, e.g. "30d" (default: until revoked).
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List tokens (an admin sees every one; anyone else their own); never their secrets.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: it admits nobody from now on.
    Revoke {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a config file as the agent would (no agent needed); prints `FILE: ok`.
    Check {
        /// The file (default: the one the agent reads: /etc/drover/drover.toml or
        /// $XDG_CONFIG_HOME/drover/drover.toml).
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (the daemon that owns org.drover.Drover1).
    Agent {
        /// Configuration file (default: /etc/drover/drover.toml or $XDG_CONFIG_HOME/drover/drover.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// State directory (default: from the config, else /var/lib/drover or $XDG_STATE_HOME/drover).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// The agent's configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Make the agent re-read its config file (an invalid one changes nothing).
    Reload {
        #[arg(long)]
        json: bool,
    },
    /// Rhai alert and automation rules.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Start a run of a workflow file; prints the run id.
    Run {
        file: PathBuf,
        /// A parameter, given to the steps as $DROVER_PARAM_<KEY>.
        #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Wait for the run to end; exit 0 only if it succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// List runs (unfinished ones unless --all).
    Ps {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show one run and its steps.
    Show {
        run: String,
        #[arg(long)]
        json: bool,
    },
    /// Print a run's step output.
    Logs {
        run: String,
        /// Only this step.
        #[arg(long)]
        step: Option<String>,
        /// Keep printing new output until the run ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Kill a run: SIGTERM to its scope, a grace, SIGKILL; cleanup; final snapshot.
    Kill {
        run: String,
        /// Why (kept in the audit trail).
        #[arg(long)]
        reason: Option<String>,
        /// Time between SIGTERM and SIGKILL (default: the workflow's `[kill] grace`).
        #[arg(long, value_name = "DURATION")]
        grace: Option<String>,
        /// Confirm the kill of a protected workflow.
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
    /// Run CMD in a critical section of the current run: a kill waits for it.
    Critical {
        /// A name for the section (default: CMD's program).
        #[arg(long)]
        label: Option<String>,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
    /// The kill audit trail.
    Audit {
        #[arg(long)]
        run: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Take a checkpoint of a run now (its worktree and state as a git commit).
    Checkpoint {
        run: String,
        /// A note kept with the checkpoint.
        #[arg(long)]
        label: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List a run's checkpoints.
    Checkpoints {
        run: String,
        #[arg(long)]
        json: bool,
    },
    /// Restart an ended run from a checkpoint: restore its worktree and state, resume its
    /// agent session, and go on with the next step.
    Restart {
        run: String,
        /// The checkpoint number, or "latest".
        #[arg(long, value_name = "N|latest", default_value = "latest", value_parser = parse_checkpoint)]
        from: CheckpointChoice,
        /// Confirm the restart of a protected workflow.
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
    /// Reset an ended run's worktree to checkpoint N without starting anything (the
    /// worktree as it was is kept as a checkpoint first).
    Rollback {
        run: String,
        #[arg(long, value_name = "N")]
        to: u32,
        /// Confirm the rollback of a protected workflow.
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
    /// Trends per day: runs, success rate, duration p50/p95, cost, failure classes,
    /// kills and restarts.
    History {
        /// Only this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// How far back, e.g. 7d, 12h, 30d.
        #[arg(long, default_value = "7d")]
        since: String,
        #[arg(long)]
        json: bool,
    },
    /// List firing alerts (every alert with --all).
    Alerts {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Hold back the alerts of a rule or a run for a while (they are still stored).
    Silence {
        /// A rule name or a run id.
        #[arg(value_name = "RULE|RUN")]
        target: String,
        /// How long, e.g. "1h" or "30m".
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why (kept in the audit trail).
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Bearer tokens for the HTTP API.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// List silences in force (every silence with --all).
    Silences {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// A running run's live metrics: CPU, memory, tasks, IO, output, idle time, cost.
    Metrics {
        run: String,
        #[arg(long)]
        json: bool,
    },
    /// A live table of the unfinished runs, refreshed every second (q or Ctrl-C quits).
    Top {
        /// Print one frame and exit (for scripts).
        #[arg(long)]
        once: bool,
        /// Seconds between refreshes (0.1 to 3600).
        #[arg(long, default_value = "1", value_parser = parse_interval)]
        interval: f64,
    },
    /// Run CMD inside a private systemd user manager, session bus and journald (for hosts
    /// whose PID 1 is not systemd; needs root).
    Sandbox {
        /// Write the sandbox's SandboxInfo (JSON) here once it is ready.
        #[arg(long, value_name = "FILE")]
        info: Option<PathBuf>,
        /// The command to run, and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
    /// Internal: supervise one step inside its scope.
    #[command(name = "__shim", hide = true)]
    Shim { spec: PathBuf },
}

/// Which checkpoint a restart goes on from.
#[derive(Debug, Clone, Copy)]
enum CheckpointChoice {
    Latest,
    Number(u32),
}

fn parse_checkpoint(text: &str) -> Result<CheckpointChoice, String> {
    if text == "latest" {
        return Ok(CheckpointChoice::Latest);
    }
    text.parse()
        .map(CheckpointChoice::Number)
        .map_err(|_| format!("expected a checkpoint number or \"latest\", got {text:?}"))
}

fn parse_interval(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| (0.1..=3600.0).contains(s))
        .ok_or_else(|| format!("expected seconds from 0.1 to 3600, got {text:?}"))
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = Cli::parse_from(args);
    match cli.command {
        // The shim stays single-threaded and free of the async runtime.
        Command::Shim { spec } => return exit_code(crate::engine::shim::main(&spec)),
        // The sandbox unshares its mount namespace, which needs a single-threaded process.
        Command::Sandbox { info, command } => {
            let opts = crate::sandbox::SandboxOptions {
                info_file: info,
                command,
            };
            return match crate::sandbox::run(&opts) {
                Ok(code) => exit_code(code),
                Err(e) => {
                    errln!("drover sandbox: {e}");
                    exit_code(e.exit_code())
                }
            };
        }
        _ => {}
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            errln!("drover: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        // Whoever read the output has gone (`| head`): nothing is wrong, and nobody to tell.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("drover: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let bus = cli.bus.bus();
    match cli.command {
        Command::Agent { config, state_dir } => {
            crate::agent::run(crate::agent::AgentOptions {
                bus,
                config,
                state_dir,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => config::check(file, bus),
        Command::Reload { json } => reload::run(&connect(bus).await?, json).await,
        Command::Rules {
            command: RulesCommand::Check { dir, config },
        } => rules::check(dir.as_deref(), config, bus),
        Command::Run { file, params, wait } => {
            run::run(&connect(bus).await?, &file, params, wait).await
        }
        Command::Ps { all, json } => ps::run(&connect(bus).await?, all, json).await,
        Command::Show { run, json } => show::run(&connect(bus).await?, &run, json).await,
        Command::Kill {
            run,
            reason,
            grace,
            yes,
            json,
        } => kill::run(&connect(bus).await?, &run, reason, grace, yes, json).await,
        Command::Critical { label, command } => {
            critical::run(&connect(bus).await?, label, &command).await
        }
        Command::Audit { run, json } => {
            audit::run(&connect(bus).await?, run.as_deref(), json).await
        }
        Command::Checkpoint { run, label, json } => {
            checkpoint::take(&connect(bus).await?, &run, label.as_deref(), json).await
        }
        Command::Checkpoints { run, json } => {
            checkpoint::list(&connect(bus).await?, &run, json).await
        }
        Command::Restart {
            run,
            from,
            yes,
            json,
        } => {
            let from = match from {
                CheckpointChoice::Latest => None,
                CheckpointChoice::Number(n) => Some(n),
            };
            restart::run(&connect(bus).await?, &run, from, yes, json).await
        }
        Command::Rollback { run, to, yes, json } => {
            rollback::run(&connect(bus).await?, &run, to, yes, json).await
        }
        Command::Logs { run, step, follow } => {
            logs::run(&connect(bus).await?, &run, step.as_deref(), follow).await
        }
        Command::History {
            workflow,
            since,
            json,
        } => history::run(&connect(bus).await?, workflow.as_deref(), &since, json).await,
        Command::Alerts { all, json } => alerts::run(&connect(bus).await?, all, json).await,
        Command::Silence {
            target,
            duration,
            reason,
            json,
        } => {
            silence::add(
                &connect(bus).await?,
                &target,
                &duration,
                reason.as_deref(),
                json,
            )
            .await
        }
        Command::Silences { all, json } => silence::list(&connect(bus).await?, all, json).await,
        Command::Token { command } => {
            let proxy = connect(bus).await?;
            match command {
                TokenCommand::Create {
                    name,
                    role,
                    owner,
                    expires,
                    json,
                } => {
                    token::create(
                        &proxy,
                        &name,
                        &role,
                        owner.as_deref(),
                        expires.as_deref(),
                        json,
                    )
                    .await
                }
                TokenCommand::List { json } => token::list(&proxy, json).await,
                TokenCommand::Revoke { name, json } => token::revoke(&proxy, &name, json).await,
            }
        }
        Command::Metrics { run, json } => metrics::run(&connect(bus).await?, &run, json).await,
        Command::Top { once, interval } => top::run(&connect(bus).await?, once, interval).await,
        Command::Shim { .. } | Command::Sandbox { .. } => {
            unreachable!("handled before the runtime starts")
        }
    }
}

/// Whether `e` is, or was caused by, a write to a pipe whose reader has gone.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// A child's status as this process's own: its code, or 128 + the signal that ended it.
fn exit_status(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    exit_code(
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
    )
}

async fn connect(bus: Bus) -> anyhow::Result<DroverProxy<'static>> {
    let conn = match bus {
        Bus::User => zbus::Connection::session()
            .await
            .context("cannot connect to the session bus"),
        Bus::System => zbus::Connection::system()
            .await
            .context("cannot connect to the system bus"),
    }?;
    Ok(DroverProxy::new(&conn).await?)
}

/// Turns an error from the agent into the one line it carries.
fn api_error(e: ApiError) -> anyhow::Error {
    match e {
        ApiError::ZBus(zbus::Error::MethodError(name, detail, _)) => match name.as_str() {
            "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner" => {
                anyhow::anyhow!(
                    "no drover agent is running on this bus (start one with `drover agent`)"
                )
            }
            _ => anyhow::anyhow!("{}", detail.unwrap_or_else(|| name.to_string())),
        },
        ApiError::ZBus(other) => {
            anyhow::Error::new(other).context("D-Bus call to the agent failed")
        }
        refused => anyhow::anyhow!("{}", refused.description().unwrap_or_default()),
    }
}

/// A method's `a{sv}` options, from what the command line gave.
fn options<const N: usize>(
    given: [(&str, Option<OwnedVariant>); N],
) -> HashMap<String, OwnedVariant> {
    given
        .into_iter()
        .filter_map(|(key, value)| Some((key.to_owned(), value?)))
        .collect()
}

/// Whether the caller confirmed `action` ("Kill", "Restart", …) of a protected run: by
/// `--yes`, or by answering on a terminal. An unprotected run needs no confirmation; off
/// a terminal the agent refuses an unconfirmed one with a message naming `--yes`.
async fn confirmed(
    proxy: &DroverProxy<'_>,
    id: &str,
    action: &str,
    yes: bool,
) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(true);
    }
    let run = get_run(proxy, id).await?;
    if !run.protected || !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    write!(
        std::io::stderr(),
        "run {id} (workflow {}) is protected. {action} it? [y/N] ",
        run.workflow
    )?;
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        anyhow::bail!("nothing done: not confirmed");
    }
    Ok(true)
}

/// Fetches and decodes one run.
async fn get_run(proxy: &DroverProxy<'_>, id: &str) -> anyhow::Result<crate::model::Run> {
    let json = proxy.get(id).await.map_err(api_error)?;
    serde_json::from_str(&json).context("the agent sent a run this client cannot read")
}
