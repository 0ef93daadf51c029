//! A scripted stand-in for Anthropic's Messages API, and the real Claude Code CLI pointed at
//! it: the script plays the model, everything else (tool calls, child processes,
//! transcripts, sessions, retries) is Claude Code's own.
//!
//! [`ModelServer`] is a real HTTP server (axum) on 127.0.0.1 that answers
//! `POST /v1/messages` byte for byte like the real API: streaming SSE (`message_start`,
//! `content_block_start`, `ping`, `content_block_delta` with `text_delta` /
//! `input_json_delta`, `content_block_stop`, `message_delta`, `message_stop`) or, for
//! `"stream": false`, one JSON message; errors carry Anthropic's error body and headers.
//!
//! What Claude Code 2.1.197 sends it (verified with [`claude_command`]'s env and flags):
//! - one `HEAD /` when it starts (a connection warm-up; the answer is ignored);
//! - `POST /v1/messages?beta=true` with `"stream": true`, the main model
//!   (`claude-opus-4-8`), `tools` (24 of them) and the main agent's system prompt, once per
//!   model turn. Headers include `x-api-key`, `anthropic-version: 2023-06-01`,
//!   `anthropic-beta: claude-code-20250219,…`, `X-Claude-Code-Session-Id: <session id>`,
//!   `User-Agent: claude-cli/2.1.197 (external, sdk-cli)`, `X-Stainless-Retry-Count: 0`
//!   (also on its own retries: Claude Code retries by itself, not through the SDK);
//! - nothing else in print mode (`-p`): no title, topic or token-counting calls. Such
//!   small-model calls are still recognised and answered (see [`Kind`]) so a script is never
//!   thrown off by them. Caveat: some of Claude Code's side queries (memory extraction,
//!   prompt suggestions) are "forks" that reuse the main system prompt and tools; none runs
//!   in print mode here, but one would count as [`Kind::Main`] and consume a turn.
//!
//! Its reactions, verified: 429/529 are retried by Claude Code itself (a `system`/`api_retry`
//! event on stdout; default 10 retries, `CLAUDE_CODE_MAX_RETRIES` changes it; 429 waits
//! exactly `retry-after`); when retries run out the `result` has `is_error: true`,
//! `api_error_status` and exit code 1. A stalled stream ([`Turn::Hang`]) is waited on for
//! 300 s (its idle watchdog; `CLAUDE_STREAM_IDLE_TIMEOUT_MS` can only raise that), then it
//! sends the same request once more *without* `"stream"` (a non-streaming fallback, which
//! consumes the next turn and is answered as one JSON message; that answer has not been
//! exercised end to end: a 300 s test is too slow).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// The model's part, one entry per main-conversation request.
#[derive(Clone, Debug)]
pub enum Turn {
    /// An assistant text answer; `stop_reason: end_turn`.
    Text(String),
    /// One `tool_use` block (e.g. `Bash {"command": …}`, `Write {"file_path", "content"}`);
    /// `stop_reason: tool_use`. Claude Code runs the tool and sends its result in the next
    /// request.
    ToolUse { name: String, input: Value },
    /// An HTTP error with Anthropic's real body and headers: 429 (`rate_limit_error`, with
    /// `retry-after: 1`), 529 (`overloaded_error`), 500 (`api_error`) or 400
    /// (`invalid_request_error`).
    Error { status: u16 },
    /// Starts the stream (`message_start`, a text `content_block_start`, `ping`) and then
    /// never sends another byte, until the server is dropped.
    Hang,
}

impl Turn {
    pub fn text(text: impl Into<String>) -> Turn {
        Turn::Text(text.into())
    }

    pub fn tool(name: impl Into<String>, input: Value) -> Turn {
        Turn::ToolUse {
            name: name.into(),
            input,
        }
    }

    /// A `Bash` tool call (the `description` is what Claude Code shows for it).
    pub fn bash(command: &str) -> Turn {
        Turn::tool(
            "Bash",
            json!({"command": command, "description": "Run a command"}),
        )
    }

