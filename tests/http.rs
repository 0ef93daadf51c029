//! The agent's HTTP listener: `/metrics` of a real running run, checked by `promtool
//! check metrics` (Debian's `prometheus` package), label escaping, `/healthz`, read-only
//! routes, and the loopback default.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use drover::api::prometheus::{Snapshot, render};
use drover::model::{AgentLive, RunMetrics, RunState, Sample};
use drover::selfmetrics::SelfMetrics;

use crate::support::{TestAgent, http, wait_until};

/// `promtool check metrics` on `text`; panics with its report unless it passes.
fn promtool(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`; .ci/run installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\non:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_of_a_running_run_pass_promtool_and_escape_labels() {
    let agent = TestAgent::start();
    // The workflow file's path reaches a label (`drover_run_info{file=…}`): give it every
    // character the text format escapes.
    let dir = agent.sandbox.dir.path().join("we\"ird\\dir\nx");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("sleeper.toml");
    std::fs::write(
        &file,
        "name = \"sleeper\"\n[[step]]\nname = \"work\"\nrun = \"echo started; sleep 300\"\n",
    )
    .expect("write workflow");
    let id = agent.run(&file);
    wait_until(Duration::from_secs(20), "the step to run", || {
        let run = agent.show(&id);
        run.state == RunState::Running && run.steps[0].state == drover::model::StepState::Running
    });

    let addr = agent.http_addr();
    assert!(addr.ip().is_loopback(), "{addr}");
    let labels = format!("{{run=\"{id}\",workflow=\"sleeper\",step=\"work\"}}");
    // The run's series appear with the monitor's first sample of it.
    let mut text = String::new();
    wait_until(
        Duration::from_secs(20),
        "the run's series in /metrics",
        || {
            let (status, body) = http(addr, "GET", "/metrics");
            assert_eq!(status, 200, "{body}");
            text = body;
            text.contains(&format!("drover_run_step_elapsed_seconds{labels} "))
        },
    );
    promtool(&text);
    for family in [
        "drover_run_step_elapsed_seconds",
        "drover_run_elapsed_seconds",
        "drover_run_idle_seconds",
    ] {
        assert!(
            text.contains(&format!("{family}{labels} ")),
            "no {family}{labels} in:\n{text}"
        );
    }
    let escaped = file
        .to_string_lossy()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    assert!(
        text.contains(&format!(
            "drover_run_info{{run=\"{id}\",workflow=\"sleeper\",step=\"work\",state=\"running\",file=\"{escaped}\"}} 1\n"
        )),
        "the file label is not escaped as expected ({escaped}):\n{text}"
    );
    assert!(
        text.contains("drover_runs{state=\"running\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("drover_workflow_runs{workflow=\"sleeper\",state=\"running\"} 1\n"),
        "{text}"
    );
    // The run's creation and start were DB writes, timed.
    let writes = text
        .lines()
        .find_map(|l| l.strip_prefix("drover_db_write_duration_seconds_count "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(writes >= 2, "DB writes not counted:\n{text}");

    // A kill shows in the kill counter and the latency histogram.
    let out = agent.drover(&["kill", &id, "--reason", "test"]);
    assert!(
        out.status.success(),
        "drover kill: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.wait_for_end(&id, Duration::from_secs(30));
    let (_, text) = http(addr, "GET", "/metrics");
    promtool(&text);
    assert!(
        text.contains("drover_kills_total{result=\"killed\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("drover_kill_duration_seconds_count 1\n"),
        "{text}"
    );
    assert!(text.contains("drover_runs{state=\"killed\"} 1\n"), "{text}");
    assert!(
        !text.contains("drover_run_info{"),
        "an ended run has no info: {text}"
    );
}

#[test]
fn healthz_answers_and_metrics_and_healthz_are_read_only() {
    let agent = TestAgent::start();
    let addr = agent.http_addr();
    let (status, body) = http(addr, "GET", "/healthz");
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("healthz is JSON");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(health["runs"]["total"], 0);
    for (method, path) in [
        ("POST", "/metrics"),
        ("DELETE", "/healthz"),
        ("PUT", "/metrics"),
    ] {
        let (status, _) = http(addr, method, path);
        assert_eq!(status, 405, "{method} {path}");
    }
    assert_eq!(http(addr, "GET", "/nothing").0, 404);
    assert!(
        agent.agent_log().contains(&format!(
            "serving /metrics, /healthz, /api/v1 and the dashboard on http://{addr}"
        )),
        "the address is not logged:\n{}",
        agent.agent_log()
    );
}

#[test]
fn the_default_listener_is_loopback_7878() {
    // No `[http]`: the default. Another agent (a test beside this one) may hold 7878; then
    // this one says so naming the address, and runs on without the listener.
    let agent = TestAgent::start_with_config("");
    let addr_file = agent.state_dir.join("http.addr");
    if addr_file.exists() {
        assert_eq!(agent.http_addr(), "127.0.0.1:7878".parse().unwrap());
        let (status, _) = http(agent.http_addr(), "GET", "/healthz");
        assert_eq!(status, 200);
    } else {
        let log = agent.agent_log();
        assert!(
            log.contains("cannot listen on 127.0.0.1:7878"),
            "neither bound nor refused:\n{log}"
        );
        assert!(
            agent.drover(&["ps"]).status.success(),
            "the agent must keep running without its listener"
        );
    }
}

#[test]
fn a_listener_that_cannot_bind_is_reported_and_the_agent_runs_on() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let agent = TestAgent::start_with_config(&format!("[http]\nlisten = \"{addr}\"\n"));
    let log = agent.agent_log();
    assert!(
        log.contains(&format!("cannot listen on {addr}")),
        "no error naming {addr}:\n{log}"
    );
    assert!(!agent.state_dir.join("http.addr").exists());
    assert!(agent.drover(&["ps"]).status.success());
}

#[test]
fn a_synthetic_snapshot_with_every_family_passes_promtool() {
    let metrics = SelfMetrics::new();
    metrics.set_sampling_duration(Duration::from_millis(3));
    metrics.set_rule_evaluation_duration(Duration::from_micros(40));
    metrics.observe_db_write(Duration::from_micros(250));
    metrics.kill_ended(drover::model::KillResult::Killed, Some(1200));
    metrics.restarted(Some(drover::model::FailureClass::Oom));
    let live = [RunMetrics {
        run: "r1".into(),
        workflow: "wf".into(),
        state: RunState::Running,
        step: Some("we\"ird\\step\nname".into()),
        attempt: 1,
        unit: Some("drover-r1-x-1.scope".into()),
        latest: Sample {
            cpu_percent: Some(150.0),
            memory_bytes: Some(1 << 30),
            memory_peak_bytes: Some(2 << 30),
            tasks: Some(7),
            io_read_bytes: Some(4096),
            io_write_bytes: Some(8192),
            output_bytes_per_sec: 12.5,
            output_lines_per_sec: 0.5,
            idle_secs: 3.0,
            step_elapsed_secs: 60.0,
            run_elapsed_secs: 90.0,
            agent: Some(AgentLive {
                turns: 4,
                tokens_in: 1000,
                tokens_out: 200,
                cost_usd: 0.125,
                tool: Some("Bash".into()),
                same_tool_calls: 1,
            }),
            ..Default::default()
        },
    }];
    let text = render(&Snapshot {
        version: "0.1.0",
        live: &live,
        runs: &[],
        agent: &metrics.snapshot(),
    });
    promtool(&text);
    assert!(text.contains(r#"step="we\"ird\\step\nname""#), "{text}");
}
