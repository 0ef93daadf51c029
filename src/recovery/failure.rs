//! Why a step attempt failed: exactly one [`FailureClass`] per failed attempt, chosen from
//! the evidence, with that evidence kept as text so an operator (and a retry policy) can
//! see what it was based on. Pure: the engine gathers the evidence.

use crate::model::{Failure, FailureClass, StreamReport};

/// Everything known about how an attempt ended.
#[derive(Clone, Copy, Debug, Default)]
pub struct Evidence<'a> {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// OOM kills counted in the step's memory cgroup.
    pub oom_kills: u64,
    /// systemd's `Result` of the scope (`oom-kill`, `timeout`, `signal`, …).
    pub systemd_result: Option<&'a str>,
    /// The step's supervisor vanished without an exit record.
    pub lost: bool,
    /// A drover kill: who and why, e.g. `uid 0 (root) via dbus: reason`.
    pub killed_by: Option<&'a str>,
    /// drover stopped it for silence, e.g. `no output for 12s (stall_after 10s)`.
    pub stalled: Option<&'a str>,
    /// The agent's stream-json output, for agent steps.
    pub agent: Option<&'a StreamReport>,
    /// The last ~64 KiB of the step's combined stdout+stderr log.
    pub output_tail: &'a str,
}

/// The one class of a failed attempt, strongest evidence first: killed by drover >
/// stalled > killed from outside (its supervisor lost) > oom > timeout > transient >
/// agent-error > signal > exit.
/// A failure is assumed: an attempt with no evidence at all is `exit` ("no exit status").
pub fn classify(e: &Evidence<'_>) -> Failure {
    let failure = |class, evidence: String| Failure { class, evidence };
    if let Some(by) = e.killed_by {
        return failure(FailureClass::Killed, format!("killed by {by}"));
    }
    // drover's own stop of a stalled step may take the supervisor too (SIGKILL to the
    // scope): that is the stall, not a kill from outside.
    if let Some(why) = e.stalled {
        return failure(FailureClass::Stalled, format!("stalled: {why}"));
    }
    if e.lost {
        return failure(
            FailureClass::Killed,
            "its supervisor vanished without reporting (killed from outside)".to_owned(),
        );
    }
    if e.oom_kills > 0 {
        return failure(
            FailureClass::Oom,
            format!("{} OOM kill(s) in its memory cgroup", e.oom_kills),
        );
    }
    if e.systemd_result == Some("oom-kill") {
        return failure(FailureClass::Oom, "systemd result oom-kill".to_owned());
    }
    if e.systemd_result == Some("timeout") {
        return failure(
            FailureClass::Timeout,
            "systemd result timeout: stopped at its time limit".to_owned(),
        );
    }
    let result = e.agent.and_then(|a| a.result.as_ref());
    if let Some(status) = result
        .filter(|r| r.is_error)
        .and_then(|r| r.api_error_status)
        .filter(|s| transient_status(*s))
    {
        return failure(
            FailureClass::Transient,
            format!("agent result: API error status {status}"),
        );
    }
    // An agent's stream-json events carry the model's and its tools' text, which may well
    // mention "429" or "rate limit"; its API trouble shows in `api_error_status` instead.
    let tail_line = if e.agent.is_some() {
        last_matching_line(e.output_tail, |line| !is_event(line))
    } else {
        transient_line(e.output_tail)
    };
    if let Some(line) = tail_line {
        return failure(
            FailureClass::Transient,
            format!("output: {:?}", shorten(line, 200)),
        );
    }
    if let Some(result) = result.filter(|r| r.is_error) {
        let mut evidence = format!("agent result {} is_error", result.subtype);
        if let Some(turns) = result.num_turns {
            evidence.push_str(&format!(", {turns} turns"));
        }
        if let Some(status) = result.api_error_status {
            evidence.push_str(&format!(", API error status {status}"));
        }
        if let Some(text) = result.text.as_deref().filter(|t| !t.is_empty()) {
            evidence.push_str(&format!(": {:?}", shorten(text, 200)));
        }
        return failure(FailureClass::AgentError, evidence);
    }
    let failed_exit = e.exit_code.filter(|c| *c != 0);
    if let (Some(agent), Some(code), None) = (e.agent, failed_exit, result) {
        return failure(
            FailureClass::AgentError,
            format!(
                "no result event ({} events, {} tool uses) and exit code {code}",
                agent.events, agent.tool_uses
            ),
        );
    }
    if let Some(signal) = e.signal {
        return failure(FailureClass::Signal, signal_name(signal));
    }
    match e.exit_code {
        Some(code) => failure(FailureClass::Exit, format!("exit code {code}")),
        None => failure(FailureClass::Exit, "no exit status".to_owned()),
    }
}

