//! The real Claude Code CLI against the scripted Messages-API server
//! (`support::anthropic`): proves the harness and pins down the Claude Code behaviour
//! drover relies on. No systemd needed; every test has its own server, home and cwd.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::support::anthropic::{
    Kind, ModelServer, Turn, claude_command, run_claude, transcript_path,
};
use crate::support::wait_until;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// A fresh `$HOME` and working directory.
fn dirs() -> (tempfile::TempDir, tempfile::TempDir) {
    (
        tempfile::tempdir().expect("temp home"),
        tempfile::tempdir().expect("temp cwd"),
    )
}

/// The text of every `text` block of a request's `messages`, in order.
fn texts(request: &Value) -> Vec<String> {
    let mut texts = Vec::new();
    for message in request["messages"].as_array().into_iter().flatten() {
        match &message["content"] {
            Value::String(s) => texts.push(s.clone()),
            Value::Array(blocks) => texts.extend(
                blocks
                    .iter()
                    .filter(|b| b["type"] == "text")
                    .filter_map(|b| b["text"].as_str().map(str::to_owned)),
            ),
            _ => {}
        }
    }
    texts
}

/// The texts appear in `request`'s messages, in this order.
fn assert_texts_in_order(request: &Value, expected: &[&str]) {
    let replayed = texts(request);
    let positions: Vec<usize> = expected
        .iter()
        .map(|text| {
            replayed
                .iter()
                .position(|t| t == text)
                .unwrap_or_else(|| panic!("{text:?} not in the request: {replayed:#?}"))
        })
        .collect();
    assert!(
        positions.is_sorted(),
        "{expected:?} out of order in {replayed:#?}"
    );
}

#[test]
fn a_scripted_write_creates_the_file_and_the_run_reports_in_stream_json() {
    let (home, cwd) = dirs();
    let target = cwd.path().join("hello.txt");
    let server = ModelServer::start(vec![
        Turn::write(&target, "hello from the script\n"),
        Turn::text("I wrote hello.txt."),
    ]);
    let mut command = claude_command(&server, home.path(), cwd.path());
    command.arg("Write hello.txt");
    let run = run_claude(command, RUN_TIMEOUT);

    assert!(run.status.success(), "claude failed: {run:#?}");
    assert_eq!(
        std::fs::read_to_string(&target).expect("the Write tool created the file"),
        "hello from the script\n"
    );

    let init = run.init();
    assert_eq!(run.events[0], *init, "init is the first event");
    let session_id = init["session_id"].as_str().expect("init.session_id");
    assert!(uuid::Uuid::parse_str(session_id).is_ok(), "{session_id}");
    assert_eq!(init["claude_code_version"], "2.1.197");
    assert_eq!(init["permissionMode"], "bypassPermissions");
    assert_eq!(init["apiKeySource"], "ANTHROPIC_API_KEY");
    assert_eq!(
        Path::new(init["cwd"].as_str().unwrap()),
        cwd.path().canonicalize().unwrap()
    );

    // The tool round trip, as the CLI reports it.
    let tool_use = run
        .events_of("assistant", None)
        .into_iter()
        .flat_map(|e| e["message"]["content"].as_array().unwrap().clone())
        .find(|b| b["type"] == "tool_use")
        .expect("an assistant tool_use event");
    assert_eq!(tool_use["name"], "Write");
    let tool_result = run
        .events_of("user", None)
        .into_iter()
        .flat_map(|e| e["message"]["content"].as_array().unwrap().clone())
        .find(|b| b["type"] == "tool_result")
        .expect("a user tool_result event");
    assert_eq!(tool_result["tool_use_id"], tool_use["id"]);

    let result = run.result();
    assert_eq!(run.events.last(), Some(result), "result is the last event");
    assert_eq!(result["subtype"], "success");
    assert_eq!(result["is_error"], false);
    assert_eq!(result["num_turns"], 2);
    assert_eq!(result["result"], "I wrote hello.txt.");
    assert_eq!(result["session_id"], session_id);
    assert!(result["total_cost_usd"].as_f64().unwrap() > 0.0, "{result}");
    assert!(
        result["usage"]["input_tokens"].as_u64().unwrap() > 0,
        "{result}"
    );
    assert!(
        result["usage"]["output_tokens"].as_u64().unwrap() > 0,
        "{result}"
    );

    // The server saw two main requests: the prompt, then the prompt plus the tool round
    // trip; both for the same session, streaming, with tools.
    let log = server.log();
    let main: Vec<_> = log.iter().filter(|r| r.kind == Kind::Main).collect();
    assert_eq!(main.len(), 2, "{log:#?}");
    for request in &main {
        assert_eq!(request.method, "POST");
        assert!(request.path.starts_with("/v1/messages"), "{}", request.path);
        assert_eq!(request.body["stream"], true);
        assert_eq!(request.header("x-claude-code-session-id"), Some(session_id));
        assert_eq!(request.header("x-api-key"), Some("sk-ant-test-drover"));
    }
    assert!(texts(&main[0].body).contains(&"Write hello.txt".to_owned()));
    let last = main[1].body["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(last["role"], "user");
    assert_eq!(last["content"][0]["type"], "tool_result");
    assert_eq!(last["content"][0]["tool_use_id"], tool_use["id"]);
    // Nothing but the model calls and the start-up `HEAD /` warm-up.
    for request in log.iter().filter(|r| r.kind != Kind::Main) {
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("HEAD", "/"),
            "unexpected request {request:#?}"
        );
    }
    assert_eq!(server.turns_left(), 0);
}