    /// A `Write` tool call. Claude Code wants an absolute path, and refuses to overwrite a
    /// file it has not `Read` in this session ("File has not been read yet").
    pub fn write(file_path: &Path, content: &str) -> Turn {
        Turn::tool("Write", json!({"file_path": file_path, "content": content}))
    }
}

/// How the server classified a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `POST /v1/messages` of the main conversation (it carries `tools`): consumed a turn,
    /// or was answered "done" once the script was exhausted.
    Main,
    /// `POST /v1/messages` without tools: a small-model side call (title, topic, …),
    /// answered with a canned text, consuming no turn. `POST /v1/messages/count_tokens` too.
    Auxiliary,
    /// Anything else (e.g. Claude Code's `HEAD /` warm-up); answered 404 `not_found_error`.
    Other,
}

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query, e.g. `/v1/messages?beta=true`.
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Value::Null` when there was none or it was not JSON).
    pub body: Value,
    pub kind: Kind,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    script: VecDeque<Turn>,
    log: Vec<Request>,
}

type SharedState = Arc<Mutex<Shared>>;

/// The scripted Messages-API server; dropping it stops it (and cuts any open stream).
pub struct ModelServer {
    addr: SocketAddr,
    shared: SharedState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ModelServer {
    /// Starts a server on 127.0.0.1 (ephemeral port) on a thread of its own that plays
    /// `script`, one turn per main-conversation request.
    pub fn start(script: Vec<Turn>) -> ModelServer {
        for turn in &script {
            if let Turn::Error { status } = turn {
                error_kind(*status); // panics early on a status it cannot answer
            }
        }
        let shared = Arc::new(Mutex::new(Shared {
            script: script.into(),
            log: Vec::new(),
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("local addr");
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let thread = std::thread::Builder::new()
            .name(format!("model-server-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("model server runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        result = axum::serve(listener, app) => result.expect("model server"),
                        _ = shutdown_rx => {}
                    }
                });
                // Dropping the runtime drops every connection task, hanging streams included.
            })
            .expect("spawn the model server thread");
        ModelServer {
            addr,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// For `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every `POST /v1/messages` body received (main and auxiliary), in order.
    pub fn requests(&self) -> Vec<Value> {
        self.log()
            .into_iter()
            .filter(|r| r.kind != Kind::Other && r.method == "POST")
            .map(|r| r.body)
            .collect()
    }

    /// The bodies of the main-conversation requests only, in order.
    pub fn main_requests(&self) -> Vec<Value> {
        self.log()
            .into_iter()
            .filter(|r| r.kind == Kind::Main)
            .map(|r| r.body)
            .collect()
    }

    /// Every request received, whatever its method and path, in order.
    pub fn log(&self) -> Vec<Request> {
        self.shared.lock().unwrap().log.clone()
    }

    /// How many turns of the script are still to be played.
    pub fn turns_left(&self) -> usize {
        self.shared.lock().unwrap().script.len()
    }

    /// Waits until `n` main-conversation requests have arrived; panics after `timeout`.
    pub fn wait_for_main_requests(&self, n: usize, timeout: Duration) {
        super::wait_for(
            timeout,
            || {
                format!(
                    "timed out after {timeout:?} waiting for {n} main requests; got {:?}",
                    self.log()
                        .iter()
                        .map(|r| format!("{} {} {:?}", r.method, r.path, r.kind))
                        .collect::<Vec<_>>()
                )
            },
            || (self.main_requests().len() >= n).then_some(()),
        );
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn handle(State(shared): State<SharedState>, request: HttpRequest) -> Response {
    let method = request.method().clone();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    let route = request.uri().path().to_owned();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let bytes = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);

    let is_post = method == Method::POST;
    let kind = if is_post && route == "/v1/messages" {
        let has_tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
        if has_tools {
            Kind::Main
        } else {
            Kind::Auxiliary
        }
    } else if is_post && route == "/v1/messages/count_tokens" {
        Kind::Auxiliary
    } else {
        Kind::Other
    };

    // Record and take the turn under one lock, so concurrent requests keep script order.
    let turn = {
        let mut shared = shared.lock().unwrap();
        shared.log.push(Request {
            method: method.to_string(),
            path,
            headers,
            body: body.clone(),
            kind,
        });
        match kind {
            Kind::Main => Some(
                shared
                    .script
                    .pop_front()
                    .unwrap_or_else(|| Turn::text("done")),
            ),
            _ => None,
        }
    };

    let model = body["model"]
        .as_str()
        .unwrap_or("claude-sonnet-4-5")
        .to_owned();
    let stream = body["stream"].as_bool().unwrap_or(false);
    match kind {
        Kind::Other => error_response(404),
        Kind::Auxiliary if route == "/v1/messages/count_tokens" => json_response(
            StatusCode::OK,
            &json!({"input_tokens": input_tokens(&body)}),
        ),
        Kind::Auxiliary => message_response(&model, &body, &Turn::text("ok"), stream),
        Kind::Main => match turn.expect("a main request has a turn") {
            Turn::Error { status } => error_response(status),
            turn => message_response(&model, &body, &turn, stream),
        },
    }
}

