//! Least privilege against a root agent, tried as a hostile local user would: uid 65534
//! (nobody) holds the operator role. A run runs as whoever submitted it, and the agent
//! reads nothing on a caller's behalf that the caller could not read. A Claude Code step
//! runs as `drovertest` (uid 4242), a user with a home whom the test adds to its sandbox.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drover::model::RunState;

use crate::support::{DROVER, GitRepo, TEST_CONFIG, TestAgent, assert_state, git, wait_until};

const NOBODY: u32 = 65534;

fn agent() -> TestAgent {
    TestAgent::start_with_config(&format!(
        "{TEST_CONFIG}[auth.operator]\nusers = [\"{NOBODY}\"]\n"
    ))
}

/// A directory nobody can enter, and one inside it that nobody owns (the user's own
/// files: their workflow files and repositories).
struct Places {
    _dir: tempfile::TempDir,
    /// Owned by nobody, 0755.
    nobodys: PathBuf,
    /// Owned by root, 0700.
    roots: PathBuf,
}

fn places() -> Places {
    let dir = tempfile::tempdir_in("/tmp").expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let nobodys = dir.path().join("nobody");
    let roots = dir.path().join("root");
    std::fs::create_dir(&nobodys).expect("mkdir");
    std::fs::create_dir(&roots).expect("mkdir");
    std::os::unix::fs::chown(&nobodys, Some(NOBODY), Some(NOBODY)).expect("chown");
    std::fs::set_permissions(&roots, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    Places {
        _dir: dir,
        nobodys,
        roots,
    }
}

/// Writes a file owned by `uid` with `mode`.
fn write_file(path: &Path, text: &str, uid: u32, mode: u32) -> PathBuf {
    std::fs::write(path, text).expect("write");
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).expect("chown");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path.to_owned()
}

