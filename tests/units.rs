//! The shipped units and D-Bus files (`units/`), as an operator installs them: checked by
//! `systemd-analyze verify`, and run for real in the sandbox's user manager: the agent
//! started by bus activation, restarted while a workflow runs, the workflow untouched.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use drover::model::{Run, RunState};

use crate::support::{DROVER, Sandbox, wait_until};

const UNITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/units");

/// A shipped file with `/usr/bin/drover` replaced by the binary under test.
fn shipped(path: &str) -> String {
    std::fs::read_to_string(Path::new(UNITS).join(path))
        .unwrap_or_else(|e| panic!("units/{path}: {e}"))
        .replace("/usr/bin/drover", DROVER)
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for (from, to) in [
        ("system/drover.service", "system/drover.service"),
        ("user/drover.service", "user/drover.service"),
        ("drover.slice", "system/drover.slice"),
    ] {
        let path = dir.path().join(to);
        write(&path, &shipped(from));
        files.push(path);
    }
    for file in &files {
        let out = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(file)
            .output()
            .expect("systemd-analyze (package systemd) is needed");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify {}: {stderr}",
            file.display()
        );
    }
}

/// The user setup of the runbook in a private user manager: the unit, the slice and the
/// session bus's activation file installed; nothing started by hand.
struct UserSetup {
    sandbox: Sandbox,
    /// `$XDG_CONFIG_HOME/drover/drover.toml`, the agent's config.
    config: PathBuf,
    state: PathBuf,
}

impl UserSetup {
    fn install() -> UserSetup {
        let sandbox = Sandbox::start();
        let runtime = sandbox.info.runtime_dir.clone();
        write(
            &runtime.join("systemd/user/drover.service"),
            &shipped("user/drover.service"),
        );
        write(
            &runtime.join("systemd/user/drover.slice"),
            &shipped("drover.slice"),
        );
        write(
            &runtime.join("dbus-1/services/org.drover.Drover1.service"),
            &shipped("dbus/services/org.drover.Drover1.service"),
        );
        // The agent's default paths ($XDG_CONFIG_HOME, $XDG_STATE_HOME) in this test's
        // directory, through the manager's environment as a login session would set them.
        let config_home = sandbox.dir.path().join("config");
        let state_home = sandbox.dir.path().join("state");
        let config = config_home.join("drover/drover.toml");
        write(&config, "[http]\nlisten = \"127.0.0.1:0\"\n");
        let setup = UserSetup {
            config,
            state: state_home.join("drover"),
            sandbox,
        };
        ok(
            &setup.systemctl(&[
                "set-environment",
                &format!("XDG_CONFIG_HOME={}", config_home.display()),
                &format!("XDG_STATE_HOME={}", state_home.display()),
            ]),
            "systemctl --user set-environment",
        );
        ok(&setup.systemctl(&["daemon-reload"]), "daemon-reload");
        setup
    }

    fn systemctl(&self, args: &[&str]) -> Output {
        self.sandbox
            .command("systemctl")
            .arg("--user")
            .args(args)
            .output()
            .expect("systemctl")
    }

    fn drover(&self, args: &[&str]) -> Output {
        self.sandbox
            .command(DROVER)
            .arg("--user")
            .args(args)
            .output()
            .expect("drover")
    }

