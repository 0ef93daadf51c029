//! What guards every response of the listener, the API's and `/metrics`' alike: the `Host`
//! check (DNS rebinding) and the security headers. No CORS headers are sent: a page of
//! another origin cannot read a reply.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::Problem;
use crate::config::HttpConfig;
use crate::quantity::{QUOTED_MAX, truncated};

/// The names a request's `Host` may carry: `localhost`, `127.0.0.1`, `[::1]`, the listen
/// address and `[http] allowed_hosts`, each alone or with the port the listener bound.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    names: Vec<String>,
    port: u16,
}

impl AllowedHosts {
    pub fn new(config: &HttpConfig, bound: SocketAddr) -> AllowedHosts {
        let listen = match config.listen.ip() {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        };
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .into_iter()
            .map(str::to_owned)
            .chain([listen])
            .chain(config.allowed_hosts.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        AllowedHosts {
            names,
            port: bound.port(),
        }
    }

    /// Whether `host` (a `Host` header's value) names this listener.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let Some((name, port)) = split_port(&host) else {
            return false;
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        let port_ok = port.is_none_or(|p| p.parse::<u16>() == Ok(self.port));
        port_ok && self.names.iter().any(|n| n == name)
    }
}

/// `name:port` → (`name`, `Some(port)`); a bracketed IPv6 address keeps its colons.
/// `None` when something other than a port follows the name.
fn split_port(host: &str) -> Option<(&str, Option<&str>)> {
    let end_of_name = if host.starts_with('[') {
        host.find(']').map_or(host.len(), |i| i + 1)
    } else {
        host.find(':').unwrap_or(host.len())
    };
    let (name, rest) = host.split_at(end_of_name);
    if rest.is_empty() {
        return Some((name, None));
    }
    rest.strip_prefix(':').map(|port| (name, Some(port)))
}

/// Refuses a request whose `Host` (or HTTP/2 authority) names none of the allowed hosts,
/// with 421 Misdirected Request, before any handler runs.
pub async fn check_host(
    State(hosts): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    match host {
        Some(host) if hosts.allows(host) => next.run(request).await,
        Some(host) => {
            tracing::warn!(
                drover_event = "http-host-refused",
                "refused an HTTP request for Host {:?} (DNS rebinding?); `[http] allowed_hosts` lists the names allowed",
                truncated(host, QUOTED_MAX)
            );
            Problem::http(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this agent does not answer for the host {:?}: `[http] allowed_hosts` in its config lists the names it answers for",
                    truncated(host, QUOTED_MAX)
                ),
            )
            .into_response()
        }
        None => Problem::http(StatusCode::BAD_REQUEST, "the request names no Host").into_response(),
    }
}

/// The headers of every response: no script but the agent's own, no framing, no MIME
/// sniffing, no referrer.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// API replies (refusals included) are about live state, some of it private: never
/// stored by a cache.
pub async fn no_store_for_api(request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with(super::PREFIX);
    let mut response = next.run(request).await;
    if api {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_matched_by_name_with_the_bound_port_or_none() {
        let config = HttpConfig {
            allowed_hosts: vec!["drover.example".into(), "[fd00::5]".into()],
            ..HttpConfig::default()
        };
        let hosts = AllowedHosts::new(&config, SocketAddr::from(([127, 0, 0, 1], 7878)));
        for ok in [
            "localhost",
            "LOCALHOST:7878",
            "127.0.0.1:7878",
            "[::1]",
            "[::1]:7878",
            "drover.example",
            "drover.example.:7878",
            "[fd00::5]:7878",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:7878",
            "localhost:8080",
            "localhost.evil.example",
            "127.0.0.1:7878:1",
            "[::1]x",
            "",
            "drover.example:",
        ] {
            assert!(!hosts.allows(refused), "{refused}");
        }
    }
}
