//! `drover logs RUN [--step NAME] [-f]` — prints the step logs the shims wrote, in step
//! order; with `-f`, keeps printing until the run ends.

use std::io::{Read, Seek, SeekFrom, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use super::get_run;
use crate::api::DroverProxy;

const POLL: Duration = Duration::from_millis(200);

pub async fn run(
    proxy: &DroverProxy<'_>,
    id: &str,
    step: Option<&str>,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    let mut run = get_run(proxy, id).await?;
    if let Some(name) = step
        && !run.steps.iter().any(|s| s.name == name)
    {
        let names: Vec<&str> = run.steps.iter().map(|s| s.name.as_str()).collect();
        bail!(
            "run {id} has no step {name:?} (its steps: {})",
            names.join(", ")
        );
    }
    let wanted: Vec<usize> = (0..run.steps.len())
        .filter(|&i| step.is_none_or(|name| run.steps[i].name == name))
        .collect();
    let mut stdout = std::io::stdout().lock();
    for i in wanted {
        let mut log: Option<String> = None;
        let mut offset = 0;
        loop {
            // Decide from the state read *before* copying, so the last copy gets everything.
            let attempt = &run.steps[i];
            let finished = attempt.state.is_terminal() || run.state.is_terminal();
            if attempt.log != log {
                (log, offset) = (attempt.log.clone(), 0);
            }
            if let Some(path) = &log {
                offset += copy_from(path, offset, &mut stdout)?;
            }
            if finished || !follow {
                break;
            }
            tokio::time::sleep(POLL).await;
            run = get_run(proxy, id).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
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
