//! Step launch overhead: from the request to the step's process running inside its scope.
//!
//! Three ways of starting the same probe (this binary, re-executed: it prints the
//! wall-clock time it started at and checks which cgroup it is in), measured in one run:
//! drover's `Run` over D-Bus, `systemd-run --user --scope`, and a plain fork/exec.
//! Needs root (it starts a private systemd with `drover sandbox`). Run with
//! `cargo bench --bench launch` (`LAUNCHES=N` to change the count, default 200).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use drover::api::DroverProxy;
use drover::model::Run;
use drover::sandbox::SandboxInfo;
use futures_util::StreamExt;

const PROBE_ENV: &str = "DROVER_BENCH_PROBE";

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

fn main() {
    if std::env::var_os(PROBE_ENV).is_some() {
        // The probe: when did it start, and in which (systemd) cgroup?
        let t = now_ns();
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let unified = cgroup.lines().find(|l| l.starts_with("0::")).unwrap_or("?");
        println!("{t} {unified}");
        return;
    }
    let launches: usize = std::env::var("LAUNCHES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let drover = env!("CARGO_BIN_EXE_drover");
    let probe = std::env::current_exe().expect("own path");
    let dir = tempfile::tempdir().expect("temp dir");
    let info_file = dir.path().join("sandbox.json");
    let mut sandbox = Command::new(drover)
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
    let mut agent = info
        .command(drover)
        .args(["agent", "--state-dir"])
        .arg(dir.path().join("state"))
        .env("DROVER_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .expect("start the agent");

    let workflow = dir.path().join("probe.toml");
    std::fs::write(
        &workflow,
        format!(
            "name = \"probe\"\n[[step]]\nname = \"probe\"\nrun = [{:?}]\nenv = {{ {PROBE_ENV} = \"1\" }}\n",
            probe.to_string_lossy()
        ),
    )
    .expect("write workflow");

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let drover_ms = runtime.block_on(measure_drover(&info, &workflow, launches));
    let systemd_run_ms = measure_command(
        launches,
        || {
            let mut c = info.command("systemd-run");
            c.args(["--user", "--scope", "--quiet", "--collect"])
                .arg(&probe)
                .env(PROBE_ENV, "1");
            c
        },
        ".scope",
    );
    // The same request as drover's: a new run slice each time, accounting on.
    let mut n = 0;
    let systemd_run_equivalent_ms = measure_command(
        launches,
        || {
            n += 1;
            let mut c = info.command("systemd-run");
            c.args(["--user", "--scope", "--quiet", "--collect"])
                .arg(format!("--slice=drover-bench{n}.slice"))
                .args([
                    "-p",
                    "CPUAccounting=yes",
                    "-p",
                    "MemoryAccounting=yes",
                    "-p",
                    "TasksAccounting=yes",
                ])
                .arg(&probe)
                .env(PROBE_ENV, "1");
            c
        },
        ".scope",
    );
    let fork_exec_ms = measure_command(
        launches,
        || {
            let mut c = Command::new(&probe);
            c.env(PROBE_ENV, "1");
            c
        },
        "",
    );

    let _ = agent.kill();
    let _ = agent.wait();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sandbox.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = sandbox.wait();

    let base = percentile(&systemd_run_ms, 50.0);
    let base99 = percentile(&systemd_run_ms, 99.0);
    println!(
        "\nStep launch overhead, {launches} launches each (request → probe running in its cgroup)\n"
    );
    println!("| method | p50 (ms) | p99 (ms) | p50 / systemd-run | p99 / systemd-run |");
    println!("|---|---|---|---|---|");
    for (name, samples) in [
        ("drover `Run` (D-Bus) → step in its scope", &drover_ms),
        ("`systemd-run --user --scope` (baseline)", &systemd_run_ms),
        (
            "`systemd-run --user --scope` with drover's properties (new slice, accounting)",
            &systemd_run_equivalent_ms,
        ),
        ("plain fork/exec", &fork_exec_ms),
    ] {
        let (p50, p99) = (percentile(samples, 50.0), percentile(samples, 99.0));
        println!(
            "| {name} | {p50:.2} | {p99:.2} | {:.2}× | {:.2}× |",
            p50 / base,
            p99 / base99
        );
    }
}

async fn measure_drover(
    info: &SandboxInfo,
    workflow: &std::path::Path,
    launches: usize,
) -> Vec<f64> {
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
    let mut changes = proxy.receive_run_changed().await.expect("subscribe");
    let path = workflow.to_string_lossy();
    let mut samples = Vec::with_capacity(launches);
    for i in 0..launches {
        let t0 = now_ns();
        let id = proxy.run(&path, HashMap::new()).await.expect("Run");
        while let Some(signal) = changes.next().await {
            let args = signal.args().expect("RunChanged args");
            if args.run_id == id && (args.state == "succeeded" || args.state == "failed") {
                break;
            }
        }
        let run: Run = serde_json::from_str(&proxy.get(&id).await.expect("Get")).expect("run json");
        let log =
            std::fs::read_to_string(run.steps[0].log.as_deref().expect("log")).expect("read log");
        samples.push(parse_probe(&log, t0, &format!("drover-{id}-probe-1.scope")));
        if (i + 1) % 50 == 0 {
            eprintln!("drover: {} launches", i + 1);
        }
    }
    samples
}

fn measure_command(
    launches: usize,
    mut make: impl FnMut() -> Command,
    cgroup_suffix: &str,
) -> Vec<f64> {
    (0..launches)
        .map(|_| {
            let mut command = make();
            command.stdout(Stdio::piped()).stderr(Stdio::null());
            let t0 = now_ns();
            let out = command.output().expect("spawn");
            assert!(out.status.success(), "{command:?} failed");
            parse_probe(&String::from_utf8_lossy(&out.stdout), t0, cgroup_suffix)
        })
        .collect()
}

/// Milliseconds from `t0` to the probe's start, after checking the probe's cgroup.
fn parse_probe(output: &str, t0: u128, cgroup_suffix: &str) -> f64 {
    let line = output.lines().next().expect("probe output");
    let (t, cgroup) = line.split_once(' ').expect("probe line");
    assert!(
        cgroup.ends_with(cgroup_suffix),
        "probe ran in {cgroup}, expected …{cgroup_suffix}"
    );
    let t: u128 = t.parse().expect("probe time");
    (t.saturating_sub(t0)) as f64 / 1e6
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}
