//! `drover token create NAME --role ROLE [--for USER] [--expires 30d]`, `drover token
//! list` and `drover token revoke NAME`: bearer tokens for the HTTP API. The client of
//! `Manager.CreateToken`, `Manager.Tokens` and `Manager.RevokeToken`.

use std::process::ExitCode;

use anyhow::Context;

use super::format::dash;
use super::{api_error, options};
use crate::api::DroverProxy;
use crate::model::{NewToken, Token};

pub async fn create(
    proxy: &DroverProxy<'_>,
    name: &str,
    role: &str,
    user: Option<&str>,
    expires: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let options = options([
        ("user", user.map(|u| zbus::Str::from(u.to_owned()).into())),
        (
            "expires",
            expires.map(|e| zbus::Str::from(e.to_owned()).into()),
        ),
    ]);
    let text = proxy
        .create_token(name, role, options)
        .await
        .map_err(api_error)?;
    let created: NewToken =
        serde_json::from_str(&text).context("the agent sent a token this client cannot read")?;
    if json {
        outln!("{}", serde_json::to_string(&created)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let record = &created.record;
    outln!("{}", created.token)?;
    errln!(
        "token {} for {} (uid {}), role {}, {}: this is the only time it is shown; use it as `Authorization: Bearer <token>`",
        record.name,
        record.user,
        record.uid,
        record.role,
        record
            .expires_at
            .map_or("never expires".to_owned(), |at| format!("expires {at}"))
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn list(proxy: &DroverProxy<'_>, json: bool) -> anyhow::Result<ExitCode> {
    let text = proxy.tokens().await.map_err(api_error)?;
    let tokens: Vec<Token> =
        serde_json::from_str(&text).context("the agent sent tokens this client cannot read")?;
    if json {
        outln!("{}", serde_json::to_string(&tokens)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<20} {:<16} {:<9} {:<24} {:<24} STATE",
        "NAME",
        "USER",
        "ROLE",
        "CREATED",
        "EXPIRES"
    )?;
    let now = crate::model::Timestamp::now();
    for t in &tokens {
        outln!(
            "{:<20} {:<16} {:<9} {:<24} {:<24} {}",
            t.name,
            t.user,
            t.role,
            t.created_at.to_string(),
            dash(t.expires_at.map(|at| at.to_string())),
            t.unusable(now).unwrap_or("live")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn revoke(proxy: &DroverProxy<'_>, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    let text = proxy.revoke_token(name).await.map_err(api_error)?;
    let token: Token =
        serde_json::from_str(&text).context("the agent sent a token this client cannot read")?;
    if json {
        outln!("{}", serde_json::to_string(&token)?)?;
    } else {
        outln!("token {} of {} revoked", token.name, token.user)?;
    }
    Ok(ExitCode::SUCCESS)
}