/// `Run` over the bus as nobody: the run id, or busctl's error text.
fn run_as_nobody(agent: &TestAgent, workflow: &Path) -> Result<String, String> {
    let out = agent.busctl(true, "Run", &["sa{ss}", &workflow.to_string_lossy(), "0"]);
    if out.status.success() {
        let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("busctl json");
        Ok(reply["data"][0].as_str().expect("run id").to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `drover ARGS…` as nobody, inside the sandbox.
fn drover_as_nobody(agent: &TestAgent, args: &[&str]) -> Command {
    let mut command = agent.sandbox.command("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", DROVER])
        .args(args)
        .stdin(Stdio::null());
    command
}

fn run_count(agent: &TestAgent) -> usize {
    let out = agent.busctl(false, "List", &[]);
    assert!(out.status.success(), "List: {out:?}");
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("busctl json");
    let runs: serde_json::Value =
        serde_json::from_str(reply["data"][0].as_str().expect("a string")).expect("runs json");
    runs.as_array().expect("an array").len()
}

#[test]
fn a_step_runs_as_its_submitter_with_that_users_login_and_no_new_privileges() {
    let agent = agent();
    let places = places();
    let workflow = write_file(
        &places.nobodys.join("whoami.toml"),
        r#"name = "whoami"
[[step]]
name = "id"
run = """
echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"
echo "HOME=$HOME USER=$USER LOGNAME=$LOGNAME SHELL=$SHELL"
echo "PATH=$PATH"
echo "agent's variables: ${CARGO_MANIFEST_DIR:-none}"
grep NoNewPrivs /proc/self/status
cat /etc/shadow >/dev/null 2>&1 && echo "read /etc/shadow" || echo "shadow refused"
touch /root/drover-was-here 2>/dev/null && echo "wrote /root" || echo "root refused"
"""
"#,
        NOBODY,
        0o644,
    );
    let id = run_as_nobody(&agent, &workflow).expect("nobody, an operator, may start a run");
    let run = agent.wait_for_end(&id, Duration::from_secs(30));
    assert_state(&run, RunState::Succeeded);
    let user = run.user.as_ref().expect("the run records its user");
    assert_eq!((user.uid, user.name.as_str()), (NOBODY, "nobody"));
    let log = agent.log_of(&run, "id");
    assert!(
        log.contains(&format!("uid={NOBODY} gid={NOBODY} groups={NOBODY}\n")),
        "{log}"
    );
    assert!(
        log.contains("HOME=/nonexistent USER=nobody LOGNAME=nobody SHELL=/usr/sbin/nologin\n"),
        "{log}"
    );
    // Nothing of the agent's environment but its locale (cargo gave the agent this one).
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    assert!(log.contains("agent's variables: none\n"), "{log}");
    assert!(
        log.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"),
        "{log}"
    );
    assert!(log.contains("NoNewPrivs:\t1\n"), "{log}");
    assert!(log.contains("shadow refused\nroot refused\n"), "{log}");
    assert!(!Path::new("/root/drover-was-here").exists());

    // Root's runs stay root's.
    let mine = agent.workflow(
        "root.toml",
        "name = \"root\"\n[[step]]\nname = \"id\"\nrun = \"id -u\"\n",
    );
    let run = agent.wait_for_end(&agent.run(&mine), Duration::from_secs(30));
    assert_eq!(agent.log_of(&run, "id"), "0\n");
    assert_eq!(run.user.expect("recorded").uid, 0);
}

#[test]
fn a_workflow_file_the_caller_cannot_read_is_refused_without_a_word_of_its_contents() {
    let agent = agent();
    let places = places();
    // Readable by root only, in a place nobody may enter, with a parse error that would
    // quote the secret.
    let secret = write_file(
        &places.roots.join("secret.toml"),
        "name = \"s\"\n[limits]\nmemory_max = \"sk-live-456\"\n[[step]]\nname = \"a\"\nrun = \"true\"\n",
        0,
        0o600,
    );
    let hidden_but_open = write_file(
        &places.nobodys.join("root-only.toml"),
        "name = \"s\"\n[limits]\nmemory_max = \"sk-live-456\"\n[[step]]\nname = \"a\"\nrun = \"true\"\n",
        0,
        0o600,
    );
    for path in [&secret, &hidden_but_open, &PathBuf::from("/etc/shadow")] {
        let error = run_as_nobody(&agent, path).expect_err("nobody read a root-only file");
        assert!(
            error.contains(&format!("{}: permission denied", path.display())),
            "{error}"
        );
        assert!(!error.contains("sk-live"), "{error}");
        assert!(!error.contains("line") && !error.contains(":1:"), "{error}");
    }
    assert_eq!(run_count(&agent), 0, "a refused run was created");
    // Root reads it (and is told what is wrong with it).
    let out = agent.drover(&["run", &secret.to_string_lossy()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sk-live-456"),
        "{out:?}"
    );
}

#[test]
fn fifos_devices_and_huge_files_are_refused_at_once_and_the_agent_goes_on() {
    let agent = agent();
    let places = places();
    let fifo = places.nobodys.join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).expect("mkfifo");
    let huge = places.nobodys.join("huge.toml");
    std::fs::write(&huge, vec![b'#'; 2 << 20]).expect("write");
    std::fs::set_permissions(&huge, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    for (path, expected) in [
        (fifo.as_path(), "not a regular file"),
        (Path::new("/dev/zero"), "not a regular file"),
        (huge.as_path(), "larger than the limit of 1048576 bytes"),
    ] {
        let started = Instant::now();
        let error = run_as_nobody(&agent, path).expect_err("refused");
        assert!(error.contains(expected), "{}: {error}", path.display());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{} took {:?}",
            path.display(),
            started.elapsed()
        );
    }
    assert_eq!(run_count(&agent), 0);
}

#[test]
fn only_an_admin_may_run_a_workflow_as_another_user() {
    let agent = agent();
    let places = places();
    let as_root = write_file(
        &places.nobodys.join("as-root.toml"),
        "name = \"as-root\"\nuser = \"root\"\n[[step]]\nname = \"id\"\nrun = \"id -u\"\n",
        NOBODY,
        0o644,
    );
    let error = run_as_nobody(&agent, &as_root).expect_err("an operator ran as root");
    assert!(
        error.contains("may not run a workflow as another user")
            && error.contains("needs the admin role"),
        "{error}"
    );
    assert_eq!(run_count(&agent), 0);

    // An admin (root) may, and the steps run as that user.
    let as_nobody = agent.workflow(
        "as-nobody.toml",
        "name = \"as-nobody\"\nuser = \"nobody\"\n[[step]]\nname = \"id\"\nrun = \"id -u\"\n",
    );
    // The step starts in the workflow file's directory: one nobody may enter.
    let as_nobody = write_file(
        &places.nobodys.join("as-nobody.toml"),
        &std::fs::read_to_string(&as_nobody).expect("read"),
        0,
        0o644,
    );
    let run = agent.wait_for_end(&agent.run(&as_nobody), Duration::from_secs(30));
    assert_state(&run, RunState::Succeeded);
    assert_eq!(agent.log_of(&run, "id"), format!("{NOBODY}\n"));
    assert!(
        run.requested_by.starts_with("uid 0 (root)"),
        "{}",
        run.requested_by
    );

    let unknown = agent.workflow(
        "ghost.toml",
        "name = \"ghost\"\nuser = \"no-such-user-here\"\n[[step]]\nname = \"a\"\nrun = \"true\"\n",
    );
    let out = agent.drover(&["run", &unknown.to_string_lossy()]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no user named \"no-such-user-here\" in the password database"),
        "{out:?}"
    );
}

#[test]
fn workspaces_and_requirements_are_checked_with_the_callers_rights() {
    let agent = agent();
    let places = places();
    let secret_repo = GitRepo::init(places.roots.join("repo"));
    std::fs::write(secret_repo.path.join("README"), "the secret\n").expect("write");
    let wf = write_file(
        &places.nobodys.join("steal.toml"),
        &format!(
            "name = \"steal\"\nworkspace = \"{}\"\n[[step]]\nname = \"cat\"\nrun = \"cat README\"\n",
            secret_repo.path.display()
        ),
        NOBODY,
        0o644,
    );
    let error = run_as_nobody(&agent, &wf).expect_err("nobody used root's repository");
    assert!(error.contains("is not a git repository"), "{error}");
    assert!(!error.contains("the secret"), "{error}");

    let probe = write_file(
        &places.nobodys.join("probe.toml"),
        &format!(
            "name = \"probe\"\n[requires]\nfiles = [\"{}\"]\n[[step]]\nname = \"a\"\nrun = \"true\"\n",
            secret_repo.path.join("README").display()
        ),
        NOBODY,
        0o644,
    );
    let error = run_as_nobody(&agent, &probe).expect_err("the requirement is not met for nobody");
    assert!(error.contains("requirements not met"), "{error}");
    assert_eq!(run_count(&agent), 0);
}

#[test]
fn a_users_worktree_and_checkpoints_are_made_with_that_users_rights() {
    let agent = agent();
    let places = places();
    let repo_path = places.nobodys.join("repo");
    let repo = GitRepo::init(repo_path.clone());
    chown_tree(&repo.path, NOBODY);
    let wf = write_file(
        &places.nobodys.join("work.toml"),
        &format!(
            "name = \"work\"\nworkspace = \"{}\"\n[[step]]\nname = \"edit\"\nrun = \"echo changed > README && echo new > new.txt\"\ncheckpoint = true\n[[step]]\nname = \"after\"\nrun = \"true\"\n",
            repo.path.display()
        ),
        NOBODY,
        0o644,
    );
    let id = run_as_nobody(&agent, &wf).expect("started");
    let run = agent.wait_for_end(&id, Duration::from_secs(30));
    assert_state(&run, RunState::Succeeded);
    let worktree = PathBuf::from(run.worktree.expect("a worktree"));
    assert!(
        worktree.starts_with(repo.path.join(".git/drover/worktrees")),
        "{}",
        worktree.display()
    );
    for file in ["README", "new.txt", ".git"] {
        let meta = std::fs::metadata(worktree.join(file)).expect("stat");
        assert_eq!(meta.uid(), NOBODY, "{file} belongs to the run's user");
    }
    let listed = agent.drover(&["checkpoints", &id]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("after step edit"),
        "{listed:?}\nagent log:\n{}",
        agent.agent_log()
    );
    // Root's git refuses a repository it does not own unless told it is safe.
    let checkpoint = git(
        &repo.path,
        &[
            "-c",
            "safe.directory=*",
            "show",
            &format!("refs/drover/{id}/1:new.txt"),
        ],
    );
    assert_eq!(checkpoint, "new");
    // Every object and ref git wrote for the checkpoint is nobody's too.
    let mut owners = std::collections::BTreeSet::new();
    collect_owners(&repo.path.join(".git"), &mut owners);
    assert_eq!(owners, [NOBODY].into(), "files in .git not owned by nobody");
}

#[test]
fn the_state_directory_is_private_whatever_the_umask() {
    let agent = agent();
    let wf = agent.workflow(
        "say.toml",
        "name = \"say\"\n[[step]]\nname = \"a\"\nrun = \"echo secret-output\"\n[step.env]\nTOKEN = \"sk-1\"\n",
    );
    let run = agent.wait_for_end(&agent.run(&wf), Duration::from_secs(30));
    assert_state(&run, RunState::Succeeded);
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&agent.state_dir), 0o700);
    let mut seen = 0;
    walk(&agent.state_dir, &mut |path, is_dir| {
        seen += 1;
        let expected = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode(path), expected, "{}", path.display());
    });
    assert!(seen >= 6, "state dir holds {seen} entries");
}

