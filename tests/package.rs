//! The Debian package: built by `packaging/build-deb`, its contents listed, checked by
//! lintian, then installed on this machine, reinstalled (the upgrade path), removed and
//! purged with dpkg. One test, because building the package is the slow part.
//!
//! It runs beside the rest of the suite without disturbing it: the others run
//! `target/debug/drover` with configs and state of their own, never anything under /usr
//! or /etc/drover. (An agent of theirs started without a `shipped_dir` may find
//! /usr/share/drover/rules while the package is installed: the same rules as the source
//! tree's, which the other tests do not rely on.)

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every path the package must ship.
const CONTENTS: &[&str] = &[
    "/usr/bin/drover",
    "/usr/lib/systemd/system/drover.service",
    "/usr/lib/systemd/system/drover.slice",
    "/usr/lib/systemd/user/drover.service",
    "/usr/lib/systemd/user/drover.slice",
    "/usr/share/dbus-1/system-services/org.drover.Drover1.service",
    "/usr/share/dbus-1/services/org.drover.Drover1.service",
    "/usr/share/dbus-1/system.d/org.drover.Drover1.conf",
    "/usr/share/drover/rules/README.md",
    "/usr/share/drover/rules/cost-budget.rhai",
    "/usr/share/drover/rules/memory-runaway.rhai",
    "/usr/share/drover/rules/repeated-failures.rhai",
    "/usr/share/drover/rules/slow-step.rhai",
    "/usr/share/drover/rules/stalled-agent.rhai",
    "/usr/share/drover/rules/tool-loop.rhai",
    "/etc/drover/drover.toml",
    "/usr/share/doc/drover/README.md.gz",
    "/usr/share/doc/drover/runbook.md.gz",
    "/usr/share/doc/drover/copyright",
    "/usr/share/doc/drover/changelog.Debian.gz",
    "/usr/share/man/man1/drover.1.gz",
    "/usr/share/man/man1/drover-run.1.gz",
    "/usr/share/man/man1/drover-kill.1.gz",
    "/usr/share/man/man1/drover-agent.1.gz",
    "/usr/share/man/man1/drover-sandbox.1.gz",
    "/usr/share/man/man1/drover-rules.1.gz",
    "/usr/share/man/man1/drover-rules-check.1.gz",
    "/usr/share/bash-completion/completions/drover",
    "/usr/share/zsh/vendor-completions/_drover",
    "/usr/share/fish/vendor_completions.d/drover.fish",
    "/usr/share/lintian/overrides/drover",
];

/// Installed files that must be gone once the package is removed (the conffile stays).
const REMOVED: &[&str] = &[
    "/usr/bin/drover",
    "/usr/lib/systemd/system/drover.service",
    "/usr/share/dbus-1/system.d/org.drover.Drover1.conf",
    "/usr/share/drover/rules",
    "/usr/share/man/man1/drover.1.gz",
];

