//! The D-Bus API through plain `busctl`, and authorisation by the caller's uid.

use std::time::Duration;

use drover::model::RunState;

use crate::support::{TestAgent, assert_state};

/// The one string a `busctl --json` reply carries.
pub(crate) fn reply_string(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "busctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("busctl --json output");
    reply["data"][0]
        .as_str()
        .expect("a string reply")
        .to_owned()
}

#[test]
fn the_api_works_through_busctl_and_is_introspectable() {
    let agent = TestAgent::start();
    let introspect = agent.sandbox.output(
        "busctl",
        &[
            "--user",
            "introspect",
            "org.drover.Drover1",
            "/org/drover/Drover1",
            "org.drover.Drover1.Manager",
        ],
    );
    let text = String::from_utf8_lossy(&introspect.stdout);
    for member in [".Run", ".List", ".Get", ".RunChanged"] {
        assert!(
            text.contains(member),
            "introspection lacks {member}: {text}"
        );
    }

    let wf = agent.workflow(
        "hello.toml",
        "name = \"hello\"\n[[step]]\nname = \"hi\"\nrun = \"echo hi $DROVER_PARAM_WHO\"\n",
    );
    let id = reply_string(&agent.busctl(
        false,
        "Run",
        &["sa{ss}", &wf.to_string_lossy(), "1", "who", "busctl"],
    ));
    let run = agent.wait_for_end(&id, Duration::from_secs(30));
    assert_state(&run, RunState::Succeeded);
    assert_eq!(agent.log_of(&run, "hi"), "hi busctl\n");

    let got: serde_json::Value =
        serde_json::from_str(&reply_string(&agent.busctl(false, "Get", &["s", &id]))).unwrap();
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["state"], "succeeded");
    for key in [
        "name",
        "state",
        "unit",
        "exit_code",
        "signal",
        "result",
        "started_at",
        "ended_at",
    ] {
        assert!(
            got["steps"][0].get(key).is_some(),
            "step lacks {key}: {got}"
        );
    }
    let list: serde_json::Value =
        serde_json::from_str(&reply_string(&agent.busctl(false, "List", &[]))).unwrap();
    assert_eq!(list[0]["id"], id.as_str());

    let unknown = agent.busctl(false, "Get", &["s", "nosuchrun"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no run nosuchrun"));
    let relative = agent.busctl(false, "Run", &["sa{ss}", "hello.toml", "0"]);
    assert!(String::from_utf8_lossy(&relative.stderr).contains("must be absolute"));
}

#[test]
fn a_caller_without_the_operator_role_is_refused_and_may_still_read() {
    let agent = TestAgent::start();
    let wf = agent.workflow(
        "hello.toml",
        "name = \"hello\"\n[[step]]\nname = \"hi\"\nrun = \"true\"\n",
    );
    let refused = agent.busctl(true, "Run", &["sa{ss}", &wf.to_string_lossy(), "0"]);
    assert!(!refused.status.success(), "uid 65534 started a run");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("needs the operator role"), "{err}");
    // A viewer may read: the refused call created nothing.
    assert_eq!(reply_string(&agent.busctl(true, "List", &[])), "[]");
    assert!(
        agent.agent_log().contains("refused: uid 65534"),
        "the refusal is not logged"
    );
}
