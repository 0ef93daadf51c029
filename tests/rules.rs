//! `drover rules check [DIR]`: a client-side check, no agent needed.

use std::path::Path;
use std::process::{Command, Output};

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