/// The `error.type` and `error.message` of Anthropic's error body for `status`.
fn error_kind(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("invalid_request_error", "Invalid request"),
        404 => ("not_found_error", "Not found"),
        429 => (
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50 requests per minute. \
             For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the \
             response headers for current usage. Please reduce the prompt length or the maximum \
             tokens requested, or try again later. You may also contact sales at \
             https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase.",
        ),
        500 => ("api_error", "Internal server error"),
        529 => ("overloaded_error", "Overloaded"),
        other => panic!("Turn::Error: no Anthropic error body for HTTP {other}"),
    }
}

/// `{"type":"error","error":{"type":…,"message":…},"request_id":…}` with `request-id`,
/// `content-type: application/json` and, for 429, `retry-after` and the rate-limit headers.
fn error_response(status: u16) -> Response {
    let (kind, message) = error_kind(status);
    let request_id = request_id();
    let body = json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": request_id,
    });
    let mut response = json_response(StatusCode::from_u16(status).expect("HTTP status"), &body);
    let headers = response.headers_mut();
    headers.insert("request-id", HeaderValue::from_str(&request_id).unwrap());
    if status == 429 {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        headers.insert(
            "anthropic-ratelimit-requests-limit",
            HeaderValue::from_static("50"),
        );
        headers.insert(
            "anthropic-ratelimit-requests-remaining",
            HeaderValue::from_static("0"),
        );
        let reset = humantime::format_rfc3339_seconds(
            std::time::SystemTime::now() + Duration::from_secs(1),
        );
        headers.insert(
            "anthropic-ratelimit-requests-reset",
            HeaderValue::from_str(&reset.to_string()).unwrap(),
        );
    }
    response
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A successful answer playing `turn` (Text, ToolUse or Hang), streamed as SSE when the
/// request asked for `"stream": true`, else as one JSON message.
fn message_response(model: &str, request: &Value, turn: &Turn, stream: bool) -> Response {
    let message_id = format!("msg_01{}", random_id());
    let input_tokens = input_tokens(request);
    let (block, stop_reason, output_tokens) = match turn {
        Turn::Text(text) => (
            json!({"type": "text", "text": text}),
            "end_turn",
            tokens(text),
        ),
        Turn::ToolUse { name, input } => (
            json!({"type": "tool_use", "id": format!("toolu_01{}", random_id()), "name": name, "input": input}),
            "tool_use",
            tokens(&input.to_string()),
        ),
        Turn::Hang => (json!({"type": "text", "text": ""}), "end_turn", 0),
        Turn::Error { .. } => unreachable!("errors are answered by error_response"),
    };
    let usage = |output_tokens: u64| {
        json!({
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        })
    };
    let mut headers = HeaderMap::new();
    headers.insert("request-id", HeaderValue::from_str(&request_id()).unwrap());

    if !stream {
        let message = json!({
            "id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": [block], "stop_reason": stop_reason, "stop_sequence": null,
            "usage": usage(output_tokens),
        });
        let mut response = json_response(StatusCode::OK, &message);
        response.headers_mut().extend(headers);
        return response;
    }

    let mut events = vec![sse(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage(1),
        }}),
    )];
    // The block starts empty: text with "", tool_use with input {}; the content follows
    // in deltas.
    let mut start = block.clone();
    match turn {
        Turn::ToolUse { .. } => start["input"] = json!({}),
        _ => start["text"] = json!(""),
    }
    events.push(sse(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": start}),
    ));
    events.push(sse("ping", &json!({"type": "ping"})));
    let hang = matches!(turn, Turn::Hang);
    if !hang {
        let deltas: Vec<Value> = match turn {
            Turn::Text(text) => chunks(text)
                .map(|c| json!({"type": "text_delta", "text": c}))
                .collect(),
            Turn::ToolUse { input, .. } => {
                // Like the API: an empty partial_json first, then the JSON in pieces.
                let json = input.to_string();
                std::iter::once(String::new())
                    .chain(chunks(&json))
                    .map(|c| json!({"type": "input_json_delta", "partial_json": c}))
                    .collect()
            }
            _ => Vec::new(),
        };
        for delta in deltas {
            events.push(sse(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0, "delta": delta}),
            ));
        }
        events.push(sse(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 0}),
        ));
        events.push(sse(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                    "usage": {"output_tokens": output_tokens}}),
        ));
        events.push(sse("message_stop", &json!({"type": "message_stop"})));
    }
    let events = futures_util::stream::iter(events.into_iter().map(Ok::<Bytes, Infallible>));
    let body = if hang {
        Body::from_stream(events.chain(futures_util::stream::pending()))
    } else {
        Body::from_stream(events)
    };
    let mut response = Response::new(body);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response.headers_mut().extend(headers);
    response
}

