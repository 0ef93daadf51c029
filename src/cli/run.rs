//! `drover run FILE [--param K=V]… [--wait]` — the client of `Manager.Run`.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;

use super::{api_error, get_run};
use crate::api::DroverProxy;
use crate::model::RunState;

pub async fn run(
    proxy: &DroverProxy<'_>,
    file: &Path,
    params: Vec<(String, String)>,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    // The agent does not share this directory: send an absolute path.
    let path =
        std::path::absolute(file).with_context(|| format!("{}: cannot resolve", file.display()))?;
    let path = path
        .to_str()
        .with_context(|| format!("{}: not valid UTF-8", path.display()))?;
    let params: HashMap<String, String> = params.into_iter().collect();
    // Subscribe first: the run may end before `Run` returns.
    let mut changes = if wait {
        Some(proxy.receive_run_changed().await?)
    } else {
        None
    };
    let id = proxy.run(path, params).await.map_err(api_error)?;
    outln!("{id}")?;
    let Some(changes) = changes.as_mut() else {
        return Ok(ExitCode::SUCCESS);
    };
    loop {
        let run = get_run(proxy, &id).await?;
        if run.state.is_terminal() {
            if run.state == RunState::Succeeded {
                return Ok(ExitCode::SUCCESS);
            }
            errln!(
                "drover: run {id} {}: {}",
                run.state,
                run.error.as_deref().unwrap_or("see `drover show`")
            );
            return Ok(ExitCode::FAILURE);
        }
        // Wake on this run's signal; re-check now and then in case the bus dropped one.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(signal) = changes.next().await {
                if signal.args().is_ok_and(|a| a.run_id == id) {
                    return;
                }
            }
        })
        .await;
    }
}
