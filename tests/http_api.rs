//! The HTTP API (`/api/v1`) against the real agent: bearer tokens made with `drover token
//! create` admit their user with their role, or are refused with 401; a viewer's mutating
//! requests are refused with 403 and audited; an operator token of nobody starts a run that
//! runs as nobody, reads it, its logs, and kills it; malformed requests are problems that
//! change nothing; runs are paged newest first; the OpenAPI description lists every route;
//! every reply carries the security headers and a foreign Host is refused.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use drover::model::{ActionRecord, KillRecord, KillResult, RunState};

use crate::support::{
    HttpReply, SseClient, TEST_CONFIG, TestAgent, http, http_send, wait_for, wait_until,
};

const NOBODY: u32 = 65534;

/// nobody is an operator; root is admin.
fn agent() -> TestAgent {
    TestAgent::start_with_config(&format!(
        "{TEST_CONFIG}[auth.operator]\nusers = [\"{NOBODY}\"]\n"
    ))
}

/// `drover token create NAME ARGS…` as root; the secret.
fn token(agent: &TestAgent, name: &str, args: &[&str]) -> String {
    let mut all = vec!["token", "create", name];
    all.extend(args);
    let out = agent.drover(&all);
    assert!(
        out.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A request with `token` (if any) and a JSON body (if any).
fn call(
    agent: &TestAgent,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> HttpReply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    http_send(
        agent.http_addr(),
        method,
        path,
        &headers,
        body.unwrap_or("").as_bytes(),
    )
}

/// Asserts `reply` is a problem (RFC 9457) of `status` whose type ends in `kind`; returns
/// its detail.
fn problem(reply: &HttpReply, status: u16, kind: &str) -> String {
    assert_eq!(reply.status, status, "{reply:#?}");
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json"),
        "{reply:#?}"
    );
    let json = reply.json();
    assert!(
        json["type"].as_str().is_some_and(|t| t.ends_with(kind)),
        "type {} is not …{kind}: {reply:#?}",
        json["type"]
    );
    assert_eq!(json["status"], status, "{reply:#?}");
    assert!(json["title"].is_string(), "{reply:#?}");
    json["detail"].as_str().expect("a detail").to_owned()
}

fn ok(reply: &HttpReply, status: u16) -> serde_json::Value {
    assert_eq!(reply.status, status, "{reply:#?}");
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{reply:#?}"
    );
    reply.json()
}

/// A directory nobody may enter and read, holding workflow files nobody can read.
fn public_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir_in("/tmp").expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

fn public_workflow(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write workflow");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    path
}

fn start_body(workflow: &Path) -> String {
    serde_json::json!({"workflow_path": workflow, "params": {"who": "http"}}).to_string()
}

fn run_count(agent: &TestAgent, admin: &str) -> usize {
    let page = ok(&call(agent, Some(admin), "GET", "/api/v1/runs", None), 200);
    page["runs"].as_array().expect("runs").len()
}

fn busctl_json<T: serde::de::DeserializeOwned>(agent: &TestAgent, method: &str) -> T {
    let out = agent.busctl(false, method, &["s", ""]);
    assert!(out.status.success(), "{method}: {out:?}");
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("busctl json");
    serde_json::from_str(reply["data"][0].as_str().expect("a string")).expect("records")
}

#[test]
fn tokens_admit_their_user_with_their_role_and_everything_else_is_refused() {
    let agent = agent();
    let addr = agent.http_addr();
    let viewer = token(&agent, "watcher", &["--role", "viewer", "--for", "nobody"]);
    let operator = token(&agent, "ci", &["--role", "operator", "--for", "nobody"]);
    let admin = token(&agent, "root-admin", &["--role", "admin"]);

    // whoami: the token's user, its role capped by the user's, the token's name.
    let me = ok(
        &call(&agent, Some(&operator), "GET", "/api/v1/whoami", None),
        200,
    );
    assert_eq!(me["uid"], NOBODY);
    assert_eq!(me["user"], "nobody");
    assert_eq!(me["role"], "operator");
    assert_eq!(me["token"], "ci");
    assert_eq!(me["channel"], "http");
    assert_eq!(me["caller"], "uid 65534 (nobody) via http (token ci)");
    let capped = token(&agent, "too-high", &["--role", "admin", "--for", "nobody"]);
    let me = ok(
        &call(&agent, Some(&capped), "GET", "/api/v1/whoami", None),
        200,
    );
    assert_eq!(me["role"], "operator", "nobody's own role caps the token's");

    // Tokens over HTTP: nobody's operator token makes nobody a viewer token, not one above
    // its role nor anyone else's; it lists and revokes nobody's own only.
    let made = ok(
        &call(
            &agent,
            Some(&operator),
            "POST",
            "/api/v1/tokens",
            Some(r#"{"name": "made-over-http", "role": "viewer", "expires": "1h"}"#),
        ),
        201,
    );
    assert_eq!(
        made["record"]["created_by"],
        "uid 65534 (nobody) via http (token ci)"
    );
    let secret = made["token"].as_str().expect("the secret").to_owned();
    let me = ok(
        &call(&agent, Some(&secret), "GET", "/api/v1/whoami", None),
        200,
    );
    assert_eq!(
        (me["role"].as_str(), me["token"].as_str()),
        (Some("viewer"), Some("made-over-http"))
    );
    for body in [
        r#"{"name": "up", "role": "admin"}"#,
        r#"{"name": "theirs", "role": "viewer", "user": "root"}"#,
    ] {
        problem(
            &call(
                &agent,
                Some(&operator),
                "POST",
                "/api/v1/tokens",
                Some(body),
            ),
            403,
            "PermissionDenied",
        );
    }
    let listed = ok(
        &call(&agent, Some(&operator), "GET", "/api/v1/tokens", None),
        200,
    );
    let mut names: Vec<&str> = listed
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    names.sort();
    assert_eq!(names, ["ci", "made-over-http", "too-high", "watcher"]);
    problem(
        &call(
            &agent,
            Some(&operator),
            "DELETE",
            "/api/v1/tokens/root-admin",
            None,
        ),
        403,
        "PermissionDenied",
    );
    let revoked = ok(
        &call(
            &agent,
            Some(&operator),
            "DELETE",
            "/api/v1/tokens/made-over-http",
            None,
        ),
        200,
    );
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    problem(
        &call(&agent, Some(&secret), "GET", "/api/v1/whoami", None),
        401,
        "Unauthenticated",
    );

    // 401 without a token, with a malformed or unknown one, each saying how to authenticate.
    let unknown = format!("drover_{}", "0".repeat(64));
    for (header, what) in [
        (None, "no header"),
        (Some("Basic dXNlcjpwYXNz".to_owned()), "another scheme"),
        (Some("Bearer".to_owned()), "no token"),
        (Some("Bearer not-a-token".to_owned()), "malformed"),
        (Some(format!("Bearer {unknown}")), "unknown"),
        (Some(format!("Bearer {}", "x".repeat(300))), "oversized"),
    ] {
        let headers: Vec<(&str, &str)> = header
            .as_deref()
            .map(|h| vec![("Authorization", h)])
            .unwrap_or_default();
        let reply = http_send(addr, "GET", "/api/v1/runs", &headers, b"");
        problem(&reply, 401, "Unauthenticated");
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer realm=\"drover\""),
            "{what}: {reply:#?}"
        );
    }

    // A revoked token is refused from then on.
    let revoked = token(&agent, "gone", &["--role", "viewer", "--for", "nobody"]);
    ok(
        &call(&agent, Some(&revoked), "GET", "/api/v1/runs", None),
        200,
    );
    let out = agent.drover(&["token", "revoke", "gone"]);
    assert!(out.status.success(), "{out:?}");
    let detail = problem(
        &call(&agent, Some(&revoked), "GET", "/api/v1/runs", None),
        401,
        "Unauthenticated",
    );
    assert!(detail.contains("revoked"), "{detail}");

    // An expired one too, once its time is up.
    let brief = token(
        &agent,
        "brief",
        &["--role", "viewer", "--for", "nobody", "--expires", "1s"],
    );
    wait_until(Duration::from_secs(10), "the token to expire", || {
        call(&agent, Some(&brief), "GET", "/api/v1/whoami", None).status == 401
    });
    let detail = problem(
        &call(&agent, Some(&brief), "GET", "/api/v1/whoami", None),
        401,
        "Unauthenticated",
    );
    assert!(detail.contains("expired"), "{detail}");

    // A viewer reads but may not start or kill; both refusals are audited with the token.
    let dir = public_dir();
    let sleeper = public_workflow(
        dir.path(),
        "sleeper.toml",
        "name = \"sleeper\"\n[[step]]\nname = \"s\"\nrun = \"sleep 300\"\n",
    );
    let id = agent.run(&sleeper);
    ok(
        &call(
            &agent,
            Some(&viewer),
            "GET",
            &format!("/api/v1/runs/{id}"),
            None,
        ),
        200,
    );
    let detail = problem(
        &call(
            &agent,
            Some(&viewer),
            "POST",
            "/api/v1/runs",
            Some(&start_body(&sleeper)),
        ),
        403,
        "PermissionDenied",
    );
    assert!(detail.contains("needs the operator role"), "{detail}");
    problem(
        &call(
            &agent,
            Some(&viewer),
            "POST",
            &format!("/api/v1/runs/{id}/kill"),
            Some(r#"{"reason": "viewer tries"}"#),
        ),
        403,
        "PermissionDenied",
    );
    assert_eq!(
        agent.show(&id).state,
        RunState::Running,
        "the refused kill changed nothing"
    );
    let kills: Vec<KillRecord> = busctl_json(&agent, "Audit");
    assert!(
        kills.iter().any(|k| k.result == KillResult::Refused
            && k.run == id
            && k.requested_by == "uid 65534 (nobody) via http (token watcher)"
            && k.channel == "http"),
        "{kills:#?}"
    );
    let actions: Vec<ActionRecord> = busctl_json(&agent, "Actions");
    assert!(
        actions.iter().any(|a| a.action == "run"
            && a.result == "refused"
            && a.requested_by == "uid 65534 (nobody) via http (token watcher)"),
        "{actions:#?}"
    );
    assert_eq!(
        run_count(&agent, &admin),
        1,
        "the refused start made no run"
    );

    // Every reply carries the security headers; API replies are not cached; no CORS.
    for path in [
        "/api/v1/whoami",
        "/api/v1/runs/nosuchrun",
        "/metrics",
        "/healthz",
        "/nothing",
    ] {
        let reply = call(&agent, Some(&admin), "GET", path, None);
        for (name, value) in [
            (
                "content-security-policy",
                "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
        ] {
            assert_eq!(reply.header(name), Some(value), "{path}: {reply:#?}");
        }
        assert_eq!(
            reply.header("cache-control").is_some(),
            path.starts_with("/api/"),
            "{path}: {reply:#?}"
        );
        assert!(
            reply
                .headers
                .iter()
                .all(|(n, _)| !n.starts_with("access-control-")),
            "{path}: {reply:#?}"
        );
    }
    let api = call(&agent, Some(&admin), "GET", "/api/v1/whoami", None);
    assert_eq!(api.header("cache-control"), Some("no-store"));

    // A foreign Host (DNS rebinding) reaches nothing, with or without a token; the names
    // of this listener do.
    let auth = format!("Bearer {admin}");
    for path in ["/api/v1/whoami", "/metrics", "/healthz"] {
        for host in [
            "evil.example",
            "evil.example:80",
            &format!("localhost.evil.example:{}", addr.port()),
        ] {
            let reply = http_send(
                addr,
                "GET",
                path,
                &[("Host", host), ("Authorization", &auth)],
                b"",
            );
            let detail = problem(&reply, 421, "about:blank");
            assert!(detail.contains("allowed_hosts"), "{detail}");
        }
    }
    for host in [
        format!("localhost:{}", addr.port()),
        "127.0.0.1".to_owned(),
        format!("[::1]:{}", addr.port()),
    ] {
        let reply = http_send(
            addr,
            "GET",
            "/api/v1/whoami",
            &[("Host", &host), ("Authorization", &auth)],
            b"",
        );
        assert_eq!(reply.status, 200, "{host}: {reply:#?}");
    }
    // /metrics and /healthz are as they were: no token needed.
    let (status, body) = http(addr, "GET", "/healthz");
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(addr, "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("drover_runs{state=\"running\"} 1\n"),
        "{body}"
    );
}

#[test]
fn an_operator_token_of_nobody_starts_reads_and_kills_a_run_that_runs_as_nobody() {
    let agent = agent();
    let operator = token(&agent, "ci", &["--role", "operator", "--for", "nobody"]);
    let dir = public_dir();
    let workflow = public_workflow(
        dir.path(),
        "whoami.toml",
        "name = \"whoami\"\n[[step]]\nname = \"id\"\nrun = \"echo uid=$(id -u) param=$DROVER_PARAM_WHO; sleep 300\"\n",
    );

    let reply = call(
        &agent,
        Some(&operator),
        "POST",
        "/api/v1/runs",
        Some(&start_body(&workflow)),
    );
    let started = ok(&reply, 201);
    let id = started["id"].as_str().expect("the run id").to_owned();
    assert_eq!(
        reply.header("location"),
        Some(format!("/api/v1/runs/{id}").as_str())
    );

    // Its log, read through the API, says it runs as nobody.
    let logs = format!("/api/v1/runs/{id}/logs?step=id");
    let (meta, text) = wait_for(
        Duration::from_secs(30),
        || format!("no uid in the log of {id}:\n{}", agent.agent_log()),
        || {
            let reply = call(&agent, Some(&operator), "GET", &logs, None);
            if reply.status != 200 {
                return None;
            }
            let json = ok(&reply, 200);
            let data = base64::engine::general_purpose::STANDARD
                .decode(json["data"].as_str().expect("data"))
                .expect("base64");
            let text = String::from_utf8(data).expect("utf-8");
            text.contains('\n').then(|| (json["meta"].clone(), text))
        },
    );
    assert_eq!(text, format!("uid={NOBODY} param=http\n"));
    assert_eq!(meta["run"], id.as_str());
    assert_eq!(meta["step"], "id");
    assert_eq!(meta["attempt"], 1);
    assert_eq!(meta["next_offset"], text.len());
    assert_eq!(meta["more"], true, "{meta}");
    // A range past what was read is empty, and says where it stands.
    let rest = ok(
        &call(
            &agent,
            Some(&operator),
            "GET",
            &format!("{logs}&attempt=1&offset={}&max=10", text.len()),
            None,
        ),
        200,
    );
    assert_eq!(rest["data"], "");
    problem(
        &call(
            &agent,
            Some(&operator),
            "GET",
            &format!("/api/v1/runs/{id}/logs?step=nosuchstep"),
            None,
        ),
        400,
        "InvalidArgument",
    );
    problem(
        &call(
            &agent,
            Some(&operator),
            "GET",
            &format!("/api/v1/runs/{id}/logs"),
            None,
        ),
        400,
        "InvalidArgument",
    );

    // Listed and read: recorded as nobody's, asked for by the token.
    let page = ok(
        &call(
            &agent,
            Some(&operator),
            "GET",
            "/api/v1/runs?state=running",
            None,
        ),
        200,
    );
    let runs = page["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{page}");
    assert_eq!(runs[0]["id"], id.as_str());
    assert!(page["next_cursor"].is_null(), "{page}");
    let run = ok(
        &call(
            &agent,
            Some(&operator),
            "GET",
            &format!("/api/v1/runs/{id}"),
            None,
        ),
        200,
    );
    assert_eq!(run["user"]["uid"], NOBODY);
    assert_eq!(
        run["requested_by"],
        "uid 65534 (nobody) via http (token ci)"
    );
    assert_eq!(run["params"]["who"], "http");
    assert_eq!(run["steps"][0]["state"], "running");

    // Killed through the API: the record names the token.
    let reply = call(
        &agent,
        Some(&operator),
        "POST",
        &format!("/api/v1/runs/{id}/kill"),
        Some(r#"{"reason": "done with it", "grace": "2s"}"#),
    );
    let record: KillRecord = serde_json::from_value(ok(&reply, 200)).expect("a kill record");
    assert_eq!(record.result, KillResult::Killed, "{record:#?}");
    assert_eq!(
        record.requested_by,
        "uid 65534 (nobody) via http (token ci)"
    );
    assert_eq!(
        (record.uid, record.channel.as_str()),
        (Some(NOBODY), "http")
    );
    assert_eq!(record.role.as_deref(), Some("operator"));
    assert_eq!(record.reason, "done with it");
    assert_eq!(record.grace_ms, Some(2000));
    assert_eq!(agent.show(&id).state, RunState::Killed);
    // Killing it again: the run has ended.
    problem(
        &call(
            &agent,
            Some(&operator),
            "POST",
            &format!("/api/v1/runs/{id}/kill"),
            Some("{}"),
        ),
        409,
        "InvalidState",
    );

    // A protected workflow is killed only with `confirm`.
    let protected = public_workflow(
        dir.path(),
        "prod.toml",
        "name = \"prod\"\nprotected = true\n[[step]]\nname = \"s\"\nrun = \"sleep 300\"\n",
    );
    let prod = ok(
        &call(
            &agent,
            Some(&operator),
            "POST",
            "/api/v1/runs",
            Some(&start_body(&protected)),
        ),
        201,
    )["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let kill = format!("/api/v1/runs/{prod}/kill");
    let detail = problem(
        &call(
            &agent,
            Some(&operator),
            "POST",
            &kill,
            Some(r#"{"reason": "oops"}"#),
        ),
        409,
        "ConfirmationRequired",
    );
    assert!(detail.contains("protected"), "{detail}");
    assert!(!agent.show(&prod).state.is_terminal());
    let record: KillRecord = serde_json::from_value(ok(
        &call(
            &agent,
            Some(&operator),
            "POST",
            &kill,
            Some(r#"{"reason": "sure", "confirm": true}"#),
        ),
        200,
    ))
    .expect("a kill record");
    assert_eq!(record.result, KillResult::Killed, "{record:#?}");
}

#[test]
fn malformed_requests_are_problems_that_change_nothing() {
    let agent = agent();
    let admin = token(&agent, "root-admin", &["--role", "admin"]);
    let addr = agent.http_addr();
    let auth = format!("Bearer {admin}");
    let dir = public_dir();
    let workflow = public_workflow(
        dir.path(),
        "w.toml",
        "name = \"w\"\n[[step]]\nname = \"s\"\nrun = \"sleep 300\"\n",
    );
    let id = agent.run(&workflow);

    let detail = problem(
        &call(&agent, Some(&admin), "GET", "/api/v1/runs/nosuchrun", None),
        404,
        "NoSuchRun",
    );
    assert!(detail.contains("nosuchrun"), "{detail}");
    problem(
        &call(
            &agent,
            Some(&admin),
            "POST",
            "/api/v1/runs/nosuchrun/kill",
            Some("{}"),
        ),
        404,
        "NoSuchRun",
    );
    problem(
        &call(
            &agent,
            Some(&admin),
            "GET",
            "/api/v1/runs/nosuchrun/logs?step=s",
            None,
        ),
        404,
        "NoSuchRun",
    );
    problem(
        &call(&agent, Some(&admin), "GET", "/api/v1/nothing", None),
        404,
        "about:blank",
    );
    let wrong = call(&agent, Some(&admin), "PUT", "/api/v1/runs", Some("{}"));
    problem(&wrong, 405, "about:blank");
    assert_eq!(wrong.header("allow"), Some("GET,HEAD,POST"), "{wrong:#?}");

    let start = "/api/v1/runs";
    let kill = format!("/api/v1/runs/{id}/kill");
    let good = start_body(&workflow);
    let json = ("Content-Type", "application/json");
    for (path, headers, body, status, kind) in [
        (
            start,
            vec![json],
            "{\"workflow_path\": ".to_owned(),
            400,
            "InvalidArgument",
        ),
        (
            start,
            vec![json],
            "[1, 2]".to_owned(),
            422,
            "InvalidArgument",
        ),
        (start, vec![json], "{}".to_owned(), 422, "InvalidArgument"),
        (
            start,
            vec![json],
            good.replace("\"params\"", "\"user\": \"root\", \"params\""),
            422,
            "InvalidArgument",
        ),
        (
            start,
            vec![("Content-Type", "text/plain")],
            good.clone(),
            415,
            "about:blank",
        ),
        (start, vec![], good.clone(), 415, "about:blank"),
        (
            start,
            vec![json],
            format!("{{\"workflow_path\": \"{}\"}}", "x".repeat(1 << 20)),
            413,
            "about:blank",
        ),
        (
            start,
            vec![json],
            r#"{"workflow_path": "relative.toml"}"#.to_owned(),
            400,
            "InvalidArgument",
        ),
        (
            start,
            vec![json],
            r#"{"workflow_path": "/no/such/file.toml"}"#.to_owned(),
            400,
            "InvalidArgument",
        ),
        (
            kill.as_str(),
            vec![json],
            r#"{"reason": "x", "force": true}"#.to_owned(),
            422,
            "InvalidArgument",
        ),
        (
            kill.as_str(),
            vec![json],
            r#"{"grace": "soon"}"#.to_owned(),
            400,
            "InvalidArgument",
        ),
        (
            kill.as_str(),
            vec![json],
            r#"{"confirm": "yes"}"#.to_owned(),
            422,
            "InvalidArgument",
        ),
        (
            kill.as_str(),
            vec![json],
            format!(r#"{{"reason": "{}"}}"#, "r".repeat(2000)),
            400,
            "InvalidArgument",
        ),
        (kill.as_str(), vec![], "{}".to_owned(), 415, "about:blank"),
    ] {
        let mut headers = headers;
        headers.push(("Authorization", &auth));
        let reply = http_send(addr, "POST", path, &headers, body.as_bytes());
        problem(&reply, status, kind);
    }
    // Bad queries of the list.
    for query in [
        "state=sleeping",
        "limit=0",
        "limit=501",
        "limit=x",
        "cursor=nonsense",
        "sort=asc",
    ] {
        problem(
            &call(
                &agent,
                Some(&admin),
                "GET",
                &format!("/api/v1/runs?{query}"),
                None,
            ),
            400,
            "InvalidArgument",
        );
    }
    problem(
        &call(
            &agent,
            Some(&admin),
            "GET",
            &format!("/api/v1/runs/{id}/logs?step=s&max=99999999"),
            None,
        ),
        400,
        "InvalidArgument",
    );

    // Nothing changed: one run, still running, no kill but the refused one audited.
    assert_eq!(run_count(&agent, &admin), 1);
    let run = agent.show(&id);
    assert_eq!(run.state, RunState::Running);
    let kills: Vec<KillRecord> = busctl_json(&agent, "Audit");
    assert!(
        kills.iter().all(|k| k.result == KillResult::Refused),
        "{kills:#?}"
    );
}

#[test]
fn runs_are_paged_newest_first_with_cursors_and_filtered_by_state_and_workflow() {
    let agent = agent();
    let viewer = token(&agent, "watcher", &["--role", "viewer", "--for", "nobody"]);
    let quick = agent.workflow(
        "quick.toml",
        "name = \"quick\"\n[[step]]\nname = \"s\"\nrun = \"true\"\n",
    );
    let slow = agent.workflow(
        "slow.toml",
        "name = \"slow\"\n[[step]]\nname = \"s\"\nrun = \"sleep 300\"\n",
    );
    let mut made = Vec::new();
    for n in 0..7 {
        made.push(agent.run(if n % 3 == 0 { &slow } else { &quick }));
    }
    for (n, id) in made.iter().enumerate() {
        let settled = if n % 3 == 0 {
            RunState::Running
        } else {
            RunState::Succeeded
        };
        wait_until(Duration::from_secs(30), "the run to settle", || {
            agent.show(id).state == settled
        });
    }

    let mut seen: Vec<serde_json::Value> = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/runs?limit=3&cursor={c}"),
            None => "/api/v1/runs?limit=3".to_owned(),
        };
        let page = ok(&call(&agent, Some(&viewer), "GET", &path, None), 200);
        let runs = page["runs"].as_array().expect("runs").clone();
        sizes.push(runs.len());
        seen.extend(runs);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(sizes, [3, 3, 1]);
    let ids: Vec<&str> = seen.iter().map(|r| r["id"].as_str().expect("id")).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 7, "no run twice: {ids:?}");
    let keys: Vec<(String, String)> = seen
        .iter()
        .map(|r| {
            (
                r["created_at"].as_str().expect("created_at").to_owned(),
                r["id"].as_str().expect("id").to_owned(),
            )
        })
        .collect();
    let mut newest_first = keys.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(keys, newest_first, "newest first, by creation time then id");
    assert_eq!(ids[6], made[0], "the first run made is last");

    // Filters, in SQL: the slow runs are running, the quick ones succeeded.
    let states = |query: &str| -> Vec<String> {
        let page = ok(
            &call(
                &agent,
                Some(&viewer),
                "GET",
                &format!("/api/v1/runs?{query}"),
                None,
            ),
            200,
        );
        page["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .map(|r| r["id"].as_str().expect("id").to_owned())
            .collect()
    };
    let slow_ids: Vec<String> = made.iter().step_by(3).rev().cloned().collect();
    assert_eq!(states("state=running"), slow_ids);
    assert_eq!(states("workflow=slow"), slow_ids);
    assert_eq!(states("state=succeeded&workflow=quick").len(), 4);
    assert_eq!(states("state=running,succeeded").len(), 7);
    assert_eq!(states("state=running&state=failed"), slow_ids);
    assert_eq!(states("state=failed").len(), 0);
    assert_eq!(states("workflow=slow&state=succeeded").len(), 0);
}

#[test]
fn the_openapi_description_lists_every_route_the_router_serves() {
    let agent = agent();
    let admin = token(&agent, "root-admin", &["--role", "admin"]);
    // No token needed for the description: it holds no data.
    let reply = http(agent.http_addr(), "GET", "/api/v1/openapi.json");
    assert_eq!(reply.0, 200, "{}", reply.1);
    let doc: serde_json::Value = serde_json::from_str(&reply.1).expect("valid JSON");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    let described: Vec<String> = paths.keys().cloned().collect();
    for path in [
        "/api/v1/openapi.json",
        "/api/v1/whoami",
        "/api/v1/runs",
        "/api/v1/runs/{id}",
        "/api/v1/runs/{id}/kill",
        "/api/v1/runs/{id}/logs",
        "/api/v1/tokens",
        "/api/v1/tokens/{name}",
        "/api/v1/events",
    ] {
        assert!(
            described.iter().any(|p| p == path),
            "{path} not in {described:?}"
        );
    }
    // Each described path answers each described method (not with the router's own
    // 404 or 405), and refuses every other method with 405: the router and the
    // description agree.
    for (path, item) in paths {
        let concrete = path
            .replace("{id}", "nosuchrun")
            .replace("{name}", "nosuchtoken");
        let methods: Vec<String> = item
            .as_object()
            .expect("item")
            .keys()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if path == "/api/v1/events" && method == "GET" {
                // A stream that does not end: its head is what tells.
                let auth = format!("Bearer {admin}");
                let stream =
                    SseClient::connect(agent.http_addr(), path, &[("Authorization", &auth)]);
                assert_eq!(stream.status, 200, "{}", stream.head);
                assert!(item["get"]["security"].is_array(), "{path}");
                let anonymous = SseClient::connect(agent.http_addr(), path, &[]);
                assert_eq!(anonymous.status, 401, "{}", anonymous.head);
                continue;
            }
            let body = (method != "GET" && method != "DELETE").then_some("{}");
            let reply = call(&agent, Some(&admin), method, &concrete, body);
            let router_refused = reply.header("content-type") == Some("application/problem+json")
                && reply.json()["type"] == "about:blank"
                && matches!(reply.status, 404 | 405);
            if methods.iter().any(|m| m == method) {
                assert!(
                    !router_refused,
                    "{method} {path} is described but not served: {reply:#?}"
                );
                // Everything but the description itself needs a token.
                if path != "/api/v1/openapi.json" {
                    let anonymous = http_send(agent.http_addr(), method, &concrete, &[], b"");
                    assert_eq!(anonymous.status, 401, "{method} {path}: {anonymous:#?}");
                    assert!(
                        item[method.to_ascii_lowercase()]["security"].is_array(),
                        "{method} {path} does not say it needs a token"
                    );
                }
            } else {
                assert_eq!(
                    reply.status, 405,
                    "{method} {path} is served but not described: {reply:#?}"
                );
            }
        }
    }
    for schema in [
        "Run",
        "RunPage",
        "KillRecord",
        "LogMeta",
        "LogReply",
        "Problem",
        "Identity",
        "Token",
        "RunTransition",
        "StepChange",
        "LogLines",
        "MetricsTick",
        "AlertChange",
        "StreamNotice",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "no schema {schema}"
        );
    }
}
