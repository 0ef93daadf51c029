//! Kill latency and kill success rate.
//!
//! Latency: from the request to the run `killed` with its scope verified empty, for a
//! cooperative step (exits on SIGTERM) and a TERM-ignoring one (needs SIGKILL after the
//! grace), beside `systemctl --user stop` of an equivalent scope and a bare `kill -TERM` to
//! a process group (then SIGKILL after the same grace), all in one run, interleaved.
//! Success rate: kills of the chaos suite's hostile workflows, each checked by scanning
//! every process's cgroups. Needs root. `cargo bench --bench kill`; `KILLS=N` (default
//! 200 of each kind), `CHAOS_KILLS=N` (default 1000), `GRACE_MS=N` (default 500).

mod common;

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BenchEnv, DroverClient, percentile};
use drover::model::{KillRecord, KillResult, StepState};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

const COOPERATIVE: &str = "exec sleep 300";
const TERM_IGNORING: &str = "trap '' TERM; sleep 300";

fn main() {
    let kills = common::count("KILLS", 200);
    let chaos_kills = common::count("CHAOS_KILLS", 1000);
    let grace = Duration::from_millis(common::count("GRACE_MS", 500) as u64);
    let env = BenchEnv::start();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client = runtime.block_on(DroverClient::connect(&env.info));
    let grace_text = format!("{}ms", grace.as_millis());
    let workflow = |name: &str, script: &str| {
        env.workflow(
            &format!("{name}.toml"),
            &format!("name = \"{name}\"\n[kill]\ngrace = \"{grace_text}\"\n[[step]]\nname = \"s\"\nrun = {script:?}\n"),
        )
    };
    let flows = [
        workflow("cooperative", COOPERATIVE),
        workflow("stubborn", TERM_IGNORING),
    ];

    // [kind][method] samples in ms: methods are drover, systemctl stop, kill(1) to a group.
    let mut samples: [[Vec<f64>; 3]; 2] = Default::default();
    for i in 0..kills {
        for (kind, script) in [COOPERATIVE, TERM_IGNORING].iter().enumerate() {
            let (ms, record) = runtime.block_on(drover_kill(&client, &flows[kind]));
            assert_eq!(
                (record.result, record.processes_left),
                (KillResult::Killed, Some(0)),
                "{record:#?}"
            );
            samples[kind][0].push(ms);
            samples[kind][1].push(systemctl_stop(&env, script, grace, i));
            samples[kind][2].push(kill_group(script, grace));
        }
        if (i + 1) % 50 == 0 {
            eprintln!("{} kills of each", i + 1);
        }
    }

    if kills > 0 {
        print_latency(kills, grace, &samples);
    }
    chaos_success_rate(&env, &runtime, &client, chaos_kills);
}

fn print_latency(kills: usize, grace: Duration, samples: &[[Vec<f64>; 3]; 2]) {
    println!(
        "\nKill latency, {kills} kills of each kind and method, grace {} ms (request → killed, scope verified empty)\n",
        grace.as_millis()
    );
    println!("| step | method | p50 (ms) | p99 (ms) | max (ms) | p99 / systemctl stop |");
    println!("|---|---|---|---|---|---|");
    for (kind, name) in ["cooperative", "TERM-ignoring"].iter().enumerate() {
        let base = percentile(&samples[kind][1], 99.0);
        for (method, label) in [
            "drover `Kill`",
            "`systemctl --user stop` (baseline)",
            "`kill -TERM` to the process group, SIGKILL after the grace",
        ]
        .iter()
        .enumerate()
        {
            let s = &samples[kind][method];
            let max = s.iter().copied().fold(0.0, f64::max);
            println!(
                "| {name} | {label} | {:.1} | {:.1} | {:.1} | {:.2}× |",
                percentile(s, 50.0),
                percentile(s, 99.0),
                max,
                percentile(s, 99.0) / base
            );
        }
    }
}