/// 408, 429, 529 and other 5xx: the API's "try again later".
fn transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 529) || (500..600).contains(&status)
}

/// Phrases of rate limits, overloads and network resets, lower case.
const TRANSIENT_PHRASES: [&str; 9] = [
    "overloaded",
    "rate limit",
    "rate_limit",
    "too many requests",
    "econnreset",
    "connection reset",
    "etimedout",
    "socket hang up",
    "service unavailable",
];

/// Words that, right before a 429 or 529, make it an HTTP status.
const STATUS_WORDS: [&str; 6] = ["http", "http/1.1", "http/2", "status", "error", "code"];

/// The last line of `text` that reads like a transient API or network failure: a phrase
/// of [`TRANSIENT_PHRASES`], or 429/529 as an HTTP status (`HTTP 429`, `status: 529`,
/// `429 Too Many Requests`; not a bare number such as `14290` or a line count).
pub fn transient_line(text: &str) -> Option<&str> {
    last_matching_line(text, |_| true)
}

fn last_matching_line(text: &str, eligible: impl Fn(&str) -> bool) -> Option<&str> {
    text.lines()
        .rev()
        .filter(|line| eligible(line))
        .find(|line| {
            let lower = line.to_ascii_lowercase();
            TRANSIENT_PHRASES.iter().any(|p| lower.contains(p)) || has_transient_status(&lower)
        })
}

/// A stream-json event line (a JSON object with a `type`).
fn is_event(line: &str) -> bool {
    line.trim_start().starts_with('{')
        && serde_json::from_str::<serde_json::Value>(line)
            .is_ok_and(|v| v.get("type").is_some_and(serde_json::Value::is_string))
}

fn has_transient_status(lower: &str) -> bool {
    ["429", "529"].iter().any(|code| {
        lower.match_indices(code).any(|(at, _)| {
            let before = &lower[..at];
            let after = &lower[at + code.len()..];
            // Part of a longer number or word (`14290`, `a429b`) is not a status.
            let word_char = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
            if word_char(before.chars().next_back()) || word_char(after.chars().next()) {
                return false;
            }
            let before = before.trim_end_matches([' ', ':', '=', '(', '"', '\'']);
            STATUS_WORDS.iter().any(|w| before.ends_with(w))
                || after.starts_with(" too many requests")
                || after.starts_with(" overloaded")
        })
    })
}

