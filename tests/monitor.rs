//! The monitor against a real scope: its figures match the scope's cgroup files and what
//! systemd reports where it reports (`systemctl --user show`), idle time follows the
//! step's output, history rows reach the state DB, and `drover top` lists the run.

use std::path::Path;
use std::time::Duration;

use drover::model::{RunMetrics, RunState};

use crate::support::{TestAgent, wait_until};

/// The step's `drover metrics --json`, or `None` before the first sample.
fn metrics(agent: &TestAgent, run: &str) -> Option<(RunMetrics, usize)> {
    let out = agent.drover(&["metrics", run, "--json"]);
    if !out.status.success() {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metrics JSON");
    let series = value["series"].as_array().map_or(0, Vec::len);
    Some((serde_json::from_value(value).expect("RunMetrics"), series))
}

/// `systemctl --user show -p NAME` of the unit; `None` where systemd says "[not set]".
fn systemd_value(agent: &TestAgent, unit: &str, name: &str) -> Option<String> {
    let out = agent.sandbox.output(
        "systemctl",
        &["--user", "show", "-p", name, "--value", unit],
    );
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!text.is_empty() && text != "[not set]" && text != u64::MAX.to_string()).then_some(text)
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The scope's own cgroup file for `v1` (hybrid hosts) or `v2`.
fn cgroup_file(cg: &str, v1: (&str, &str), v2: &str) -> Option<u64> {
    let cg = cg.trim_start_matches('/');
    read_number(&Path::new("/sys/fs/cgroup").join(v1.0).join(cg).join(v1.1))
        .or_else(|| read_number(&Path::new("/sys/fs/cgroup").join(cg).join(v2)))
}

fn within(a: u64, b: u64, percent: u64) -> bool {
    a.abs_diff(b) * 100 <= b.max(1) * percent
}

#[test]
fn a_busy_step_shows_its_cpu_memory_tasks_and_idle_time() {
    let agent = TestAgent::start();
    let dir = agent.sandbox.dir.path();
    let flag = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let script = format!(
        r#"
import os, sys, time
def wait(name):
    while not os.path.exists(name):
        time.sleep(0.05)
hold = bytearray(100 * 1024 * 1024)
for i in range(0, len(hold), 4096):
    hold[i] = 1
while not os.path.exists({stop:?}):
    pass
wait({say:?})
print("spoke", flush=True)
wait({end:?})
"#,
        stop = flag("stop-burning"),
        say = flag("say"),
        end = flag("end"),
    );
    std::fs::write(dir.join("busy.py"), script).unwrap();
    let wf = agent.workflow(
        "busy.toml",
        &format!(
            "name = \"busy\"\n[[step]]\nname = \"churn\"\nrun = [\"python3\", {:?}]\n",
            flag("busy.py")
        ),
    );
    let run = agent.run(&wf);
    let unit = format!("drover-{run}-churn-1.scope");

    // Burning a core and holding 100 MB.
    let mut seen = None;
    wait_until(
        Duration::from_secs(30),
        "the step's CPU and memory in metrics",
        || {
            seen = metrics(&agent, &run);
            seen.as_ref().is_some_and(|(m, _)| {
                m.latest.memory_bytes.unwrap_or(0) >= 100 * 1024 * 1024
                    && m.latest.cpu_percent.unwrap_or(0.0) >= 20.0
            })
        },
    );
    let (m, series) = seen.expect("metrics");
    assert_eq!(m.state, RunState::Running);
    assert_eq!((m.step.as_deref(), m.attempt), (Some("churn"), 1));
    assert_eq!(m.unit.as_deref(), Some(unit.as_str()));
    assert!(series >= 2, "a series of samples: {series}");
    assert!(m.latest.cpu_percent.unwrap() <= 150.0, "{:?}", m.latest);
    assert!(
        m.latest.run_memory_bytes.unwrap_or(0) >= 100 * 1024 * 1024,
        "{:?}",
        m.latest
    );

    // Each value against systemd where it reports it, else against the cgroup file.
    let cg = systemd_value(&agent, &unit, "ControlGroup").expect("the scope's ControlGroup");
    let s = &m.latest;
    let src = |k: &str| s.sources.get(k).cloned().unwrap_or_default();
    match systemd_value(&agent, &unit, "MemoryCurrent") {
        Some(v) => {
            assert_eq!(src("memory"), "systemd");
            let v: u64 = v.parse().unwrap();
            assert!(
                within(s.memory_bytes.unwrap(), v, 15),
                "{s:?} vs systemd {v}"
            );
        }
        None => {
            assert!(src("memory").starts_with("cgroup"), "{s:?}");
            let file = cgroup_file(&cg, ("memory", "memory.usage_in_bytes"), "memory.current")
                .expect("the memory cgroup file");
            assert!(
                within(s.memory_bytes.unwrap(), file, 15),
                "{s:?} vs file {file}"
            );
        }
    }
    match systemd_value(&agent, &unit, "TasksCurrent") {
        Some(v) => {
            assert_eq!(src("tasks"), "systemd");
            assert_eq!(s.tasks, Some(v.parse().unwrap()));
        }
        None => {
            assert!(src("tasks").starts_with("cgroup"), "{s:?}");
            let file = cgroup_file(&cg, ("pids", "pids.current"), "pids.current");
            assert_eq!(s.tasks, file);
        }
    }
    match systemd_value(&agent, &unit, "CPUUsageNSec") {
        Some(_) => assert_eq!(src("cpu"), "systemd"),
        None => {
            // Hybrid hosts: from the v2 tree's cpu.stat; the test's own reading of it
            // over two seconds must agree with the monitor's percentage.
            assert_eq!(src("cpu"), "cgroup-v2", "{s:?}");
            let stat = Path::new("/sys/fs/cgroup/unified")
                .join(cg.trim_start_matches('/'))
                .join("cpu.stat");
            let usec = || -> u64 {
                std::fs::read_to_string(&stat)
                    .expect("cpu.stat in the v2 tree")
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|n| n.trim().parse().ok())
                    .expect("usage_usec")
            };
            let (before, t0) = (usec(), std::time::Instant::now());
            std::thread::sleep(Duration::from_secs(2));
            let file_percent = (usec() - before) as f64 / 1e4 / t0.elapsed().as_secs_f64();
            let (now, _) = metrics(&agent, &run).expect("metrics");
            let monitor_percent = now.latest.cpu_percent.expect("cpu");
            assert!(
                file_percent >= 20.0 && (file_percent - monitor_percent).abs() <= 40.0,
                "cpu.stat says {file_percent:.1}%, the monitor {monitor_percent:.1}%"
            );
        }
    }
    assert!(s.tasks.unwrap_or(0) >= 1, "{s:?}");
    assert!(s.step_elapsed_secs > 0.0 && s.run_elapsed_secs >= s.step_elapsed_secs - 1.0);

    // `drover top --once` lists the run.
    let top = agent.drover(&["top", "--once"]);
    assert!(
        top.status.success(),
        "{}",
        String::from_utf8_lossy(&top.stderr)
    );
    let top = String::from_utf8_lossy(&top.stdout);
    let line = top
        .lines()
        .find(|l| l.starts_with(&run))
        .unwrap_or_else(|| panic!("{run} is not in\n{top}"));
    assert!(
        line.contains("busy") && line.contains("churn") && line.contains("running"),
        "{line}"
    );

    // Silent: idle time grows; after a line of output it drops.
    std::fs::write(dir.join("stop-burning"), "").unwrap();
    wait_until(Duration::from_secs(20), "idle time to grow", || {
        metrics(&agent, &run).is_some_and(|(m, _)| m.latest.idle_secs >= 4.0)
    });
    std::fs::write(dir.join("say"), "").unwrap();
    wait_until(
        Duration::from_secs(20),
        "idle time to drop after output",
        || {
            metrics(&agent, &run).is_some_and(|(m, _)| {
                m.latest.idle_secs < 2.0 && m.latest.output_bytes_per_sec >= 0.0
            })
        },
    );

    // The run ends: its last period is written to the history.
    std::fs::write(dir.join("end"), "").unwrap();
    let ended = agent.wait_for_end(&run, Duration::from_secs(30));
    assert_eq!(ended.state, RunState::Succeeded);
    let db = rusqlite::Connection::open(agent.state_dir.join("state.db")).unwrap();
    let mut rows = (0i64, 0i64, 0f64);
    wait_until(Duration::from_secs(10), "history rows for the run", || {
        rows = db
            .query_row(
                "SELECT COUNT(*), COALESCE(MAX(memory_max), 0), COALESCE(MAX(cpu_max), 0)
                 FROM metrics_history WHERE run_id = ?1 AND step = 'churn'",
                [&run],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        // A minute boundary during the test writes an earlier row first; the row of the
        // burn is complete once the run ended.
        rows.0 >= 1 && rows.2 >= 20.0
    });
    assert!(rows.1 >= 100 * 1024 * 1024, "{rows:?}");
    assert!(rows.2 >= 20.0, "{rows:?}");
    let out = agent.drover(&["metrics", &run]);
    assert!(!out.status.success(), "no live metrics of an ended run");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("succeeded"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_claude_code_step_shows_its_turns_tokens_and_the_tool_in_use() {
    use crate::support::anthropic::{ModelServer, Turn, claude_command, step_toml};
    let agent = TestAgent::start();
    let dir = agent.sandbox.dir.path();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let server = ModelServer::start(vec![Turn::bash("echo warming up"), Turn::bash("sleep 300")]);
    let mut claude = claude_command(&server, &home, dir);
    claude.arg("Work for a while");
    let wf = agent.workflow(
        "agent.toml",
        &format!(
            "name = \"agent\"\n[kill]\ngrace = \"2s\"\n[[step]]\nname = \"claude\"\nagent = \"claude-code\"\n{}",
            step_toml(&claude)
        ),
    );
    let id = agent.run(&wf);
    let mut seen = None;
    wait_until(
        Duration::from_secs(60),
        "the Bash tool in use in the metrics",
        || {
            seen = metrics(&agent, &id).and_then(|(m, _)| m.latest.agent);
            seen.as_ref()
                .is_some_and(|a| a.tool.as_deref() == Some("Bash") && a.turns >= 1)
        },
    );
    let live = seen.unwrap();
    assert!(live.tokens_in > 0 && live.tokens_out > 0, "{live:#?}");
    let out = agent.drover(&["kill", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
