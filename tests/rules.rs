//! `drover rules check [DIR]`: a client-side check, no agent needed; and what a real
//! agent does with a rule that would block.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use drover::model::{AlertState, RunState};

use crate::automation::{agent_with_rules, alert, kills, sleeper};
use crate::support::{assert_state, wait_until};

fn drover(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .output()
        .expect("drover runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn rules_check_passes_a_good_directory_and_the_shipped_rules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("busy.rhai"),
        "// busy: alerts on any CPU use\nif has(cpu_percent) && cpu_percent > 1.0 {\n    alert(\"info\", `busy: ${cpu_percent}%`);\n}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("README.md"), "not a rule").unwrap();
    let out = drover(&["rules", "check", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("ok ") && stdout.contains("busy.rhai"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Alert"),
        "the dry run's alert is shown: {stdout}"
    );

    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let out = drover(&["rules", "check", shipped.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).matches("ok ").count(),
        6,
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn rules_check_reports_each_broken_rule_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.rhai"), "alert(\"info\", \"fine\");\n").unwrap();
    // A syntax error on line 2.
    let syntax = dir.path().join("syntax.rhai");
    std::fs::write(&syntax, "let x = 1;\nif x > 0 { alert(\"info\", \"x\") \n").unwrap();
    // Compiles, then fails at run time: an unknown function on line 3.
    let runtime = dir.path().join("runtime.rhai");
    std::fs::write(
        &runtime,
        "// reads a file\nlet x = 1;\nlet t = read_file(\"/etc/passwd\");\n",
    )
    .unwrap();
    // Fails only on a run with no metrics yet: arithmetic on `()`.
    let unit = dir.path().join("unit.rhai");
    std::fs::write(&unit, "let pct = memory_bytes * 100;\n").unwrap();
    let out = drover(&["rules", "check", dir.path().to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:", syntax.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}:3:9: ", runtime.display())),
        "{stderr}"
    );
    assert!(stderr.contains("read_file"), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:1:", unit.display())),
        "{stderr}"
    );
    assert!(stderr.contains("no metrics"), "{stderr}");
    assert!(stderr.contains("3 of 4 rule files have errors"), "{stderr}");
    assert!(text(&out.stdout).contains("good.rhai"));

    // The configured directories by default: the operator's file overrides the shipped one.
    let shipped = tempfile::tempdir().unwrap();
    std::fs::write(shipped.path().join("good.rhai"), "this is not rhai\n").unwrap();
    let operator = tempfile::tempdir().unwrap();
    std::fs::write(
        operator.path().join("good.rhai"),
        "alert(\"info\", \"mine\");\n",
    )
    .unwrap();
    let config = operator.path().join("drover.toml");
    std::fs::write(
        &config,
        format!(
            "[rules]\ndir = {:?}\nshipped_dir = {:?}\n",
            operator.path(),
            shipped.path()
        ),
    )
    .unwrap();
    let out = drover(&["rules", "check", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = drover(&["rules", "check", "/nonexistent/rules"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("not a directory"));
}

/// Whether the process `pid` (a child not yet waited for) has exited.
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        // The state follows the command name, which is in parentheses.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

#[test]
fn a_rule_calling_sleep_is_refused_the_others_act_and_the_agent_stops_promptly() {
    let rules = tempfile::tempdir().unwrap();
    let sleepy = rules.path().join("sleepy.rhai");
    std::fs::write(&sleepy, "if state == \"running\" {\n  sleep(20);\n}\n").unwrap();
    // Reached by name, past the load check: fails at once on every tick.
    std::fs::write(
        rules.path().join("by-name.rhai"),
        "if state == \"running\" {\n  call(Fn(\"sleep\"), 20);\n}\n",
    )
    .unwrap();
    std::fs::write(
        rules.path().join("stall.rhai"),
        "if state == \"running\" && has(idle_secs) && idle_secs >= 2.0 {\n  kill(\"stalled (test rule)\");\n}\n",
    )
    .unwrap();

    let out = drover(&["rules", "check", rules.path().to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:2:3: sleep is not available in rules",
            sleepy.display()
        )),
        "{stderr}"
    );

    let agent = agent_with_rules(rules.path(), "operator");
    let load_key = format!("rules-load/{}", sleepy.display());
    wait_until(Duration::from_secs(10), "the refused rule's alert", || {
        alert(&agent, &load_key).is_some_and(|a| a.state == AlertState::Firing)
    });
    let refused = alert(&agent, &load_key).unwrap();
    assert!(
        refused
            .summary
            .contains("sleepy.rhai:2:3: sleep is not available in rules"),
        "{refused:#?}"
    );

    // The stall rule kills in seconds; a tick held up by a 20 s sleep would take longer.
    let id = sleeper(&agent, "stalls");
    assert_state(
        &agent.wait_for_end(&id, Duration::from_secs(15)),
        RunState::Killed,
    );
    let kill = kills(&agent, &id).pop().expect("the kill is audited");
    assert_eq!(kill.requested_by, "rules (stall)");
    let log = agent.agent_log();
    assert!(
        log.contains("rule by-name on run") && log.contains("sleep is not available"),
        "the rule reaching sleep by name is reported:\n{log}"
    );

    // Stopped, it ends at once (a rule held up in a sleep held it up for minutes).
    let pid = agent.agent_pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_until(Duration::from_secs(5), "the agent to stop", || exited(pid));
}
