//! Shared helpers: a private systemd per test (`Sandbox`), a real agent inside it
//! (`TestAgent`), and `wait_until` for conditions instead of sleeps.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use drover::model::{Run, RunState};
use drover::sandbox::SandboxInfo;

pub mod anthropic;
#[path = "../../src/testing.rs"]
mod testing;
pub use testing::git;

pub const DROVER: &str = env!("CARGO_BIN_EXE_drover");

/// Polls `condition` until it holds; panics naming `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    wait_for(
        timeout,
        || format!("timed out after {timeout:?} waiting for {what}"),
        || condition().then_some(()),
    );
}

/// Polls `probe` until it returns something, and returns that; after `timeout`, panics
/// with what `failure` says (asked only then, so it may gather the evidence).
pub fn wait_for<T>(
    timeout: Duration,
    failure: impl FnOnce() -> String,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        if Instant::now() >= deadline {
            panic!("{}", failure());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private systemd user manager, session bus and journald (`drover sandbox`), torn down
/// on drop.
pub struct Sandbox {
    process: Child,
    pub info: SandboxInfo,
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn start() -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        let info_file = dir.path().join("sandbox.json");
        let mut process = Command::new(DROVER)
            .arg("sandbox")
            .arg("--info")
            .arg(&info_file)
            .args(["--", "sleep", "infinity"])
            .stdin(Stdio::null())
            .spawn()
            .expect("cannot spawn `drover sandbox`");
        wait_until(
            Duration::from_secs(30),
            "`drover sandbox` to be ready",
            || {
                if let Ok(Some(status)) = process.try_wait() {
                    panic!(
                        "`drover sandbox` exited with {status} before it was ready: this test needs root, \
                     /usr/lib/systemd/systemd, systemd-journald and dbus-daemon (see its stderr above)"
                    );
                }
                info_file.exists()
            },
        );
        let info = SandboxInfo::load(&info_file).expect("sandbox info file");
        Sandbox { process, info, dir }
    }

    /// A command that runs inside the sandbox (its mount namespace, cgroups and bus).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.info.command(program)
    }

    /// Runs a command inside the sandbox and returns its output, whatever its status.
    pub fn output(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    }

    /// The journal lines of one run, as `journalctl -o json` objects.
    pub fn journal(&self, run: &str) -> Vec<serde_json::Value> {
        let out = self.output(
            "journalctl",
            &["--no-pager", "-o", "json", &format!("DROVER_RUN={run}")],
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // SIGTERM: the sandbox stops its command, then tears everything down.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.process.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.process.wait();
    }
}

/// A real agent in its own sandbox with a temporary state directory.
pub struct TestAgent {
    pub sandbox: Sandbox,
    pub state_dir: PathBuf,
    /// The agent's `--config` file.
    pub config: PathBuf,
    agent: Option<Child>,
}

/// The config of `TestAgent::start`: the HTTP listener on a free port, so agents of tests
/// running side by side do not fight over 7878 (and the host's own config stays out).
pub const TEST_CONFIG: &str = "[http]\nlisten = \"127.0.0.1:0\"\n";

impl TestAgent {
    pub fn start() -> TestAgent {
        TestAgent::start_with_config(TEST_CONFIG)
    }

    /// An agent started with `config` (TOML) as its config file.
    pub fn start_with_config(config: &str) -> TestAgent {
        TestAgent::start_in(config, None)
    }

    /// An agent started with `config`, its state in `state_dir` (a file system the test
    /// mounted before, which the sandbox then sees too) or else in the sandbox's directory.
    pub fn start_in(config: &str, state_dir: Option<PathBuf>) -> TestAgent {
        let sandbox = Sandbox::start();
        let state_dir = state_dir.unwrap_or_else(|| sandbox.dir.path().join("state"));
        let config_path = sandbox.dir.path().join("drover.toml");
        std::fs::write(&config_path, config).expect("write the agent's config");
        let mut agent = TestAgent {
            sandbox,
            state_dir,
            config: config_path,
            agent: None,
        };
        agent.spawn_agent();
        agent
    }

    /// The address the agent's HTTP listener bound (`<state_dir>/http.addr`).
    pub fn http_addr(&self) -> std::net::SocketAddr {
        let path = self.state_dir.join("http.addr");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("{}: {e}\nagent log:\n{}", path.display(), self.agent_log())
        });
        text.trim().parse().expect("http.addr holds an address")
    }

    fn spawn_agent(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.sandbox.dir.path().join("agent.log"))
            .expect("agent log");
        let child = self
            .sandbox
            .command(DROVER)
            .args(["agent", "--state-dir"])
            .arg(&self.state_dir)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot spawn the agent");
        self.agent = Some(child);
        wait_until(
            Duration::from_secs(20),
            "the agent to own org.drover.Drover1",
            || {
                self.sandbox
                    .output("busctl", &["--user", "status", "org.drover.Drover1"])
                    .status
                    .success()
            },
        );
    }

    /// The running agent's pid (to signal it).
    pub fn agent_pid(&self) -> u32 {
        self.agent.as_ref().expect("the agent is running").id()
    }

    /// SIGKILLs the agent, as a crash would.
    pub fn kill_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
    }

    pub fn restart_agent(&mut self) {
        self.kill_agent();
        self.spawn_agent();
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.sandbox.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Writes a workflow file into the test's directory and returns its path.
    pub fn workflow(&self, name: &str, text: &str) -> PathBuf {
        let path = self.sandbox.dir.path().join(name);
        std::fs::write(&path, text).expect("write workflow");
        path
    }

    /// `busctl --user --json=short call` of a `org.drover.Drover1.Manager` method with
    /// `args` (signature first), as root or as nobody (uid 65534: a viewer at most).
    pub fn busctl(&self, as_nobody: bool, method: &str, args: &[&str]) -> Output {
        let mut command = if as_nobody {
            let mut c = self.sandbox.command("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "busctl"]);
            c
        } else {
            self.sandbox.command("busctl")
        };
        command
            .args(["--user", "--json=short", "call"])
            .args([
                "org.drover.Drover1",
                "/org/drover/Drover1",
                "org.drover.Drover1.Manager",
            ])
            .arg(method)
            .args(args)
            .output()
            .expect("busctl")
    }

    /// `drover ARGS…` inside the sandbox.
    pub fn drover(&self, args: &[&str]) -> Output {
        self.sandbox
            .command(DROVER)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run drover")
    }

    /// Starts a run of `workflow` with `drover run` and returns its id.
    pub fn run(&self, workflow: &Path) -> String {
        let out = self.drover(&["run", &workflow.to_string_lossy()]);
        assert!(
            out.status.success(),
            "drover run failed: {}\nagent log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.agent_log()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn show(&self, run: &str) -> Run {
        let out = self.drover(&["show", run, "--json"]);
        assert!(
            out.status.success(),
            "drover show: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("show --json is a run")
    }

    /// Waits for the run to reach a final state and returns it.
    pub fn wait_for_end(&self, run: &str, timeout: Duration) -> Run {
        wait_for(
            timeout,
            || {
                format!(
                    "run {run} did not end within {timeout:?}: {:#?}\nagent log:\n{}",
                    self.show(run),
                    self.agent_log()
                )
            },
            || Some(self.show(run)).filter(|shown| shown.state.is_terminal()),
        )
    }

    pub fn log_of(&self, run: &Run, step: &str) -> String {
        let attempt = run
            .steps
            .iter()
            .find(|s| s.name == step)
            .expect("step exists");
        std::fs::read_to_string(attempt.log.as_deref().expect("step has a log"))
            .expect("read step log")
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.kill_agent();
    }
}

/// A real git repository with one commit on `main` (a `README` saying "hello").
pub struct GitRepo {
    pub path: PathBuf,
}

impl GitRepo {
    pub fn init(path: PathBuf) -> GitRepo {
        std::fs::create_dir_all(&path).expect("repo dir");
        let repo = GitRepo { path };
        repo.git(&["init", "-q", "-b", "main"]);
        std::fs::write(repo.path.join("README"), "hello\n").expect("write README");
        repo.git(&["add", "README"]);
        repo.git(&["commit", "-qm", "init"]);
        repo
    }

    /// `git ARGS…` in the repository ([`git`]).
    pub fn git(&self, args: &[&str]) -> String {
        git(&self.path, args)
    }
}

pub fn assert_state(run: &Run, state: RunState) {
    assert_eq!(
        run.state, state,
        "run {} is {}, expected {state}: {run:#?}",
        run.id, run.state
    );
}

/// One HTTP/1.1 request; the status code and the body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let reply = http_send(addr, method, path, &[], b"");
    (reply.status, reply.body)
}

/// A reply to [`http_send`].
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    /// Names lowercased, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the reply when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:#?}"))
    }
}

