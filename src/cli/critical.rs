//! `drover critical [--label L] -- CMD…` — runs CMD inside a critical section of the
//! current run (`$DROVER_RUN`): a kill waits for it to end, up to the workflow's
//! `critical_max`. The client of `Manager.EnterCritical` / `LeaveCritical`.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::api::DroverProxy;
use crate::api::dbus::ApiError;

/// The exit status when the section could not open because the run is being killed
/// (EX_TEMPFAIL): CMD did not run.
const NOT_STARTED: u8 = 75;

pub async fn run(
    proxy: &DroverProxy<'_>,
    label: Option<String>,
    command: &[OsString],
) -> anyhow::Result<ExitCode> {
    let Some((program, args)) = command.split_first() else {
        bail!("no command given: drover critical [--label L] -- CMD...");
    };
    let run = std::env::var("DROVER_RUN")
        .context("drover critical runs inside a drover step: DROVER_RUN is not set")?;
    let label = label.unwrap_or_else(|| program.to_string_lossy().into_owned());
    match proxy.enter_critical(&run, &label).await {
        Ok(()) => {}
        Err(ApiError::InvalidState(detail)) => {
            errln!("drover critical: {detail} ; {label} not started");
            return Ok(ExitCode::from(NOT_STARTED));
        }
        Err(e) => return Err(super::api_error(e)).context("cannot open the critical section"),
    }
    let status = tokio::process::Command::new(program)
        .args(args)
        .status()
        .await;
    let left = proxy.leave_critical(&run, &label).await;
    let status = status.with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
    if let Err(e) = left {
        errln!(
            "drover critical: cannot close the critical section {label:?}: {}",
            super::api_error(e)
        );
    }
    Ok(super::exit_status(status))
}
