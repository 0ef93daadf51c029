//! `drover logs RUN [--step NAME] [-f]` — prints the step logs the shims wrote, each
//! step's latest attempt in step order, read through the agent (`Logs`): the logs sit in
//! its private state directory, which a viewer cannot read. With `-f`, keeps printing
//! until the run ends, going on to a retry's new attempt.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::{api_error, get_run};
use crate::api::DroverProxy;
use crate::model::LogMeta;

const POLL: Duration = Duration::from_millis(200);

pub async fn run(
    proxy: &DroverProxy<'_>,
    id: &str,
    step: Option<&str>,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    // An unknown step is the agent's to refuse: its error names the run's steps.
    let steps = match step {
        Some(name) => vec![name.to_owned()],
        None => get_run(proxy, id)
            .await?
            .steps
            .into_iter()
            .map(|s| s.name)
            .collect(),
    };
    let mut stdout = std::io::stdout().lock();
    for name in &steps {
        print_step(proxy, id, name, follow, &mut stdout).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies a step's latest attempt's log to `out`; with `follow`, until no more output can
/// come for the step.
async fn print_step(
    proxy: &DroverProxy<'_>,
    run: &str,
    step: &str,
    follow: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    // Attempt 0 asks for the latest; once one is known, its number is kept so that the
    // offset stays in its file.
    let (mut attempt, mut offset) = (0, 0);
    // Without `follow`, what the log held at the first read, however fast it grows.
    let mut first_size = None;
    // The attempt whose cut (if any) has been told, so it is told once.
    let mut told = None;
    loop {
        let (meta, data) = chunk(proxy, run, step, attempt, offset).await?;
        out.write_all(&data)?;
        out.flush()?;
        (attempt, offset) = (meta.attempt, meta.next_offset);
        let end = match follow {
            true => meta.size,
            false => *first_size.get_or_insert(meta.size),
        };
        if meta.next_offset < end {
            continue;
        }
        if let Some(cut) = &meta.log_cut
            && meta.state.is_terminal()
            && told != Some(meta.attempt)
        {
            writeln!(out, "[drover: {cut}]")?;
            told = Some(meta.attempt);
        }
        if !follow {
            return Ok(());
        }
        // This attempt is read to its end and a retry has started: its log comes next.
        if meta.latest_attempt > meta.attempt {
            (attempt, offset) = (meta.latest_attempt, 0);
            continue;
        }
        if meta.step_done {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One `Logs` call: the chunk's metadata and bytes (the agent's default size).
async fn chunk(
    proxy: &DroverProxy<'_>,
    run: &str,
    step: &str,
    attempt: u32,
    offset: u64,
) -> anyhow::Result<(LogMeta, Vec<u8>)> {
    let (meta, data) = proxy
        .logs(run, step, attempt, offset, 0)
        .await
        .map_err(api_error)?;
    let meta = serde_json::from_str(&meta)
        .context("the agent sent a log chunk this client cannot read")?;
    Ok((meta, data))
}
