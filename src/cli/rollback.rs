//! `drover rollback RUN --to N [--yes] [--json]` — the client of `Manager.Rollback`.

use std::process::ExitCode;

use anyhow::Context;

use super::{api_error, confirmed, options};
use crate::api::DroverProxy;
use crate::model::ActionRecord;

pub async fn run(
    proxy: &DroverProxy<'_>,
    id: &str,
    to: u32,
    yes: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let confirm = confirmed(proxy, id, "Roll back", yes).await?;
    let options = options([("confirm", confirm.then(|| true.into()))]);
    let text = proxy.rollback(id, to, options).await.map_err(api_error)?;
    if json {
        outln!("{text}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let record: ActionRecord =
        serde_json::from_str(&text).context("the agent sent a record this client cannot read")?;
    outln!("run {id}: {}", record.detail)?;
    Ok(ExitCode::SUCCESS)
}
