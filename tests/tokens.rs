//! Bearer tokens for the HTTP API, made and revoked through the real agent: a user makes
//! their own with at most their role, an admin makes anyone's, the secret is shown once
//! and stored nowhere, and every creation, revocation and refusal is audited.

use std::process::Output;

use drover::model::{ActionRecord, NewToken, Token};

use crate::support::{TEST_CONFIG, TestAgent};

const NOBODY: u32 = 65534;

/// `drover ARGS…` as root, or as nobody (a viewer: the config names no roles).
fn drover(agent: &TestAgent, as_nobody: bool, args: &[&str]) -> Output {
    let mut command = if as_nobody {
        let mut c = agent.sandbox.command("setpriv");
        c.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            crate::support::DROVER,
        ]);
        c
    } else {
        agent.sandbox.command(crate::support::DROVER)
    };
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run drover")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(needle),
        "{needle:?} not in {stderr:?} (status {})",
        out.status
    );
}

fn tokens(agent: &TestAgent, as_nobody: bool) -> Vec<Token> {
    serde_json::from_str(&ok(&drover(agent, as_nobody, &["token", "list", "--json"])))
        .expect("token list --json")
}

fn token_actions(agent: &TestAgent) -> Vec<ActionRecord> {
    let out = agent.busctl(false, "Actions", &["s", ""]);
    let reply: serde_json::Value = serde_json::from_slice(&ok(&out).into_bytes()).expect("json");
    let actions: Vec<ActionRecord> =
        serde_json::from_str(reply["data"][0].as_str().expect("a string")).expect("actions");
    actions
        .into_iter()
        .filter(|a| a.action.starts_with("token-"))
        .collect()
}

#[test]
fn users_make_their_own_tokens_admins_anyones_and_every_change_is_audited() {
    let agent = TestAgent::start_with_config(TEST_CONFIG);

    // An admin makes an operator token for nobody; the secret is printed once.
    let out = drover(
        &agent,
        false,
        &[
            "token",
            "create",
            "ci",
            "--role",
            "operator",
            "--for",
            "nobody",
            "--expires",
            "30d",
        ],
    );
    let secret = ok(&out).trim().to_owned();
    assert!(
        secret.starts_with("drover_") && secret.len() == 71,
        "{secret}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the only time it is shown"),
        "{out:?}"
    );
    let listed = tokens(&agent, false);
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let ci = &listed[0];
    assert_eq!(
        (ci.name.as_str(), ci.uid, ci.user.as_str(), ci.role.as_str()),
        ("ci", NOBODY, "nobody", "operator")
    );
    assert!(ci.expires_at.is_some() && ci.revoked_at.is_none());
    assert!(ci.created_by.starts_with("uid 0 (root) via dbus"), "{ci:?}");
    let everything = ok(&drover(&agent, false, &["token", "list", "--json"]));
    assert!(
        !everything.contains(&secret[7..]),
        "a listing shows the secret"
    );
    for file in ["state.db", "state.db-wal"] {
        let bytes = std::fs::read(agent.state_dir.join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{file} holds the secret"
        );
    }

    // A viewer makes their own viewer token, and sees only their own.
    let mine = drover(
        &agent,
        true,
        &["token", "create", "mine", "--role", "viewer", "--json"],
    );
    let mine: NewToken = serde_json::from_str(&ok(&mine)).expect("json");
    assert_eq!(
        (mine.record.uid, mine.record.role.as_str()),
        (NOBODY, "viewer")
    );
    let roots = drover(
        &agent,
        false,
        &["token", "create", "roots", "--role", "admin"],
    );
    ok(&roots);
    let seen: Vec<String> = tokens(&agent, true).into_iter().map(|t| t.name).collect();
    assert_eq!(seen, ["mine", "ci"], "nobody sees nobody's tokens only");
    assert_eq!(tokens(&agent, false).len(), 3);

    // More than one's own role, or someone else's token, is refused and audited.
    refused(
        &drover(
            &agent,
            true,
            &["token", "create", "up", "--role", "operator"],
        ),
        "may not create a token with this role",
    );
    refused(
        &drover(
            &agent,
            true,
            &[
                "token", "create", "theirs", "--role", "viewer", "--for", "root",
            ],
        ),
        "may not create a token for another user",
    );
    // A taken name, a bad name, role or expiry: clear errors, nothing made.
    refused(
        &drover(
            &agent,
            true,
            &["token", "create", "mine", "--role", "viewer"],
        ),
        "a token named mine exists",
    );
    for (args, needle) in [
        (vec!["a b", "--role", "viewer"], "the token name"),
        (vec![&"x".repeat(65), "--role", "viewer"], "at most 64"),
        (vec!["ok", "--role", "root"], "viewer, operator or admin"),
        (
            vec!["ok", "--role", "viewer", "--expires", "1000000y"],
            "longer than the maximum",
        ),
        (
            vec!["ok", "--role", "viewer", "--for", "nosuchuser"],
            "nosuchuser",
        ),
    ] {
        let mut all = vec!["token", "create"];
        all.extend(args);
        refused(&drover(&agent, false, &all), needle);
    }
    assert_eq!(tokens(&agent, false).len(), 3);

    // A user revokes their own token; someone else's takes an admin.
    refused(
        &drover(&agent, true, &["token", "revoke", "roots"]),
        "may not revoke another user's token",
    );
    ok(&drover(&agent, true, &["token", "revoke", "ci"]));
    refused(
        &drover(&agent, true, &["token", "revoke", "ci"]),
        "no live token named ci",
    );
    ok(&drover(&agent, false, &["token", "revoke", "mine"]));
    let states: Vec<(String, bool)> = tokens(&agent, false)
        .into_iter()
        .map(|t| (t.name, t.revoked_at.is_some()))
        .collect();
    assert_eq!(
        states,
        [
            ("roots".to_owned(), false),
            ("mine".to_owned(), true),
            ("ci".to_owned(), true)
        ]
    );

    // The audit trail: who made, revoked or was refused what.
    let audit: Vec<(String, String)> = token_actions(&agent)
        .into_iter()
        .map(|a| (a.action, a.result))
        .collect();
    let count = |action: &str, result: &str| {
        audit
            .iter()
            .filter(|(a, r)| a == action && r == result)
            .count()
    };
    assert_eq!(count("token-create", "done"), 3, "{audit:?}");
    // Two for the roles, two for the names (the role and expiry that do not parse are
    // refused at the door, and an unknown user is no refusal but a failed lookup).
    assert_eq!(count("token-create", "refused"), 4, "{audit:?}");
    assert_eq!(count("token-revoke", "done"), 2, "{audit:?}");
    assert_eq!(count("token-revoke", "refused"), 1, "{audit:?}");
}