    fn is_active(&self, unit: &str) -> String {
        let out = self.systemctl(&["is-active", unit]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn main_pid(&self) -> String {
        let out = ok(
            &self.systemctl(&["show", "-p", "MainPID", "--value", "drover.service"]),
            "systemctl show MainPID",
        );
        out.trim().to_owned()
    }

    fn show(&self, run: &str) -> Run {
        let out = ok(&self.drover(&["show", run, "--json"]), "drover show");
        serde_json::from_str(&out).expect("drover show --json")
    }
}

#[test]
fn bus_activation_starts_the_agent_and_a_restart_leaves_workflows_running() {
    let setup = UserSetup::install();
    assert_eq!(setup.is_active("drover.service"), "inactive");

    // A plain bus call with no agent running starts it.
    let out = setup
        .sandbox
        .command("busctl")
        .args([
            "--user",
            "call",
            "org.drover.Drover1",
            "/org/drover/Drover1",
            "org.drover.Drover1.Manager",
            "List",
        ])
        .output()
        .expect("busctl");
    ok(
        &out,
        "busctl call org.drover.Drover1 … List (bus activation)",
    );
    assert_eq!(setup.is_active("drover.service"), "active");
    assert!(
        setup.state.join("state.db").exists(),
        "the agent keeps its state in $XDG_STATE_HOME/drover"
    );

    // A workflow that runs until told to finish.
    let dir = setup.sandbox.dir.path();
    let finish = dir.join("finish");
    let workflow = dir.join("wait.toml");
    write(
        &workflow,
        &format!(
            "name = \"wait\"\n[[step]]\nname = \"wait\"\nrun = \"while [ ! -e {} ]; do sleep 0.2; done; echo finished\"\n",
            finish.display()
        ),
    );
    let run = ok(
        &setup.drover(&["run", &workflow.to_string_lossy()]),
        "drover run",
    )
    .trim()
    .to_owned();
    wait_until(Duration::from_secs(30), "the step to run", || {
        setup.show(&run).state == RunState::Running
            && setup
                .show(&run)
                .steps
                .first()
                .and_then(|s| s.unit.clone())
                .is_some()
    });
    let scope = setup.show(&run).steps[0]
        .unit
        .clone()
        .expect("the step's scope");
    let cgroup = ok(
        &setup.systemctl(&["show", "-p", "ControlGroup", "--value", &scope]),
        "systemctl show ControlGroup",
    );
    assert!(
        cgroup.contains("/drover.slice/"),
        "the step's scope lives in drover.slice, not in the agent's cgroup: {cgroup}"
    );

    // Restarting the agent's unit leaves the step running; the new agent re-adopts it.
    let before = setup.main_pid();
    ok(
        &setup.systemctl(&["restart", "drover.service"]),
        "systemctl --user restart drover",
    );
    assert_eq!(setup.is_active("drover.service"), "active");
    assert_ne!(setup.main_pid(), before, "a new agent process");
    assert_eq!(
        setup.is_active(&scope),
        "active",
        "the step's scope survived the agent's restart"
    );
    std::fs::write(&finish, "").expect("finish flag");
    wait_until(Duration::from_secs(30), "the run to end", || {
        setup.show(&run).state.is_terminal()
    });
    let ended = setup.show(&run);
    assert_eq!(ended.state, RunState::Succeeded, "{ended:#?}");
    assert_eq!(ended.steps[0].exit_code, Some(0), "{ended:#?}");

    // Stopping the agent's unit does not stop a running workflow either.
    std::fs::remove_file(&finish).expect("reset the flag");
    let run = ok(
        &setup.drover(&["run", &workflow.to_string_lossy()]),
        "drover run",
    )
    .trim()
    .to_owned();
    wait_until(Duration::from_secs(30), "the second run's step", || {
        setup
            .show(&run)
            .steps
            .first()
            .is_some_and(|s| s.unit.is_some())
    });
    let scope = setup.show(&run).steps[0]
        .unit
        .clone()
        .expect("the step's scope");
    ok(
        &setup.systemctl(&["stop", "drover.service"]),
        "systemctl --user stop drover",
    );
    assert_eq!(
        setup.is_active(&scope),
        "active",
        "the scope outlived the agent"
    );
    std::fs::write(&finish, "").expect("finish flag");
    // The next command activates the agent again, which finds the run ended.
    wait_until(Duration::from_secs(30), "the re-adopted run to end", || {
        setup.show(&run).state.is_terminal()
    });
    assert_eq!(setup.show(&run).state, RunState::Succeeded);
}

#[test]
fn a_reload_with_a_broken_config_keeps_the_running_one() {
    let setup = UserSetup::install();
    ok(
        &setup.systemctl(&["start", "drover.service"]),
        "systemctl --user start drover",
    );
    let pid = setup.main_pid();

    std::fs::write(&setup.config, "[monitor]\ninterval = \"soon\"\n").expect("break the config");
    let reload = setup.systemctl(&["reload", "drover.service"]);
    assert!(
        !reload.status.success(),
        "systemctl --user reload drover accepted a broken config"
    );
    assert_eq!(setup.is_active("drover.service"), "active");
    assert_eq!(setup.main_pid(), pid, "the agent kept running");
    // Why, in the agent's journal: the file, line and column.
    wait_until(Duration::from_secs(10), "the reason in the journal", || {
        let out = setup.sandbox.output(
            "journalctl",
            &["--no-pager", "-o", "cat", "SYSLOG_IDENTIFIER=drover"],
        );
        let journal = String::from_utf8_lossy(&out.stdout);
        journal.contains(&format!("{}:2:", setup.config.display()))
    });
    // The old config still serves: a run starts and ends.
    let workflow = setup.sandbox.dir.path().join("ok.toml");
    write(
        &workflow,
        "name = \"ok\"\n[[step]]\nname = \"s\"\nrun = \"true\"\n",
    );
    let run = ok(
        &setup.drover(&["run", &workflow.to_string_lossy()]),
        "drover run",
    )
    .trim()
    .to_owned();
    wait_until(Duration::from_secs(30), "the run to end", || {
        setup.show(&run).state.is_terminal()
    });
    assert_eq!(setup.show(&run).state, RunState::Succeeded);

    // Fixed, the reload goes through.
    std::fs::write(&setup.config, "[http]\nlisten = \"127.0.0.1:0\"\n").expect("fix the config");
    ok(
        &setup.systemctl(&["reload", "drover.service"]),
        "systemctl --user reload drover",
    );
    assert_eq!(setup.main_pid(), pid);
}