fn sse(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// `s` in pieces of up to 16 characters (never splitting a character), like a model's
/// stream.
fn chunks(s: &str) -> impl Iterator<Item = String> + '_ {
    let chars: Vec<char> = s.chars().collect();
    let pieces: Vec<String> = chars.chunks(16).map(|c| c.iter().collect()).collect();
    pieces.into_iter()
}

/// A rough token count (4 bytes a token), enough for plausible `usage`.
fn tokens(s: &str) -> u64 {
    (s.len() as u64).div_ceil(4).max(1)
}

fn input_tokens(request: &Value) -> u64 {
    tokens(&request["messages"].to_string()) + tokens(&request["system"].to_string())
}

fn random_id() -> String {
    // Base62-looking, 24 characters, like the API's ids.
    uuid::Uuid::new_v4().simple().to_string()[..24].to_owned()
}

fn request_id() -> String {
    format!("req_011C{}", random_id())
}

/// The Claude Code CLI installed by `npm ci --prefix tests/claude` (pinned in
/// tests/claude/package.json). Panics if it is missing: the tests never skip.
pub fn claude_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/claude/node_modules/.bin/claude");
    assert!(
        bin.exists(),
        "Claude Code is not installed: run `npm ci --prefix tests/claude` ({} is missing)",
        bin.display()
    );
    bin
}

