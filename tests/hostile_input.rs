//! Hostile input (issue 12, sections 3 and 4): a viewer or an operator (uid 65534) sends
//! durations, strings, counts and workflow files meant to crash, stall or fill the agent.
//! After each call: a clear error, the agent still answers, and nothing was created.

use std::path::Path;
use std::time::Duration;

use drover::model::{ActionRecord, KillRecord, LogMeta};

use crate::api::reply_string;
use crate::support::{TEST_CONFIG, TestAgent, wait_until};

/// uid 65534 may start, kill and silence runs.
fn operator_config() -> String {
    format!("{TEST_CONFIG}[auth.operator]\nusers = [\"65534\"]\n")
}

/// The busctl call must have failed with an error whose text holds every one of `needles`.
fn refused_with(out: &std::process::Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the call succeeded: {:.300}",
        String::from_utf8_lossy(&out.stdout)
    );
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
    }
}

/// The agent still owns its name and answers: `List` as root returns the runs (JSON).
fn answers(agent: &TestAgent) -> Vec<serde_json::Value> {
    let out = agent.busctl(false, "List", &[]);
    assert!(
        out.status.success(),
        "the agent no longer answers List: {}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.agent_log()
    );
    serde_json::from_str(&reply_string(&out)).expect("List is a JSON array")
}

