//! The live event stream (`GET /api/v1/events`, Server-Sent Events) against the real agent,
//! read by a raw HTTP client: 401 without a token; a run's transitions and its step's start
//! and end in order with strictly increasing ids, its log lines when asked for, and metric
//! samples while it runs; a reconnect with `Last-Event-ID` gets exactly the events after it;
//! a stale, foreign or unknown id gets a `reset`; bad `logs` are problems.

use std::time::Duration;

use crate::support::{SseClient, SseEvent, TEST_CONFIG, TestAgent};

const EVENTS: &str = "/api/v1/events";
const LONG: Duration = Duration::from_secs(60);

/// A viewer token of root's.
fn viewer(agent: &TestAgent) -> String {
    let out = agent.drover(&["token", "create", "watcher", "--role", "viewer"]);
    assert!(
        out.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn connect(agent: &TestAgent, token: &str, path: &str, last_id: Option<&str>) -> SseClient {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("Authorization", auth.as_str())];
    if let Some(id) = last_id {
        headers.push(("Last-Event-ID", id));
    }
    let client = SseClient::connect(agent.http_addr(), path, &headers);
    assert_eq!(client.status, 200, "{}", client.head);
    assert!(
        client
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{}",
        client.head
    );
    client
}

fn is_end_of(run: &str) -> impl FnMut(&SseEvent) -> bool + '_ {
    move |e| e.event == "run" && e.json()["run"] == run && e.json()["state"] == "succeeded"
}

