//! A full disk under the state directory (a small tmpfs, as a full `/var` would be): it
//! fails loudly and strands nothing. `/healthz` says "degraded" and why while writes fail,
//! a step's log is cut with a mark where its output is missing, the exit record still gets
//! written, a transition the state DB could not take is recorded once space returns, and
//! the run goes on to its end.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use drover::model::{RunState, StepState};

use crate::support::{TEST_CONFIG, TestAgent, assert_state, http, wait_for, wait_until};

/// A tmpfs of `size` mounted on a temporary directory (before the sandbox starts, so the
/// sandbox's mount namespace has it too); unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir_in("/tmp").expect("temp dir");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("mount (util-linux)");
        assert!(
            status.success(),
            "mount -t tmpfs: {status} (the test needs root)"
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills `bytes` of it with a file the test deletes to give the space back.
    fn reserve(&self, name: &str, bytes: usize) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, vec![b'r'; bytes]).expect("write the reserve file");
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// `/healthz`: the status code and the reply.
fn health(agent: &TestAgent) -> (u16, serde_json::Value) {
    let (status, body) = http(agent.http_addr(), "GET", "/healthz");
    let reply = serde_json::from_str(&body).unwrap_or_else(|e| panic!("healthz {body:?}: {e}"));
    (status, reply)
}

fn problems(reply: &serde_json::Value) -> String {
    reply["problems"].to_string()
}