fn shorten(text: &str, max_chars: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

fn signal_name(signal: i32) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(s) => format!("killed by signal {signal} ({})", s.as_str()),
        Err(_) => format!("killed by signal {signal}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ResultEvent;

    fn agent(result: Option<ResultEvent>) -> StreamReport {
        StreamReport {
            session_id: Some("s".into()),
            events: 7,
            tool_uses: 2,
            result,
            ..StreamReport::default()
        }
    }

    fn error_result(status: Option<u16>) -> Option<ResultEvent> {
        Some(ResultEvent {
            subtype: "success".into(),
            is_error: true,
            api_error_status: status,
            num_turns: Some(3),
            text: Some("API Error: 400 Invalid request".into()),
            ..ResultEvent::default()
        })
    }

    use FailureClass::*;

    fn class(e: &Evidence<'_>) -> FailureClass {
        classify(e).class
    }

    #[test]
    fn each_class_from_its_evidence() {
        let exit = Evidence {
            exit_code: Some(2),
            ..Evidence::default()
        };
        assert_eq!(
            classify(&exit),
            Failure {
                class: FailureClass::Exit,
                evidence: "exit code 2".into()
            }
        );
        let signal = Evidence {
            signal: Some(11),
            ..Evidence::default()
        };
        assert_eq!(classify(&signal).evidence, "killed by signal 11 (SIGSEGV)");
        assert_eq!(class(&signal), FailureClass::Signal);
        let oom = Evidence {
            signal: Some(9),
            oom_kills: 1,
            ..Evidence::default()
        };
        assert_eq!(class(&oom), FailureClass::Oom);
        let oom_systemd = Evidence {
            signal: Some(9),
            systemd_result: Some("oom-kill"),
            ..Evidence::default()
        };
        assert_eq!(classify(&oom_systemd).evidence, "systemd result oom-kill");
        let timeout = Evidence {
            signal: Some(15),
            systemd_result: Some("timeout"),
            ..Evidence::default()
        };
        assert_eq!(class(&timeout), FailureClass::Timeout);
        let killed = Evidence {
            signal: Some(15),
            killed_by: Some("uid 0 (root) via dbus: stuck"),
            ..Evidence::default()
        };
        assert_eq!(
            classify(&killed).evidence,
            "killed by uid 0 (root) via dbus: stuck"
        );
        let lost = Evidence {
            lost: true,
            ..Evidence::default()
        };
        assert_eq!(
            classify(&lost),
            Failure {
                class: FailureClass::Killed,
                evidence: "its supervisor vanished without reporting (killed from outside)".into()
            }
        );
        let stalled = Evidence {
            signal: Some(15),
            stalled: Some("no output for 12s (stall_after 10s)"),
            ..Evidence::default()
        };
        assert_eq!(
            classify(&stalled).evidence,
            "stalled: no output for 12s (stall_after 10s)"
        );
        let report = agent(error_result(Some(400)));
        let agent_error = Evidence {
            exit_code: Some(1),
            agent: Some(&report),
            ..Evidence::default()
        };
        assert_eq!(
            classify(&agent_error),
            Failure {
                class: FailureClass::AgentError,
                evidence: "agent result success is_error, 3 turns, API error status 400: \
                           \"API Error: 400 Invalid request\""
                    .into()
            }
        );
        let report = agent(error_result(Some(529)));
        let transient = Evidence {
            exit_code: Some(1),
            agent: Some(&report),
            ..Evidence::default()
        };
        assert_eq!(
            classify(&transient).evidence,
            "agent result: API error status 529"
        );
    }

    #[test]
    fn an_agent_without_a_result_is_an_agent_error() {
        let report = agent(None);
        let e = Evidence {
            exit_code: Some(1),
            agent: Some(&report),
            ..Evidence::default()
        };
        assert_eq!(
            classify(&e).evidence,
            "no result event (7 events, 2 tool uses) and exit code 1"
        );
        // Killed by a signal without a result: the signal is the evidence.
        let e = Evidence {
            signal: Some(9),
            agent: Some(&report),
            ..Evidence::default()
        };
        assert_eq!(class(&e), FailureClass::Signal);
        // A successful result but a failing exit code (e.g. a wrapper script): exit.
        let report = agent(Some(ResultEvent {
            subtype: "success".into(),
            ..ResultEvent::default()
        }));
        let e = Evidence {
            exit_code: Some(3),
            agent: Some(&report),
            ..Evidence::default()
        };
        assert_eq!(class(&e), FailureClass::Exit);
    }

    #[test]
    fn transient_statuses() {
        for status in [408, 429, 500, 502, 503, 529] {
            let report = agent(error_result(Some(status)));
            let e = Evidence {
                exit_code: Some(1),
                agent: Some(&report),
                ..Evidence::default()
            };
            assert_eq!(class(&e), FailureClass::Transient, "{status}");
        }
        for status in [400, 401, 403, 404, 413] {
            let report = agent(error_result(Some(status)));
            let e = Evidence {
                exit_code: Some(1),
                agent: Some(&report),
                ..Evidence::default()
            };
            assert_eq!(class(&e), FailureClass::AgentError, "{status}");
        }
    }

    #[test]
    fn transient_output_lines() {
        let hits = [
            "Error: HTTP 429",
            "request failed with status 529",
            "status: 429",
            "HTTP/1.1 429 Too Many Requests",
            "< HTTP/2 529",
            "got 429 Too Many Requests from upstream",
            "API Error: 529 Overloaded",
            "anthropic: overloaded_error",
            "Rate limit exceeded, retry later",
            "error type rate_limit_error",
            "read ECONNRESET",
            "curl: (56) Recv failure: Connection reset by peer",
            "connect ETIMEDOUT 1.2.3.4:443",
            "Error: socket hang up",
            "error code=429",
        ];
        for line in hits {
            let tail = format!("first line\n{line}\nlast line\n");
            assert_eq!(transient_line(&tail), Some(line), "{line}");
        }
        let misses = [
            "processed 14290 records",
            "wrote 529 files",
            "line 429: syntax error near unexpected token",
            "port 5291 in use",
            "id=a429b",
            "error: tests failed",
        ];
        for line in misses {
            assert_eq!(transient_line(line), None, "{line}");
        }
    }

    #[test]
    fn transient_output_is_quoted_and_trimmed() {
        let long = format!("  upstream said HTTP 429 {}  ", "x".repeat(300));
        let e = Evidence {
            exit_code: Some(1),
            output_tail: &long,
            ..Evidence::default()
        };
        let failure = classify(&e);
        assert_eq!(failure.class, FailureClass::Transient);
        assert!(
            failure
                .evidence
                .starts_with("output: \"upstream said HTTP 429 xxx"),
            "{}",
            failure.evidence
        );
        assert!(failure.evidence.ends_with("x…\""), "{}", failure.evidence);
        assert!(failure.evidence.chars().count() < 220);
    }

    #[test]
    fn precedence_strongest_first() {
        let overloaded = agent(error_result(Some(529)));
        let invalid = agent(error_result(Some(400)));
        let mut e = Evidence {
            exit_code: Some(1),
            signal: Some(9),
            oom_kills: 1,
            systemd_result: Some("timeout"),
            lost: true,
            killed_by: Some("uid 0 (root) via dbus: stop"),
            stalled: Some("no output for 12s (stall_after 10s)"),
            agent: Some(&overloaded),
            output_tail: "curl: (56) Recv failure: Connection reset by peer\n",
        };
        assert_eq!(
            classify(&e).evidence,
            "killed by uid 0 (root) via dbus: stop"
        );
        e.killed_by = None;
        assert_eq!(
            class(&e),
            Stalled,
            "drover's stop of a stall can take the shim too"
        );
        e.stalled = None;
        assert_eq!(
            classify(&e).evidence,
            "its supervisor vanished without reporting (killed from outside)"
        );
        e.lost = false;
        assert_eq!(class(&e), Oom);
        e.oom_kills = 0;
        assert_eq!(class(&e), Timeout);
        e.systemd_result = Some("signal");
        assert_eq!(classify(&e).evidence, "agent result: API error status 529");
        e.agent = Some(&invalid);
        assert_eq!(
            classify(&e).evidence,
            "output: \"curl: (56) Recv failure: Connection reset by peer\""
        );
        e.output_tail = "";
        assert_eq!(class(&e), AgentError);
        e.agent = None;
        assert_eq!(class(&e), Signal);
        e.signal = None;
        assert_eq!(class(&e), Exit);
    }

    #[test]
    fn an_agents_own_events_are_not_scanned_for_transient_words() {
        // The model reading code about rate limits is not a rate limit; its stderr is.
        let report = agent(error_result(None));
        let event = r#"{"type":"user","message":{"content":[{"type":"tool_result","content":"retry on HTTP 429"}]}}"#;
        let mut e = Evidence {
            exit_code: Some(1),
            agent: Some(&report),
            output_tail: event,
            ..Evidence::default()
        };
        assert_eq!(class(&e), AgentError);
        let with_stderr = format!("{event}\nError: read ECONNRESET\n");
        e.output_tail = &with_stderr;
        assert_eq!(class(&e), Transient);
        // Without an agent, every line counts.
        e.agent = None;
        e.output_tail = event;
        assert_eq!(class(&e), Transient);
    }
}