#[test]
fn debian_package_builds_installs_and_purges() {
    require(
        "cargo",
        &["deb", "--version"],
        "cargo install cargo-deb --locked",
    );
    require("lintian", &["--version"], "apt-get install lintian");
    require("dpkg", &["--version"], "apt-get install dpkg");
    require("dpkg-deb", &["--version"], "apt-get install dpkg");
    require("man", &["--version"], "apt-get install man-db");
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the package test installs the package with dpkg: it needs root"
    );
    assert!(
        !run("dpkg", &["-s", "drover"]).status.success(),
        "a drover package is already installed here; this test installs and purges its own \
         (remove it first: dpkg -P drover)"
    );
    assert!(
        !Path::new("/var/lib/drover").exists(),
        "/var/lib/drover exists: a purge of the package would delete it; move it away to \
         run this test"
    );

    let started = Instant::now();
    // nice: the release build shares 2 cores with timing-sensitive tests running beside it.
    let build = Command::new("nice")
        .args(["-n", "19"])
        .arg(Path::new(ROOT).join("packaging/build-deb"))
        .output()
        .expect("cannot run packaging/build-deb");
    assert!(
        build.status.success(),
        "packaging/build-deb failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let deb = String::from_utf8(build.stdout).expect("a UTF-8 path");
    let deb = deb.trim();
    assert!(
        deb.ends_with(".deb") && Path::new(deb).is_file(),
        "packaging/build-deb printed {deb:?}, not the path of a .deb"
    );
    eprintln!("package: built {deb} in {:?}", started.elapsed());

    // Contents, from the archive itself.
    let listing = stdout(&check(run("dpkg-deb", &["-c", deb]), "dpkg-deb -c"));
    let shipped: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.'))
        .collect();
    let missing: Vec<&&str> = CONTENTS.iter().filter(|p| !shipped.contains(p)).collect();
    assert!(
        missing.is_empty(),
        "the package lacks {missing:?}; it holds:\n{listing}"
    );
    assert!(
        !shipped.iter().any(|p| p.contains("__shim")),
        "a hidden subcommand got a man page:\n{listing}"
    );
    let conffiles = stdout(&check(
        run("dpkg-deb", &["-I", deb, "conffiles"]),
        "dpkg-deb -I conffiles",
    ));
    assert_eq!(conffiles.trim(), "/etc/drover/drover.toml");

    let lint = Instant::now();
    let lintian = run("lintian", &["--fail-on", "error", deb]);
    assert!(
        lintian.status.success(),
        "lintian reports errors:\n{}{}",
        stdout(&lintian),
        String::from_utf8_lossy(&lintian.stderr)
    );
    eprintln!("package: lintian in {:?}", lint.elapsed());

    // Installed from here on: the guard purges it whatever happens below.
    let installed = Installed;
    check(run("dpkg", &["-i", deb]), "dpkg -i");
    let version = stdout(&check(
        run("/usr/bin/drover", &["--version"]),
        "drover --version",
    ));
    assert_eq!(
        version.trim(),
        format!("drover {}", env!("CARGO_PKG_VERSION"))
    );
    for page in ["drover", "drover-kill", "drover-rules-check"] {
        let found = stdout(&check(run("man", &["-w", page]), &format!("man -w {page}")));
        assert_eq!(found.trim(), format!("/usr/share/man/man1/{page}.1.gz"));
    }
    for path in CONTENTS {
        assert!(Path::new(path).exists(), "{path} is not installed");
    }
    // The installed agent finds the shipped rules where it looks by default, and they pass.
    check(
        run(
            "/usr/bin/drover",
            &["rules", "check", "/usr/share/drover/rules"],
        ),
        "drover rules check /usr/share/drover/rules",
    );
    // The same version again: dpkg runs the maintainer scripts as for an upgrade.
    check(run("dpkg", &["-i", deb]), "dpkg -i (reinstall)");

    check(run("dpkg", &["-r", "drover"]), "dpkg -r drover");
    for path in REMOVED {
        assert!(
            !Path::new(path).exists(),
            "{path} is still there after dpkg -r"
        );
    }
    assert!(
        Path::new("/etc/drover/drover.toml").is_file(),
        "dpkg -r took the conffile /etc/drover/drover.toml; only a purge may"
    );
    // State the agent would have left, for the purge to take.
    std::fs::create_dir_all("/var/lib/drover/runs").expect("create /var/lib/drover");
    std::fs::write("/var/lib/drover/state.db", b"").expect("write /var/lib/drover/state.db");

    check(run("dpkg", &["-P", "drover"]), "dpkg -P drover");
    for path in ["/etc/drover", "/var/lib/drover"] {
        assert!(
            !Path::new(path).exists(),
            "{path} is still there after dpkg -P"
        );
    }
    assert!(
        !run("dpkg", &["-s", "drover"]).status.success(),
        "dpkg still knows drover after the purge"
    );
    drop(installed);
    eprintln!("package: whole test in {:?}", started.elapsed());
}

/// Purges the package when dropped, so a failed test leaves no drover in /usr.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if run("dpkg", &["-s", "drover"]).status.success() {
            let _ = run("dpkg", &["-P", "drover"]);
        }
    }
}

/// Fails, naming the missing tool and how to install it, unless `program args` runs.
fn require(program: &str, args: &[&str], install: &str) {
    let works = Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        works,
        "the package test needs `{program} {}`, which does not run here; install it: {install}",
        args.join(" ")
    );
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// `output` if its command succeeded; otherwise fails showing what it printed.
fn check(output: Output, what: &str) -> Output {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}
