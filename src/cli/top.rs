//! `drover top [--once]` — the client of `Manager.Top`: a table of the unfinished runs
//! redrawn every second with plain ANSI (clear, home), so it works in any terminal and
//! over SSH; `--once` prints one frame without escape codes.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::api_error;
use super::format::{bytes, secs};
use crate::api::DroverProxy;
use crate::model::RunMetrics;

/// Switch to the terminal's alternate screen (restored on exit, like `top`), then clear.
const ENTER: &str = "\x1b[?1049h\x1b[?25l";
const LEAVE: &str = "\x1b[?25h\x1b[?1049l";
const HOME_CLEAR: &str = "\x1b[H\x1b[2J";

pub async fn run(proxy: &DroverProxy<'_>, once: bool, interval: f64) -> anyhow::Result<ExitCode> {
    if once || !std::io::stdout().is_terminal() {
        let runs = fetch(proxy).await?;
        out!("{}", frame(&runs, None))?;
        return Ok(ExitCode::SUCCESS);
    }
    // Bounded by the argument's parser.
    let interval = Duration::from_secs_f64(interval);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // An SSH session that goes away sends SIGHUP: leave like on Ctrl-C.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let _raw = RawInput::enable();
    let mut keys = key_reader();
    let mut stdout = std::io::stdout();
    write!(stdout, "{ENTER}")?;
    let result = async {
        loop {
            let text = match fetch(proxy).await {
                Ok(runs) => frame(&runs, Some(interval)),
                // The agent restarting is no reason to quit: show it and keep trying.
                Err(e) => format!("drover top: {e:#}\n"),
            };
            // The terminal is in raw mode: lines need "\r\n".
            write!(stdout, "{HOME_CLEAR}{}", text.replace('\n', "\r\n"))?;
            stdout.flush()?;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = term.recv() => return Ok(()),
                _ = hangup.recv() => return Ok(()),
                key = keys.recv() => match key {
                    Some(b'q' | b'Q' | 3) | None => return Ok(()),
                    Some(_) => {}
                },
            }
        }
    }
    .await;
    let _ = write!(stdout, "{LEAVE}");
    let _ = stdout.flush();
    result.map(|()| ExitCode::SUCCESS)
}

async fn fetch(proxy: &DroverProxy<'_>) -> anyhow::Result<Vec<RunMetrics>> {
    let json = proxy.top().await.map_err(api_error)?;
    serde_json::from_str(&json).context("the agent sent metrics this client cannot read")
}

/// Reads single key presses from stdin on a thread of its own (stdin has no async read
/// that can be given up cleanly); `None` when stdin ends.
fn key_reader() -> tokio::sync::mpsc::Receiver<u8> {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut byte = [0u8; 1];
        let mut stdin = std::io::stdin();
        while let Ok(1) = stdin.read(&mut byte) {
            if tx.blocking_send(byte[0]).is_err() {
                return;
            }
        }
    });
    rx
}

/// The terminal in non-canonical mode without echo while `top` runs (so `q` needs no
/// Enter), restored on drop.
struct RawInput(Option<nix::sys::termios::Termios>);

impl RawInput {
    fn enable() -> RawInput {
        use nix::sys::termios::{self, LocalFlags, SetArg};
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return RawInput(None);
        }
        let Ok(saved) = termios::tcgetattr(&stdin) else {
            return RawInput(None);
        };
        let mut raw = saved.clone();
        raw.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO);
        if termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).is_err() {
            return RawInput(None);
        }
        RawInput(Some(saved))
    }
}

impl Drop for RawInput {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

/// One screen: a header and a row per run.
fn frame(runs: &[RunMetrics], refresh: Option<Duration>) -> String {
    let mut out = String::new();
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let refresh = refresh.map_or(String::new(), |d| {
        format!(", every {}", humantime::format_duration(d))
    });
    out.push_str(&format!(
        "drover top — {} unfinished run{} — {now}{refresh} (q quits)\n\n",
        runs.len(),
        if runs.len() == 1 { "" } else { "s" }
    ));
    out.push_str(&format!(
        "{:<10} {:<16} {:<10} {:<16} {:>6} {:>9} {:>5} {:>7} {:>8} {:>8} TOOL\n",
        "RUN", "WORKFLOW", "STATE", "STEP", "CPU%", "MEMORY", "TASKS", "IDLE", "ELAPSED", "COST"
    ));
    for m in runs {
        let s = &m.latest;
        let agent = s.agent.as_ref();
        out.push_str(&format!(
            "{:<10} {:<16} {:<10} {:<16} {:>6} {:>9} {:>5} {:>7} {:>8} {:>8} {}\n",
            m.run,
            clip(&m.workflow, 16),
            m.state.as_str(),
            clip(m.step.as_deref().unwrap_or("-"), 16),
            s.cpu_percent.map_or("-".into(), |c| format!("{c:.1}")),
            s.memory_bytes.map_or("-".into(), bytes),
            s.tasks.map_or("-".into(), |t| t.to_string()),
            if m.step.is_some() {
                secs(s.idle_secs)
            } else {
                "-".into()
            },
            secs(s.run_elapsed_secs),
            agent.map_or("-".into(), |a| format!("${:.2}", a.cost_usd)),
            agent
                .and_then(|a| a.tool.clone())
                .map_or("-".into(), |t| if a_repeats(agent) > 1 {
                    format!("{t} ×{}", a_repeats(agent))
                } else {
                    t
                }),
        ));
    }
    out
}

fn a_repeats(agent: Option<&crate::model::AgentLive>) -> u32 {
    agent.map_or(0, |a| a.same_tool_calls)
}

fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('…');
    cut
}