/// One HTTP/1.1 request with `headers` (`Host: <addr>` unless they name another) and
/// `body` (its `Content-Length` added).
pub fn http_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpReply {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Connection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes()).expect("send request");
    // A server that refuses the body (413) may answer and close before reading it all.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {response:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    // axum sends a fixed-length body for these responses (no chunking).
    assert!(
        !headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")),
        "{head}"
    );
    HttpReply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// One Server-Sent Event as [`SseClient`] read it.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("not JSON ({e}): {self:#?}"))
    }

    /// The id as a number; panics when there is none.
    pub fn num(&self) -> u64 {
        self.id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("no numeric id: {self:#?}"))
    }
}

/// A streaming `GET` read event by event (chunked transfer decoded, SSE frames parsed),
/// every read bounded by a deadline.
pub struct SseClient {
    stream: TcpStream,
    pub status: u16,
    pub head: String,
    raw: Vec<u8>,
    body: Vec<u8>,
    /// Comments (`:` lines, the keep-alives) seen so far.
    pub comments: usize,
}

impl SseClient {
    /// Connects and reads the response's head; the body is read by [`SseClient::next`].
    pub fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseClient {
        let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("Accept: text/event-stream\r\n\r\n");
        stream.write_all(head.as_bytes()).expect("send request");
        let mut client = SseClient {
            stream,
            status: 0,
            head: String::new(),
            raw: Vec::new(),
            body: Vec::new(),
            comments: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let end = loop {
            if let Some(end) = client.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            assert!(client.fill(deadline), "no response head from {path}");
        };
        client.head = String::from_utf8_lossy(&client.raw[..end]).into_owned();
        client.raw.drain(..end + 4);
        client.status = client
            .head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {:?}", client.head));
        client
    }

    /// Reads more bytes before `deadline`; false at the deadline or the end of the stream.
    fn fill(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        self.stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        let mut buf = [0; 16 * 1024];
        match self.stream.read(&mut buf) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    /// Moves the complete chunks of the raw bytes into the body.
    fn dechunk(&mut self) {
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size = std::str::from_utf8(&self.raw[..line_end])
                .ok()
                .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                .unwrap_or_else(|| panic!("bad chunk size in {:?}", self.raw));
            if self.raw.len() < line_end + 2 + size + 2 {
                return;
            }
            let start = line_end + 2;
            self.body.extend_from_slice(&self.raw[start..start + size]);
            self.raw.drain(..start + size + 2);
        }
    }

    /// The next event within `timeout`, or None (timed out or the stream ended).
    pub fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            self.dechunk();
            while let Some(end) = self.body.windows(2).position(|w| w == b"\n\n") {
                let frame = String::from_utf8_lossy(&self.body[..end]).into_owned();
                self.body.drain(..end + 2);
                let mut event = SseEvent {
                    id: None,
                    event: "message".into(),
                    data: String::new(),
                };
                let mut fields = 0;
                for line in frame.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                        continue;
                    }
                    let (name, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    fields += 1;
                    match name {
                        "id" => event.id = Some(value.to_owned()),
                        "event" => event.event = value.to_owned(),
                        "data" if event.data.is_empty() => event.data = value.to_owned(),
                        "data" => event.data = format!("{}\n{value}", event.data),
                        _ => {}
                    }
                }
                if fields > 0 {
                    return Some(event);
                }
            }
            if !self.fill(deadline) {
                return None;
            }
        }
    }

    /// Events until one satisfies `last` (included), each within what is left of `timeout`;
    /// panics with those read when it does not come.
    pub fn until(
        &mut self,
        timeout: Duration,
        mut last: impl FnMut(&SseEvent) -> bool,
    ) -> Vec<SseEvent> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(event) => {
                    let done = last(&event);
                    seen.push(event);
                    if done {
                        return seen;
                    }
                }
                None => panic!("the awaited event did not come within {timeout:?}; got {seen:#?}"),
            }
        }
    }
}
