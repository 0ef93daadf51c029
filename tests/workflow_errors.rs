//! A malformed workflow is refused before anything starts, with its file, line and reason,
//! and no run is created.

use crate::support::TestAgent;

#[test]
fn malformed_workflows_are_refused_with_their_line_and_create_no_run() {
    let agent = TestAgent::start();
    let cases: &[(&str, &str, &str)] = &[
        (
            "unknown-key.toml",
            "name = \"x\"\ncolour = \"red\"\n[[step]]\nname = \"a\"\nrun = \"true\"\n",
            ":2:",
        ),
        (
            "wrong-type.toml",
            "name = \"x\"\n[[step]]\nname = \"a\"\nrun = \"true\"\ncritical = \"yes\"\n",
            ":5:",
        ),
        (
            "duplicate.toml",
            "name = \"x\"\n[[step]]\nname = \"a\"\nrun = \"true\"\n[[step]]\nname = \"a\"\nrun = \"true\"\n",
            ":6:",
        ),
        (
            "empty-run.toml",
            "name = \"x\"\n[[step]]\nname = \"a\"\nrun = []\n",
            ":4:",
        ),
        (
            "bad-size.toml",
            "name = \"x\"\n[limits]\nmemory_max = \"lots\"\n[[step]]\nname = \"a\"\nrun = \"true\"\n",
            ":3:",
        ),
        (
            "syntax.toml",
            "name = \"x\"\n[[step]\nname = \"a\"\n",
            ":2:",
        ),
    ];
    for (file, text, line) in cases {
        let path = agent.workflow(file, text);
        let out = agent.drover(&["run", &path.to_string_lossy()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file} was accepted");
        assert!(out.stdout.is_empty(), "{file}: printed a run id");
        assert!(
            stderr.contains(&format!("{file}{line}")),
            "{file}: error does not name {line}: {stderr}"
        );
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{file}: error is not one line: {stderr}"
        );
    }
    let missing = agent.drover(&["run", "/nonexistent/flow.toml"]);
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("workflow file /nonexistent/flow.toml: no such file"),
        "{missing:?}"
    );

    let ps = agent.drover(&["ps", "--all", "--json"]);
    assert_eq!(
        String::from_utf8_lossy(&ps.stdout).trim(),
        "[]",
        "a refused workflow created a run"
    );
}