#[test]
fn session_id_names_the_transcript_and_resume_replays_the_conversation() {
    let (home, cwd) = dirs();
    let session = uuid::Uuid::new_v4().to_string();
    let server = ModelServer::start(vec![
        Turn::text("The first answer."),
        Turn::text("The second answer."),
    ]);

    let mut first = claude_command(&server, home.path(), cwd.path());
    first.args(["--session-id", &session, "The first prompt"]);
    let run = run_claude(first, RUN_TIMEOUT);
    assert!(run.status.success(), "{run:#?}");
    assert_eq!(run.init()["session_id"], session.as_str());
    assert_eq!(run.result()["result"], "The first answer.");

    let transcript = transcript_path(home.path(), cwd.path(), &session);
    let encoded = transcript.parent().unwrap().file_name().unwrap();
    assert!(
        encoded.to_str().unwrap().starts_with("-tmp-"),
        "{}",
        transcript.display()
    );
    let lines: Vec<Value> = std::fs::read_to_string(&transcript)
        .unwrap_or_else(|e| panic!("no transcript at {}: {e}", transcript.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("transcript line is JSON"))
        .collect();
    assert!(
        lines.iter().any(|l| l["type"] == "assistant"
            && l["sessionId"] == session.as_str()
            && l["message"]["content"][0]["text"] == "The first answer."),
        "{lines:#?}"
    );

    // The same id again is refused: a restart must --resume.
    let mut again = claude_command(&server, home.path(), cwd.path());
    again.args(["--session-id", &session, "Again"]);
    let refused = run_claude(again, RUN_TIMEOUT);
    assert!(!refused.status.success());
    assert!(
        refused
            .stderr
            .contains(&format!("Session ID {session} is already in use")),
        "{refused:#?}"
    );
    assert_eq!(
        server.main_requests().len(),
        1,
        "a refused run asks no model"
    );

    let mut resumed = claude_command(&server, home.path(), cwd.path());
    resumed.args(["--resume", &session, "The second prompt"]);
    let run = run_claude(resumed, RUN_TIMEOUT);
    assert!(run.status.success(), "{run:#?}");
    // 2.1.197 keeps the id on --resume (no fork without --fork-session).
    assert_eq!(run.init()["session_id"], session.as_str());
    assert_eq!(run.result()["result"], "The second answer.");

    let requests = server.main_requests();
    assert_eq!(requests.len(), 2);
    assert_texts_in_order(
        &requests[1],
        &["The first prompt", "The first answer.", "The second prompt"],
    );
    let messages = requests[1]["messages"].as_array().unwrap();
    assert!(
        messages
            .iter()
            .any(|m| m["role"] == "assistant" && m["content"][0]["text"] == "The first answer.")
    );
    // The transcript grew with the second exchange.
    let transcript = std::fs::read_to_string(&transcript).unwrap();
    assert!(transcript.contains("The second answer."));
}

/// Fields 4-6 of `/proc/<pid>/stat` (after the parenthesised comm): ppid, pgrp, session.
fn stat(pid: i32) -> Option<(i32, i32, i32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields[0].chars().next()?;
    Some((
        fields[1].parse().ok()?,
        fields[2].parse().ok()?,
        fields[3].parse().ok()?,
        state,
    ))
}

fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Every live descendant of `root` (children before their own children).
fn descendants(root: i32) -> Vec<i32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>()
            && let Some((ppid, ..)) = stat(pid)
        {
            parents.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|(.., state)| state != 'Z' && state != 'X')
}