/// `claude` in print mode, pointed at `server`, with `home` as `$HOME` (so its config and
/// transcripts land in `home/.claude.json` and `home/.claude/projects/<encoded cwd>/`) and
/// `cwd` as its working directory. Add the prompt (and e.g. `--session-id` / `--resume`).
pub fn claude_command(server: &ModelServer, home: &Path, cwd: &Path) -> Command {
    let mut command = Command::new(claude_bin());
    command
        .current_dir(cwd)
        // A clean environment: nothing of the caller's (a real ANTHROPIC_API_KEY, a
        // CLAUDE_CONFIG_DIR, CLAUDECODE from an enclosing session…) may leak in.
        .env_clear()
        // The Bash tool needs a PATH.
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        // The model: our server. Claude Code appends `/v1/messages?beta=true`.
        .env("ANTHROPIC_BASE_URL", server.base_url())
        // Any value works against our server; it is sent as `x-api-key`. With a key in the
        // environment, no login is needed (`apiKeySource: "ANTHROPIC_API_KEY"` in `init`).
        .env("ANTHROPIC_API_KEY", "sk-ant-test-drover")
        // No telemetry, error reporting, auto-update or feature-flag fetches (they would go
        // to unreachable hosts, not to our server).
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        // Claude Code refuses bypassPermissions as root ("--dangerously-skip-permissions
        // cannot be used with root/sudo privileges for security reasons", exit 1) unless
        // IS_SANDBOX=1 (or CLAUDE_CODE_BUBBLEWRAP) is set; the tests run as root.
        .env("IS_SANDBOX", "1")
        // Non-interactive: one prompt (the last argument), then exit.
        .arg("-p")
        // One JSON event a line on stdout: system/init, assistant, user, system/api_retry,
        // result. stream-json needs --verbose in print mode.
        .args(["--output-format", "stream-json", "--verbose"])
        // Tool calls run without asking (there is nobody to ask in print mode; a prompt
        // would be a denial).
        .args(["--permission-mode", "bypassPermissions"]);
    command
}

/// What a finished `claude -p --output-format stream-json` run left behind.
#[derive(Debug)]
pub struct ClaudeRun {
    pub status: std::process::ExitStatus,
    /// stdout, one JSON event a line.
    pub events: Vec<Value>,
    pub stderr: String,
}

impl ClaudeRun {
    /// The events of `type` (and `subtype`, if given), in order.
    pub fn events_of(&self, kind: &str, subtype: Option<&str>) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["type"] == kind && subtype.is_none_or(|s| e["subtype"] == s))
            .collect()
    }

    /// The `system`/`init` event (first line of stdout).
    pub fn init(&self) -> &Value {
        self.events_of("system", Some("init"))
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no system/init event in {self:#?}"))
    }

    /// The final `result` event.
    pub fn result(&self) -> &Value {
        self.events_of("result", None)
            .last()
            .copied()
            .unwrap_or_else(|| panic!("no result event in {self:#?}"))
    }
}

/// Runs `command` (from [`claude_command`], prompt added) to completion; SIGKILLs it and
/// panics if it takes longer than `timeout`.
pub fn run_claude(mut command: Command, timeout: Duration) -> ClaudeRun {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot spawn claude");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for claude") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "claude did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                out.join().unwrap(),
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap();
    let events = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect();
    ClaudeRun {
        status,
        events,
        stderr: err.join().unwrap(),
    }
}

/// Where Claude Code keeps the transcript of session `session_id` run in `cwd`:
/// `home/.claude/projects/<encoded cwd>/<id>.jsonl`, where the encoding turns every
/// character of the (canonical) cwd but `[A-Za-z0-9]` into `-`
/// (e.g. `/tmp/.tmpAb1` → `-tmp--tmpAb1`). Paths whose encoding exceeds 200 characters
/// are cut to 200 and suffixed with a hash; this helper refuses them.
pub fn transcript_path(home: &Path, cwd: &Path, session_id: &str) -> PathBuf {
    let cwd = cwd.canonicalize().unwrap_or_else(|_| cwd.to_owned());
    let encoded: String = cwd
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    assert!(
        encoded.len() <= 200,
        "cwd too long for transcript_path: {}",
        cwd.display()
    );
    home.join(".claude/projects")
        .join(encoded)
        .join(format!("{session_id}.jsonl"))
}

/// The `run` and `env` lines of a workflow step that runs `command` (its program, args and
/// the environment it sets; a JSON string is a valid TOML basic string).
pub fn step_toml(command: &Command) -> String {
    let quote =
        |s: &std::ffi::OsStr| serde_json::to_string(&s.to_string_lossy()).expect("a string");
    let mut argv = vec![quote(command.get_program())];
    argv.extend(command.get_args().map(quote));
    let env: Vec<String> = command
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{} = {}", k.to_string_lossy(), quote(v?))))
        .collect();
    format!(
        "run = [{}]\nenv = {{ {} }}\n",
        argv.join(", "),
        env.join(", ")
    )
}
