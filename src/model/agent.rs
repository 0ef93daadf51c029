//! What a coding agent reported: the summary of a Claude Code step's stream-json output
//! and the `result` event that ends it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What one `claude -p --output-format stream-json --verbose` run printed, as far as it got.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, utoipa::ToSchema)]
pub struct StreamReport {
    /// From `system`/`init` (or, failing that, the first event that names one).
    pub session_id: Option<String>,
    /// The main model, from `system`/`init`.
    pub model: Option<String>,
    /// JSON objects with a `type`, known or not.
    pub events: u64,
    /// Lines that are not such an object: a line cut by a kill, non-UTF-8 bytes, or stderr
    /// text in a combined log.
    pub malformed_lines: u64,
    /// `tool_use` blocks of `assistant` events.
    pub tool_uses: u64,
    /// `system`/`api_retry` events: Claude Code retrying a 429, 529 or 5xx by itself.
    pub api_retries: u64,
    /// The final `result` event; `None` if the run ended (or was killed) before it.
    pub result: Option<ResultEvent>,
}

/// The `result` event that ends a run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, utoipa::ToSchema)]
pub struct ResultEvent {
    /// `success`, `error_max_turns`, `error_during_execution`, …; an API failure after
    /// exhausted retries still says `success` (with `is_error` and `api_error_status` set).
    pub subtype: String,
    pub is_error: bool,
    pub api_error_status: Option<u16>,
    pub num_turns: Option<u64>,
    pub total_cost_usd: Option<f64>,
    pub usage: Option<Value>,
    /// The final answer (or error message), the event's `result` field.
    pub text: Option<String>,
}
