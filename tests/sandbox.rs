//! `drover sandbox` against the real systemd, dbus-daemon and journald of this machine.
//! Needs root and the systemd binaries; without them every test fails, naming what is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use drover::sandbox::SandboxInfo;

use crate::support::{DROVER, wait_until};

fn require() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "sandbox tests need root (running as uid {})",
        nix::unistd::geteuid()
    );
    for bin in [
        "/usr/lib/systemd/systemd",
        "/usr/lib/systemd/systemd-journald",
    ] {
        assert!(Path::new(bin).exists(), "sandbox tests need {bin}");
    }
    for bin in [
        "dbus-daemon",
        "systemctl",
        "systemd-run",
        "journalctl",
        "logger",
        "busctl",
        "setpriv",
    ] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join(bin).exists());
        assert!(found, "sandbox tests need {bin} in PATH");
    }
}

fn sandbox(args: &[&str]) -> Output {
    Command::new(DROVER)
        .arg("sandbox")
        .args(args)
        .output()
        .expect("running drover sandbox")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every `drover-sandbox-<pid>` directory left under /sys/fs/cgroup (at any depth).
fn leftover_cgroups(pid: u32) -> Vec<PathBuf> {
    let name = format!("drover-sandbox-{pid}");
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if e.file_name() == name.as_str() {
                    found.push(e.path());
                }
                stack.push(e.path());
            }
        }
    }
    found
}

/// A failing assertion must not leave a sandbox behind: SIGTERM it (it tears down) on drop.
struct Killer(std::process::Child);

impl Drop for Killer {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = self.0.wait();
        }
    }
}

fn info_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("drover-test-{tag}-{}.json", std::process::id()))
}

#[test]
fn exit_status_propagates() {
    require();
    let out = sandbox(&["--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "stderr: {}", text(&out.stderr));
    let out = sandbox(&["--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(
        out.status.code(),
        Some(143),
        "stderr: {}",
        text(&out.stderr)
    );
}

#[test]
fn missing_command_is_a_clear_error() {
    require();
    let out = sandbox(&["--", "/nonexistent/program"]);
    assert_eq!(out.status.code(), Some(127));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot start /nonexistent/program"),
        "stderr: {err}"
    );
}

#[test]
fn scope_and_journal_round_trip() {
    require();
    let out = sandbox(&[
        "--",
        "sh",
        "-c",
        "systemd-run --user --scope --unit=x1 true && systemctl --user show x1.scope -p Id; \
         logger -t drovertest marker-123; sleep 0.5; journalctl --no-pager -t drovertest",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout} stderr: {}",
        text(&out.stderr)
    );
    assert!(stdout.contains("Id=x1.scope"), "stdout: {stdout}");
    assert!(stdout.contains("marker-123"), "stdout: {stdout}");
}

#[test]
fn two_sandboxes_in_parallel() {
    require();
    let script = "systemd-run --user --scope --unit=par true && sleep 2 && \
                  systemctl --user is-system-running";
    let spawn = || {
        Command::new(DROVER)
            .args(["sandbox", "--", "sh", "-c", script])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawning drover sandbox")
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child
            .wait_with_output()
            .expect("waiting for drover sandbox");
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "stdout: {stdout} stderr: {}",
            text(&out.stderr)
        );
        assert!(
            stdout.contains("running") || stdout.contains("degraded"),
            "stdout: {stdout}"
        );
    }
}

#[test]
fn teardown_leaves_no_cgroups_processes_or_runtime_dir() {
    require();
    let info = info_path("teardown");
    let cat = format!(
        "cat {}; systemd-run --user --scope --unit=bg sleep 300 & sleep 1",
        info.display()
    );
    let out = sandbox(&["--info", info.to_str().unwrap(), "--", "sh", "-c", &cat]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let json = stdout
        .lines()
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let si: SandboxInfo = serde_json::from_str(&json).expect("info JSON printed inside");
    assert!(!si.cgroups.is_empty());
    assert!(
        leftover_cgroups(si.pid).is_empty(),
        "left: {:?}",
        leftover_cgroups(si.pid)
    );
    assert!(
        !si.runtime_dir.exists(),
        "{} left",
        si.runtime_dir.display()
    );
    assert!(!info.exists(), "info file {} left", info.display());
    assert!(!Path::new(&format!("/proc/{}", si.pid)).exists());
}

#[test]
fn command_from_outside_joins_a_running_sandbox() {
    require();
    let info = info_path("outside");
    let mut child = Killer(
        Command::new(DROVER)
            .args([
                "sandbox",
                "--info",
                info.to_str().unwrap(),
                "--",
                "sleep",
                "60",
            ])
            .spawn()
            .expect("spawning drover sandbox"),
    );
    wait_until(
        Duration::from_secs(30),
        &format!("the sandbox to write {}", info.display()),
        || {
            assert!(
                child.0.try_wait().unwrap().is_none(),
                "sandbox exited early"
            );
            info.exists()
        },
    );
    let si = SandboxInfo::load(&info).expect("loading sandbox info");

    let out = si
        .command("systemctl")
        .args(["--user", "status"])
        .output()
        .expect("systemctl in the sandbox");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("init.scope"), "systemctl status: {stdout}");

    // The process joined the sandbox's mount namespace and cgroups.
    let out = si
        .command("sh")
        .args(["-c", "readlink /proc/self/ns/mnt; cat /proc/self/cgroup"])
        .output()
        .expect("sh in the sandbox");
    let stdout = text(&out.stdout);
    let ns = std::fs::read_link(format!("/proc/{}/ns/mnt", si.pid)).unwrap();
    assert!(
        stdout.contains(&ns.to_string_lossy().into_owned()),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("drover-sandbox-{}/", si.pid)),
        "{stdout}"
    );

    // Another uid can use the bus.
    let out = si
        .command("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "busctl",
            "--user",
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "GetId",
        ])
        .output()
        .expect("busctl as uid 65534");
    assert!(
        out.status.success() && text(&out.stdout).starts_with("s \""),
        "stdout: {} stderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // SIGTERM to the sandbox reaches CMD and tears everything down.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert!(
        leftover_cgroups(si.pid).is_empty(),
        "left: {:?}",
        leftover_cgroups(si.pid)
    );
    assert!(!si.runtime_dir.exists());
}
