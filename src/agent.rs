//! `drover agent`: wires the parts into the daemon. It connects to the bus, re-adopts the
//! runs the last agent left, serves the D-Bus API, and then owns the bus name.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use nix::fcntl::{Flock, FlockArg};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use zbus::fdo::{RequestNameFlags, RequestNameReply};

use crate::alerts::Alerts;
use crate::api;
use crate::auth::Authorizer;
use crate::automation;
use crate::config::{self, Bus, Config};
use crate::engine::{Engine, EngineConfig};
use crate::monitor::{Monitor, MonitorOptions};
use crate::ops::{Caller, Ops};
use crate::reload::{self, Reloader};
use crate::rules::{RuleDirs, Rules};
use crate::state_dir;
use crate::store::StoreReader;
use crate::systemd::Systemd;
use crate::tokens::Tokens;

pub struct AgentOptions {
    pub bus: Bus,
    pub config: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
}

pub async fn run(opts: AgentOptions) -> anyhow::Result<()> {
    init_logging();
    if nix::unistd::geteuid().is_root() {
        ignore_users_git_config()?;
    }
    let (config_path, required) = match &opts.config {
        Some(path) => (path.clone(), true),
        None => (config::default_path(opts.bus)?, false),
    };
    let config = Config::load(&config_path, required)?;
    let state_dir = match opts.state_dir {
        Some(dir) => dir,
        None => config.state_dir(opts.bus)?,
    };
    // Parameters, step environments and output are in there: 0700, and every file 0600.
    let fixed = state_dir::secure(&state_dir).with_context(|| {
        format!(
            "cannot make the state directory {} private",
            state_dir.display()
        )
    })?;
    if fixed > 0 {
        tracing::warn!(
            drover_event = "state-dir-secured",
            "{fixed} files and directories in {} were readable by others: made private",
            state_dir.display()
        );
    }
    // One agent per state directory: a second would drive the same runs twice. Held until
    // exit (the file is close-on-exec, so the step shims never hold it).
    let lock_path = state_dir.join("agent.lock");
    let lock_file = state_dir::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        anyhow::anyhow!(
            "another drover agent is using {} ({errno}); stop it first",
            state_dir.display()
        )
    })?;

    let conn = match opts.bus {
        Bus::User => zbus::Connection::session().await,
        Bus::System => zbus::Connection::system().await,
    }
    .with_context(|| format!("cannot connect to the {} bus", bus_name(opts.bus)))?;
    let systemd = Systemd::new(&conn)
        .await
        .context("cannot reach systemd's manager on that bus")?;
    let shim_exe =
        std::env::current_exe().context("cannot find the drover binary for the step shims")?;
    let engine = Engine::start(
        EngineConfig {
            state_dir: state_dir.clone(),
            shim_exe,
        },
        systemd.clone(),
    )
    .await?;
    let monitor = Monitor::start(
        engine.clone(),
        systemd,
        MonitorOptions::from_config(&config.monitor),
    )
    .context("cannot start the monitor")?;
    // Alerts open their own connection to the state DB (after the engine migrated it);
    // the outbox task delivers what the last agent left queued, too.
    let sinks = Alerts::sinks_from_config(&config.alerts).context("[alerts]")?;
    let alerts = Alerts::open(&state_dir.join("state.db"), sinks)?;
    alerts.start_delivery();
    let rules = Rules::load(RuleDirs::from_config(&config.rules, &config_path))
        .context("cannot load the rules")?;
    for error in rules.load_errors() {
        tracing::error!(drover_event = "rule-load", "{error}");
    }
    let watcher = rules.watch().context("cannot watch the rule directories")?;
    let (role, role_rx) = tokio::sync::watch::channel(config.rules.role);
    let auth = Arc::new(Authorizer::new(config.auth.clone()));
    let http_config = config.http.clone();
    // The reloader owns the rules watcher: dropping it would stop the hot reload, and it
    // lives as long as the agent.
    let reloader = Arc::new(Reloader::new(reload::Parts {
        config_path,
        required,
        config,
        rules: rules.clone(),
        watcher,
        role,
        auth: auth.clone(),
        engine: engine.clone(),
    }));
    let ops = Ops::new(
        engine.clone(),
        alerts.clone(),
        auth,
        monitor.clone(),
        reloader,
        Arc::new(Tokens::open(&state_dir.join("state.db"))?),
    );
    // A listener that cannot bind is reported and the agent goes on: the runs it
    // supervises (kills, restarts, re-adoption) matter more than their metrics.
    let http = api::http::HttpState::new(ops.clone());
    if let Err(e) = api::http::start(&http_config, &state_dir, http).await {
        tracing::error!(
            drover_event = "http-failed",
            "{e}; the agent runs without it"
        );
    }
    automation::start(automation::Parts {
        ops: ops.clone(),
        engine: engine.clone(),
        // The rules read history through a query-only connection of their own.
        history: StoreReader::open(&state_dir.join("state.db"))?,
        monitor,
        rules,
        alerts,
        role: role_rx,
    });
    api::dbus::serve(&conn, ops.clone()).await?;

    // Take the name last, so a client that sees it finds the agent ready.
    let reply = conn
        .request_name_with_flags(api::BUS_NAME, RequestNameFlags::DO_NOT_QUEUE)
        .await
        .with_context(|| format!("cannot own {}", api::BUS_NAME))?;
    if reply != RequestNameReply::PrimaryOwner {
        bail!(
            "another agent already owns {} on the {} bus",
            api::BUS_NAME,
            bus_name(opts.bus)
        );
    }
    tracing::info!(
        drover_event = "agent-started",
        "drover agent ready on the {} bus, state in {}",
        bus_name(opts.bus),
        state_dir.display()
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            // The reload logs and audits the outcome; a bad file leaves the agent as it was.
            _ = hangup.recv() => {
                let _ = ops.reload(&Caller::signal());
            }
        }
    }
    // Runs keep going in their scopes; the next agent re-adopts them.
    tracing::info!(
        drover_event = "agent-stopped",
        "drover agent stopping; running workflows continue"
    );
    Ok(())
}

