//! Restart latency: from calling `Restart` on a killed run to the resumed step's process
//! running, beside what the step's own start-up costs, all in one run, interleaved.
//!
//! The workflow works in a small real git repository (`workspace`): step 1 writes a file
//! and is checkpointed, step 2 touches a marker named after its attempt and sleeps. Each
//! round kills the run while step 2 sleeps (untimed; the kill takes a checkpoint too), then
//! times `Restart` (latest checkpoint) to the new attempt's marker: both when the D-Bus
//! call returned and when the step's process was running. Baselines, interleaved round by
//! round: a fresh `Run` of a one-step workflow touching a marker (the step's own start-up
//! through drover) and `systemd-run --user --scope touch` (the floor). Markers are polled
//! every millisecond. Needs root. `cargo bench --bench restart`; `DROVER_BENCH_ROUNDS=N`
//! (default 100), `DROVER_BENCH_RESTARTS_PER_RUN=N` (default: all rounds on one run),
//! `DROVER_BENCH_REPO_FILES=N` (default 8: files in the workspace repository besides README
//! and Makefile), `DROVER_BENCH_CSV=FILE` (every sample, round by round).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{BenchEnv, DroverClient, percentile};
use drover::model::{ActionRecord, KillRecord, KillResult, RunState, StepState};

const GRACE: &str = "200ms";
/// Step 2's name; its marker is `<markers>/<run>.<attempt>`.
const WORK: &str = "work";

fn main() {
    let rounds = common::count("DROVER_BENCH_ROUNDS", 100);
    let per_run = common::count("DROVER_BENCH_RESTARTS_PER_RUN", rounds).max(1);
    let env = BenchEnv::start();
    let repo = git_repo(
        &env.dir.path().join("repo"),
        common::count("DROVER_BENCH_REPO_FILES", 8),
    );
    let markers = env.dir.path().join("markers");
    std::fs::create_dir_all(&markers).expect("markers dir");
    let resumable = env.workflow(
        "resumable.toml",
        &format!(
            r#"name = "resumable"
workspace = "{repo}"
[kill]
grace = "{GRACE}"
[[step]]
name = "prepare"
run = "echo prepared > prepared.txt"
checkpoint = true
[[step]]
name = "{WORK}"
run = "touch {markers}/$DROVER_RUN.$DROVER_ATTEMPT; sleep 300"
"#,
            repo = repo.display(),
            markers = markers.display(),
        ),
    );
    let fresh = env.workflow(
        "fresh.toml",
        "name = \"fresh\"\n[[step]]\nname = \"touch\"\nrun = \"touch \\\"$DROVER_PARAM_MARKER\\\"\"\n",
    );

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client = runtime.block_on(DroverClient::connect(&env.info));
    let mut s = Samples::default();
    let mut run: Option<String> = None;
    for i in 0..rounds {
        if i % per_run == 0 {
            if let Some(old) = run.take() {
                runtime.block_on(kill(&client, &old));
            }
            run = Some(runtime.block_on(start_resumable(&client, &resumable, &markers)));
        }
        let id = run.as_deref().expect("a run");
        runtime.block_on(restart_round(&client, id, &markers, &mut s));

        let marker = markers.join(format!("fresh-{i}"));
        let (returned, running) = runtime.block_on(fresh_run(&client, &fresh, &marker));
        s.fresh_returned.push(returned);
        s.fresh.push(running);

        let marker = markers.join(format!("systemd-run-{i}"));
        s.systemd_run.push(systemd_run(&env, &marker));
        if (i + 1) % 25 == 0 {
            eprintln!("{} rounds", i + 1);
        }
    }
    let checkpoints = run.as_deref().map(|id| {
        let text = runtime
            .block_on(client.proxy.checkpoints(id))
            .expect("Checkpoints");
        serde_json::from_str::<Vec<serde_json::Value>>(&text)
            .expect("checkpoints json")
            .len()
    });
    if let Some(old) = run.take() {
        runtime.block_on(kill(&client, &old));
    }
    drop(env);
    if let Ok(path) = std::env::var("DROVER_BENCH_CSV") {
        s.write_csv(Path::new(&path));
    }
    s.print(rounds, per_run, checkpoints);
}