#[test]
fn a_full_disk_degrades_health_marks_the_cut_log_and_the_run_goes_on_once_space_returns() {
    let disk = Tmpfs::mount("8m");
    let agent = TestAgent::start_in(TEST_CONFIG, Some(disk.path().join("state")));
    let (status, reply) = health(&agent);
    assert_eq!(status, 200, "healthy at the start: {reply}");
    assert_eq!(reply["status"], "ok");

    // Two reserves the test gives back one after the other; each step floods its log until
    // the disk is full. The first waits for the test (so its log can be written again while
    // it runs), the second ends at once (so its end has to be recorded on a full disk).
    let first_reserve = disk.reserve("reserve-1", 2 << 20);
    let second_reserve = disk.reserve("reserve-2", 2 << 20);
    let (flooded, go) = (
        agent.sandbox.dir.path().join("flooded"),
        agent.sandbox.dir.path().join("go"),
    );
    let flood = "line=$(head -c 1000 /dev/zero | tr '\\0' x); yes \"$line\" | head -c 16000000";
    let workflow = agent.workflow(
        "flood.toml",
        &format!(
            r#"
name = "flood"
[[step]]
name = "flood"
run = "{flood}; touch {flooded}; while [ ! -e {go} ]; do sleep 0.05; done; echo after-the-gap"
[[step]]
name = "flood-again"
run = "{flood}; echo flooded"
[[step]]
name = "after"
run = "echo after"
"#,
            flood = flood.replace('\\', "\\\\").replace('"', "\\\""),
            flooded = flooded.display(),
            go = go.display()
        ),
    );
    let run = agent.run(&workflow);

    // The disk is full while the first step waits: /healthz says so.
    wait_until(
        Duration::from_secs(60),
        "the first step to fill the disk and /healthz to report it",
        || {
            let (status, reply) = health(&agent);
            flooded.exists()
                && status == 503
                && reply["status"] == "degraded"
                && problems(&reply).contains("bytes free")
        },
    );
    let shown = agent.show(&run);
    assert_state(&shown, RunState::Running);

    // Space returns while the step runs: its next line is written after a mark of the gap.
    std::fs::remove_file(&first_reserve).expect("give the first reserve back");
    std::fs::write(&go, "").expect("tell the step to go on");

    // The second step fills the disk again and ends: its exit record is written in the
    // space the shim set aside, but the state DB cannot take the step's end. The run is
    // neither failed nor forgotten: it waits, and /healthz names the failing writes.
    let exit_record = agent
        .state_dir
        .join(format!("runs/{run}/flood-again.1.exit"));
    wait_for(
        Duration::from_secs(60),
        || {
            format!(
                "the second step did not end while the state DB could not record it: exit record {}: {}; health {:?}; {:#?}\nagent log:\n{}",
                exit_record.display(),
                exit_record.exists(),
                health(&agent),
                agent.show(&run),
                agent.agent_log()
            )
        },
        || {
            let shown = agent.show(&run);
            let second = shown.steps.iter().find(|s| s.name == "flood-again");
            let (status, reply) = health(&agent);
            (exit_record.exists()
                && second.is_some_and(|s| s.state == StepState::Running)
                && status == 503
                && problems(&reply).contains("state DB writes fail"))
            .then_some(())
        },
    );
    assert_state(&agent.show(&run), RunState::Running);

    std::fs::remove_file(&second_reserve).expect("give the second reserve back");
    let ended = agent.wait_for_end(&run, Duration::from_secs(60));
    assert_state(&ended, RunState::Succeeded);
    for step in &ended.steps {
        assert_eq!(step.state, StepState::Succeeded, "{step:#?}");
    }

    // Both logs were cut, and each attempt says where and how much.
    for name in ["flood", "flood-again"] {
        let step = ended.steps.iter().find(|s| s.name == name).expect("step");
        let cut = step.log_cut.as_deref().unwrap_or_else(|| {
            panic!("step {name}'s record says nothing of its cut log: {step:#?}")
        });
        assert!(
            cut.contains("the log was cut at byte") && cut.contains("No space left on device"),
            "{name}: {cut}"
        );
    }
    // The first one's log marks the gap in place, then goes on.
    let log = agent.log_of(&ended, "flood");
    let mark = log
        .find("bytes of output are missing here")
        .unwrap_or_else(|| panic!("no gap mark in the log's last lines: {:?}", tail(&log)));
    assert!(
        log[mark..].contains("journalctl DROVER_RUN=") && log.ends_with("after-the-gap\n"),
        "the log after its gap: {:?}",
        tail(&log)
    );
    assert_eq!(agent.log_of(&ended, "after"), "after\n");
    // `drover logs` and `drover show` say it too.
    let out = agent.drover(&["logs", &run, "--step", "flood-again"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && tail(&printed).contains("[drover: the log was cut at byte"),
        "drover logs: {:?} {}",
        tail(&printed),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = agent.drover(&["show", &run]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("flood-again: the log was cut at byte"),
        "drover show: {out:?}"
    );

    // Healthy again, and the failures are counted.
    let (status, reply) = health(&agent);
    assert_eq!((status, &reply["status"]), (200, &"ok".into()), "{reply}");
    let (_, metrics) = http(agent.http_addr(), "GET", "/metrics");
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("drover_db_write_failures_total "))
        .and_then(|v| v.parse().ok())
        .expect("drover_db_write_failures_total in /metrics");
    assert!(failures >= 1.0, "{failures}");
    let log = agent.agent_log();
    assert!(
        log.contains("the state DB cannot be written") && log.contains("driven again"),
        "the agent's log says what happened:\n{log}"
    );
}

fn tail(text: &str) -> &str {
    let start = text.len().saturating_sub(400);
    text.get(start..).unwrap_or(text)
}

#[test]
fn a_step_filling_the_disk_is_killed_at_once_and_the_kill_is_recorded_once_space_returns() {
    let disk = Tmpfs::mount("8m");
    let agent = TestAgent::start_in(TEST_CONFIG, Some(disk.path().join("state")));
    let reserve = disk.reserve("reserve", 2 << 20);
    let workflow = agent.workflow(
        "endless.toml",
        r#"
name = "endless"
[[step]]
name = "flood"
run = "line=$(head -c 1000 /dev/zero | tr '\\0' x); yes \"$line\""
"#,
    );
    let run = agent.run(&workflow);
    wait_until(Duration::from_secs(60), "the step to fill the disk", || {
        problems(&health(&agent).1).contains(" has 0 bytes free")
    });

    // The kill cannot be recorded first, so it stops the step and says what waits. (A
    // failed write of the agent's just before, such as the monitor's once a minute, can
    // leave the state DB room enough for the kill's record: then it is a plain kill.)
    let out = agent.drover(&["kill", &run, "--reason", "filling the disk"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            || stderr.contains("its step was stopped (0 processes left)")
                && stderr.contains("cannot be recorded"),
        "drover kill on a full disk: {out:?}"
    );
    let unit = format!("drover-{run}-flood-1.scope");
    let active = agent
        .sandbox
        .output("systemctl", &["--user", "is-active", &unit]);
    assert!(
        !String::from_utf8_lossy(&active.stdout).starts_with("active"),
        "{unit} still runs: {active:?}"
    );

    // Space returns: the kill is recorded with who asked and why, and carried through.
    std::fs::remove_file(&reserve).expect("give the reserve back");
    let ended = agent.wait_for_end(&run, Duration::from_secs(60));
    assert_state(&ended, RunState::Killed);
    let kill = ended.kill.expect("the kill record");
    assert_eq!(kill.reason, "filling the disk");
    assert!(kill.requested_by.contains("uid 0"), "{kill:?}");
    assert_eq!(kill.processes_left, Some(0), "{kill:?}");
    assert!(
        kill.phases.iter().any(|p| p.name.starts_with("sig")),
        "the record keeps the signals sent before it could be written: {kill:?}"
    );
    assert_eq!(ended.steps[0].state, StepState::Killed);
}
