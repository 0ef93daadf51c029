//! Alerts end to end: raised through a real agent's D-Bus API, stored, logged to the
//! journal, and POSTed to a webhook receiver in this test that fails on purpose; retried
//! with backoff, carried across an agent restart, held back by a silence.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover::model::{ActionRecord, Alert, AlertState};

use crate::support::{TestAgent, wait_until};

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
struct Received {
    status: u16,
    body: serde_json::Value,
    delivery: Option<String>,
}

#[derive(Default)]
struct ReceiverState {
    /// Statuses to answer first, in order; then `default`.
    script: VecDeque<u16>,
    default: u16,
    requests: Vec<Received>,
}

/// A webhook receiver on a loopback port (the sandbox shares the host's network).
struct Receiver {
    url: String,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    fn start(script: &[u16], default: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let url = format!(
            "http://{}/hook?from=drover",
            listener.local_addr().expect("receiver address")
        );
        let state = Arc::new(Mutex::new(ReceiverState {
            script: script.iter().copied().collect(),
            default,
            requests: Vec::new(),
        }));
        let shared = state.clone();
        // Ends with the test process; one request per connection, as drover sends them.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve_one(stream, &shared);
            }
        });
        Receiver { url, state }
    }

    fn set_default(&self, status: u16) {
        self.state.lock().unwrap().default = status;
    }

    fn requests(&self) -> Vec<Received> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The bodies it answered 2xx to, in order.
    fn accepted(&self) -> Vec<serde_json::Value> {
        self.requests()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .map(|r| r.body)
            .collect()
    }
}

fn serve_one(stream: TcpStream, state: &Mutex<ReceiverState>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0usize;
    let mut delivery = None;
    let mut line = String::new();
    reader.read_line(&mut line)?; // request line
    assert!(line.starts_with("POST /hook?from=drover "), "{line:?}");
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "x-drover-delivery" => delivery = Some(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let status = {
        let mut s = state.lock().unwrap();
        let status = s.script.pop_front().unwrap_or(s.default);
        s.requests.push(Received {
            status,
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
            delivery,
        });
        status
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    )?;
    stream.flush()
}

fn config(receiver: &Receiver) -> String {
    format!(
        "[alerts]\nwebhook = \"{}\"\n[http]\nenabled = false\n",
        receiver.url
    )
}

fn reply<T: serde::de::DeserializeOwned>(agent: &TestAgent, out: &std::process::Output) -> T {
    assert!(
        out.status.success(),
        "busctl failed: {}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.agent_log()
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("busctl --json");
    serde_json::from_str(reply["data"][0].as_str().expect("a string reply")).expect("JSON reply")
}

fn raise(agent: &TestAgent, rule: &str, run: &str, severity: &str, summary: &str) -> Alert {
    let out = agent.busctl(false, "RaiseAlert", &["ssss", rule, run, severity, summary]);
    reply(agent, &out)
}

fn alerts(agent: &TestAgent, all: bool) -> Vec<Alert> {
    let mut args = vec!["alerts", "--json"];
    if all {
        args.push("--all");
    }
    let out = agent.drover(&args);
    assert!(
        out.status.success(),
        "drover alerts: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("alerts --json")
}

#[test]
fn the_webhook_gets_firing_then_resolved_once_each_after_retries() {
    let receiver = Receiver::start(&[500, 500], 200);
    let agent = TestAgent::start_with_config(&config(&receiver));

    let alert = raise(&agent, "stalled", "run-1", "warning", "no output for 10m");
    assert_eq!(alert.key, "stalled/run-1");
    assert_eq!(alert.state, AlertState::Firing);
    // A repeat is deduplicated: counted, not sent again.
    let again = raise(&agent, "stalled", "run-1", "warning", "no output for 11m");
    assert_eq!(again.count, 2);

    // 500, then 500 after 1 s, then 200 after 2 s more.
    wait_until(Duration::from_secs(20), "the firing to be accepted", || {
        !receiver.accepted().is_empty()
    });
    let requests = receiver.requests();
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![500, 500, 200],
        "{requests:#?}"
    );
    let firing = &requests[2].body;
    assert_eq!(firing["change"], "firing");
    assert_eq!(firing["key"], "stalled/run-1");
    assert_eq!(firing["severity"], "warning");
    assert_eq!(firing["summary"], "no output for 10m");
    // Every retry of one change carries the same delivery id.
    assert!(requests[0].delivery.is_some());
    assert!(requests.iter().all(|r| r.delivery == requests[0].delivery));

    let out = agent.busctl(false, "ResolveAlert", &["s", "stalled/run-1"]);
    let resolved: Alert = reply(&agent, &out);
    assert_eq!(resolved.state, AlertState::Resolved);
    wait_until(
        Duration::from_secs(10),
        "the resolve to be accepted",
        || receiver.accepted().len() == 2,
    );
    let accepted = receiver.accepted();
    assert_eq!(accepted[1]["change"], "resolved");
    assert_eq!(accepted[1]["key"], "stalled/run-1");
    assert_eq!(receiver.requests().len(), 4, "nothing sent twice");

    // Stored: no longer firing, kept in the full list.
    assert!(alerts(&agent, false).is_empty());
    let all = alerts(&agent, true);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].state, AlertState::Resolved);
    assert_eq!(all[0].count, 2);

    // And in the journal, with drover's fields.
    wait_until(
        Duration::from_secs(10),
        "both changes in the journal",
        || {
            let states: Vec<String> = agent
                .sandbox
                .journal("run-1")
                .iter()
                .filter(|e| e["DROVER_EVENT"] == "alert")
                .filter_map(|e| e["DROVER_ALERT_STATE"].as_str().map(str::to_owned))
                .collect();
            states == ["firing", "resolved"]
        },
    );
}