fn walk(dir: &Path, visit: &mut impl FnMut(&Path, bool)) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let kind = entry.file_type().expect("type");
        if kind.is_symlink() || !(kind.is_dir() || kind.is_file()) {
            continue;
        }
        visit(&entry.path(), kind.is_dir());
        if kind.is_dir() {
            walk(&entry.path(), visit);
        }
    }
}

fn chown_tree(dir: &Path, uid: u32) {
    std::os::unix::fs::lchown(dir, Some(uid), Some(uid)).expect("chown");
    walk(dir, &mut |path, _| {
        std::os::unix::fs::lchown(path, Some(uid), Some(uid)).expect("chown");
    });
}

fn collect_owners(dir: &Path, owners: &mut std::collections::BTreeSet<u32>) {
    walk(dir, &mut |path, _| {
        owners.insert(std::fs::symlink_metadata(path).expect("stat").uid());
    });
}

#[test]
fn on_kill_the_final_checkpoint_and_a_restart_act_as_the_runs_user_not_the_caller() {
    let agent = agent();
    let places = places();
    let repo = GitRepo::init(places.nobodys.join("repo"));
    chown_tree(&repo.path, NOBODY);
    let wf = write_file(
        &places.nobodys.join("long.toml"),
        &format!(
            "name = \"long\"\nworkspace = \"{}\"\n[[step]]\nname = \"s\"\nrun = \"id -u; id -u > started; exec sleep 300\"\non_kill = [\"id -u\"]\n",
            repo.path.display()
        ),
        NOBODY,
        0o644,
    );
    let id = run_as_nobody(&agent, &wf).expect("started");
    crate::support::wait_until(Duration::from_secs(30), "the step to start", || {
        agent
            .show(&id)
            .worktree
            .is_some_and(|w| Path::new(&w).join("started").exists())
    });
    // Root kills it: on_kill and the final checkpoint still run as nobody.
    let out = agent.drover(&["kill", &id, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let record: drover::model::KillRecord = serde_json::from_slice(&out.stdout).expect("record");
    assert_eq!(
        record.cleanup[0].detail,
        format!("exit status: 0: {NOBODY}")
    );
    assert!(record.snapshot.is_some(), "{record:#?}");
    // Root restarts it: the step runs as nobody again.
    let out = agent.drover(&["restart", &id, "--json"]);
    assert!(out.status.success(), "{out:?}\n{}", agent.agent_log());
    let second = crate::support::wait_for(
        Duration::from_secs(30),
        || format!("no second attempt: {:#?}", agent.show(&id)),
        || {
            agent
                .show(&id)
                .steps
                .into_iter()
                .find(|a| a.attempt == 2 && a.log.is_some())
        },
    );
    let log = second.log.expect("a log");
    crate::support::wait_until(
        Duration::from_secs(10),
        "the restarted step's output",
        || std::fs::read_to_string(&log).is_ok_and(|l| l.starts_with(&format!("{NOBODY}\n"))),
    );
    let out = agent.drover(&["kill", &id]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_viewer_reads_step_logs_through_the_agent_though_the_files_are_private() {
    let agent = agent();
    let wf = agent.workflow(
        "say.toml",
        "name = \"say\"\n[[step]]\nname = \"hello\"\nrun = \"echo line one; echo line two\"\n\
         [[step]]\nname = \"bytes\"\nrun = \"printf 'raw \\\\377\\\\n'\"\n",
    );
    let id = agent.run(&wf);
    let run = agent.wait_for_end(&id, Duration::from_secs(30));
    assert_state(&run, RunState::Succeeded);
    // The files themselves are root's and private: nobody cannot read them by path.
    let log = run.steps[0].log.as_deref().expect("a log");
    let cat = agent
        .sandbox
        .command("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "cat",
            log,
        ])
        .output()
        .expect("cat");
    assert!(!cat.status.success(), "nobody read {log} by path");

    let out = drover_as_nobody(&agent, &["logs", &id])
        .output()
        .expect("drover logs");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"line one\nline two\nraw \xff\n", "{out:?}");
    let out = drover_as_nobody(&agent, &["logs", &id, "--step", "bytes"])
        .output()
        .expect("drover logs --step");
    assert_eq!(out.stdout, b"raw \xff\n", "{out:?}");
    let out = drover_as_nobody(&agent, &["logs", &id, "--step", "nope"])
        .output()
        .expect("drover logs --step");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "run {id} has no step \"nope\" (its steps: hello, bytes)"
        )),
        "{out:?}"
    );
}

