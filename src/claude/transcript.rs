//! Claude Code's session transcripts: where one lives
//! (`~/.claude/projects/<encoded cwd>/<session id>.jsonl`), and the repair of a tail a kill
//! left incomplete (`repair_transcript`), before a `--resume`.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

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
    use super::*;

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
