//! Where alert changes go: the journal and a webhook ship now; the Slack issue adds a
//! sink of its own. A sink is handed each change once its outbox row is due and reports
//! whether it got through; the outbox task does the retrying, so a sink never retries.

use std::time::Duration;

use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Serialize;

use crate::model::{Alert, Change, Severity};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("webhook URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{sink}: {reason}")]
    Failed { sink: String, reason: String },
}

/// A destination for alert changes.
pub trait Sink: Send + Sync {
    /// A stable name: outbox rows are addressed to it, so renaming one orphans its rows.
    fn name(&self) -> &str;
    /// Delivers one change; `Ok` only when the destination has it (a retry would repeat
    /// it). Called by the outbox task, one change at a time.
    fn send<'a>(&'a self, alert: &'a Alert, change: Change)
    -> BoxFuture<'a, Result<(), SinkError>>;
    /// [`Sink::send`] for outbox row `delivery`: the id is the same on every retry of one
    /// change, for sinks whose receivers can drop repeats by it.
    fn send_delivery<'a>(
        &'a self,
        alert: &'a Alert,
        change: Change,
        delivery: i64,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        let _ = delivery;
        self.send(alert, change)
    }
}

/// Logs each change through `tracing` (so to journald), with `DROVER_EVENT=alert`,
/// `DROVER_RUN`, `DROVER_WORKFLOW`, `DROVER_ALERT`, `DROVER_ALERT_STATE`; the severity sets
/// the priority (critical: err, warning: warning, info: info).
pub struct JournalSink;

impl Sink for JournalSink {
    fn name(&self) -> &str {
        "journal"
    }

    fn send<'a>(
        &'a self,
        alert: &'a Alert,
        change: Change,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        let run = alert.run.as_deref().unwrap_or("");
        let workflow = alert.workflow.as_deref().unwrap_or("");
        let key = alert.key.as_str();
        let state = change.as_str();
        // tracing needs the level at compile time: one call per severity.
        match alert.severity {
            Severity::Critical => tracing::error!(
                drover_event = "alert",
                drover_run = run,
                drover_workflow = workflow,
                drover_alert = key,
                drover_alert_state = state,
                drover_severity = "critical",
                "alert {key} {state}: {}",
                alert.summary
            ),
            Severity::Warning => tracing::warn!(
                drover_event = "alert",
                drover_run = run,
                drover_workflow = workflow,
                drover_alert = key,
                drover_alert_state = state,
                drover_severity = "warning",
                "alert {key} {state}: {}",
                alert.summary
            ),
            Severity::Info => tracing::info!(
                drover_event = "alert",
                drover_run = run,
                drover_workflow = workflow,
                drover_alert = key,
                drover_alert_state = state,
                drover_severity = "info",
                "alert {key} {state}: {}",
                alert.summary
            ),
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

/// POSTs each change as JSON (the alert's fields plus `change`) to an `http://` URL. Any
/// 2xx is delivery; anything else, or no answer within the timeout, is a failure the
/// outbox retries. Each request carries `X-Drover-Delivery` (the outbox row id), the same
/// on every retry, so a receiver can drop a repeat whose 2xx was lost on the way back.
pub struct WebhookSink {
    url: Uri,
    /// `host:port` to connect to.
    address: String,
    timeout: Duration,
}

/// The webhook's JSON body.
#[derive(Serialize)]
struct WebhookBody<'a> {
    change: Change,
    #[serde(flatten)]
    alert: &'a Alert,
}

/// Whether the webhook sink can POST to `url` (what `[alerts] webhook` is checked with,
/// so the configuration and the sink never disagree).
pub(crate) fn check_webhook_url(url: &str) -> Result<(), SinkError> {
    webhook_target(url).map(drop)
}

/// The URL parsed, and the `host:port` to connect to.
fn webhook_target(url: &str) -> Result<(Uri, String), SinkError> {
    let bad = |reason: &str| SinkError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
    // https would need a TLS stack; not worth it until a webhook outside the host
    // needs one (the Slack sink will bring its own client).
    if uri.scheme_str() != Some("http") {
        return Err(bad("only http:// URLs are supported"));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    // IPv6 literals keep their brackets in `host()`, which is what connect wants.
    let address = format!("{host}:{port}");
    Ok((uri, address))
}

impl WebhookSink {
    pub fn new(url: &str) -> Result<WebhookSink, SinkError> {
        let (url, address) = webhook_target(url)?;
        Ok(WebhookSink {
            url,
            address,
            timeout: Duration::from_secs(10),
        })
    }

    async fn post(&self, body: Vec<u8>, delivery: Option<i64>) -> Result<(), String> {
        let stream = tokio::net::TcpStream::connect(&self.address)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.address))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {}: {e}", self.address))?;
        // The connection's own task: it ends when the exchange does (no keep-alive reuse).
        let conn = tokio::spawn(conn);
        let target = self
            .url
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let authority = self.url.authority().map_or("", |a| a.as_str()).to_owned();
        let mut request = hyper::Request::post(target)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "drover");
        if let Some(id) = delivery {
            request = request.header("X-Drover-Delivery", id.to_string());
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("POST {}: {e}", self.url))?;
        let status = response.status();
        // Read the (small) body so the connection ends cleanly; its text helps a failure.
        let text: String = response
            .into_body()
            .collect()
            .await
            .map(|b| {
                String::from_utf8_lossy(&b.to_bytes())
                    .chars()
                    .take(200)
                    .collect()
            })
            .unwrap_or_default();
        conn.abort();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("POST {} answered {status}: {text}", self.url))
        }
    }

    /// Sends one change, tagged with the outbox row's id.
    pub async fn deliver(
        &self,
        alert: &Alert,
        change: Change,
        delivery: Option<i64>,
    ) -> Result<(), SinkError> {
        let failed = |reason: String| SinkError::Failed {
            sink: "webhook".into(),
            reason,
        };
        let body = serde_json::to_vec(&WebhookBody { change, alert })
            .map_err(|e| failed(format!("cannot encode the alert: {e}")))?;
        match tokio::time::timeout(self.timeout, self.post(body, delivery)).await {
            Ok(result) => result.map_err(failed),
            Err(_) => Err(failed(format!(
                "POST {}: no answer within {:?}",
                self.url, self.timeout
            ))),
        }
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> &str {
        "webhook"
    }

    fn send<'a>(
        &'a self,
        alert: &'a Alert,
        change: Change,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.deliver(alert, change, None))
    }

    fn send_delivery<'a>(
        &'a self,
        alert: &'a Alert,
        change: Change,
        delivery: i64,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.deliver(alert, change, Some(delivery)))
    }
}