#[test]
fn a_change_still_in_the_outbox_is_delivered_by_the_next_agent() {
    let receiver = Receiver::start(&[], 503);
    let mut agent = TestAgent::start_with_config(&config(&receiver));
    raise(&agent, "memory", "run-2", "critical", "95% of memory_max");
    wait_until(Duration::from_secs(10), "a failed delivery", || {
        !receiver.requests().is_empty()
    });
    agent.kill_agent();
    receiver.set_default(200);
    agent.restart_agent();
    wait_until(
        Duration::from_secs(20),
        "the next agent to deliver it",
        || !receiver.accepted().is_empty(),
    );
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0]["change"], "firing");
    assert_eq!(accepted[0]["key"], "memory/run-2");
    assert_eq!(accepted[0]["severity"], "critical");
}

#[test]
fn a_silence_holds_the_webhook_back_but_the_alert_is_stored() {
    let receiver = Receiver::start(&[], 200);
    let agent = TestAgent::start_with_config(&config(&receiver));

    // A viewer may neither silence (refused, audited) nor raise.
    let out = agent.busctl(true, "Silence", &["sss", "noisy", "1h", "x"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("operator"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = agent.busctl(true, "RaiseAlert", &["ssss", "r", "", "info", "x"]);
    assert!(!out.status.success());

    let out = agent.drover(&["silence", "noisy", "--for", "1h", "--reason", "known issue"]);
    assert!(
        out.status.success(),
        "drover silence: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let silenced = raise(&agent, "noisy", "run-3", "warning", "again");
    assert!(silenced.silenced_until.is_some());
    // An alert of another rule goes through: once it has arrived, the silenced one, raised
    // before it, would have too.
    raise(&agent, "other", "run-3", "info", "fine");
    wait_until(Duration::from_secs(10), "the unsilenced alert", || {
        !receiver.accepted().is_empty()
    });
    let keys: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.body["key"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(keys, vec!["other/run-3".to_owned()]);

    let firing = alerts(&agent, false);
    let noisy = firing
        .iter()
        .find(|a| a.key == "noisy/run-3")
        .expect("the silenced alert is stored");
    assert!(noisy.silenced_until.is_some());

    let out = agent.drover(&["silences", "--json"]);
    assert!(out.status.success());
    let silences: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(silences.len(), 1);
    assert_eq!(silences[0]["target"], "noisy");

    // The silence and the refused one are in the audit trail.
    let out = agent.drover(&["audit", "--json"]);
    assert!(out.status.success());
    let trail: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let actions: Vec<ActionRecord> =
        serde_json::from_value(trail["actions"].clone()).expect("actions");
    let results: Vec<(&str, &str)> = actions
        .iter()
        .filter(|a| a.action == "silence")
        .map(|a| (a.run.as_str(), a.result.as_str()))
        .collect();
    assert_eq!(results, vec![("noisy", "refused"), ("noisy", "done")]);
}