/// The state DB's size on disk, WAL included.
fn db_bytes(agent: &TestAgent) -> u64 {
    ["state.db", "state.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(agent.state_dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

fn actions(agent: &TestAgent) -> Vec<ActionRecord> {
    serde_json::from_str(&reply_string(&agent.busctl(false, "Actions", &["s", ""]))).unwrap()
}

fn kills(agent: &TestAgent) -> Vec<KillRecord> {
    serde_json::from_str(&reply_string(&agent.busctl(false, "Audit", &["s", ""]))).unwrap()
}

/// A run that stays running until killed.
fn long_run(agent: &TestAgent) -> String {
    let wf = agent.workflow(
        "long.toml",
        "name = \"long\"\n[[step]]\nname = \"wait\"\nrun = \"sleep 300\"\n",
    );
    let id = agent.run(&wf);
    wait_until(Duration::from_secs(20), "the run to be running", || {
        agent.show(&id).state == drover::model::RunState::Running
    });
    id
}

#[test]
fn history_windows_beyond_a_year_are_refused_and_the_agent_stays_on_the_bus() {
    let agent = TestAgent::start();
    // u64::MAX seconds aborted the agent (a 16 TB allocation); 1000 years made a reply
    // larger than the bus carries, and the bus dropped the agent's name.
    let out = agent.busctl(true, "History", &["ss", "", "18446744073709551615s"]);
    refused_with(&out, &["longer than the maximum of 100 years"]);
    answers(&agent);
    let out = agent.busctl(true, "History", &["ss", "", "1000y"]);
    refused_with(&out, &["longer than the maximum of 100 years"]);
    answers(&agent);
    let out = agent.busctl(true, "History", &["ss", "", "400d"]);
    refused_with(&out, &["history window", "366 days"]);
    answers(&agent);
    // A year is fine: one record a day.
    let out = agent.busctl(true, "History", &["ss", "", "366d"]);
    let history: serde_json::Value = serde_json::from_str(&reply_string(&out)).unwrap();
    assert_eq!(history["days"].as_array().map(Vec::len), Some(367));
    let cli = agent.drover(&["history", "--since", "400d"]);
    assert!(!cli.status.success());
    assert!(String::from_utf8_lossy(&cli.stderr).contains("366 days"));
}

#[test]
fn kill_and_silence_durations_beyond_bounds_are_refused_and_change_nothing() {
    let agent = TestAgent::start_with_config(&operator_config());
    let id = long_run(&agent);
    // Overflowed in the engine (the caller hung, the run went on).
    for grace in [
        ["grace", "s", "18446744073709551615s"],
        ["grace", "t", "18446744073709551615"],
    ] {
        let mut args = vec!["ssa{sv}", &id, "hostile", "1"];
        args.extend(grace);
        let out = agent.busctl(true, "Kill", &args);
        refused_with(&out, &["maximum of 100 years"]);
    }
    assert_eq!(
        agent.show(&id).state,
        drover::model::RunState::Running,
        "a refused kill moved the run"
    );
    // Panicked formatting the silence's end.
    let out = agent.busctl(true, "Silence", &["sss", &id, "10000000years", "x"]);
    refused_with(&out, &["maximum of 100 years"]);
    let silences = reply_string(&agent.busctl(true, "Silences", &["b", "true"]));
    assert_eq!(silences, "[]");
    assert_eq!(answers(&agent).len(), 1);
    // The bound itself is accepted.
    let out = agent.busctl(true, "Silence", &["sss", &id, "36500d", "a century"]);
    reply_string(&out);
    let killed = agent.drover(&["kill", &id, "--reason", "done"]);
    assert!(killed.status.success());
}

#[test]
fn over_long_strings_are_refused_and_their_refusals_stored_cut_short() {
    let agent = TestAgent::start_with_config(&operator_config());
    let id = long_run(&agent);
    // 11 calls of 10 MB grew the DB by 270 MB; busctl passes at most 128 KiB an argument,
    // so 11 of 120 kB here (1.3 MB stored today).
    let huge = "r".repeat(120_000);
    let before = db_bytes(&agent);
    for _ in 0..11 {
        // As an operator: refused for its length, naming the field and the limit.
        let out = agent.busctl(true, "Kill", &["ssa{sv}", &id, &huge, "0"]);
        refused_with(&out, &["the reason is 120000 bytes long", "at most 1024"]);
    }
    for (method, signature, args) in [
        ("EnterCritical", "ss", vec![id.as_str(), huge.as_str()]),
        ("Checkpoint", "ss", vec![id.as_str(), huge.as_str()]),
        ("Silence", "sss", vec![huge.as_str(), "1h", "x"]),
        ("Silence", "sss", vec![id.as_str(), "1h", huge.as_str()]),
        ("Kill", "ssa{sv}", vec![huge.as_str(), "x", "0"]),
    ] {
        let mut call = vec![signature];
        call.extend(args);
        let out = agent.busctl(true, method, &call);
        refused_with(&out, &["bytes long", "at most"]);
    }
    // Reading calls too: an over-long id is refused by its length, not echoed back.
    for method in ["Get", "Checkpoints", "Metrics"] {
        let out = agent.busctl(true, method, &["s", &huge]);
        refused_with(&out, &["the run id is 120000 bytes long", "at most 64"]);
        assert!(
            out.stderr.len() < 1000,
            "{method}: {} bytes",
            out.stderr.len()
        );
    }
    assert_eq!(agent.show(&id).state, drover::model::RunState::Running);
    let grown = db_bytes(&agent).saturating_sub(before);
    // Sixteen small records, a few WAL pages each.
    assert!(
        grown < 600_000,
        "the state DB grew by {grown} bytes for 16 refused calls"
    );
    let kills = kills(&agent);
    assert_eq!(
        kills.len(),
        12,
        "11 refused kills and the one by run id: {kills:#?}"
    );
    for refused in &kills {
        assert!(refused.reason.len() < 200, "{}", refused.reason.len());
        assert!(refused.run.len() < 200);
    }
    assert!(
        kills[0].reason.ends_with("(120000 bytes in all)"),
        "{}",
        kills[0].reason
    );
    let actions = actions(&agent);
    assert_eq!(actions.len(), 4, "{actions:#?}");
    assert!(
        actions
            .iter()
            .all(|a| a.result == "refused" && a.detail.len() < 400)
    );
    drop(agent.drover(&["kill", &id]));
}

#[test]
fn one_callers_refusals_are_stored_at_a_bounded_rate_and_the_rest_counted() {
    let agent = TestAgent::start();
    let refuse = || {
        let out = agent.busctl(true, "Kill", &["ssa{sv}", "norun", "loop", "0"]);
        refused_with(&out, &["needs the operator role"]);
    };
    for _ in 0..60 {
        refuse();
    }
    let stored = kills(&agent).len();
    assert!(
        (20..=22).contains(&stored),
        "{stored} of 60 refusals in a row were stored"
    );
    assert!(
        agent
            .agent_log()
            .contains("refusals from uid 65534 (nobody) via dbus come faster than 20"),
        "{}",
        agent.agent_log()
    );
    // The next one stored once the rate allows says how many were not.
    wait_until(
        Duration::from_secs(30),
        "a refusal to be stored again",
        || {
            refuse();
            kills(&agent).len() > stored
        },
    );
    let last = kills(&agent).pop().unwrap();
    let error = last.error.unwrap_or_default();
    assert!(
        error.contains("earlier refusals from this caller were not stored"),
        "{error}"
    );
    assert!(
        agent
            .agent_log()
            .contains("refusals from uid 65534 (nobody) via dbus not stored")
    );
    answers(&agent);
}

#[test]
fn refused_run_critical_and_alert_calls_are_audited_like_kills() {
    let agent = TestAgent::start();
    let wf = agent.workflow(
        "hello.toml",
        "name = \"hello\"\n[[step]]\nname = \"hi\"\nrun = \"true\"\n",
    );
    let path = wf.to_string_lossy().into_owned();
    for (method, signature, args) in [
        ("Run", "sa{ss}", vec![path.as_str(), "0"]),
        ("EnterCritical", "ss", vec!["somerun", "deploy"]),
        ("LeaveCritical", "ss", vec!["somerun", "deploy"]),
        ("RaiseAlert", "ssss", vec!["myrule", "", "warning", "hi"]),
        ("ResolveAlert", "s", vec!["myrule/"]),
    ] {
        let mut call = vec![signature];
        call.extend(args);
        let out = agent.busctl(true, method, &call);
        refused_with(&out, &["needs the"]);
    }
    assert!(answers(&agent).is_empty(), "a refused Run created a run");
    let trail: Vec<(String, String, String, Option<u32>)> = actions(&agent)
        .into_iter()
        .map(|a| (a.action, a.run, a.result, a.uid))
        .collect();
    let expected = |action: &str, run: &str| {
        (
            action.to_owned(),
            run.to_owned(),
            "refused".to_owned(),
            Some(65534),
        )
    };
    assert_eq!(
        trail,
        [
            expected("run", ""),
            expected("enter-critical", "somerun"),
            expected("leave-critical", "somerun"),
            expected("raise-alert", ""),
            expected("resolve-alert", ""),
        ]
    );
    let detail = &actions(&agent)[0].detail;
    assert!(detail.contains(&path), "the refused run's file: {detail}");
}

/// `Run` of `wf` with `params` (name, value pairs) as root.
fn run_with_params(
    agent: &TestAgent,
    wf: &Path,
    params: &[(String, String)],
) -> std::process::Output {
    let count = params.len().to_string();
    let path = wf.to_string_lossy();
    let mut args: Vec<&str> = vec!["sa{ss}", &path, &count];
    for (k, v) in params {
        args.push(k);
        args.push(v);
    }
    agent.busctl(false, "Run", &args)
}

#[test]
fn parameters_beyond_bounds_or_colliding_are_refused_before_a_run_is_created() {
    let agent = TestAgent::start();
    let wf = agent.workflow(
        "params.toml",
        "name = \"params\"\n[[step]]\nname = \"show\"\nrun = \"env\"\n",
    );
    let pairs = |n: usize, len: usize| -> Vec<(String, String)> {
        (0..n).map(|i| (format!("p{i}"), "v".repeat(len))).collect()
    };
    // Silently one variable, DROVER_PARAM_P, before.
    let out = run_with_params(
        &agent,
        &wf,
        &[("p".into(), "1".into()), ("P".into(), "2".into())],
    );
    refused_with(&out, &["\"P\" and \"p\"", "$DROVER_PARAM_P"]);
    // Created, then failed "Argument list too long", before (10,000 of 1 KiB there; busctl's
    // own argument list holds fewer).
    let out = run_with_params(&agent, &wf, &pairs(300, 1024));
    refused_with(&out, &["300 parameters given", "at most 256"]);
    let out = run_with_params(&agent, &wf, &pairs(1, 40_000));
    refused_with(&out, &["the value of parameter \"p0\"", "at most 32768"]);
    let out = run_with_params(&agent, &wf, &pairs(10, 30_000));
    refused_with(&out, &["names and values together", "at most 262144"]);
    let out = run_with_params(&agent, &wf, &[("x".repeat(100), "1".into())]);
    refused_with(&out, &["parameter name", "at most 64"]);
    assert!(answers(&agent).is_empty(), "a refused Run created a run");
    // Within the bounds: the step sees them all.
    let id = reply_string(&run_with_params(&agent, &wf, &pairs(200, 1024)));
    let run = agent.wait_for_end(&id, Duration::from_secs(60));
    crate::support::assert_state(&run, drover::model::RunState::Succeeded);
    assert!(agent.log_of(&run, "show").contains("DROVER_PARAM_P199=v"));
}

#[test]
fn workflows_with_nul_bytes_or_huge_commands_are_refused_at_their_position() {
    let agent = TestAgent::start();
    let refused_file = |name: &str, text: &str, needles: &[&str]| {
        let wf = agent.workflow(name, text);
        let out = agent.drover(&["run", &wf.to_string_lossy()]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{name} was accepted");
        for needle in needles {
            assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
        }
    };
    let step = "name = \"w\"\n[[step]]\nname = \"s\"\n";
    refused_file(
        "nul-run.toml",
        &format!("{step}run = \"echo \\u0000\"\n"),
        &["nul-run.toml:4:7:", "contains a NUL byte"],
    );
    refused_file(
        "nul-env.toml",
        &format!("{step}run = \"true\"\nenv = {{ A = \"\\u0000\" }}\n"),
        &["nul-env.toml:5:13:", "`env.A` contains a NUL byte"],
    );
    refused_file(
        "huge-run.toml",
        &format!("{step}run = \"{}\"\n", "x".repeat(200_000)),
        &[
            "huge-run.toml:4:7:",
            "`run` is 200000 bytes",
            "at most 131071",
        ],
    );
    assert!(
        answers(&agent).is_empty(),
        "a refused workflow created a run"
    );
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_and_errors_into_one_never_panic() {
    let agent = TestAgent::start();
    let wf = agent.workflow(
        "hello.toml",
        "name = \"hello\"\n[[step]]\nname = \"hi\"\nrun = \"seq 100000\"\n",
    );
    let id = agent.run(&wf);
    agent.wait_for_end(&id, Duration::from_secs(60));
    for args in [
        vec!["show", id.as_str()],
        vec!["ps", "--all"],
        vec!["audit"],
        vec!["logs", id.as_str()],
    ] {
        // A pipe whose reader has gone, as `| head -1` leaves it once head has its line.
        let (read, write) = nix::unistd::pipe().expect("pipe");
        drop(read);
        let out = agent
            .sandbox
            .command(crate::support::DROVER)
            .args(&args)
            .stdout(std::process::Stdio::from(write))
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run drover");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "drover {args:?} into a closed pipe: {} {stderr}",
            out.status
        );
    }
    // An error for a stderr whose reader has gone: the status says it, nothing panics.
    for args in [vec!["show", "nosuchrun"], vec!["kill", "nosuchrun"]] {
        let (read, write) = nix::unistd::pipe().expect("pipe");
        drop(read);
        let out = agent
            .sandbox
            .command(crate::support::DROVER)
            .args(&args)
            .stderr(std::process::Stdio::from(write))
            .output()
            .expect("run drover");
        assert_eq!(
            out.status.code(),
            Some(1),
            "drover {args:?} with a closed stderr: {}",
            out.status
        );
    }
}

/// A `Logs` reply through busctl: the metadata and the bytes.
fn log_chunk(out: &std::process::Output) -> (LogMeta, Vec<u8>) {
    let meta = serde_json::from_str(&reply_string(out)).expect("LogMeta");
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("busctl json");
    let data = reply["data"][1]
        .as_array()
        .expect("an array of bytes")
        .iter()
        .map(|b| {
            b.as_u64()
                .and_then(|b| u8::try_from(b).ok())
                .expect("a byte")
        })
        .collect();
    (meta, data)
}

#[test]
fn log_chunks_beyond_bounds_unknown_steps_and_huge_offsets_get_clear_answers() {
    let agent = TestAgent::start();
    let wf = agent.workflow(
        "hello.toml",
        "name = \"hello\"\n[[step]]\nname = \"hi\"\nrun = \"echo hi\"\n",
    );
    let id = agent.run(&wf);
    agent.wait_for_end(&id, Duration::from_secs(60));
    let logs = |run: &str, step: &str, attempt: &str, offset: &str, max: &str| {
        agent.busctl(true, "Logs", &["ssutu", run, step, attempt, offset, max])
    };

    let (meta, data) = log_chunk(&logs(&id, "hi", "0", "0", "0"));
    assert_eq!(data, b"hi\n");
    assert_eq!((meta.attempt, meta.next_offset, meta.size), (1, 3, 3));
    assert!(!meta.more && meta.step_done, "{meta:?}");
    let (meta, data) = log_chunk(&logs(&id, "hi", "1", "1", "1"));
    assert_eq!((data.as_slice(), meta.next_offset), (b"i".as_slice(), 2));
    // Past the end: an empty chunk, not an error (nor an overflow).
    let (meta, data) = log_chunk(&logs(&id, "hi", "0", "18446744073709551615", "0"));
    assert!(data.is_empty());
    assert_eq!(meta.next_offset, u64::MAX);
    answers(&agent);

    for (out, needles) in [
        (
            logs(&id, "hi", "0", "0", "4294967295"),
            vec!["the chunk size is 4294967295 bytes: at most 1048576 are accepted"],
        ),
        (
            logs(&id, "nope", "0", "0", "0"),
            vec!["has no step \"nope\" (its steps: hi)"],
        ),
        (
            logs(&id, "hi", "7", "0", "0"),
            vec!["step hi of run", "has no attempt 7"],
        ),
        (
            logs(&"x".repeat(70_000), "hi", "0", "0", "0"),
            vec!["the run id is 70000 bytes long: at most 64"],
        ),
        (
            logs(&id, &"s".repeat(70_000), "0", "0", "0"),
            vec!["the step name is 70000 bytes long: at most 64"],
        ),
        (
            logs("nosuchrun", "hi", "0", "0", "0"),
            vec!["no run nosuchrun"],
        ),
    ] {
        refused_with(&out, &needles);
        answers(&agent);
    }
}

/// Strings meant to find the edges of every argument: empty, huge numbers, durations past
/// any bound, unicode, paths, long text. (None starts with '-': busctl would read it as an
/// option.)
fn edge_strings(run: &str, workflow: &str) -> Vec<String> {
    vec![
        String::new(),
        " ".into(),
        run.into(),
        workflow.into(),
        "18446744073709551615".into(),
        "18446744073709551615s".into(),
        "10000000years".into(),
        "1000y".into(),
        "0s".into(),
        "7d".into(),
        "latest".into(),
        "nan".into(),
        "é\u{202E}\u{10FFFF}日本".into(),
        "../../../etc/shadow".into(),
        "/etc/shadow".into(),
        "relative.toml".into(),
        "rule/".into(),
        "x".repeat(70_000),
        "%s%n%x".into(),
        "info".into(),
        "critical".into(),
    ]
}

/// Random arguments for one busctl signature character (`u`, `t`, `b`; strings, `a{ss}` and
/// `a{sv}` handled by the caller).
fn random_value(rng: &mut fastrand::Rng, kind: char) -> Vec<String> {
    match kind {
        'u' => vec![
            rng.choice(["0", "1", "2", "4294967295"])
                .unwrap()
                .to_owned(),
        ],
        'b' => vec![rng.choice(["true", "false"]).unwrap().to_owned()],
        't' => vec![
            rng.choice(["0", "3", "1048576", "18446744073709551615"])
                .unwrap()
                .to_owned(),
        ],
        _ => unreachable!("signature {kind}"),
    }
}

/// An `a{sv}` of up to three options, known keys and unknown, of every type.
fn random_options(rng: &mut fastrand::Rng, strings: &[String]) -> Vec<String> {
    let n = rng.usize(0..=3);
    let mut out = vec![n.to_string()];
    for _ in 0..n {
        out.push(
            rng.choice(["grace", "confirm", "from", "to", "x"])
                .unwrap()
                .to_owned(),
        );
        match rng.u8(..5) {
            0 => out.extend(["s".into(), rng.choice(strings).unwrap().clone()]),
            1 => out.extend([
                "t".into(),
                rng.choice(["0", "1500", "18446744073709551615"])
                    .unwrap()
                    .to_owned(),
            ]),
            2 => out.extend([
                "u".into(),
                rng.choice(["0", "1", "4294967295"]).unwrap().to_owned(),
            ]),
            3 => out.extend(["b".into(), "true".into()]),
            _ => out.extend(["as".into(), "2".into(), "a".into(), "b".into()]),
        }
    }
    out
}

/// The first 40 characters of `text`, for messages.
fn quoted_short(text: &str) -> String {
    text.chars().take(40).collect()
}

/// Every method with its signature (`a{ss}` and `a{sv}` written as `P` and `O` here).
const METHODS: &[(&str, &str)] = &[
    ("Run", "sP"),
    ("List", ""),
    ("Get", "s"),
    ("Kill", "ssO"),
    ("EnterCritical", "ss"),
    ("LeaveCritical", "ss"),
    ("Audit", "s"),
    ("Checkpoint", "ss"),
    ("Checkpoints", "s"),
    ("Restart", "sO"),
    ("Rollback", "suO"),
    ("Actions", "s"),
    ("History", "ss"),
    ("Alerts", "b"),
    ("Silence", "sss"),
    ("Silences", "b"),
    ("RaiseAlert", "ssss"),
    ("ResolveAlert", "s"),
    ("Reload", ""),
    ("Metrics", "s"),
    ("Top", ""),
    ("Logs", "ssutu"),
];

/// Random calls of every method, with the right signature and sometimes a wrong one, as
/// uid 65534 in the role `config` gives it: none may hang or crash the agent, which answers
/// `List` after each.
fn random_calls(config: &str, seed: u64) {
    let agent = TestAgent::start_with_config(config);
    let run = long_run(&agent);
    let hello = agent.workflow(
        "hello.toml",
        "name = \"hello\"\n[[step]]\nname = \"hi\"\nrun = \"true\"\n",
    );
    let strings = edge_strings(&run, &hello.to_string_lossy());
    let mut rng = fastrand::Rng::with_seed(seed);
    // Each method as often as there are edge strings, so every string argument of every
    // method gets each of them once; the rest is random.
    for round in 0..(METHODS.len() * strings.len()) {
        let (method, signature) = METHODS[round % METHODS.len()];
        let nth = round / METHODS.len();
        let mut args: Vec<String> = Vec::new();
        let mut wire = String::new();
        // One call in eight gets a signature the method does not take.
        let signature = if rng.u8(..8) == 0 { "sub" } else { signature };
        for (position, kind) in signature.chars().enumerate() {
            match kind {
                's' => {
                    wire.push('s');
                    args.push(strings[(nth + position * 5) % strings.len()].clone());
                }
                'P' => {
                    wire.push_str("a{ss}");
                    let n = rng.usize(0..=2);
                    args.push(n.to_string());
                    for _ in 0..n {
                        args.push(rng.choice(["p", "P", "a_b", "x"]).unwrap().to_owned());
                        args.push(rng.choice(&strings).unwrap().clone());
                    }
                }
                'O' => {
                    wire.push_str("a{sv}");
                    args.extend(random_options(&mut rng, &strings));
                }
                other => {
                    wire.push(other);
                    args.extend(random_value(&mut rng, other));
                }
            }
        }
        let mut call: Vec<&str> = Vec::new();
        if !wire.is_empty() {
            call.push(&wire);
        }
        call.extend(args.iter().map(String::as_str));
        let out = agent.busctl(true, method, &call);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("timed out") && !stderr.contains("disconnected"),
            "{method} {wire} {}: {stderr}\nagent log:\n{}",
            args.iter()
                .map(|a| format!("{:?}", quoted_short(a)))
                .collect::<Vec<_>>()
                .join(" "),
            agent.agent_log()
        );
        answers(&agent);
    }
    assert!(
        !agent.agent_log().contains("panicked"),
        "{}",
        agent.agent_log()
    );
}

#[test]
fn random_calls_as_a_viewer_leave_the_agent_answering() {
    random_calls(TEST_CONFIG, 0x7669_6577);
}

#[test]
fn random_calls_as_an_operator_leave_the_agent_answering() {
    random_calls(&operator_config(), 0x6f70_6572);
}

#[test]
fn random_config_files_are_refused_or_accepted_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/drover.toml"),
    )
    .expect("the packaged example config");
    let lines: Vec<&str> = example.lines().filter(|l| !l.trim().is_empty()).collect();
    let extremes = [
        "18446744073709551615",
        "\"18446744073709551615s\"",
        "\"10000000years\"",
        "\"0s\"",
        "-1",
        "nan",
        "\"\\u0000\"",
        "[]",
        "\"é\u{202E}\"",
    ];
    let mut rng = fastrand::Rng::with_seed(0x636f_6e66);
    for i in 0..150 {
        let text = if i % 3 == 0 {
            let bytes: Vec<u8> = (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            // The example with one setting uncommented and set to an extreme.
            let mut text: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
            let at = rng.usize(..text.len());
            let line = text[at].trim_start_matches(['#', ' ']).to_owned();
            if let Some((key, _)) = line.split_once(" = ") {
                text[at] = format!("{key} = {}", rng.choice(extremes).unwrap());
            }
            text.join("\n")
        };
        let file = dir.path().join("drover.toml");
        std::fs::write(&file, &text).unwrap();
        let out = std::process::Command::new(crate::support::DROVER)
            .args(["config", "check"])
            .arg(&file)
            .output()
            .expect("drover config check");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(0 | 1)) && !stderr.contains("panicked"),
            "drover config check of {text:?}: {} {stderr}",
            out.status
        );
    }
}