fn bus_name(bus: Bus) -> &'static str {
    match bus {
        Bus::User => "session",
        Bus::System => "system",
    }
}

/// Logs to journald when it is reachable (with `DROVER_*` fields as journal fields), and
/// to stderr unless stderr already is the journal.
/// A root agent does git work in-process (checkpoints, `requires` checks) for many users,
/// each with their own file-system rights: libgit2 would look for root's `~/.gitconfig`
/// (which a user cannot read, failing the work) and its search path is one for the whole
/// process. So a root agent reads a repository's own config and `/etc/gitconfig` only.
/// libgit2's check that a repository belongs to the process's euid is off too: the agent
/// works in users' repositories on purpose, with their file-system rights, which the
/// kernel checks on every access.
fn ignore_users_git_config() -> anyhow::Result<()> {
    for level in [git2::ConfigLevel::Global, git2::ConfigLevel::XDG] {
        // SAFETY: set once at start-up, before any thread does git work.
        unsafe { git2::opts::set_search_path(level, "") }
            .context("cannot set libgit2's config search path")?;
    }
    // SAFETY: as above.
    unsafe { git2::opts::set_verify_owner_validation(false) }
        .context("cannot set libgit2's owner validation")?;
    Ok(())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DROVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let journald = tracing_journald::layer().ok().map(|layer| {
        layer
            .with_field_prefix(None)
            .with_syslog_identifier("drover".into())
    });
    let stderr_is_journal = std::env::var_os("JOURNAL_STREAM").is_some() && journald.is_some();
    let stderr = (!stderr_is_journal).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(stderr)
        .try_init();
}
