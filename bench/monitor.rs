//! Agent overhead while it monitors: N concurrent runs (default 100) sampled every second
//! with the shipped rules loaded, measured as the agent's CPU (% of one core, from
//! /proc/<pid>/stat over a window) and its peak RSS; beside the cost of polling the same
//! units' accounting with `systemctl --user show` once a second for the same window, in the
//! same run. Needs root. `cargo bench --bench monitor`; `RUNS=N` (default 100),
//! `SECONDS=N` (default 60).

mod common;

use std::time::{Duration, Instant};

use common::{BenchEnv, DroverClient};
use drover::model::{RunState, StepState};

fn main() {
    let runs = common::count("RUNS", 100);
    let window = Duration::from_secs(common::count("SECONDS", 60) as u64);
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    let env = BenchEnv::start_with_config(Some(&format!(
        "[rules]\nshipped_dir = \"{rules}\"\n[http]\nlisten = \"127.0.0.1:0\"\n"
    )));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client = runtime.block_on(DroverClient::connect(&env.info));
    let agent = env.agent_pid();

    let idle = measure(agent, Duration::from_secs(10));
    let workflow = env.workflow(
        "busy.toml",
        "name = \"busy\"\n[[step]]\nname = \"s\"\nrun = \"while true; do echo tick; sleep 5; done\"\n",
    );
    let ids: Vec<String> = (0..runs)
        .map(|_| runtime.block_on(client.run(&workflow)))
        .collect();
    let units: Vec<String> = runtime.block_on(async {
        let mut units = Vec::new();
        for id in &ids {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let run = client.get(id).await;
                let running = run
                    .steps
                    .first()
                    .filter(|s| s.state == StepState::Running && run.state == RunState::Running);
                if let Some(step) = running {
                    units.push(step.unit.clone().expect("a running step has a unit"));
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "run {id} did not start: {run:#?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        units
    });
    eprintln!("{runs} runs running; warming up");
    std::thread::sleep(Duration::from_secs(5));
    let monitoring = measure(agent, window);
    let polling = poll_with_systemctl(&env, &units, window);
    let mut scopes_and_slices = units.clone();
    scopes_and_slices.extend(ids.iter().map(|id| format!("drover-{id}.slice")));
    let dbus_reads = runtime.block_on(poll_with_zbus(&env, &scopes_and_slices, window));

    println!();
    println!(
        "Agent overhead, {runs} concurrent runs sampled at 1 Hz with the shipped rules, {} s window",
        window.as_secs()
    );
    println!();
    println!("| what | CPU (% of one core) | RSS (MB) | CPU / systemctl polling |");
    println!("|---|---|---|---|");
    let row = |what: &str, cpu: f64, rss: Option<f64>| {
        println!(
            "| {what} | {cpu:.2} | {} | {:.2}× |",
            rss.map_or("-".to_owned(), |r| format!("{r:.1}")),
            cpu / polling
        );
    };
    row(
        "drover agent, no runs (10 s)",
        idle.cpu_percent,
        Some(idle.peak_rss_mb),
    );
    row(
        &format!("drover agent, {runs} runs monitored"),
        monitoring.cpu_percent,
        Some(monitoring.peak_rss_mb),
    );
    row(
        &format!("`systemctl --user show` of the {runs} scopes, once a second (baseline)"),
        polling,
        None,
    );
    row(
        &format!(
            "the monitor's D-Bus reads alone: `GetAll` of the {} scopes and slices, once a second, in the bench process",
            scopes_and_slices.len()
        ),
        dbus_reads,
        None,
    );
    let (rule_count, per_rule_run) = rule_evaluation(rules, runs);
    println!();
    println!(
        "Rule evaluation (the {rule_count} shipped rules over {runs} sample runs, 200 ticks): {per_rule_run:.1} µs per rule per run-tick"
    );
    println!();
    println!(
        "Goal: under 2% of a core and under 100 MB: {}",
        if monitoring.cpu_percent < 2.0 && monitoring.peak_rss_mb < 100.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}

/// Microseconds per rule per run-tick: the shipped rules evaluated over `runs` sample
/// runs, in this process.
fn rule_evaluation(dir: &str, runs: usize) -> (usize, f64) {
    use drover::rules::{RuleDirs, Rules, view::RunView};
    let rules = Rules::load(RuleDirs {
        shipped: Some(dir.into()),
        operator: None,
    })
    .expect("the shipped rules load");
    let views: Vec<RunView> = (0..runs)
        .map(|i| RunView {
            run: format!("run{i}"),
            ..RunView::sample()
        })
        .collect();
    let count = rules.rules().len();
    let ticks = 200;
    let started = Instant::now();
    for _ in 0..ticks {
        let outcome = rules.evaluate(&views);
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    }
    let micros = started.elapsed().as_secs_f64() * 1e6;
    (count, micros / (ticks * runs * count) as f64)
}

struct Usage {
    cpu_percent: f64,
    peak_rss_mb: f64,
}

/// The agent's CPU over `window` (from its utime + stime) and its peak RSS, sampled each
/// second.
fn measure(pid: u32, window: Duration) -> Usage {
    let start = cpu_ticks(pid);
    let started = Instant::now();
    let mut peak_rss_kb = 0u64;
    while started.elapsed() < window {
        peak_rss_kb = peak_rss_kb.max(rss_kb(pid));
        std::thread::sleep(Duration::from_secs(1));
    }
    let ticks = cpu_ticks(pid) - start;
    let seconds = ticks as f64 / clock_ticks_per_second();
    Usage {
        cpu_percent: 100.0 * seconds / started.elapsed().as_secs_f64(),
        peak_rss_mb: peak_rss_kb as f64 / 1024.0,
    }
}

/// What `systemctl --user show` of every unit, once a second, costs its processes: the
/// children's CPU over the window, % of one core.
fn poll_with_systemctl(env: &BenchEnv, units: &[String], window: Duration) -> f64 {
    let before = children_cpu();
    let started = Instant::now();
    while started.elapsed() < window {
        let tick = Instant::now();
        let out = env
            .info
            .command("systemctl")
            .args(["--user", "show", "-p"])
            .arg("CPUUsageNSec,MemoryCurrent,TasksCurrent,IOReadBytes,IOWriteBytes")
            .args(units)
            .output()
            .expect("systemctl show");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(left) = Duration::from_secs(1).checked_sub(tick.elapsed()) {
            std::thread::sleep(left);
        }
    }
    100.0 * (children_cpu() - before) / started.elapsed().as_secs_f64()
}

/// What the reads the monitor makes of systemd cost by themselves: the same
/// `Systemd::unit_accounting` calls (one `GetAll` per unit, up to 32 in flight), once a
/// second, from this process over its own connection; its CPU over the window, % of one
/// core. Nothing else runs in this process meanwhile.
async fn poll_with_zbus(env: &BenchEnv, units: &[String], window: Duration) -> f64 {
    use futures_util::StreamExt;
    let conn = zbus::connection::Builder::address(env.info.bus_address.as_str())
        .build()
        .await
        .expect("connect to the sandbox's bus");
    let systemd = drover::systemd::Systemd::new(&conn)
        .await
        .expect("systemd's manager");
    let me = std::process::id();
    let before = cpu_ticks(me);
    let started = Instant::now();
    while started.elapsed() < window {
        let tick = Instant::now();
        let read = futures_util::stream::iter(units)
            .map(|unit| systemd.unit_accounting(unit))
            .buffered(32)
            .filter(|reply| std::future::ready(matches!(reply, Ok(Some(_)))))
            .count()
            .await;
        assert_eq!(read, units.len(), "every unit's accounting was read");
        if let Some(left) = Duration::from_secs(1).checked_sub(tick.elapsed()) {
            tokio::time::sleep(left).await;
        }
    }
    let seconds = (cpu_ticks(me) - before) as f64 / clock_ticks_per_second();
    100.0 * seconds / started.elapsed().as_secs_f64()
}

/// The process's own CPU time (utime + stime), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let fields = stat_fields(pid);
    fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn clock_ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// CPU seconds used by this process's waited-for children so far (cutime + cstime).
fn children_cpu() -> f64 {
    let fields = stat_fields(std::process::id());
    let ticks = fields[13].parse::<u64>().unwrap_or(0) + fields[14].parse::<u64>().unwrap_or(0);
    ticks as f64 / clock_ticks_per_second()
}

/// The fields of /proc/<pid>/stat after the parenthesised command name (state first).
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("a stat file");
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}