#[derive(Default)]
struct Samples {
    /// `Restart` called → the call returned (ms).
    returned: Vec<f64>,
    /// `Restart` called → the resumed step's process running (ms).
    running: Vec<f64>,
    /// The agent's own account of the restart (`took_ms`: verify, keep, restore).
    took: Vec<f64>,
    /// `Kill` of the run while step 2 sleeps (ms; untimed for the figures above).
    kill: Vec<f64>,
    fresh: Vec<f64>,
    /// `Run` called → the call returned (ms).
    fresh_returned: Vec<f64>,
    systemd_run: Vec<f64>,
}

impl Samples {
    /// One line per round, for looking at a run's trend or outliers.
    fn write_csv(&self, path: &Path) {
        let mut text = String::from(
            "round,restart_running,restart_returned,took,kill,fresh,fresh_returned,systemd_run\n",
        );
        for i in 0..self.running.len() {
            text += &format!(
                "{i},{:.2},{:.2},{},{:.2},{:.2},{:.2},{:.2}\n",
                self.running[i],
                self.returned[i],
                self.took[i],
                self.kill[i],
                self.fresh[i],
                self.fresh_returned[i],
                self.systemd_run[i]
            );
        }
        std::fs::write(path, text).expect("write the CSV");
    }

    fn print(&self, rounds: usize, per_run: usize, checkpoints: Option<usize>) {
        println!(
            "\nRestart latency, {rounds} restarts ({per_run} per run), interleaved with the baselines (kill grace {GRACE})\n"
        );
        println!(
            "| what | p50 (ms) | p99 (ms) | max (ms) | p50 / fresh `Run` | p99 / fresh `Run` |"
        );
        println!("|---|---|---|---|---|---|");
        let (f50, f99) = (percentile(&self.fresh, 50.0), percentile(&self.fresh, 99.0));
        let rows: [(&str, &Vec<f64>); 7] = [
            (
                "drover `Restart` → resumed step's process running",
                &self.running,
            ),
            ("drover `Restart` → the call returned", &self.returned),
            (
                "  of which the agent's restore (`took_ms`: verify, keep, restore)",
                &self.took,
            ),
            (
                "fresh `Run` of a one-step workflow → step's process running (baseline)",
                &self.fresh,
            ),
            ("fresh `Run` → the call returned", &self.fresh_returned),
            (
                "`systemd-run --user --scope touch` → process running (floor)",
                &self.systemd_run,
            ),
            ("(untimed above) `Kill` of step 2, grace 200 ms", &self.kill),
        ];
        for (name, s) in rows {
            let max = s.iter().copied().fold(0.0, f64::max);
            let (p50, p99) = (percentile(s, 50.0), percentile(s, 99.0));
            println!(
                "| {name} | {p50:.1} | {p99:.1} | {max:.1} | {:.2}× | {:.2}× |",
                p50 / f50,
                p99 / f99
            );
        }
        let overhead = percentile(&self.running, 50.0) - f50;
        println!(
            "\nRestart's own overhead (restart p50 − fresh Run p50): {overhead:.1} ms (goal: under 500 ms: {})",
            if overhead < 500.0 { "met" } else { "NOT met" }
        );
        // Does a restart get slower as the run's history (attempts, checkpoints) grows?
        let tenth = (self.running.len() / 10).max(1);
        if self.running.len() >= 2 * tenth && per_run >= 2 * tenth {
            let first = &self.running[..tenth];
            let last = &self.running[self.running.len() - tenth..];
            println!(
                "Restart → running p50, first {tenth} restarts: {:.1} ms; last {tenth}: {:.1} ms",
                percentile(first, 50.0),
                percentile(last, 50.0)
            );
        }
        if let Some(n) = checkpoints {
            println!("Checkpoints of the last run: {n}");
        }
    }
}

/// A repository with `files` committed files (and a README and a Makefile).
fn git_repo(path: &Path, files: usize) -> PathBuf {
    std::fs::create_dir_all(path.join("src")).expect("repo dir");
    let git = |args: &[&str]| common::testing::git(path, args);
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(path.join("README"), "restart benchmark\n").expect("write");
    std::fs::write(path.join("Makefile"), "all:\n\ttrue\n").expect("write");
    for n in 0..files {
        std::fs::write(
            path.join(format!("src/part{n}.txt")),
            format!("part {n}\n").repeat(50),
        )
        .expect("write");
    }
    git(&["add", "-A"]);
    git(&["commit", "-qm", "init"]);
    path.to_owned()
}