/// The run's and its steps' events, as (type, state, step).
fn transitions(events: &[SseEvent], run: &str) -> Vec<(String, String, String)> {
    events
        .iter()
        .filter(|e| (e.event == "run" || e.event == "step") && e.json()["run"] == run)
        .map(|e| {
            let json = e.json();
            (
                e.event.clone(),
                json["state"].as_str().unwrap_or_default().to_owned(),
                json["step"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn assert_increasing(events: &[SseEvent]) {
    let ids: Vec<u64> = events.iter().map(SseEvent::num).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids not increasing: {ids:?}"
    );
}

#[test]
fn the_stream_carries_a_run_its_step_its_log_lines_and_its_metrics() {
    let agent =
        TestAgent::start_with_config(&format!("{TEST_CONFIG}[monitor]\ninterval = \"200ms\"\n"));
    let refused = SseClient::connect(agent.http_addr(), EVENTS, &[]);
    assert_eq!(refused.status, 401, "{}", refused.head);

    let token = viewer(&agent);
    let mut all = connect(&agent, &token, EVENTS, None);
    let marker = tempfile::tempdir_in("/tmp").expect("temp dir");
    let done = marker.path().join("done");
    let workflow = agent.workflow(
        "talk.toml",
        &format!(
            "name = \"talk\"\n[[step]]\nname = \"talk\"\nrun = [\"sh\", \"-c\", \"echo line1; echo line2; echo line3; while [ ! -e {} ]; do sleep 0.1; done\"]\n",
            done.display()
        ),
    );
    let run = agent.run(&workflow);
    let mut logs = connect(&agent, &token, &format!("{EVENTS}?logs={run}"), None);

    // Its log lines, to the client that asked for them.
    let seen = logs.until(LONG, |e| e.event == "log" && e.data.contains("line3"));
    let lines: Vec<String> = seen
        .iter()
        .filter(|e| e.event == "log" && e.json()["run"] == run.as_str())
        .flat_map(|e| {
            let json = e.json();
            assert_eq!(json["step"], "talk", "{e:#?}");
            json["lines"]
                .as_array()
                .expect("lines")
                .iter()
                .map(|l| l.as_str().expect("a line").to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(lines, ["line1", "line2", "line3"]);

    // Metric samples while it runs.
    let seen_all = all.until(LONG, |e| {
        e.event == "metrics"
            && e.json()["runs"]
                .as_array()
                .is_some_and(|runs| runs.iter().any(|r| r["run"] == run.as_str()))
    });
    std::fs::write(&done, "").expect("write the marker");
    let mut events = seen_all;
    events.extend(all.until(LONG, is_end_of(&run)));
    assert_increasing(&events);
    let expected = [
        ("run", "pending", ""),
        ("run", "running", ""),
        ("step", "running", "talk"),
        ("step", "succeeded", "talk"),
        ("run", "succeeded", ""),
    ]
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
    assert_eq!(transitions(&events, &run), expected, "{events:#?}");
    let first = events
        .iter()
        .find(|e| e.event == "run")
        .expect("a run event")
        .json();
    assert_eq!(first["workflow"], "talk");
    assert!(
        first["by"].as_str().is_some_and(|by| by.contains("uid 0")),
        "{first}"
    );
    let ended = events
        .iter()
        .find(|e| e.event == "step" && e.json()["state"] == "succeeded")
        .expect("the step's end")
        .json();
    assert_eq!(ended["attempt"], 1);
    assert!(ended["result"].is_string(), "{ended}");
    // Log lines go only to the clients that asked for them.
    assert!(events.iter().all(|e| e.event != "log"), "{events:#?}");
}

#[test]
fn a_reconnect_resumes_after_its_last_id_and_a_stale_id_resets() {
    let agent = TestAgent::start();
    let token = viewer(&agent);
    let mut whole = connect(&agent, &token, EVENTS, None);
    let mut early = connect(&agent, &token, EVENTS, None);
    let workflow = agent.workflow(
        "two.toml",
        "name = \"two\"\n[[step]]\nname = \"a\"\nrun = \"true\"\n[[step]]\nname = \"b\"\nrun = \"true\"\n",
    );
    let run = agent.run(&workflow);
    let everything = whole.until(LONG, is_end_of(&run));
    assert_increasing(&everything);
    assert_eq!(transitions(&everything, &run).len(), 7, "{everything:#?}");

    // A client that leaves after three events and comes back with the third's id.
    let mut first = Vec::new();
    while first.len() < 3 {
        first.push(early.next(LONG).expect("an event"));
    }
    drop(early);
    assert_eq!(first, everything[..3]);
    let last_seen = first[2].id.clone().expect("an id");
    let mut again = connect(&agent, &token, EVENTS, Some(&last_seen));
    let rest = again.until(LONG, is_end_of(&run));
    assert_eq!(rest, everything[3..], "no loss, no duplicates");

    // Nothing after the newest id: nothing comes (and no reset).
    let newest = everything.last().and_then(|e| e.id.clone()).expect("an id");
    let mut current = connect(&agent, &token, EVENTS, Some(&newest));
    assert_eq!(current.next(Duration::from_millis(500)), None);

    // An id from before this agent, one it never gave, and no number at all: reset.
    let beyond = (everything.last().expect("events").num() + 1_000).to_string();
    for stale in ["1", beyond.as_str(), "not-an-id"] {
        let mut client = connect(&agent, &token, EVENTS, Some(stale));
        let reset = client.next(LONG).expect("a reset");
        assert_eq!(reset.event, "reset", "after {stale}: {reset:#?}");
        assert!(reset.json()["reason"].is_string(), "{reset:#?}");
        assert!(
            reset.num() >= everything.last().expect("events").num(),
            "{reset:#?}"
        );
    }

    // `logs` names at most 16 runs, each one that exists.
    let many = vec![run.as_str(); 17].join(",");
    let auth = format!("Bearer {token}");
    let headers = [("Authorization", auth.as_str())];
    let too_many = SseClient::connect(
        agent.http_addr(),
        &format!("{EVENTS}?logs={many}"),
        &headers,
    );
    assert_eq!(too_many.status, 400, "{}", too_many.head);
    let unknown = SseClient::connect(
        agent.http_addr(),
        &format!("{EVENTS}?logs=nosuchrun"),
        &headers,
    );
    assert_eq!(unknown.status, 404, "{}", unknown.head);
}
