//! Claude Code's `--output-format stream-json` output: read whole after a step ends
//! (`parse_stream`, `read_stream`), or followed while it runs (`StreamFollower`, for the
//! monitor).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::Value;

use crate::model::{AgentLive, ResultEvent, StreamReport};

/// Reads stream-json output to its end. Never fails: unknown events are counted, lines
/// that are not JSON objects with a `type` (cut, non-UTF-8, stderr text) count as
/// malformed, blank lines are skipped, and a read error ends the report where it stands.
pub fn parse_stream(mut reader: impl BufRead) -> StreamReport {
    let mut report = StreamReport::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.trim_ascii().is_empty() {
            continue;
        }
        let event = serde_json::from_slice::<Value>(&line).ok();
        match event
            .as_ref()
            .and_then(|e| Some((e, e.get("type")?.as_str()?)))
        {
            Some((event, kind)) => add_event(&mut report, kind, event),
            None => report.malformed_lines += 1,
        }
    }
    report
}

/// [`parse_stream`] over a file; a file that does not exist (yet) is an empty report.
pub fn read_stream(path: &Path) -> std::io::Result<StreamReport> {
    match File::open(path) {
        Ok(file) => Ok(parse_stream(BufReader::new(file))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StreamReport::default()),
        Err(e) => Err(e),
    }
}

/// Counts one event into `report`. Fields are read leniently (a field of an unexpected
/// type is as good as absent), so a change in an event Claude Code prints never turns it
/// into a malformed line.
fn add_event(report: &mut StreamReport, kind: &str, event: &Value) {
    report.events += 1;
    let text = |name: &str| event.get(name).and_then(Value::as_str).map(str::to_owned);
    let subtype = text("subtype");
    match (kind, subtype.as_deref()) {
        ("system", Some("init")) => {
            report.model = text("model");
            if let Some(id) = text("session_id") {
                report.session_id = Some(id);
            }
        }
        ("system", Some("api_retry")) => report.api_retries += 1,
        ("assistant", _) => {
            let blocks = event
                .get("message")
                .and_then(|m| m.get("content"))
                .and_then(Value::as_array);
            report.tool_uses += blocks
                .into_iter()
                .flatten()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
                .count() as u64;
        }
        ("result", _) => {
            report.result = Some(ResultEvent {
                subtype: subtype.unwrap_or_default(),
                is_error: event
                    .get("is_error")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                api_error_status: event
                    .get("api_error_status")
                    .and_then(Value::as_u64)
                    .and_then(|s| u16::try_from(s).ok()),
                num_turns: event.get("num_turns").and_then(Value::as_u64),
                total_cost_usd: event.get("total_cost_usd").and_then(Value::as_f64),
                usage: event.get("usage").filter(|u| !u.is_null()).cloned(),
                text: text("result"),
            });
        }
        _ => {}
    }
    if report.session_id.is_none() {
        report.session_id = text("session_id");
    }
}

/// Follows a running agent step's stream-json file for the monitor: reads only what was
/// appended since the last call (a tick must not re-parse an hour of output), keeping a
/// line cut mid-write for the next call.
#[derive(Debug, Default)]
pub struct StreamFollower {
    offset: u64,
    partial: Vec<u8>,
    live: AgentLive,
    /// Usage per assistant message id: Claude Code prints one `assistant` event per content
    /// block of a message, each with the message's usage so far, so it is replaced, not added.
    usage: std::collections::HashMap<String, (u64, u64)>,
    /// Tool calls without a `tool_result` yet, oldest first: (tool_use id, name).
    pending: Vec<(String, String)>,
    /// The latest tool call (name and input), to count repeats of the same call.
    last_call: Option<String>,
    /// The result event's figures, which replace the running estimate.
    final_turns: Option<u64>,
}

impl StreamFollower {
    /// Reads what `path` gained since the last call and returns the step's figures so far.
    /// A file not written yet reads as nothing; a read error keeps the figures as they were.
    pub fn catch_up(&mut self, path: &Path) -> AgentLive {
        use std::io::{Read, Seek, SeekFrom};
        if let Ok(mut file) = File::open(path)
            && file.seek(SeekFrom::Start(self.offset)).is_ok()
        {
            let mut buf = Vec::new();
            if let Ok(read) = file.read_to_end(&mut buf) {
                self.offset += read as u64;
                self.partial.extend_from_slice(&buf);
                let complete = self
                    .partial
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let lines: Vec<u8> = self.partial.drain(..complete).collect();
                for line in lines.split(|&b| b == b'\n') {
                    if let Ok(event) = serde_json::from_slice::<Value>(line) {
                        self.add(&event);
                    }
                }
            }
        }
        self.live()
    }

    fn live(&self) -> AgentLive {
        let mut live = self.live.clone();
        live.turns = self.final_turns.unwrap_or(self.usage.len() as u64);
        live.tokens_in = self.usage.values().map(|u| u.0).sum();
        live.tokens_out = self.usage.values().map(|u| u.1).sum();
        live.tool = self.pending.last().map(|(_, name)| name.clone());
        live
    }