/// Starts the resumable workflow and waits (untimed) for step 2 to run.
async fn start_resumable(client: &DroverClient, workflow: &Path, markers: &Path) -> String {
    let id = client.run(workflow).await;
    wait_for_file(markers.join(format!("{id}.1")), Instant::now()).await;
    id
}

/// One timed restart: kill the run (step 2 sleeping), restart it, wait for the new
/// attempt's marker.
async fn restart_round(client: &DroverClient, id: &str, markers: &Path, s: &mut Samples) {
    s.kill.push(kill(client, id).await);
    let run = client.get(id).await;
    assert_eq!(run.state, RunState::Killed, "{run:#?}");
    let attempt = run
        .steps
        .iter()
        .filter(|a| a.name == WORK)
        .map(|a| a.attempt)
        .max()
        .expect("step 2 ran")
        + 1;
    let marker = markers.join(format!("{id}.{attempt}"));
    let proxy = client.proxy.clone();
    let t0 = Instant::now();
    let watch = tokio::spawn(wait_for_file(marker, t0));
    let record = proxy
        .restart(id, HashMap::new())
        .await
        .unwrap_or_else(|e| panic!("Restart of {id}: {e}"));
    s.returned.push(ms(t0.elapsed()));
    s.running.push(watch.await.expect("marker watch"));
    let record: ActionRecord = serde_json::from_str(&record).expect("action record");
    assert_eq!(record.result, "done", "{record:#?}");
    s.took.push(record.took_ms as f64);
    // The resumed attempt is the one running (not a leftover).
    let run = client.get(id).await;
    let last = run
        .steps
        .iter()
        .rev()
        .find(|a| a.name == WORK)
        .expect("step 2");
    assert_eq!(
        (last.attempt, last.state),
        (attempt, StepState::Running),
        "{run:#?}"
    );
}

/// `Kill` over D-Bus with the benchmark's grace: ms from the call to its outcome.
async fn kill(client: &DroverClient, id: &str) -> f64 {
    let options = HashMap::from([("grace".to_owned(), zbus::Str::from(GRACE).into())]);
    let t0 = Instant::now();
    let text = client
        .proxy
        .kill(id, "restart benchmark", options)
        .await
        .expect("Kill");
    let took = ms(t0.elapsed());
    let record: KillRecord = serde_json::from_str(&text).expect("kill record");
    assert_eq!(
        (record.result, record.processes_left),
        (KillResult::Killed, Some(0)),
        "{record:#?}"
    );
    took
}

/// A fresh run of the one-step workflow: ms from `Run` to the call's return and to its
/// marker.
async fn fresh_run(client: &DroverClient, workflow: &Path, marker: &Path) -> (f64, f64) {
    let path = workflow.to_string_lossy();
    let value = marker.to_string_lossy();
    let params = HashMap::from([("marker".to_owned(), value.into_owned())]);
    let t0 = Instant::now();
    let watch = tokio::spawn(wait_for_file(marker.to_owned(), t0));
    client.proxy.run(&path, params).await.expect("Run");
    let returned = ms(t0.elapsed());
    let running = watch.await.expect("marker watch");
    (returned, running)
}

/// `systemd-run --user --scope touch MARKER`: ms from the spawn to the marker.
fn systemd_run(env: &BenchEnv, marker: &Path) -> f64 {
    let t0 = Instant::now();
    let mut child = env
        .info
        .command("systemd-run")
        .args(["--user", "--scope", "--quiet", "--collect", "touch"])
        .arg(marker)
        .stdout(Stdio::null())
        .spawn()
        .expect("systemd-run");
    let took = poll_file(marker, t0);
    assert!(child.wait().expect("systemd-run").success());
    took
}

/// ms from `t0` until `path` exists, polled every millisecond (on a blocking thread).
async fn wait_for_file(path: PathBuf, t0: Instant) -> f64 {
    tokio::task::spawn_blocking(move || poll_file(&path, t0))
        .await
        .expect("poll")
}

fn poll_file(path: &Path, t0: Instant) -> f64 {
    let deadline = t0 + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    ms(t0.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