/// SIGKILLs `child` and all its descendants, leaves first, each reaped by its own (still
/// living) parent; the root is reaped here. Panics if anything survives.
fn kill_tree(child: &mut std::process::Child) {
    let root = child.id() as i32;
    wait_until(Duration::from_secs(20), "the process tree to die", || {
        let below = descendants(root);
        let leaves: Vec<i32> = below
            .iter()
            .copied()
            .filter(|pid| descendants(*pid).is_empty())
            .collect();
        for pid in &leaves {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        below.is_empty()
    });
    child.kill().expect("SIGKILL claude");
    child.wait().expect("reap claude");
}

#[test]
fn a_bash_tool_child_runs_in_its_own_session_and_process_group() {
    let (home, cwd) = dirs();
    let server = ModelServer::start(vec![Turn::bash("sleep 300")]);
    let mut command = claude_command(&server, home.path(), cwd.path());
    command
        .arg("Sleep a while")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = command.spawn().expect("spawn claude");
    let claude = child.id() as i32;

    let mut sleeper = None;
    wait_until(
        Duration::from_secs(30),
        "the Bash tool's `sleep 300`",
        || {
            sleeper = descendants(claude)
                .into_iter()
                .find(|pid| cmdline(*pid) == ["sleep", "300"]);
            sleeper.is_some()
        },
    );
    let sleeper = sleeper.unwrap();
    let tree: Vec<(i32, Vec<String>)> = descendants(claude)
        .into_iter()
        .map(|pid| (pid, cmdline(pid)))
        .collect();

    let (_, claude_pgrp, claude_session, _) = stat(claude).expect("claude's stat");
    let (_, sleep_pgrp, sleep_session, _) = stat(sleeper).expect("sleep's stat");
    assert_ne!(
        sleep_pgrp, claude_pgrp,
        "the Bash child shares claude's process group: {tree:?}"
    );
    assert_ne!(
        sleep_session, claude_session,
        "the Bash child shares claude's session: {tree:?}"
    );
    // Its shell leads that new session (setsid), and `sleep` stays in the shell's group.
    let shell = stat(sleeper).unwrap().0;
    assert_ne!(
        shell, claude,
        "sleep runs under a shell, not under claude itself"
    );
    assert_eq!(stat(shell).unwrap().0, claude, "{tree:?}");
    assert_eq!(
        sleep_session, shell,
        "the shell is the session leader: {tree:?}"
    );
    assert_eq!(sleep_pgrp, shell, "the shell leads the group: {tree:?}");
    // So a kill aimed at claude's process group or session would miss it.
    assert!(alive(sleeper));
    assert_eq!(server.main_requests().len(), 1, "claude waits on the tool");

    let everything: Vec<i32> = std::iter::once(claude).chain(descendants(claude)).collect();
    kill_tree(&mut child);
    for pid in everything {
        assert!(!alive(pid), "{pid} ({:?}) survived", cmdline(pid));
    }
}

#[test]
fn an_overloaded_api_is_retried_and_the_retry_is_reported() {
    let (home, cwd) = dirs();
    let server = ModelServer::start(vec![
        Turn::Error { status: 529 },
        Turn::text("Answered after the overload."),
    ]);
    let mut command = claude_command(&server, home.path(), cwd.path());
    command.arg("Say something");
    let run = run_claude(command, RUN_TIMEOUT);

    assert!(run.status.success(), "{run:#?}");
    let retries = run.events_of("system", Some("api_retry"));
    assert_eq!(retries.len(), 1, "{run:#?}");
    let retry = retries[0];
    assert_eq!(retry["attempt"], 1);
    assert_eq!(retry["max_retries"], 10);
    assert_eq!(retry["error_status"], 529);
    assert_eq!(retry["error"], "overloaded");
    assert!(retry["retry_delay_ms"].as_f64().unwrap() > 0.0);
    let result = run.result();
    assert_eq!(result["subtype"], "success");
    assert_eq!(result["is_error"], false);
    assert_eq!(result["result"], "Answered after the overload.");

    // The retry is the same request again (Claude Code's own retry loop: the SDK's
    // X-Stainless-Retry-Count stays 0).
    let main: Vec<_> = server
        .log()
        .into_iter()
        .filter(|r| r.kind == Kind::Main)
        .collect();
    assert_eq!(main.len(), 2);
    assert_eq!(main[0].body["messages"], main[1].body["messages"]);
    assert_eq!(main[1].header("x-stainless-retry-count"), Some("0"));
}

#[test]
fn a_rate_limit_is_retried_after_retry_after() {
    let (home, cwd) = dirs();
    let server = ModelServer::start(vec![Turn::Error { status: 429 }, Turn::text("Later.")]);
    let mut command = claude_command(&server, home.path(), cwd.path());
    command.arg("Say something");
    let run = run_claude(command, RUN_TIMEOUT);

    assert!(run.status.success(), "{run:#?}");
    let retries = run.events_of("system", Some("api_retry"));
    assert_eq!(retries.len(), 1, "{run:#?}");
    assert_eq!(retries[0]["error_status"], 429);
    assert_eq!(retries[0]["error"], "rate_limit");
    // The server's `retry-after: 1` is honoured exactly.
    assert_eq!(retries[0]["retry_delay_ms"], 1000);
    assert_eq!(run.result()["result"], "Later.");
    assert_eq!(server.main_requests().len(), 2);
}

#[test]
fn exhausted_retries_end_the_run_with_an_error_result() {
    let (home, cwd) = dirs();
    let server = ModelServer::start(vec![Turn::Error { status: 529 }; 3]);
    let mut command = claude_command(&server, home.path(), cwd.path());
    // Default is 10 retries with growing delays; 1 keeps the test short.
    command
        .env("CLAUDE_CODE_MAX_RETRIES", "1")
        .arg("Say something");
    let run = run_claude(command, RUN_TIMEOUT);

    assert_eq!(run.status.code(), Some(1), "{run:#?}");
    assert_eq!(run.events_of("system", Some("api_retry")).len(), 1);
    let result = run.result();
    // subtype stays "success"; is_error and api_error_status tell.
    assert_eq!(result["subtype"], "success");
    assert_eq!(result["is_error"], true);
    assert_eq!(result["api_error_status"], 529);
    assert!(
        result["result"]
            .as_str()
            .unwrap()
            .starts_with("API Error: 529 Overloaded"),
        "{result}"
    );
    assert_eq!(server.main_requests().len(), 2, "1 try + 1 retry");
    assert_eq!(server.turns_left(), 1);
}

#[test]
fn the_server_answers_side_calls_without_consuming_turns() {
    // Claude Code sends no side calls in print mode; check the server's own handling with
    // a plain HTTP client (std only): a tool-less /v1/messages and count_tokens.
    let server = ModelServer::start(vec![Turn::text("scripted")]);
    let post = |path: &str, body: &Value| -> String {
        use std::io::{Read, Write};
        let body = body.to_string();
        let mut stream =
            std::net::TcpStream::connect(server.base_url().trim_start_matches("http://"))
                .expect("connect");
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    let side = post(
        "/v1/messages",
        &json!({"model": "claude-haiku-4-5", "max_tokens": 32, "stream": false,
                "messages": [{"role": "user", "content": "title?"}]}),
    );
    assert!(side.starts_with("HTTP/1.1 200"), "{side}");
    assert!(side.contains(r#""text":"ok""#), "{side}");
    let count = post(
        "/v1/messages/count_tokens",
        &json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert!(count.contains(r#""input_tokens":"#), "{count}");
    assert_eq!(server.turns_left(), 1);
    let main = post(
        "/v1/messages",
        &json!({"model": "m", "max_tokens": 32, "stream": true, "tools": [{"name": "t"}],
                "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert!(main.contains("text/event-stream"), "{main}");
    assert!(main.contains("event: message_start\ndata: "), "{main}");
    assert!(
        main.contains("event: content_block_delta\ndata: "),
        "{main}"
    );
    assert!(main.contains(r#""text":"scripted""#), "{main}");
    assert!(main.contains("event: message_stop"), "{main}");
    assert_eq!(server.turns_left(), 0);
    let kinds: Vec<Kind> = server.log().iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [Kind::Auxiliary, Kind::Auxiliary, Kind::Main]);
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn a_hanging_stream_keeps_claude_waiting_without_a_result() {
    let (home, cwd) = dirs();
    let server = ModelServer::start(vec![Turn::Hang]);
    let mut command = claude_command(&server, home.path(), cwd.path());
    let out = cwd.path().join("stdout.jsonl");
    command
        .arg("Say something")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::null());
    let mut child = command.spawn().expect("spawn claude");
    server.wait_for_main_requests(1, RUN_TIMEOUT);
    // Claude Code's stream idle watchdog only fires after 300 s (CLAUDE_STREAM_IDLE_TIMEOUT_MS
    // can only raise it): for a few seconds nothing happens at all.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "claude gave up on a hanging stream"
    );
    let events: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.iter().all(|e| e["type"] != "result"), "{events:#?}");
    assert_eq!(
        server.main_requests().len(),
        1,
        "no retry while the stream is open"
    );
    kill_tree(&mut child);
}

/// Runs session `session` twice in `cwd`: a first exchange ("First prompt": a `Bash`
/// `echo one`, then "First done."), then a resumed one ("Sleep a while") whose `Bash` tool
/// runs `sleep 300`, during which claude is SIGKILLed before its children (as a kill of the
/// whole scope would, near enough: killing the leaves first lets claude record the tool's
/// failure and answer, which no real kill does). The server's script must start with
/// [`killed_mid_tool_script`]. Returns the transcript's path.
fn killed_mid_tool(
    server: &ModelServer,
    home: &Path,
    cwd: &Path,
    session: &str,
) -> std::path::PathBuf {
    let mut first = claude_command(server, home, cwd);
    first.args(["--session-id", session, "First prompt"]);
    let run = run_claude(first, RUN_TIMEOUT);
    assert!(run.status.success(), "{run:#?}");

    let mut second = claude_command(server, home, cwd);
    second
        .args(["--resume", session, "Sleep a while"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = second.spawn().expect("spawn claude");
    let claude = child.id() as i32;
    wait_until(
        Duration::from_secs(30),
        "the Bash tool's `sleep 300`",
        || {
            descendants(claude)
                .into_iter()
                .any(|pid| cmdline(pid) == ["sleep", "300"])
        },
    );
    // Claude Code writes the transcript asynchronously: let the tool call reach it first.
    let transcript = drover::claude::transcript::transcript_path(home, cwd, session);
    wait_until(
        Duration::from_secs(10),
        "the tool call in the transcript",
        || {
            std::fs::read_to_string(&transcript)
                .is_ok_and(|t| t.lines().any(|l| l.contains(r#""command":"sleep 300""#)))
        },
    );
    let tree = descendants(claude);
    kill(Pid::from_raw(claude), Signal::SIGKILL).expect("SIGKILL claude");
    child.wait().expect("reap claude");
    for pid in &tree {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    wait_until(Duration::from_secs(20), "claude's children to die", || {
        tree.iter().all(|pid| !alive(*pid))
    });
    transcript
}

fn killed_mid_tool_script() -> Vec<Turn> {
    vec![
        Turn::bash("echo one"),
        Turn::text("First done."),
        Turn::bash("sleep 300"),
    ]
}

/// The transcript's lines, each parsed (`None`: not JSON).
fn transcript_lines(path: &Path) -> Vec<(String, Option<Value>)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| (l.to_owned(), serde_json::from_str(l).ok()))
        .collect()
}

/// Cuts the transcript's last line in the middle, as a torn write would.
fn cut_last_line(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let last_start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let keep = last_start + (body.len() - last_start) / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(keep as u64)
        .unwrap();
    (bytes.len() - keep) as u64
}

#[test]
fn a_killed_session_is_repaired_and_resumed() {
    let (home, cwd) = dirs();
    let session = uuid::Uuid::new_v4().to_string();
    let mut script = killed_mid_tool_script();
    script.push(Turn::text("Resumed answer."));
    let server = ModelServer::start(script);
    let transcript = killed_mid_tool(&server, home.path(), cwd.path(), &session);

    // The kill left the tool call without its result as the transcript's last entry.
    let lines = transcript_lines(&transcript);
    let (_, last) = lines.last().expect("a transcript");
    let last = last.as_ref().expect("complete lines");
    assert_eq!(last["type"], "assistant", "{last}");
    assert_eq!(
        last["message"]["content"][0]["input"]["command"],
        "sleep 300"
    );
    let tool_id = last["message"]["content"][0]["id"].as_str().unwrap();
    assert_eq!(
        drover::claude::transcript::inspect_transcript(&transcript).unwrap(),
        drover::claude::transcript::Repair::Truncated {
            removed_lines: 1,
            removed_bytes: lines.last().unwrap().0.len() as u64 + 1,
            reason: format!("tool_use {tool_id} (Bash) has no tool_result"),
        }
    );

    let cut = cut_last_line(&transcript);
    let before = std::fs::read(&transcript).unwrap();
    let repair = drover::claude::transcript::repair_transcript(&transcript).unwrap();
    let drover::claude::transcript::Repair::Truncated {
        removed_lines,
        removed_bytes,
        reason,
    } = repair
    else {
        panic!("{repair:?}")
    };
    assert_eq!(removed_lines, 1);
    assert_eq!(
        removed_bytes,
        lines.last().unwrap().0.len() as u64 + 1 - cut
    );
    assert_eq!(reason, "the last line is not complete JSON");
    let mut broken = transcript.clone().into_os_string();
    broken.push(drover::claude::transcript::BROKEN_SUFFIX);
    assert_eq!(std::fs::read(&broken).unwrap(), before);
    let repaired = transcript_lines(&transcript);
    assert!(repaired.iter().all(|(_, v)| v.is_some()));
    let (_, last) = repaired
        .iter()
        .rev()
        .find(|(_, v)| v.as_ref().unwrap()["type"] == "user")
        .unwrap();
    assert_eq!(
        last.as_ref().unwrap()["message"]["content"],
        "Sleep a while"
    );

    let mut resumed = claude_command(&server, home.path(), cwd.path());
    resumed.args(["--resume", &session, "Resume prompt"]);
    let run = run_claude(resumed, RUN_TIMEOUT);
    assert!(run.status.success(), "{run:#?}");
    let result = run.result();
    assert_eq!(result["is_error"], false, "{result}");
    assert_eq!(result["result"], "Resumed answer.");

    let requests = server.main_requests();
    assert_eq!(
        requests.len(),
        4,
        "first exchange (2), the killed turn, the resume"
    );
    assert_texts_in_order(
        &requests[3],
        &[
            "First prompt",
            "First done.",
            "Sleep a while",
            "Resume prompt",
        ],
    );
    // The first turn's tool call and result are replayed too.
    let messages = requests[3]["messages"].to_string();
    assert!(messages.contains(r#""command":"echo one""#), "{messages}");
    assert!(messages.contains(r#""content":"one""#), "{messages}");
    assert!(!messages.contains("sleep 300"), "{messages}");
    // Claude Code appended cleanly: every line of the transcript is still JSON.
    let after = transcript_lines(&transcript);
    assert!(after.iter().all(|(_, v)| v.is_some()), "{after:#?}");
    assert!(after.iter().any(|(l, _)| l.contains("Resumed answer.")));
}

/// What 2.1.197 does with a killed session's transcript left as it is: it resumes (exit 0,
/// no error), but it appends without checking that the file ends in a newline, so the
/// first entry the resumed run writes is glued onto the cut line and the two are one
/// unparseable line from then on (here the glued entry is a `queue-operation`; whatever it
/// is, it is lost).
#[test]
fn resuming_an_unrepaired_cut_transcript_glues_onto_the_cut_line() {
    let (home, cwd) = dirs();
    let session = uuid::Uuid::new_v4().to_string();
    let mut script = killed_mid_tool_script();
    script.push(Turn::text("Resumed anyway."));
    let server = ModelServer::start(script);
    let transcript = killed_mid_tool(&server, home.path(), cwd.path(), &session);
    cut_last_line(&transcript);
    let cut_line = transcript_lines(&transcript).pop().unwrap().0;

    let mut resumed = claude_command(&server, home.path(), cwd.path());
    resumed.args(["--resume", &session, "Resume prompt"]);
    let run = run_claude(resumed, RUN_TIMEOUT);
    assert!(run.status.success(), "{run:#?}");
    assert_eq!(run.result()["result"], "Resumed anyway.");
    assert!(texts(&server.main_requests()[3]).contains(&"First done.".to_owned()));

    let broken: Vec<String> = transcript_lines(&transcript)
        .into_iter()
        .filter(|(_, v)| v.is_none())
        .map(|(l, _)| l)
        .collect();
    assert_eq!(broken.len(), 1, "{broken:#?}");
    assert!(broken[0].starts_with(&cut_line), "{broken:#?}");
    assert!(
        broken[0].len() > cut_line.len(),
        "an entry was glued on: {broken:#?}"
    );
}

/// What 2.1.197 does with an unanswered `tool_use` at the end of a transcript: it resumes,
/// drops that assistant entry from the history it sends, and puts a synthetic assistant
/// answer, "No response requested.", after the user's last prompt; the model never learns
/// the tool call happened. [`drover::claude::transcript::repair_transcript`] removes the entry itself,
/// which comes to the same history.
#[test]
fn resuming_after_an_unanswered_tool_use_drops_it() {
    let (home, cwd) = dirs();
    let session = uuid::Uuid::new_v4().to_string();
    let mut script = killed_mid_tool_script();
    script.push(Turn::text("Resumed anyway."));
    let server = ModelServer::start(script);
    let transcript = killed_mid_tool(&server, home.path(), cwd.path(), &session);

    let mut resumed = claude_command(&server, home.path(), cwd.path());
    resumed.args(["--resume", &session, "Resume prompt"]);
    let run = run_claude(resumed, RUN_TIMEOUT);
    assert!(run.status.success(), "{run:#?}");
    let request = &server.main_requests()[3];
    assert!(!request["messages"].to_string().contains("sleep 300"));
    let replayed = texts(request);
    let sleep = replayed.iter().position(|t| t == "Sleep a while").unwrap();
    assert_eq!(
        replayed[sleep + 1],
        "No response requested.",
        "{replayed:#?}"
    );
    assert_eq!(replayed[sleep + 2], "Resume prompt", "{replayed:#?}");
    // The transcript keeps the unanswered entry; the new entries branch off before it.
    let lines = transcript_lines(&transcript);
    assert!(lines.iter().all(|(_, v)| v.is_some()));
    assert!(lines.iter().any(|(l, _)| l.contains("sleep 300")));
    assert_eq!(
        drover::claude::transcript::inspect_transcript(&transcript).unwrap(),
        drover::claude::transcript::Repair::Intact,
        "the unanswered tool_use is in an earlier turn now"
    );
}

#[test]
fn a_long_cwd_gets_a_hashed_project_directory() {
    let (home, base) = dirs();
    // Over 200 encoded characters, with characters of one and two UTF-16 units.
    let mut cwd = base.path().to_owned();
    for part in ["é-long-directory-name-".repeat(8), "🦀-crab-".repeat(10)] {
        cwd.push(part);
    }
    std::fs::create_dir_all(&cwd).unwrap();
    let session = uuid::Uuid::new_v4().to_string();
    let server = ModelServer::start(vec![Turn::text("Deep.")]);
    let mut command = claude_command(&server, home.path(), &cwd);
    command.args(["--session-id", &session, "Hello"]);
    let run = run_claude(command, RUN_TIMEOUT);
    assert!(run.status.success(), "{run:#?}");

    let expected = drover::claude::transcript::transcript_path(home.path(), &cwd, &session);
    let project = expected
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        project.len() > 201 && project.as_bytes()[200] == b'-',
        "{project}"
    );
    let found: Vec<_> = std::fs::read_dir(home.path().join(".claude/projects"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(expected.exists(), "expected {project}, found {found:?}");
}