    fn add(&mut self, event: &Value) {
        let blocks = |event: &Value| -> Vec<Value> {
            event
                .get("message")
                .and_then(|m| m.get("content"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        match event.get("type").and_then(Value::as_str) {
            Some("assistant") => {
                let message = event.get("message");
                if let Some(usage) = message.and_then(|m| m.get("usage")) {
                    let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
                    // Tokens in counts the prompt as the model saw it, cached parts included.
                    let tokens_in = n("input_tokens")
                        + n("cache_creation_input_tokens")
                        + n("cache_read_input_tokens");
                    let id = message
                        .and_then(|m| m.get("id"))
                        .and_then(Value::as_str)
                        .map_or_else(|| format!("#{}", self.usage.len()), str::to_owned);
                    self.usage.insert(id, (tokens_in, n("output_tokens")));
                }
                for block in blocks(event) {
                    if block.get("type").and_then(Value::as_str) != Some("tool_use") {
                        continue;
                    }
                    let name = block
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_owned();
                    let id = block
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    let call = format!(
                        "{name}\u{0}{}",
                        block.get("input").map(Value::to_string).unwrap_or_default()
                    );
                    if self.last_call.as_ref() == Some(&call) {
                        self.live.same_tool_calls += 1;
                    } else {
                        self.live.same_tool_calls = 1;
                        self.last_call = Some(call);
                    }
                    self.pending.push((id, name));
                }
            }
            Some("user") => {
                for block in blocks(event) {
                    if block.get("type").and_then(Value::as_str) == Some("tool_result")
                        && let Some(id) = block.get("tool_use_id").and_then(Value::as_str)
                    {
                        self.pending.retain(|(pending, _)| pending != id);
                    }
                }
            }
            Some("result") => {
                if let Some(cost) = event.get("total_cost_usd").and_then(Value::as_f64) {
                    self.live.cost_usd = cost;
                }
                self.final_turns = event.get("num_turns").and_then(Value::as_u64);
                self.pending.clear();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use super::*;

    #[test]
    fn the_stream_follower_reads_incrementally_and_tracks_tools() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.1.stream.jsonl");
        let mut follower = StreamFollower::default();
        assert_eq!(follower.catch_up(&path), crate::model::AgentLive::default());
        let call = |id: &str| {
            format!(
                r#"{{"type":"assistant","message":{{"id":"m{id}","usage":{{"input_tokens":10,"output_tokens":5}},"content":[{{"type":"tool_use","id":"t{id}","name":"Bash","input":{{"command":"ls"}}}}]}}}}"#
            )
        };
        let result = |id: &str| {
            format!(
                r#"{{"type":"user","message":{{"content":[{{"type":"tool_result","tool_use_id":"t{id}"}}]}}}}"#
            )
        };
        std::fs::write(
            &path,
            format!(
                "{}\n{}\n{}\n{{\"type\":\"assis",
                call("1"),
                result("1"),
                call("2")
            ),
        )
        .unwrap();
        let live = follower.catch_up(&path);
        assert_eq!((live.turns, live.tokens_in, live.tokens_out), (2, 20, 10));
        assert_eq!(live.tool.as_deref(), Some("Bash"), "t2 has no result yet");
        assert_eq!(live.same_tool_calls, 2);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        writeln!(file, r#"tant"}}"#).unwrap();
        writeln!(file, "{}", result("2")).unwrap();
        writeln!(
            file,
            r#"{{"type":"result","subtype":"success","num_turns":3,"total_cost_usd":0.25}}"#
        )
        .unwrap();
        let live = follower.catch_up(&path);
        assert_eq!(live.tool, None);
        assert_eq!((live.turns, live.cost_usd), (3, 0.25));
    }

    // Real 2.1.197 stdout lines (long lists and fields cut short).
    const INIT: &str = r#"{"type":"system","subtype":"init","cwd":"/tmp/.tmpwDZaoY","session_id":"6adf4953-30fe-453d-83e2-15e8a938fa46","tools":["Task","Bash"],"mcp_servers":[],"model":"claude-opus-4-8","permissionMode":"bypassPermissions","apiKeySource":"ANTHROPIC_API_KEY","claude_code_version":"2.1.197","uuid":"5512f0a0-553f-4094-9ddf-4fa8e4aefaa6","fast_mode_state":"off"}"#;
    const TOOL_USE: &str = r#"{"type":"assistant","message":{"content":[{"id":"toolu_01114c0b77902e4d9180013bb3","input":{"command":"sleep 300","description":"Run a command"},"name":"Bash","type":"tool_use"}],"id":"msg_01538399ea60c644f3b49aae4f","model":"claude-opus-4-8","role":"assistant","stop_reason":null,"stop_sequence":null,"type":"message"},"parent_tool_use_id":null,"session_id":"6adf4953-30fe-453d-83e2-15e8a938fa46","uuid":"27c107cf-b7d8-427a-98ea-348c22fc0a11"}"#;
    const TOOL_RESULT: &str = r#"{"type":"user","message":{"role":"user","content":[{"type":"tool_result","content":"Exit code 137","is_error":true,"tool_use_id":"toolu_01114c0b77902e4d9180013bb3"}]},"parent_tool_use_id":null,"session_id":"6adf4953-30fe-453d-83e2-15e8a938fa46","uuid":"8f51dc67-3478-41a0-9cd1-d183af60580c","timestamp":"2026-11-25T17:36:26.217Z"}"#;
    const RETRY: &str = r#"{"attempt":1,"error":"overloaded","error_status":529,"max_retries":1,"retry_delay_ms":585.0149436921027,"session_id":"58506d4e-5495-408d-a19b-6fba026b0ed7","subtype":"api_retry","type":"system","uuid":"77f2e0c8-86be-4327-8208-6039550b6a42"}"#;
    const RESULT_OK: &str = r#"{"type":"result","subtype":"success","is_error":false,"api_error_status":null,"duration_ms":695,"num_turns":2,"result":"After resume A.","stop_reason":"end_turn","session_id":"6adf4953-30fe-453d-83e2-15e8a938fa46","total_cost_usd":0.03368,"usage":{"input_tokens":6646,"output_tokens":18}}"#;
    const RESULT_529: &str = r#"{"api_error_status":529,"duration_api_ms":0,"duration_ms":720,"is_error":true,"num_turns":1,"result":"API Error: 529 Overloaded.","session_id":"58506d4e-5495-408d-a19b-6fba026b0ed7","stop_reason":"stop_sequence","subtype":"success","total_cost_usd":0,"type":"result","usage":{"input_tokens":0}}"#;

    fn parse(text: &[u8]) -> StreamReport {
        parse_stream(text)
    }

    #[test]
    fn a_whole_run_is_summarised() {
        let text = [INIT, TOOL_USE, TOOL_RESULT, RETRY, RESULT_OK].join("\n") + "\n";
        let report = parse(text.as_bytes());
        assert_eq!(
            report,
            StreamReport {
                session_id: Some("6adf4953-30fe-453d-83e2-15e8a938fa46".into()),
                model: Some("claude-opus-4-8".into()),
                events: 5,
                malformed_lines: 0,
                tool_uses: 1,
                api_retries: 1,
                result: Some(ResultEvent {
                    subtype: "success".into(),
                    is_error: false,
                    api_error_status: None,
                    num_turns: Some(2),
                    total_cost_usd: Some(0.03368),
                    usage: Some(serde_json::json!({"input_tokens": 6646, "output_tokens": 18})),
                    text: Some("After resume A.".into()),
                }),
            }
        );
    }

    #[test]
    fn an_api_error_result_keeps_its_status() {
        let report = parse(format!("{RETRY}\n{RESULT_529}").as_bytes());
        let result = report.result.expect("a result");
        assert!(result.is_error);
        assert_eq!(result.subtype, "success");
        assert_eq!(result.api_error_status, Some(529));
        assert_eq!(result.total_cost_usd, Some(0.0));
        // No init: the session comes from the first event naming one.
        assert_eq!(
            report.session_id.as_deref(),
            Some("58506d4e-5495-408d-a19b-6fba026b0ed7")
        );
        assert_eq!(report.model, None);
    }

    #[test]
    fn junk_is_counted_never_fatal() {
        let mut text = Vec::new();
        text.extend_from_slice(INIT.as_bytes());
        text.extend_from_slice(b"\n\n   \nnot json at all\n");
        text.extend_from_slice(b"[1,2]\n{\"no\":\"type\"}\n\"str\"\n");
        text.extend_from_slice(b"{\"type\":\"stream_event\",\"x\":1}\n");
        text.extend_from_slice(b"{\"type\":\"system\",\"subtype\":\"\xff\xfe\"}\n");
        text.extend_from_slice(b"\xc3\x28 stderr garbage\n");
        text.extend_from_slice(&TOOL_USE.as_bytes()[..100]);
        let report = parse(&text);
        assert_eq!(report.events, 2, "init and the unknown stream_event");
        assert_eq!(report.malformed_lines, 7);
        assert_eq!(report.tool_uses, 0);
        assert_eq!(report.result, None);
        assert_eq!(report.model.as_deref(), Some("claude-opus-4-8"));
    }

    #[test]
    fn a_missing_stream_file_is_an_empty_report() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nothing.log");
        assert_eq!(read_stream(&path).unwrap(), StreamReport::default());
        std::fs::write(&path, format!("{INIT}\n{RESULT_OK}\n")).unwrap();
        let report = read_stream(&path).unwrap();
        assert_eq!(report.events, 2);
        assert_eq!(report.result.unwrap().num_turns, Some(2));
    }
}
