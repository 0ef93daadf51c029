//! Claude Code (2.1.197) as drover sees it: its `--output-format stream-json` output, the
//! arguments that start or resume a session, and its session transcripts
//! (`~/.claude/projects/<encoded cwd>/<session id>.jsonl`), which a kill can leave with an
//! incomplete tail that [`repair_transcript`] cuts off before a `--resume`.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::model::{ResultEvent, StreamReport};
use crate::spec::StepCommand;

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
    live: crate::model::AgentLive,
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
    pub fn catch_up(&mut self, path: &Path) -> crate::model::AgentLive {
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

    fn live(&self) -> crate::model::AgentLive {
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

/// Encoded project directories longer than this are cut and suffixed with a hash.
const MAX_ENCODED_CWD: usize = 200;

/// Where Claude Code keeps the transcript of session `session_id` started in `cwd`, with
/// `home` as `$HOME` (and no `CLAUDE_CONFIG_DIR`, which would replace `home/.claude`):
/// `home/.claude/projects/<encoded cwd>/<id>.jsonl`.
///
/// The encoding mirrors 2.1.197's (its `realpath` of the cwd, then JavaScript's
/// `replace(/[^a-zA-Z0-9]/g, "-")`, which works on UTF-16 code units: a character outside
/// the BMP becomes two dashes); an encoding over 200 units is cut to 200 and suffixed with
/// `-` and the base-36 absolute value of a Java-style 32-bit string hash of the path.
pub fn transcript_path(home: &Path, cwd: &Path, session_id: &str) -> PathBuf {
    transcript_path_in(&home.join(".claude"), cwd, session_id)
}

/// [`transcript_path`] under Claude Code's configuration directory itself (`~/.claude`, or
/// `$CLAUDE_CONFIG_DIR` where that is set).
pub fn transcript_path_in(config_dir: &Path, cwd: &Path, session_id: &str) -> PathBuf {
    let cwd = cwd.canonicalize().unwrap_or_else(|_| cwd.to_owned());
    config_dir
        .join("projects")
        .join(encode_cwd(&cwd.to_string_lossy()))
        .join(format!("{session_id}.jsonl"))
}

fn encode_cwd(cwd: &str) -> String {
    let mut encoded = String::with_capacity(cwd.len());
    for c in cwd.chars() {
        if c.is_ascii_alphanumeric() {
            encoded.push(c);
        } else {
            encoded.extend(std::iter::repeat_n('-', c.len_utf16()));
        }
    }
    if encoded.len() <= MAX_ENCODED_CWD {
        return encoded;
    }
    // Only ASCII left, so bytes are UTF-16 units.
    encoded.truncate(MAX_ENCODED_CWD);
    let hash = cwd.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    format!("{encoded}-{}", base36(i64::from(hash).unsigned_abs()))
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    out.into_iter().map(char::from).collect()
}

/// How a Claude Code step begins its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStart {
    /// A first attempt: `--session-id <id>` (2.1.197 refuses an id already used).
    New(String),
    /// A later attempt continuing the session: `--resume <id>`.
    Resume(String),
}

/// The step's argv with the session flag appended. For the shell form the flag is appended
/// to the script text (quoted), so the script must end with the `claude` invocation.
pub fn session_argv(command: &StepCommand, start: &SessionStart) -> Vec<String> {
    let (flag, id) = match start {
        SessionStart::New(id) => ("--session-id", id),
        SessionStart::Resume(id) => ("--resume", id),
    };
    match command {
        StepCommand::Argv(argv) => {
            let mut argv = argv.clone();
            argv.extend([flag.to_owned(), id.clone()]);
            argv
        }
        StepCommand::Shell(script) => {
            // Trailing newlines would put the flag on a command line of its own.
            let script = format!("{} {flag} {}", script.trim_end(), shell_quote(id));
            StepCommand::Shell(script).argv()
        }
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What [`repair_transcript`] did (or, from [`inspect_transcript`], would do).
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(tag = "repair", rename_all = "kebab-case")]
pub enum Repair {
    /// Nothing to do.
    Intact,
    /// The tail was cut off.
    Truncated {
        removed_lines: u64,
        removed_bytes: u64,
        reason: String,
    },
    /// The last line was complete but lacked its newline, so the next entry Claude Code
    /// appends would have been glued onto it; the newline was added.
    NewlineAdded,
}

/// The suffix of the copy of a transcript as it was before [`repair_transcript`] cut it.
pub const BROKEN_SUFFIX: &str = ".drover-broken";

/// Makes a transcript that a kill left behind safe to `--resume`; run it only while no
/// `claude` has the session open.
///
/// What 2.1.197 does with an unrepaired one (verified): it resumes, but it appends without
/// checking the file ends in a newline, so a line cut mid-JSON swallows the first entry
/// the resumed run writes (the two become one unparseable line, skipped from then on), and
/// an assistant `tool_use` without a `tool_result` is silently dropped from the history
/// the model sees. This cuts the tail back to its last complete exchange: trailing lines
/// that are not JSON, then any trailing assistant entry with a `tool_use` whose
/// `tool_result` never came (repeatedly, since a cut can orphan an earlier `tool_use`).
///
/// Conservative: only the current turn (after the last user prompt) is examined, because
/// earlier turns may hold an unanswered `tool_use` that an earlier resume already routed
/// around (entries are linked by `parentUuid`), and a broken line in the middle (an old
/// glued append) is left alone: Claude Code skips it, and cutting there would lose all
/// that follows. The file is replaced atomically (temp file + rename) after the original
/// is hard-linked to `<id>.jsonl.drover-broken`. A missing file is a `NotFound` error.
pub fn repair_transcript(path: &Path) -> std::io::Result<Repair> {
    let bytes = std::fs::read(path)?;
    let (plan, keep) = plan_repair(&bytes);
    if plan == Repair::Intact {
        return Ok(plan);
    }
    let mut repaired = bytes[..keep].to_vec();
    if plan == Repair::NewlineAdded {
        repaired.push(b'\n');
    }
    replace_file(path, &repaired)?;
    Ok(plan)
}

/// What [`repair_transcript`] would do, without changing anything.
pub fn inspect_transcript(path: &Path) -> std::io::Result<Repair> {
    Ok(plan_repair(&std::fs::read(path)?).0)
}

fn replace_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    let with_suffix = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let temp = with_suffix(".drover-tmp");
    let written = write_new(&temp, contents, mode);
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    let broken = with_suffix(BROKEN_SUFFIX);
    match std::fs::remove_file(&broken) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::hard_link(path, &broken)?;
    std::fs::rename(&temp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.sync_all()
}

/// One line of a transcript: where it starts and what it holds (`None`: not JSON).
struct Line {
    start: usize,
    value: Option<Value>,
}

/// The repair a transcript needs and how many of its bytes to keep.
fn plan_repair(bytes: &[u8]) -> (Repair, usize) {
    let mut lines = Vec::new();
    let mut start = 0;
    while start < bytes.len() {
        let end = bytes[start..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| start + i + 1);
        let text = bytes[start..end].trim_ascii();
        // Blank lines are harmless; keep them as valid no-ops.
        let value = if text.is_empty() {
            Some(Value::Null)
        } else {
            serde_json::from_slice::<Value>(text)
                .ok()
                .filter(Value::is_object)
        };
        lines.push(Line { start, value });
        start = end;
    }

    let mut reasons = Vec::new();
    let mut keep = lines.len();
    while keep > 0 && lines[keep - 1].value.is_none() {
        keep -= 1;
    }
    if keep < lines.len() {
        let cut = lines.len() - keep;
        reasons.push(if cut == 1 {
            "the last line is not complete JSON".to_owned()
        } else {
            format!("the last {cut} lines are not complete JSON")
        });
    }
    while let Some((index, missing)) = dangling_tool_use(&lines[..keep]) {
        reasons.push(format!("{missing} has no tool_result"));
        keep = index;
    }

    let kept_bytes = lines.get(keep).map_or(bytes.len(), |l| l.start);
    if keep < lines.len() {
        let plan = Repair::Truncated {
            removed_lines: (lines.len() - keep) as u64,
            removed_bytes: (bytes.len() - kept_bytes) as u64,
            reason: reasons.join("; "),
        };
        (plan, kept_bytes)
    } else if bytes.last().is_some_and(|b| *b != b'\n') {
        (Repair::NewlineAdded, kept_bytes)
    } else {
        (Repair::Intact, kept_bytes)
    }
}

/// The first main-chain assistant entry of the current turn (after the last user prompt)
/// with a `tool_use` that no later entry answers, and a description of that `tool_use`.
fn dangling_tool_use(lines: &[Line]) -> Option<(usize, String)> {
    let entries: Vec<(usize, &Value)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, l)| Some((i, l.value.as_ref()?)))
        .filter(|(_, v)| v.get("isSidechain").and_then(Value::as_bool) != Some(true))
        .collect();
    let turn_start = entries
        .iter()
        .rposition(|(_, v)| is_prompt(v))
        .map_or(0, |p| p + 1);
    let turn = &entries[turn_start..];
    let answered: HashSet<&str> = turn
        .iter()
        .filter(|(_, v)| entry_type(v) == Some("user"))
        .flat_map(|(_, v)| blocks(v, "tool_result"))
        .filter_map(|b| b.get("tool_use_id").and_then(Value::as_str))
        .collect();
    turn.iter()
        .filter(|(_, v)| entry_type(v) == Some("assistant"))
        .find_map(|(i, v)| {
            let unanswered = blocks(v, "tool_use").find(|b| {
                b.get("id")
                    .and_then(Value::as_str)
                    .is_none_or(|id| !answered.contains(id))
            })?;
            let field = |name| unanswered.get(name).and_then(Value::as_str).unwrap_or("?");
            Some((*i, format!("tool_use {} ({})", field("id"), field("name"))))
        })
}