#[test]
fn a_viewer_follows_a_running_run_through_a_retry_until_it_ends() {
    let agent = agent();
    let dir = agent.sandbox.dir.path();
    let wf = agent.workflow(
        "follow.toml",
        &format!(
            r#"name = "follow"
[retry]
max_attempts = 2
initial = "0s"
retry_on = ["exit"]
[[step]]
name = "first"
run = """
if [ -e {dir}/tried ]; then echo attempt two; exit 0; fi
touch {dir}/tried
echo attempt one
while [ ! -e {dir}/go ]; do sleep 0.1; done
exit 1
"""
[[step]]
name = "second"
run = "echo second step"
"#,
            dir = dir.display()
        ),
    );
    let id = agent.run(&wf);
    let mut follower = drover_as_nobody(&agent, &["logs", "-f", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("drover logs -f");
    let printed = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let printed = Arc::clone(&printed);
        let mut stdout = follower.stdout.take().expect("piped");
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                printed.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let text = || String::from_utf8_lossy(&printed.lock().unwrap()).into_owned();
    wait_until(Duration::from_secs(30), "the first attempt's line", || {
        text() == "attempt one\n" || follower.try_wait().is_ok_and(|s| s.is_some())
    });
    let stderr_of = |follower: &mut std::process::Child| {
        let mut stderr = String::new();
        let pipe = follower.stderr.as_mut().expect("piped");
        pipe.read_to_string(&mut stderr).expect("stderr");
        stderr
    };
    if let Some(status) = follower.try_wait().expect("wait") {
        panic!(
            "the follower ended ({status}) while the run was running: {}",
            stderr_of(&mut follower)
        );
    }
    std::fs::write(dir.join("go"), "").expect("write");
    wait_until(Duration::from_secs(60), "the follower to end", || {
        follower.try_wait().expect("wait").is_some()
    });
    reader.join().expect("reader");
    let status = follower.wait().expect("wait");
    let stderr = stderr_of(&mut follower);
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(text(), "attempt one\nattempt two\nsecond step\n");
    let run = agent.show(&id);
    assert_state(&run, RunState::Succeeded);
    assert_eq!(run.steps[0].attempt, 2, "{run:#?}");
}

/// The user of the Claude Code test: unlike nobody, one with a home of their own.
const TESTER: u32 = 4242;
const TESTER_NAME: &str = "drovertest";

/// A user with a home, known only inside one agent's sandbox.
struct Tester {
    _dir: tempfile::TempDir,
    /// Their home (theirs, 0700).
    home: PathBuf,
    /// A directory of theirs (0755) for their workflow files and repositories.
    files: PathBuf,
    /// Their `TMPDIR` (0700), so nothing of theirs is left in the host's /tmp.
    tmp: PathBuf,
}

/// Adds `drovertest` (uid and gid 4242, a home of their own) to the password and group
/// databases the agent sees: copies of the host's with one line more, bind-mounted over
/// /etc/passwd and /etc/group in the sandbox's private mount namespace. The host's files
/// stay as they are, and the agent, which looks accounts up at each use, finds the user.
fn tester_in(agent: &TestAgent) -> Tester {
    use nix::unistd::{Gid, Group, Uid, User};
    let on_host = || {
        User::from_uid(Uid::from_raw(TESTER))
            .ok()
            .flatten()
            .is_some()
            || User::from_name(TESTER_NAME).ok().flatten().is_some()
            || Group::from_gid(Gid::from_raw(TESTER))
                .ok()
                .flatten()
                .is_some()
    };
    assert!(
        !on_host(),
        "the host already has uid/gid {TESTER} or a user {TESTER_NAME}: this test adds its own, in the sandbox only"
    );
    let dir = tempfile::tempdir_in("/tmp").expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let home = dir.path().join("home");
    let files = dir.path().join("files");
    let tmp = files.join("tmp");
    for (path, mode) in [(&home, 0o700), (&files, 0o755), (&tmp, 0o700)] {
        std::fs::create_dir(path).expect("mkdir");
        std::os::unix::fs::chown(path, Some(TESTER), Some(TESTER)).expect("chown");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let entry = format!(
        "{TESTER_NAME}:x:{TESTER}:{TESTER}:drover test user:{}:/bin/sh",
        home.display()
    );
    for (database, line) in [
        ("passwd", entry.clone()),
        ("group", format!("{TESTER_NAME}:x:{TESTER}:")),
    ] {
        let target = format!("/etc/{database}");
        let mut text = std::fs::read_to_string(&target).expect("read the host's database");
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&line);
        text.push('\n');
        let copy = dir.path().join(database);
        std::fs::write(&copy, text).expect("write");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let out = agent
            .sandbox
            .output("mount", &["--bind", &copy.to_string_lossy(), &target]);
        assert!(
            out.status.success(),
            "cannot bind-mount {} over {target} in the sandbox: {}",
            copy.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = agent
        .sandbox
        .output("getent", &["passwd", &TESTER.to_string()]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        entry,
        "the sandbox does not see {TESTER_NAME}"
    );
    assert!(!on_host(), "the host's password database changed");
    Tester {
        _dir: dir,
        home,
        files,
        tmp,
    }
}

/// The processes in cgroup `unit` (in any hierarchy): pid, executable and the `Uid:` line
/// of their status (real, effective, saved, file-system).
fn processes_in(unit: &str) -> Vec<(u32, PathBuf, Vec<u32>)> {
    let suffix = format!("/{unit}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc") {
        let Ok(pid) = entry.expect("entry").file_name().to_string_lossy().parse() else {
            continue;
        };
        // A process may end while it is looked at: skip what cannot be read.
        let in_unit = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .is_ok_and(|c| c.lines().any(|l| l.ends_with(&suffix)));
        let (Ok(exe), Ok(status)) = (
            std::fs::read_link(format!("/proc/{pid}/exe")),
            std::fs::read_to_string(format!("/proc/{pid}/status")),
        ) else {
            continue;
        };
        if !in_unit {
            continue;
        }
        let uids = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .map(|ids| {
                ids.split_whitespace()
                    .filter_map(|u| u.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        found.push((pid, exe, uids));
    }
    found
}

/// Every file and directory under `dir` (itself included) that is not the tester's.
fn not_the_testers(dir: &Path) -> Vec<String> {
    let mut others = Vec::new();
    let mut check = |path: &Path| {
        let uid = std::fs::symlink_metadata(path).expect("stat").uid();
        if uid != TESTER {
            others.push(format!("{} (uid {uid})", path.display()));
        }
    };
    check(dir);
    walk(dir, &mut |path, _| check(path));
    others
}

#[test]
fn a_claude_code_step_runs_as_its_submitter_and_a_restart_resumes_its_session_as_them() {
    use crate::restart::{conversation, json_of, worktree_of};
    use crate::support::anthropic::{
        Kind, ModelServer, Turn, claude_command, step_toml, transcript_path,
    };
    use drover::model::{ActionRecord, KillRecord, KillResult};

    let agent = TestAgent::start_with_config(&format!(
        "{TEST_CONFIG}[auth.operator]\nusers = [\"{TESTER}\"]\n"
    ));
    let tester = tester_in(&agent);
    let repo = GitRepo::init(tester.files.join("repo"));
    chown_tree(&repo.path, TESTER);
    let ready = tester.files.join("ready");
    let server = ModelServer::start(vec![
        Turn::bash("id -u > whoami.txt; echo from-claude > code.txt"),
        Turn::bash(&format!("touch {}; sleep 300", ready.display())),
        Turn::bash("id -u > resumed.txt"),
        Turn::text("The code is written."),
    ]);
    let mut claude = claude_command(&server, &tester.home, &repo.path);
    // HOME is the user's own: the agent sets it from the password database.
    claude.env_remove("HOME").env("TMPDIR", &tester.tmp);
    claude.arg("Write the code");
    let workflow = write_file(
        &tester.files.join("claude.toml"),
        &format!(
            r#"name = "as-tester"
workspace = "{repo}"
[kill]
grace = "4s"
[[step]]
name = "code"
agent = "claude-code"
checkpoint = true
{claude}
[[step]]
name = "check"
run = "test -f code.txt && test \"$(id -u)\" = {TESTER}"
"#,
            repo = repo.path.display(),
            claude = step_toml(&claude)
        ),
        TESTER,
        0o644,
    );

    // The user submits it, with the CLI.
    let out = agent
        .sandbox
        .command("setpriv")
        .args([
            &format!("--reuid={TESTER}"),
            &format!("--regid={TESTER}"),
            "--clear-groups",
            DROVER,
            "run",
        ])
        .arg(&workflow)
        .stdin(Stdio::null())
        .output()
        .expect("drover run");
    assert!(
        out.status.success(),
        "{TESTER_NAME} could not start the run: {}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.agent_log()
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    wait_until(
        Duration::from_secs(60),
        "Claude Code to run its long Bash command",
        || {
            let run = agent.show(&id);
            assert!(
                !run.state.is_terminal(),
                "the run ended early: {run:#?}\nagent log:\n{}",
                agent.agent_log()
            );
            ready.exists()
        },
    );
    let run = agent.show(&id);
    let user = run.user.as_ref().expect("the run records its user");
    assert_eq!((user.uid, user.name.as_str()), (TESTER, TESTER_NAME));
    let session = run.steps[0]
        .session_id
        .clone()
        .expect("drover assigned the session up front");
    let worktree = worktree_of(&run);

    // Claude Code and everything it started run as the user; only the shim is root's.
    let unit = format!("drover-{id}-code-1.scope");
    let processes = processes_in(&unit);
    let shim = std::fs::canonicalize(DROVER).expect("the drover binary");
    let (shims, step): (Vec<_>, Vec<_>) = processes.iter().partition(|(_, exe, _)| *exe == shim);
    assert_eq!(shims.len(), 1, "one shim in {unit}: {processes:#?}");
    assert!(
        step.iter().any(|(_, exe, _)| exe.ends_with("claude.exe")),
        "no Claude Code process in {unit}: {processes:#?}"
    );
    assert!(
        step.iter().all(|(_, _, uids)| *uids == [TESTER; 4]),
        "a process of the step is not {TESTER_NAME}'s alone: {processes:#?}"
    );
    // What it wrote in the worktree is the user's.
    for (file, content) in [
        ("whoami.txt", format!("{TESTER}\n")),
        ("code.txt", "from-claude\n".into()),
    ] {
        let path = worktree.join(file);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            content,
            "{file}"
        );
        assert_eq!(
            std::fs::metadata(&path).expect("stat").uid(),
            TESTER,
            "{file}"
        );
    }
    // The conversation is in the user's home, and everything there is theirs.
    let transcript = transcript_path(&tester.home, &worktree, &session);
    assert!(
        transcript.exists(),
        "no transcript at {}\nagent log:\n{}",
        transcript.display(),
        agent.agent_log()
    );
    assert_eq!(not_the_testers(&tester.home), Vec::<String>::new());
    let modes = |dir: &Path, file: &Path| {
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        format!("{:o} {:o}", mode(dir), mode(file))
    };
    let project = transcript.parent().expect("a project directory").to_owned();
    assert_eq!(
        modes(&project, &transcript),
        "700 600",
        "Claude Code keeps its transcripts private"
    );

    // Root kills it and restarts it: the session goes on, as the user.
    let killed: KillRecord = json_of(&agent, &["kill", &id, "--json", "--reason", "as-tester"]);
    assert_eq!(killed.result, KillResult::Killed, "{killed:#?}");
    assert!(killed.snapshot.is_some(), "{killed:#?}");
    // Claude Code deletes old transcripts itself (`cleanupPeriodDays`): the restart brings
    // this one back from the kill checkpoint, as the user's and as private as it was.
    std::fs::remove_dir_all(&project).expect("remove the transcript");
    let requests_before = server.main_requests().len();
    let restarted: ActionRecord = json_of(&agent, &["restart", &id, "--json"]);
    assert_eq!(
        (restarted.action.as_str(), restarted.result.as_str()),
        ("restart", "done"),
        "{restarted:#?}"
    );
    assert!(
        restarted.detail.contains(&format!(
            "transcript of step code (session {session}) restored"
        )),
        "{restarted:#?}"
    );
    let run = agent.wait_for_end(&id, Duration::from_secs(90));
    assert_state(&run, RunState::Succeeded);
    let code = &run.steps[0];
    assert_eq!(
        (code.attempt, code.session_id.as_deref()),
        (2, Some(session.as_str())),
        "{code:#?}"
    );
    assert!(
        code.note
            .as_deref()
            .unwrap_or("")
            .contains(&format!("resumes Claude Code session {session}")),
        "{code:#?}"
    );
    let requests = server.main_requests();
    assert!(
        requests.len() > requests_before,
        "Claude Code was not resumed"
    );
    let resumed = conversation(&requests[requests_before]);
    assert!(resumed.contains("Write the code"), "{resumed}");
    assert!(resumed.contains("echo from-claude > code.txt"), "{resumed}");
    let last = server
        .log()
        .into_iter()
        .rev()
        .find(|r| r.kind == Kind::Main)
        .expect("a main request");
    assert_eq!(
        last.header("x-claude-code-session-id"),
        Some(session.as_str()),
        "the resumed request belongs to session {session}"
    );
    let path = worktree.join("resumed.txt");
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        format!("{TESTER}\n")
    );
    assert_eq!(std::fs::metadata(&path).expect("stat").uid(), TESTER);
    // The same transcript, still the user's, now holds the resumed turns too.
    let text = std::fs::read_to_string(&transcript).expect("read the transcript");
    assert!(text.contains("id -u > resumed.txt"), "{text}");
    assert_eq!(not_the_testers(&tester.home), Vec::<String>::new());
    assert_eq!(
        modes(&project, &transcript),
        "700 600",
        "the restored transcript is as private as Claude Code keeps it"
    );
}
