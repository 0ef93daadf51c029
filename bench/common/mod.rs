//! What the benchmarks share: a private systemd (`drover sandbox`) with a real agent in
//! it, a D-Bus client of that agent, and percentiles.

// Each benchmark binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use drover::api::{DroverProxy, RunChangedStream};
use drover::model::Run;
use drover::sandbox::SandboxInfo;
use futures_util::StreamExt;

#[path = "../../src/testing.rs"]
pub mod testing;

pub const DROVER: &str = env!("CARGO_BIN_EXE_drover");

/// A sandbox with (usually) an agent in it; both end on drop.
pub struct BenchEnv {
    sandbox: Child,
    agent: Option<Child>,
    pub info: SandboxInfo,
    pub dir: tempfile::TempDir,
}

impl BenchEnv {
    pub fn start() -> BenchEnv {
        BenchEnv::start_with_config(None)
    }

    /// A sandbox and an agent run with the configuration file `config` (TOML), if given.
    pub fn start_with_config(config: Option<&str>) -> BenchEnv {
        let mut env = BenchEnv::sandbox_only();
        let mut agent = env.info.command(DROVER);
        agent
            .args(["agent", "--state-dir"])
            .arg(env.dir.path().join("state"));
        if let Some(config) = config {
            let path = env.dir.path().join("drover.toml");
            std::fs::write(&path, config).expect("write the agent's config");
            agent.arg("--config").arg(path);
        }
        let agent = agent
            .env("DROVER_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .expect("start the agent");
        env.agent = Some(agent);
        env
    }

    /// A sandbox with no agent (the benchmark starts its own, e.g. through systemd).
    pub fn sandbox_only() -> BenchEnv {
        let dir = tempfile::tempdir().expect("temp dir");
        let info_file = dir.path().join("sandbox.json");
        let mut sandbox = Command::new(DROVER)
            .args(["sandbox", "--info"])
            .arg(&info_file)
            .args(["--", "sleep", "infinity"])
            .spawn()
            .expect("start drover sandbox (needs root)");
        while !info_file.exists() {
            assert!(
                sandbox.try_wait().expect("sandbox status").is_none(),
                "drover sandbox failed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let info = SandboxInfo::load(&info_file).expect("sandbox info");
        BenchEnv {
            sandbox,
            agent: None,
            info,
            dir,
        }
    }

    pub fn agent_pid(&self) -> u32 {
        self.agent.as_ref().expect("an agent was started").id()
    }

    /// Writes a workflow file and returns its path.
    pub fn workflow(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write workflow");
        path
    }
}

impl Drop for BenchEnv {
    fn drop(&mut self) {
        if let Some(agent) = &mut self.agent {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.sandbox.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.sandbox.wait();
    }
}

/// A connected client of the agent in a `BenchEnv`.
pub struct DroverClient {
    pub proxy: DroverProxy<'static>,
}

impl DroverClient {
    pub async fn connect(info: &SandboxInfo) -> DroverClient {
        let conn = zbus::connection::Builder::address(info.bus_address.as_str())
            .build()
            .await
            .expect("connect to the sandbox's bus");
        let proxy = DroverProxy::new(&conn).await.expect("proxy");
        let deadline = Instant::now() + Duration::from_secs(30);
        while proxy.list().await.is_err() {
            assert!(Instant::now() < deadline, "the agent did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        DroverClient { proxy }
    }

    pub async fn run(&self, workflow: &Path) -> String {
        self.proxy
            .run(&workflow.to_string_lossy(), HashMap::new())
            .await
            .expect("Run")
    }

    pub async fn get(&self, id: &str) -> Run {
        serde_json::from_str(&self.proxy.get(id).await.expect("Get")).expect("run json")
    }

    /// A `RunChanged` subscription. Read it to the end of what it is for, then drop it: an
    /// unread subscription fills its queue and stalls the whole connection.
    pub async fn subscribe(&self) -> RunChangedStream {
        self.proxy.receive_run_changed().await.expect("subscribe")
    }
}

/// Waits on `changes` for `RunChanged(id, state)` with one of `states`.
pub async fn wait_for(changes: &mut RunChangedStream, id: &str, states: &[&str]) {
    while let Some(signal) = changes.next().await {
        let args = signal.args().expect("RunChanged args");
        if args.run_id == id && states.contains(&args.state) {
            return;
        }
    }
}

/// Runs `systemctl --user stop UNIT` in the sandbox and waits for it.
pub fn stop_unit(info: &SandboxInfo, unit: &str) {
    let stopped = info
        .command("systemctl")
        .args(["--user", "stop", unit])
        .status()
        .expect("systemctl stop");
    assert!(stopped.success(), "cannot stop {unit}");
}

pub fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

pub fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}