fn entry_type(entry: &Value) -> Option<&str> {
    entry.get("type").and_then(Value::as_str)
}

/// The content blocks of type `kind` of a message entry.
fn blocks<'a>(entry: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    entry
        .get("message")
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(move |b| b.get("type").and_then(Value::as_str) == Some(kind))
}

/// A user message that is not a tool result: a prompt, which begins a turn.
fn is_prompt(entry: &Value) -> bool {
    entry_type(entry) == Some("user")
        && entry.get("message").is_some()
        && blocks(entry, "tool_result").next().is_none()
}

#[cfg(test)]
mod tests {

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
    use super::*;

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

    #[test]
    fn cwds_encode_like_claude_code() {
        assert_eq!(encode_cwd("/tmp/.tmpAb1"), "-tmp--tmpAb1");
        // UTF-16 code units: é is one, 🦀 is two.
        assert_eq!(encode_cwd("/é/🦀"), "-----");
        let short = format!("/{}", "a".repeat(199));
        assert_eq!(encode_cwd(&short), format!("-{}", "a".repeat(199)));
        // Expected values computed by the CLI's own functions, run under node.
        let long = format!("/{}", "a".repeat(200));
        assert_eq!(encode_cwd(&long), format!("-{}-b6ymvl", "a".repeat(199)));
        let wide = format!("/tmp/{}", "é🦀x".repeat(70));
        let expected = format!("-tmp-{}----uol7yj", "---x".repeat(48));
        assert_eq!(encode_cwd(&wide), expected);
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(2_147_483_648), "zik0zk");
        let home = Path::new("/home/u");
        assert_eq!(
            transcript_path(home, Path::new("/nonexistent/x y"), "id"),
            Path::new("/home/u/.claude/projects/-nonexistent-x-y/id.jsonl")
        );
    }

    #[test]
    fn session_flags_are_appended() {
        let argv = StepCommand::Argv(vec!["claude".into(), "-p".into(), "fix it".into()]);
        assert_eq!(
            session_argv(&argv, &SessionStart::New("abc".into())),
            ["claude", "-p", "fix it", "--session-id", "abc"]
        );
        assert_eq!(
            session_argv(&argv, &SessionStart::Resume("abc".into())),
            ["claude", "-p", "fix it", "--resume", "abc"]
        );
        let shell = StepCommand::Shell("cd sub && claude -p 'fix it'\n".into());
        assert_eq!(
            session_argv(&shell, &SessionStart::Resume("a'b".into())),
            [
                "/bin/sh",
                "-c",
                r"cd sub && claude -p 'fix it' --resume 'a'\''b'"
            ]
        );
    }

    // Transcript entries in 2.1.197's shape (fields drover does not read left out).
    fn prompt(uuid: &str, parent: &str, text: &str) -> String {
        serde_json::json!({"parentUuid": parent, "isSidechain": false, "type": "user",
            "message": {"role": "user", "content": text}, "uuid": uuid})
        .to_string()
    }
    fn tool_use(uuid: &str, parent: &str, id: &str) -> String {
        serde_json::json!({"parentUuid": parent, "isSidechain": false, "type": "assistant",
            "message": {"role": "assistant", "id": "msg_1", "content": [
                {"type": "tool_use", "id": id, "name": "Bash", "input": {"command": "sleep 300"}}]},
            "uuid": uuid})
        .to_string()
    }
    fn tool_result(uuid: &str, parent: &str, id: &str) -> String {
        serde_json::json!({"parentUuid": parent, "isSidechain": false, "type": "user",
            "message": {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": id, "content": "ok", "is_error": false}]},
            "uuid": uuid, "sourceToolAssistantUUID": parent})
        .to_string()
    }
    fn text(uuid: &str, parent: &str, text: &str) -> String {
        serde_json::json!({"parentUuid": parent, "isSidechain": false, "type": "assistant",
            "message": {"role": "assistant", "id": "msg_2", "content": [{"type": "text", "text": text}]},
            "uuid": uuid})
        .to_string()
    }
    const QUEUE: &str = r#"{"type":"queue-operation","operation":"dequeue","timestamp":"2026-11-25T17:36:37.908Z","sessionId":"s"}"#;
    const LAST_PROMPT: &str =
        r#"{"type":"last-prompt","lastPrompt":"p","leafUuid":"a2","sessionId":"s"}"#;

    fn lines(entries: &[String]) -> String {
        entries.iter().map(|e| format!("{e}\n")).collect()
    }

    /// Writes `contents`, repairs it, and returns the repair and the new contents.
    fn repair(contents: &str) -> (Repair, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        std::fs::write(&path, contents).unwrap();
        let planned = inspect_transcript(&path).unwrap();
        let done = repair_transcript(&path).unwrap();
        assert_eq!(planned, done);
        let after = std::fs::read_to_string(&path).unwrap();
        let broken = std::fs::read_to_string(dir.path().join("s.jsonl.drover-broken"));
        if done == Repair::Intact {
            assert!(broken.is_err(), "no backup for an intact transcript");
        } else {
            assert_eq!(broken.unwrap(), contents, "the original is kept");
        }
        assert_eq!(
            repair_transcript(&path).unwrap(),
            Repair::Intact,
            "idempotent"
        );
        (done, after)
    }

    fn complete_session() -> Vec<String> {
        vec![
            QUEUE.to_owned(),
            prompt("u1", "", "First prompt"),
            tool_use("a1", "u1", "toolu_1"),
            tool_result("r1", "a1", "toolu_1"),
            text("a2", "r1", "First done."),
            LAST_PROMPT.to_owned(),
        ]
    }

    #[test]
    fn a_complete_transcript_is_intact() {
        let contents = lines(&complete_session());
        assert_eq!(repair(&contents), (Repair::Intact, contents.clone()));
        // A turn that ends on a tool result (killed before the model answered) is complete.
        let mut entries = complete_session();
        entries.truncate(4);
        let contents = lines(&entries);
        assert_eq!(repair(&contents), (Repair::Intact, contents.clone()));
    }

    #[test]
    fn a_line_cut_mid_json_is_removed() {
        let good = lines(&complete_session());
        let last = tool_use("a3", "u2", "toolu_2");
        let contents = format!("{good}{}", &last[..last.len() / 2]);
        let (done, after) = repair(&contents);
        assert_eq!(after, good);
        assert_eq!(
            done,
            Repair::Truncated {
                removed_lines: 1,
                removed_bytes: (last.len() / 2) as u64,
                reason: "the last line is not complete JSON".into(),
            }
        );
    }

    #[test]
    fn an_unanswered_tool_use_is_removed_with_what_follows() {
        let mut entries = complete_session();
        entries.push(prompt("u2", "a2", "Sleep a while"));
        let keep = lines(&entries);
        entries.push(tool_use("a3", "u2", "toolu_2"));
        entries.push(QUEUE.to_owned());
        let contents = lines(&entries);
        let (done, after) = repair(&contents);
        assert_eq!(after, keep);
        assert_eq!(
            done,
            Repair::Truncated {
                removed_lines: 2,
                removed_bytes: (contents.len() - keep.len()) as u64,
                reason: "tool_use toolu_2 (Bash) has no tool_result".into(),
            }
        );
    }

    #[test]
    fn a_cut_line_after_an_unanswered_tool_use_takes_both() {
        let mut entries = complete_session();
        entries.push(prompt("u2", "a2", "Sleep a while"));
        let keep = lines(&entries);
        entries.push(tool_use("a3", "u2", "toolu_2"));
        let contents = lines(&entries) + r#"{"type":"queue-oper"#;
        let (done, after) = repair(&contents);
        assert_eq!(after, keep);
        let Repair::Truncated {
            removed_lines,
            reason,
            ..
        } = done
        else {
            panic!("{done:?}")
        };
        assert_eq!(removed_lines, 2);
        assert_eq!(
            reason,
            "the last line is not complete JSON; tool_use toolu_2 (Bash) has no tool_result"
        );
    }

    #[test]
    fn parallel_tool_uses_are_cut_back_to_before_the_first() {
        // a3 and a4 are two tool_use blocks of one response; only toolu_3 was answered.
        let mut entries = complete_session();
        entries.push(prompt("u2", "a2", "Two things"));
        let keep = lines(&entries);
        entries.push(tool_use("a3", "u2", "toolu_3"));
        entries.push(tool_use("a4", "a3", "toolu_4"));
        entries.push(tool_result("r3", "a3", "toolu_3"));
        let (done, after) = repair(&lines(&entries));
        assert_eq!(after, keep);
        let Repair::Truncated { reason, .. } = done else {
            panic!("{done:?}")
        };
        assert_eq!(
            reason,
            "tool_use toolu_4 (Bash) has no tool_result; tool_use toolu_3 (Bash) has no tool_result"
        );
    }

    #[test]
    fn earlier_turns_and_sidechains_are_left_alone() {
        // An unanswered tool_use in an earlier turn (a resume already routed around it), a
        // glued line in the middle, and a sidechain tool_use are not the tail's business.
        let mut entries = complete_session();
        entries.push(prompt("u2", "a2", "Sleep a while"));
        entries.push(tool_use("a3", "u2", "toolu_2"));
        entries.push(r#"{"parentUuid":"a3","type":"assi{"type":"queue-operation"}"#.to_owned());
        entries.push(prompt("u3", "u2", "Resume prompt"));
        entries.push(text("a5", "u3", "Resumed."));
        let mut side: Value = serde_json::from_str(&tool_use("s1", "a5", "toolu_9")).unwrap();
        side["isSidechain"] = Value::Bool(true);
        entries.push(side.to_string());
        let contents = lines(&entries);
        assert_eq!(repair(&contents), (Repair::Intact, contents.clone()));
    }

    #[test]
    fn a_missing_final_newline_is_added() {
        let good = lines(&complete_session());
        let contents = good.trim_end().to_owned();
        assert_eq!(repair(&contents), (Repair::NewlineAdded, good));
    }

    #[test]
    fn odd_files_are_handled() {
        assert_eq!(repair(""), (Repair::Intact, String::new()));
        let (done, after) = repair("not json\n");
        assert_eq!(after, "");
        assert!(matches!(
            done,
            Repair::Truncated {
                removed_lines: 1,
                removed_bytes: 9,
                ..
            }
        ));
        let dir = tempfile::tempdir().unwrap();
        let missing = repair_transcript(&dir.path().join("none.jsonl")).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn repair_keeps_the_file_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        std::fs::write(&path, "{\"type\":\"x\"}\n{\"cut").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        repair_transcript(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join("s.jsonl.drover-tmp").exists());
    }
}
