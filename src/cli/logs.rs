//! `drover logs RUN [--step NAME] [-f]` — prints the step logs the shims wrote, in step
//! order; with `-f`, keeps printing until the run ends.

use std::io::{Read, Seek, SeekFrom, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use super::get_run;
use crate::api::DroverProxy;
use crate::model::Run;

const POLL: Duration = Duration::from_millis(200);

pub async fn run(
    proxy: &DroverProxy<'_>,
    id: &str,
    step: Option<&str>,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    let mut run = get_run(proxy, id).await?;
    if let Some(name) = step {
        if !run.steps.iter().any(|s| s.name == name) {
            let names: Vec<&str> = run.steps.iter().map(|s| s.name.as_str()).collect();
            bail!(
                "run {id} has no step {name:?} (its steps: {})",
                names.join(", ")
            );
        }
    }
    let mut stdout = std::io::stdout().lock();
    let mut index = 0;
    let mut offset = 0u64;
    loop {
        let wanted: Vec<_> = run
            .steps
            .iter()
            .filter(|s| step.is_none_or(|n| s.name == n))
            .collect();
        let Some(current) = wanted.get(index) else {
            if !follow || run.state.is_terminal() {
                return Ok(ExitCode::SUCCESS);
            }
            run = refresh(proxy, id, &run).await?;
            continue;
        };
        if let Some(log) = &current.log {
            offset += copy_from(log, offset, &mut stdout)?;
        }
        if current.state.is_terminal() || !follow {
            // The shim has finished writing this log: move on to the next step.
            if current.state.is_terminal() && current.log.is_some() {
                let log = current.log.as_deref().unwrap_or_default();
                copy_from(log, offset, &mut stdout)?;
            }
            index += 1;
            offset = 0;
            continue;
        }
        run = refresh(proxy, id, &run).await?;
    }
}

async fn refresh(proxy: &DroverProxy<'_>, id: &str, _previous: &Run) -> anyhow::Result<Run> {
    tokio::time::sleep(POLL).await;
    get_run(proxy, id).await
}

/// Copies the log from `offset` to `out`; returns the bytes copied.
fn copy_from(path: &str, offset: u64, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(e).with_context(|| {
                format!("cannot read {path} (the same lines are in the journal: journalctl DROVER_RUN=<run>)")
            });
        }
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    out.write_all(&buf)?;
    out.flush()?;
    Ok(buf.len() as u64)
}
