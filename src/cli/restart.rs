//! `drover restart RUN [--from N|latest] [--yes] [--json]` — the client of
//! `Manager.Restart`: returns once the run is running again from the checkpoint.

use std::process::ExitCode;

use anyhow::Context;

use super::{api_error, confirmed, options};
use crate::api::DroverProxy;
use crate::model::ActionRecord;

pub async fn run(
    proxy: &DroverProxy<'_>,
    id: &str,
    from: Option<u32>,
    yes: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let confirm = confirmed(proxy, id, "Restart", yes).await?;
    let options = options([
        ("from", from.map(Into::into)),
        ("confirm", confirm.then(|| true.into())),
    ]);
    let text = proxy.restart(id, options).await.map_err(api_error)?;
    if json {
        outln!("{text}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let record: ActionRecord =
        serde_json::from_str(&text).context("the agent sent a record this client cannot read")?;
    outln!(
        "run {id} restarted in {} ms: {}",
        record.took_ms,
        record.detail
    )?;
    Ok(ExitCode::SUCCESS)
}
