//! The dashboard in a real browser: the agent serves the built front end at `/` (under the
//! listener's CSP), and `tests/web/overview.mjs` drives Debian's headless Chromium through
//! it with playwright-core — the token, the runs and their states, paging, a filter that
//! survives a reload, a failed run's page (why it failed, steps, log) — and saves
//! screenshots of the overview and a run page: in the test's temporary directory, or where
//! `DROVER_SCREENSHOTS` names (`DROVER_SCREENSHOTS=docs` refreshes the README's), so that a
//! test run leaves the work tree as it was. Missing Chromium, node modules or built assets fail the test,
//! saying how to install them.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{TestAgent, http_send, wait_for};

const CHROMIUM: &str = "/usr/bin/chromium";

/// What the browser test needs beyond the agent, each with how to get it.
fn check_prerequisites(root: &Path) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: `apt-get install chromium` (.ci/run does)"
    );
    assert!(
        root.join("tests/web/node_modules/playwright-core").is_dir(),
        "tests/web/node_modules/playwright-core is missing: `npm ci --prefix tests/web`"
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is missing: `apt-get install nodejs npm`"
    );
}

#[test]
fn the_dashboard_lists_pages_filters_and_opens_runs_in_a_real_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    check_prerequisites(root);
    let agent = TestAgent::start();
    let addr = agent.http_addr();

    // The page, its script and its style come from the binary, under the CSP.
    let index = http_send(addr, "GET", "/", &[], b"");
    assert!(
        index.status == 200 && index.body.contains(r#"<script type="module""#),
        "/ is not the dashboard (was drover built without web/dist? `npm ci --prefix web && \
         npm run build --prefix web`, then build drover again): {index:#?}"
    );
    assert!(
        index
            .header("content-security-policy")
            .is_some_and(|csp| csp.contains("script-src 'self'")),
        "{index:#?}"
    );
    let script = index
        .body
        .split('"')
        .find(|part| part.starts_with("/assets/") && part.ends_with(".js"))
        .expect("the page names its script");
    let js = http_send(addr, "GET", script, &[], b"");
    assert_eq!(js.status, 200, "{js:#?}");
    assert!(
        js.header("content-type")
            .is_some_and(|t| t.starts_with("text/javascript")),
        "{js:#?}"
    );
    assert_eq!(
        js.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(
        http_send(addr, "GET", "/assets/nothing.js", &[], b"").status,
        404
    );

    let out = agent.drover(&["token", "create", "dashboard", "--role", "viewer"]);
    assert!(out.status.success(), "token create: {out:?}");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let hello = agent.workflow(
        "hello.toml",
        "name = \"hello\"\n[[step]]\nname = \"greet\"\nrun = \"echo 'hello from drover'\"\n",
    );
    let build = agent.workflow(
        "build.toml",
        r#"name = "build-and-test"
[[step]]
name = "checkout"
run = "echo 'cloning example/widgets'; sleep 0.6; echo 'checked out 3f2c1e0 (main)'"
[[step]]
name = "build"
run = "for c in core cli web; do echo \"   Compiling widgets-$c v0.4.1\"; sleep 0.4; done; echo 'error[E0425]: cannot find value `widget` in this scope' >&2; echo '  --> src/lib.rs:42:5' >&2; exit 101"
[[step]]
name = "test"
run = "echo never"
"#,
    );
    let long = agent.workflow(
        "long.toml",
        "name = \"long-task\"\n[[step]]\nname = \"work\"\nrun = \"i=0; while true; do i=$((i+1)); echo \\\"tick $i\\\"; sleep 1; done\"\n",
    );
    let succeeded = agent.run(&hello);
    agent.wait_for_end(&succeeded, Duration::from_secs(30));
    let failed = agent.run(&build);
    agent.wait_for_end(&failed, Duration::from_secs(30));
    let running = agent.run(&long);
    wait_for(
        Duration::from_secs(30),
        || format!("run {running} never logged a tick"),
        || {
            let run = agent.show(&running);
            (run.steps[0].output.lines > 0).then_some(())
        },
    );

    let mut browser = Command::new("node")
        .arg(root.join("tests/web/overview.mjs"))
        .env("DASHBOARD_URL", format!("http://{addr}/"))
        .env("DROVER_TOKEN", &token)
        .env("FAILED_RUN", &failed)
        .env("SUCCEEDED_RUN", &succeeded)
        .env("RUNNING_RUN", &running)
        .env(
            "SCREENSHOTS",
            std::env::var_os("DROVER_SCREENSHOTS")
                .map_or_else(|| env!("CARGO_TARGET_TMPDIR").into(), |dir| root.join(dir)),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = browser.try_wait().expect("wait for node") {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(180) {
            let _ = browser.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = browser.wait_with_output().expect("node's output");
    assert!(
        status.is_some_and(|s| s.success()),
        "the browser test failed ({}):\n{}\n{}\nagent log:\n{}",
        status.map_or("timed out after 180 s".to_owned(), |s| s.to_string()),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        agent.agent_log()
    );
}
