//! Step launch overhead: from the request to the step's process running inside its scope.
//!
//! Four ways of starting the same probe (this binary, re-executed: it prints the
//! wall-clock time it started at and checks which cgroup it is in), interleaved launch by
//! launch so that all see the same machine: drover's `Run` over D-Bus; `systemd-run --user
//! --scope` (the baseline); `systemd-run` asking what drover asks (a new run slice each
//! time, accounting on); and a plain fork/exec. Needs root (it starts a private systemd
//! with `drover sandbox`). Run with `cargo bench --bench launch` (`LAUNCHES=N`, default 200).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{BenchEnv, DroverClient, percentile, stop_unit};

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
    let launches = common::count("LAUNCHES", 200);
    let probe = std::env::current_exe().expect("own path");
    let env = BenchEnv::start();
    let info = &env.info;
    let workflow = env.workflow(
        "probe.toml",
        &format!(
            "name = \"probe\"\n[[step]]\nname = \"probe\"\nrun = [{:?}]\nenv = {{ {PROBE_ENV} = \"1\" }}\n",
            probe.to_string_lossy()
        ),
    );

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client = runtime.block_on(DroverClient::connect(info));
    let mut samples: [Vec<f64>; 4] = Default::default();
    // Untimed between launches: wait for a slice's stop job, so that no launch queues
    // behind the cleanup of the one before it.
    let stop = |slice: &str| stop_unit(info, slice);
    for i in 0..launches {
        let (ms, run) = runtime.block_on(launch_run(&client, &workflow));
        samples[0].push(ms);
        stop(&format!("drover-{run}.slice"));

        let mut plain = info.command("systemd-run");
        plain.args(["--user", "--scope", "--quiet", "--collect"]);
        samples[1].push(launch(plain.arg(&probe), ".scope"));

        let mut equivalent = info.command("systemd-run");
        equivalent
            .args([
                "--user",
                "--scope",
                "--quiet",
                "--collect",
                "--slice=drover-bench.slice",
            ])
            .args([
                "-p",
                "CPUAccounting=yes",
                "-p",
                "MemoryAccounting=yes",
                "-p",
                "TasksAccounting=yes",
            ]);
        samples[2].push(launch(equivalent.arg(&probe), ".scope"));
        stop("drover-bench.slice");

        samples[3].push(launch(&mut Command::new(&probe), ""));
        if (i + 1) % 50 == 0 {
            eprintln!("{} launches of each", i + 1);
        }
    }

    drop(env);

    let base50 = percentile(&samples[1], 50.0);
    let base99 = percentile(&samples[1], 99.0);
    println!(
        "\nStep launch overhead, {launches} launches each, interleaved (request → probe running in its cgroup)\n"
    );
    println!("| method | p50 (ms) | p99 (ms) | p50 / systemd-run | p99 / systemd-run |");
    println!("|---|---|---|---|---|");
    let names = [
        "drover `Run` (D-Bus) → step in its scope",
        "`systemd-run --user --scope` (baseline)",
        "`systemd-run --user --scope` asking what drover asks (new slice, accounting)",
        "plain fork/exec",
    ];
    for (name, samples) in names.iter().zip(&samples) {
        let (p50, p99) = (percentile(samples, 50.0), percentile(samples, 99.0));
        println!(
            "| {name} | {p50:.2} | {p99:.2} | {:.2}× | {:.2}× |",
            p50 / base50,
            p99 / base99
        );
    }
}

/// One run of the probe workflow: milliseconds from `Run` to the probe's start, and the
/// run's id.
async fn launch_run(client: &DroverClient, workflow: &Path) -> (f64, String) {
    let mut changes = client.subscribe().await;
    let t0 = now_ns();
    let id = client.run(workflow).await;
    common::wait_for(&mut changes, &id, &["succeeded", "failed"]).await;
    let run = client.get(&id).await;
    let log = std::fs::read_to_string(run.steps[0].log.as_deref().expect("log")).expect("read log");
    let ms = parse_probe(&log, t0, &format!("drover-{id}-probe-1.scope"));
    (ms, id)
}

/// Milliseconds from spawning `command` to the probe's start.
fn launch(command: &mut Command, cgroup_suffix: &str) -> f64 {
    command
        .env(PROBE_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let t0 = now_ns();
    let out = command.output().expect("spawn");
    assert!(out.status.success(), "{command:?} failed");
    parse_probe(&String::from_utf8_lossy(&out.stdout), t0, cgroup_suffix)
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
    t.saturating_sub(t0) as f64 / 1e6
}