fn chaos_success_rate(
    env: &BenchEnv,
    runtime: &tokio::runtime::Runtime,
    client: &DroverClient,
    chaos_kills: usize,
) {
    let chaos = chaos_workflows(env);
    let mut clean = 0;
    let mut slowest: f64 = 0.0;
    let mut failures = Vec::new();
    for i in 0..chaos_kills {
        let (name, flow) = &chaos[i % chaos.len()];
        let (ms, record) = runtime.block_on(drover_kill(client, flow));
        slowest = slowest.max(ms);
        let survivors = drover::cgroup::live_processes_in(&format!("drover-{}", record.run));
        if record.result == KillResult::Killed
            && record.processes_left == Some(0)
            && survivors.is_empty()
        {
            clean += 1;
        } else {
            failures.push(format!(
                "{name}: {:?}, {} survivors",
                record.result,
                survivors.len()
            ));
        }
        if (i + 1) % 100 == 0 {
            eprintln!("{} chaos kills, {clean} clean", i + 1);
        }
    }
    println!(
        "\nKill success rate over {chaos_kills} kills of {} hostile workflows (grace 200 ms, critical_max 200 ms)\n",
        chaos.len()
    );
    println!("| kills | killed, nothing left | success rate | slowest (ms) |");
    println!("|---|---|---|---|");
    println!(
        "| {chaos_kills} | {clean} | {:.2}% | {slowest:.0} |",
        100.0 * clean as f64 / chaos_kills as f64
    );
    for failure in failures.iter().take(10) {
        println!("failure: {failure}");
    }
}

/// Starts a run, waits until its step runs, kills it: ms from the request to the outcome.
async fn drover_kill(client: &DroverClient, flow: &std::path::Path) -> (f64, KillRecord) {
    let id = client.run(flow).await;
    loop {
        let run = client.get(&id).await;
        if run
            .steps
            .first()
            .is_some_and(|s| s.state == StepState::Running)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Let the hostile processes start.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    let outcome = client
        .proxy
        .kill(&id, "benchmark", HashMap::new())
        .await
        .expect("Kill");
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    (ms, serde_json::from_str(&outcome).expect("kill record"))
}

/// An equivalent scope stopped by systemd itself (SIGTERM, SIGKILL after the same grace).
fn systemctl_stop(env: &BenchEnv, script: &str, grace: Duration, n: usize) -> f64 {
    let unit = format!("killbench{n}.scope");
    let mut scope = env
        .info
        .command("systemd-run")
        .args(["--user", "--scope", "--quiet", "--collect"])
        .arg(format!("--unit={unit}"))
        .arg(format!("--property=TimeoutStopSec={}ms", grace.as_millis()))
        .args(["sh", "-c", script])
        .stdout(Stdio::null())
        .spawn()
        .expect("systemd-run");
    while !env
        .info
        .command("systemctl")
        .args(["--user", "is-active", "--quiet", &unit])
        .status()
        .is_ok_and(|s| s.success())
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    common::stop_unit(&env.info, &unit);
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let _ = scope.wait();
    ms
}

/// A process group sent SIGTERM, then SIGKILL after the grace if it is still there.
fn kill_group(script: &str, grace: Duration) -> f64 {
    let mut child = Command::new("sh")
        .args(["-c", script])
        .process_group(0)
        .spawn()
        .expect("sh");
    std::thread::sleep(Duration::from_millis(100));
    let group = Pid::from_raw(child.id() as i32);
    let t0 = Instant::now();
    let _ = killpg(group, Signal::SIGTERM);
    while child.try_wait().expect("wait").is_none() {
        if t0.elapsed() >= grace {
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    // The group's other members (the TERM-ignoring shell's sleep) go too.
    let _ = killpg(group, Signal::SIGKILL);
    ms
}

/// The chaos suite's hostile workflows, with short grace and critical_max.
fn chaos_workflows(env: &BenchEnv) -> Vec<(&'static str, std::path::PathBuf)> {
    let flows: [(&str, &str, &str); 7] = [
        (
            "ignores-term",
            "",
            "trap '' TERM; while true; do sleep 1; done",
        ),
        (
            "blocks-signals",
            "",
            "python3 -c 'import signal, time; signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.Signals)); time.sleep(300)'",
        ),
        (
            "double-fork",
            "",
            "(sh -c 'trap \"\" TERM; sleep 300' &); sleep 300",
        ),
        (
            "setsid",
            "",
            "setsid sh -c 'trap \"\" TERM HUP; sleep 300' & sleep 300",
        ),
        (
            "fork-loop",
            "[limits]\ntasks_max = 30\n",
            "trap '' TERM; while true; do (trap '' TERM; sleep 300) & done",
        ),
        ("pipeline", "", "yes | tr y n | grep -v x > /dev/null"),
        ("critical-overrun", "", "sleep 300"),
    ];
    flows
        .iter()
        .map(|(name, extra, script)| {
            let critical = if *name == "critical-overrun" { "critical = true\n" } else { "" };
            let text = format!(
                "name = \"{name}\"\n{extra}[kill]\ngrace = \"200ms\"\ncritical_max = \"200ms\"\n[[step]]\nname = \"s\"\n{critical}run = {script:?}\n"
            );
            (*name, env.workflow(&format!("chaos-{name}.toml"), &text))
        })
        .collect()
}
