//! The agent's configuration: `drover config check` reports what the agent would refuse
//! (and the agent refuses it with the same message); `drover reload` and SIGHUP re-read
//! the file, keep the running config when the new one is broken, and put `[rules]` and
//! `[auth]` in force live when it is fixed, naming what needs a restart.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use drover::model::{ActionRecord, Alert, KillRecord, KillResult, ReloadOutcome, RunState};

use crate::support::{DROVER, TEST_CONFIG, TestAgent, assert_state, wait_until};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `drover ARGS…` outside any sandbox, with no user config in sight.
fn drover(args: &[&str]) -> Output {
    Command::new(DROVER)
        .args(args)
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .output()
        .expect("drover runs")
}

#[test]
fn config_check_passes_good_files_and_reports_bad_ones_as_the_agent_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "state_dir = \"/var/lib/drover\"\n[monitor]\ninterval = \"2s\"\n[http]\nlisten = \"127.0.0.1:7878\"\n\
         [rules]\nrole = \"viewer\"\n[alerts]\nwebhook = \"http://127.0.0.1:9000/hook\"\n\
         [auth.operator]\ngroups = [\"drover-operators\"]\n",
    )
    .unwrap();
    let out = drover(&["config", "check", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{}: ok\n", good.display()));

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/drover.toml");
    let out = drover(&["config", "check", example.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // Without FILE: the agent's own file, which may be absent (the agent then runs with
    // the defaults).
    let out = drover(&["--user", "config", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("/nonexistent/drover/drover.toml: not found"),
        "{}",
        text(&out.stdout)
    );

    let bad = dir.path().join("bad.toml");
    let cases = [
        // (file, line:column, reason)
        (
            "[http]\nlisten = \"127.0.0.1:0\"\nport = 80\n",
            "3:1",
            "unknown field `port`",
        ),
        ("[http]\nenabled = 1\n", "2:11", "expected a boolean"),
        (
            "[monitor]\n\nhistory = \"forever\"\n",
            "3:11",
            "not a duration",
        ),
        ("[monitor]\ninterval = \"0s\"\n", "2:12", "above zero"),
        (
            "[rules]\nrole = \"boss\"\n",
            "2:8",
            "`viewer`, `operator`, `admin`",
        ),
        ("[alerts]\nwebhook = \"ftp://x\"\n", "2:11", "only http://"),
        ("[http]\nlisten = \"localhost\"\n", "2:10", "IP:PORT"),
    ];
    for (config, location, reason) in cases {
        std::fs::write(&bad, config).unwrap();
        let out = drover(&["config", "check", bad.to_str().unwrap()]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{config:?}: {stderr}");
        assert!(
            stderr.contains(&format!("{}:{location}: ", bad.display())),
            "{config:?}: {stderr}"
        );
        assert!(stderr.contains(reason), "{config:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{config:?}");
    }

    // The agent refuses the last one with the same message, before touching anything.
    let state = dir.path().join("state");
    let out = drover(&[
        "--user",
        "agent",
        "--config",
        bad.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    let check = drover(&["config", "check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(text(&check.stderr).trim()),
        "agent: {}\ncheck: {}",
        text(&out.stderr),
        text(&check.stderr)
    );
    assert!(
        !state.exists(),
        "the agent refused before creating its state"
    );
}

fn audit_actions(agent: &TestAgent) -> Vec<ActionRecord> {
    let out = agent.drover(&["audit", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let trail: serde_json::Value = serde_json::from_slice(&out.stdout).expect("audit --json");
    serde_json::from_value(trail["actions"].clone()).expect("actions")
}

fn reloads(agent: &TestAgent) -> Vec<ActionRecord> {
    audit_actions(agent)
        .into_iter()
        .filter(|a| a.action == "reload")
        .collect()
}

/// A config whose operator rules are in `dir` (the shipped ones replaced by an empty
/// directory), acting with `role`, plus `extra` TOML before `[rules]`.
fn rules_config(dir: &Path, shipped: &Path, role: &str, extra: &str) -> String {
    format!(
        "{TEST_CONFIG}{extra}[rules]\ndir = \"{}\"\nshipped_dir = \"{}\"\nrole = \"{role}\"\n",
        dir.display(),
        shipped.display()
    )
}

#[test]
fn reload_keeps_the_running_config_when_the_file_is_broken_and_applies_a_fixed_one() {
    let dirs = tempfile::tempdir().unwrap();
    let (first, second, shipped) = (
        dirs.path().join("first"),
        dirs.path().join("second"),
        dirs.path().join("shipped"),
    );
    for dir in [&first, &second, &shipped] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(
        second.join("second.rhai"),
        "alert(\"warning\", \"the second directory's rule\");\nkill(\"the second rule\");\n",
    )
    .unwrap();
    let agent = TestAgent::start_with_config(&rules_config(&first, &shipped, "operator", ""));

    // Broken: an unknown role on line 6. Refused with where and why; nothing changes.
    std::fs::write(&agent.config, rules_config(&second, &shipped, "boss", "")).unwrap();
    let out = agent.drover(&["reload"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        stderr.contains(&format!("{}:6:8: ", agent.config.display())),
        "{stderr}"
    );
    assert!(stderr.contains("boss"), "{stderr}");
    assert!(stderr.contains("running one stays in force"), "{stderr}");
    assert!(
        agent.agent_log().contains("config-reload-failed"),
        "{}",
        agent.agent_log()
    );
    // The agent goes on with the old config: a run succeeds, and the second directory's
    // rule (which would kill it) is not loaded.
    let quick = agent.workflow(
        "quick.toml",
        "name = \"quick\"\n[[step]]\nname = \"s\"\nrun = \"sleep 2\"\n",
    );
    let run = agent.run(&quick);
    assert_state(
        &agent.wait_for_end(&run, Duration::from_secs(30)),
        RunState::Succeeded,
    );

    // Fixed, with the viewer role and a setting that needs a restart.
    std::fs::write(
        &agent.config,
        rules_config(
            &second,
            &shipped,
            "viewer",
            "[monitor]\ninterval = \"2s\"\n",
        ),
    )
    .unwrap();
    let out = agent.drover(&["reload", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let outcome: ReloadOutcome = serde_json::from_slice(&out.stdout).expect("reload --json");
    assert_eq!(outcome.applied, ["rules.dir", "rules.role"]);
    assert_eq!(outcome.restart_needed, ["monitor.interval"]);
    assert_eq!(outcome.rules_loaded, ["second"]);
    let out = agent.drover(&["reload"]);
    assert!(
        text(&out.stdout).contains("take effect after the agent restarts: monitor.interval"),
        "{}",
        text(&out.stdout)
    );

    // The new directory's rule runs with the new role: its alert fires, and its kill is
    // refused (a viewer may not kill) and audited.
    let sleeper = agent.workflow(
        "sleeper.toml",
        "name = \"sleeper\"\n[[step]]\nname = \"s\"\nrun = \"sleep 300\"\n",
    );
    let run = agent.run(&sleeper);
    wait_until(
        Duration::from_secs(20),
        "the second directory's rule to fire and its kill to be refused",
        || {
            let out = agent.drover(&["alerts", "--json"]);
            let alerts: Vec<Alert> = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let out = agent.drover(&["audit", "--run", &run, "--json"]);
            let trail: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let kills: Vec<KillRecord> =
                serde_json::from_value(trail["kills"].clone()).unwrap_or_default();
            alerts.iter().any(|a| a.key == format!("second/{run}"))
                && kills
                    .iter()
                    .any(|k| k.result == KillResult::Refused && k.requested_by == "rules (second)")
        },
    );
    assert_eq!(agent.show(&run).state, RunState::Running);
    // The new directory is watched: a file dropped in it is loaded without a reload.
    std::fs::write(second.join("third.rhai"), "alert(\"info\", \"third\");\n").unwrap();
    wait_until(
        Duration::from_secs(5),
        "the new directory's new rule to load",
        || agent.agent_log().contains("rule third loaded"),
    );

    let results: Vec<String> = reloads(&agent).into_iter().map(|a| a.result).collect();
    assert_eq!(results, ["failed", "done", "done"]);
}

#[test]
fn sighup_reloads_auth_live_and_a_non_admin_may_not_reload() {
    let agent = TestAgent::start();
    let out = agent.busctl(true, "Reload", &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("admin role"),
        "{}",
        text(&out.stderr)
    );

    // [auth] is live: after a SIGHUP, nobody (uid 65534) is an admin and may reload.
    std::fs::write(
        &agent.config,
        format!("{TEST_CONFIG}[auth.admin]\nusers = [\"65534\"]\n"),
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.agent_pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_until(Duration::from_secs(10), "the SIGHUP reload", || {
        reloads(&agent)
            .iter()
            .any(|a| a.requested_by == "SIGHUP" && a.result == "done")
    });
    let out = agent.busctl(true, "Reload", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let reloads = reloads(&agent);
    let seen: Vec<(&str, Option<u32>, &str)> = reloads
        .iter()
        .map(|a| (a.result.as_str(), a.uid, a.channel.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("refused", Some(65534), "dbus"),
            ("done", None, "signal"),
            ("done", Some(65534), "dbus"),
        ]
    );
    assert!(
        reloads[1].detail.contains("auth.admin.users"),
        "{}",
        reloads[1].detail
    );
}
