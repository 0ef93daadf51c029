//! Live metrics of running workflows: every `interval`, each running run's step scope and
//! run slice are read (systemd's accounting in one `GetAll` per unit, the cgroup's own
//! files where systemd leaves a value unset), together with drover's own figures (output
//! rate, idle time, elapsed time, and an agent step's turns, tokens, cost and tool in use).
//! The last hour of samples stays in memory; one row per step and minute goes to the state
//! DB, kept for `[monitor] history`. Rules evaluate on each finished tick (`subscribe`).

pub mod cgroupfs;
mod downsample;

use downsample::Downsampler;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::claude::stream::StreamFollower;
use crate::engine::Engine;
use crate::model::{
    MetricsMinute, MetricsReport, Run, RunMetrics, RunState, Sample, StepAttempt, StepState,
    Timestamp,
};
use crate::selfmetrics;
use crate::store::{MetricsLog, StoreError};
use crate::sync::lock;
use crate::systemd::{Accounting, Systemd};

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How the monitor samples and keeps what it samples.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    pub interval: Duration,
    /// How long downsampled rows stay in the state DB.
    pub history: Duration,
    /// The downsampling period of the DB rows (a minute; shorter in tests).
    pub period: Duration,
    /// How much of the per-interval series stays in memory.
    pub keep: Duration,
}

impl MonitorOptions {
    pub fn from_config(config: &MonitorConfig) -> MonitorOptions {
        MonitorOptions {
            interval: config.interval.max(Duration::from_millis(100)),
            history: config.history,
            period: Duration::from_secs(60),
            keep: Duration::from_secs(3600),
        }
    }

    fn ring_len(&self) -> usize {
        let n = self.keep.as_millis() / self.interval.as_millis().max(1);
        usize::try_from(n).unwrap_or(usize::MAX).clamp(1, 86_400)
    }
}

/// How many `GetAll` calls a tick has in flight at once.
const CALLS_IN_FLIGHT: usize = 32;

/// What `Metrics` returns of the series: the last five minutes at 1 s.
pub const REPORT_SAMPLES: usize = 300;

/// `[monitor]`: how often running units are sampled and how long history is kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Sampling period, e.g. "1s".
    #[serde(
        serialize_with = "crate::quantity::duration_text::serialize",
        deserialize_with = "crate::quantity::positive_duration"
    )]
    pub interval: Duration,
    /// How long the 1-minute history stays in the state DB, e.g. "30d".
    #[serde(
        serialize_with = "crate::quantity::duration_text::serialize",
        deserialize_with = "crate::quantity::positive_duration"
    )]
    pub history: Duration,
}

impl Default for MonitorConfig {
    fn default() -> MonitorConfig {
        MonitorConfig {
            interval: Duration::from_secs(1),
            history: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

#[derive(Clone)]
pub struct Monitor {
    shared: Arc<Shared>,
}

struct Shared {
    runs: Mutex<HashMap<String, Tracked>>,
    ticks: broadcast::Sender<()>,
    /// Reads the runs to sample; writes only the metrics history.
    store: Mutex<MetricsLog>,
    options: MonitorOptions,
}

/// A counter reading and when it was taken, to turn counters into rates.
#[derive(Debug, Clone)]
struct Reading {
    key: String,
    at: Instant,
    value: u64,
    lines: u64,
}

struct Tracked {
    metrics: RunMetrics,
    series: VecDeque<Sample>,
    cpu: Option<Reading>,
    slice_cpu: Option<Reading>,
    output: Option<Reading>,
    stream: Option<(String, StreamFollower)>,
    down: Downsampler,
}

impl Monitor {
    /// Opens its own connection to the state DB (the engine has migrated it) and starts the
    /// sampler task.
    pub fn start(
        engine: Engine,
        systemd: Systemd,
        options: MonitorOptions,
    ) -> Result<Monitor, MonitorError> {
        let store = MetricsLog::open(&engine.state_dir().join("state.db"))?
            .observe_writes(selfmetrics::record_db_write);
        let (ticks, _) = broadcast::channel(16);
        let monitor = Monitor {
            shared: Arc::new(Shared {
                runs: Mutex::default(),
                ticks,
                store: Mutex::new(store),
                options,
            }),
        };
        let sampler = Sampler {
            monitor: monitor.clone(),
            engine,
            systemd,
            files: cgroupfs::Files::new(cgroupfs::Mounts::discover()),
            last_prune: None,
        };
        tokio::spawn(sampler.run());
        Ok(monitor)
    }

    /// The latest metrics of every unfinished run, oldest run first.
    pub fn all(&self) -> Vec<RunMetrics> {
        let runs = lock(&self.shared.runs);
        let mut all: Vec<RunMetrics> = runs.values().map(|t| t.metrics.clone()).collect();
        all.sort_by(|a, b| {
            (b.latest.run_elapsed_secs, &a.run)
                .partial_cmp(&(a.latest.run_elapsed_secs, &b.run))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        all
    }

    pub fn latest(&self, run: &str) -> Option<RunMetrics> {
        lock(&self.shared.runs).get(run).map(|t| t.metrics.clone())
    }

    /// The run's samples in memory (up to the last hour), oldest first.
    pub fn series(&self, run: &str) -> Vec<Sample> {
        lock(&self.shared.runs)
            .get(run)
            .map(|t| t.series.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The latest metrics and the last `last` samples of a running run.
    pub fn report(&self, run: &str, last: usize) -> Option<MetricsReport> {
        let runs = lock(&self.shared.runs);
        let t = runs.get(run)?;
        let skip = t.series.len().saturating_sub(last);
        Some(MetricsReport {
            metrics: t.metrics.clone(),
            series: t.series.iter().skip(skip).cloned().collect(),
        })
    }

    /// A run's downsampled history from the state DB, oldest first.
    pub fn history(&self, run: &str) -> Result<Vec<MetricsMinute>, MonitorError> {
        Ok(lock(&self.shared.store).metrics_history(run)?)
    }

    /// One message per finished tick.
    pub fn subscribe(&self) -> broadcast::Receiver<()> {
        self.shared.ticks.subscribe()
    }
}

struct Sampler {
    monitor: Monitor,
    engine: Engine,
    systemd: Systemd,
    files: cgroupfs::Files,
    last_prune: Option<Instant>,
}

/// One unit's resource values and where each came from.
#[derive(Debug, Default)]
struct Resources {
    cpu_nsec: Option<u64>,
    memory: Option<u64>,
    memory_peak: Option<u64>,
    tasks: Option<u64>,
    io: Option<(u64, u64)>,
    sources: BTreeMap<String, String>,
}

fn secs_between(from: Option<Timestamp>, to: Timestamp) -> f64 {
    from.map_or(0.0, |from| ((to.0 - from.0).max(0) as f64) / 1000.0)
}

/// The rate of a counter since the last reading of the same key (the same unit): a new
/// unit starts over rather than reading another unit's counter as its own.
fn rate(
    prev: &mut Option<Reading>,
    key: &str,
    now: Instant,
    value: u64,
    lines: u64,
) -> Option<(f64, f64)> {
    let rate = prev.as_ref().filter(|p| p.key == key).and_then(|p| {
        let dt = now.duration_since(p.at).as_secs_f64();
        (dt > 0.0).then(|| {
            (
                value.saturating_sub(p.value) as f64 / dt,
                lines.saturating_sub(p.lines) as f64 / dt,
            )
        })
    });
    *prev = Some(Reading {
        key: key.to_owned(),
        at: now,
        value,
        lines,
    });
    rate
}

/// The attempt of `run` running now: the latest one that started and has not ended.
fn running_attempt(run: &Run) -> Option<&StepAttempt> {
    run.steps
        .iter()
        .filter(|a| matches!(a.state, StepState::Running | StepState::Starting) && a.unit.is_some())
        .max_by_key(|a| (a.started_at, a.attempt))
}

impl Sampler {
    async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.monitor.shared.options.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            ticker.tick().await;
            let started = Instant::now();
            self.tick().await;
            selfmetrics::global().set_sampling_duration(started.elapsed());
            // No receiver is not an error: rules may not be running.
            let _ = self.monitor.shared.ticks.send(());
        }
    }

    /// Reads every unfinished run once.
    async fn tick(&mut self) {
        let runs = lock(&self.monitor.shared.store).unfinished();
        let runs = match runs {
            Ok(runs) => runs,
            Err(e) => {
                tracing::warn!("monitor: cannot read the running runs: {e}");
                return;
            }
        };
        let mut rows = Vec::new();
        let resources = self.read_units(&runs).await;
        for (run, (step_res, slice_res)) in runs.iter().zip(resources) {
            let now = Timestamp::now();
            let instant = Instant::now();
            let mut all = lock(&self.monitor.shared.runs);
            let options = &self.monitor.shared.options;
            let ring = options.ring_len();
            let tracked = all.entry(run.id.clone()).or_insert_with(|| Tracked {
                metrics: RunMetrics {
                    run: run.id.clone(),
                    workflow: run.workflow.clone(),
                    state: run.state,
                    step: None,
                    attempt: 0,
                    unit: None,
                    latest: Sample::default(),
                },
                series: VecDeque::with_capacity(ring.min(4096)),
                cpu: None,
                slice_cpu: None,
                output: None,
                stream: None,
                down: Downsampler::new(options.period),
            });
            let attempt = running_attempt(run);
            let mut sample = Sample {
                at: Some(now),
                run_elapsed_secs: secs_between(run.started_at, now),
                ..Sample::default()
            };
            let mut output_totals = (0, 0);
            if let (Some(attempt), Some(unit)) = (attempt, attempt.and_then(|a| a.unit.as_deref()))
            {
                let res = step_res.unwrap_or_default();
                sample.cpu_percent = res.cpu_nsec.and_then(|n| {
                    rate(&mut tracked.cpu, unit, instant, n, 0).map(|(ns, _)| ns / 1e7)
                });
                sample.memory_bytes = res.memory;
                sample.memory_peak_bytes = res.memory_peak;
                sample.tasks = res.tasks;
                sample.io_read_bytes = res.io.map(|io| io.0);
                sample.io_write_bytes = res.io.map(|io| io.1);
                sample.sources = res.sources;
                let output = self
                    .engine
                    .live_output(unit)
                    .unwrap_or_else(|| attempt.output.clone());
                output_totals = (output.bytes, output.lines);
                if let Some((bytes, lines)) = rate(
                    &mut tracked.output,
                    unit,
                    instant,
                    output.bytes,
                    output.lines,
                ) {
                    sample.output_bytes_per_sec = bytes;
                    sample.output_lines_per_sec = lines;
                }
                sample.idle_secs = secs_between(output.last_output_at.or(attempt.started_at), now);
                sample.step_elapsed_secs = secs_between(attempt.started_at, now);
                if attempt.session_id.is_some() {
                    let path = stream_path(self.engine.state_dir(), &run.id, attempt);
                    if tracked.stream.as_ref().is_none_or(|(u, _)| u != unit) {
                        tracked.stream = Some((unit.to_owned(), StreamFollower::default()));
                    }
                    if let Some((_, follower)) = tracked.stream.as_mut() {
                        sample.agent = Some(follower.catch_up(&path));
                    }
                }
                tracked.metrics.step = Some(attempt.name.clone());
                tracked.metrics.attempt = attempt.attempt;
                tracked.metrics.unit = Some(unit.to_owned());
            } else {
                tracked.metrics.step = None;
                tracked.metrics.attempt = 0;
                tracked.metrics.unit = None;
            }
            if let Some(slice) = slice_res {
                let key = format!("drover-{}.slice", run.id);
                sample.run_cpu_percent = slice.cpu_nsec.and_then(|n| {
                    rate(&mut tracked.slice_cpu, &key, instant, n, 0).map(|(ns, _)| ns / 1e7)
                });
                sample.run_memory_bytes = slice.memory;
                sample.run_tasks = slice.tasks;
            }
            tracked.metrics.state = run.state;
            if let Some(step) = tracked.metrics.step.clone()
                && let Some(row) =
                    tracked
                        .down
                        .add(&run.id, &run.workflow, &step, now, &sample, output_totals)
            {
                rows.push(row);
            }
            tracked.metrics.latest = sample.clone();
            if tracked.series.len() >= ring {
                tracked.series.pop_front();
            }
            tracked.series.push_back(sample);
        }
        // Runs that ended: their last period is written and they leave memory.
        {
            let mut all = lock(&self.monitor.shared.runs);
            let ended: Vec<String> = all
                .keys()
                .filter(|id| !runs.iter().any(|r| &r.id == *id))
                .cloned()
                .collect();
            for id in ended {
                if let Some(mut tracked) = all.remove(&id)
                    && let Some(row) = tracked.down.finish()
                {
                    rows.push(row);
                }
            }
        }
        self.files.end_tick();
        self.write_history(&rows);
    }

    /// Each run's step scope's and run slice's resources.
    /// The `GetAll` calls are in flight together (up to `CALLS_IN_FLIGHT`), so a tick
    /// costs a few bus round trips rather than two per run.
    async fn read_units(&mut self, runs: &[Run]) -> Vec<(Option<Resources>, Option<Resources>)> {
        let units: Vec<Option<String>> = runs
            .iter()
            .flat_map(|run| {
                let step = running_attempt(run).and_then(|a| a.unit.clone());
                let slice =
                    (run.state != RunState::Pending).then(|| format!("drover-{}.slice", run.id));
                [step, slice]
            })
            .collect();
        let replies: Vec<_> = futures_util::stream::iter(units)
            .map(|unit| {
                let systemd = self.systemd.clone();
                async move {
                    let unit = unit?;
                    let reply = systemd.unit_accounting(&unit).await;
                    Some((unit, reply))
                }
            })
            .buffered(CALLS_IN_FLIGHT)
            .collect()
            .await;
        let accounting: Vec<Option<Accounting>> = replies
            .into_iter()
            .map(|reply| match reply? {
                (_, Ok(acct)) => acct,
                (unit, Err(e)) => {
                    tracing::debug!("monitor: cannot read the accounting of {unit}: {e}");
                    None
                }
            })
            .collect();
        // Two units per run, in run order: the step scope, then the run slice.
        accounting
            .chunks_exact(2)
            .map(|pair| {
                let mut fill = |acct: &Option<Accounting>| acct.as_ref().map(|a| self.fill(a));
                (fill(&pair[0]), fill(&pair[1]))
            })
            .collect()
    }

    fn fill(&mut self, acct: &Accounting) -> Resources {
        let mut res = Resources::default();
        let cg = acct.control_group.as_deref();
        let files = &mut self.files;
        let mut pick =
            |name: &str,
             systemd: Option<u64>,
             file: fn(&mut cgroupfs::Files, &str) -> Option<(u64, &'static str)>| {
                // A file is read only where systemd left the value unset.
                let (value, source) = match (systemd, cg) {
                    (Some(v), _) => (Some(v), Some("systemd")),
                    (None, Some(cg)) => match file(files, cg) {
                        Some((v, source)) => (Some(v), Some(source)),
                        None => (None, None),
                    },
                    (None, None) => (None, None),
                };
                if let Some(source) = source {
                    res.sources.insert(name.to_owned(), source.to_owned());
                }
                value
            };
        let cpu = pick("cpu", acct.cpu_usage_nsec, cgroupfs::Files::cpu_usage_nsec);
        let memory = pick(
            "memory",
            acct.memory_current,
            cgroupfs::Files::memory_current,
        );
        let peak = pick(
            "memory_peak",
            acct.memory_peak,
            cgroupfs::Files::memory_peak,
        );
        let tasks = pick("tasks", acct.tasks_current, cgroupfs::Files::tasks);
        res.cpu_nsec = cpu;
        res.memory = memory;
        res.memory_peak = peak;
        res.tasks = tasks;
        res.io = match (acct.io_read_bytes, acct.io_write_bytes) {
            (Some(r), Some(w)) => {
                res.sources.insert("io".into(), "systemd".into());
                Some((r, w))
            }
            _ => cg
                .and_then(|cg| self.files.io_bytes(cg))
                .map(|(io, source)| {
                    res.sources.insert("io".into(), source.into());
                    io
                }),
        };
        res
    }

    /// Writes finished rows and, once per period, prunes rows older than `history`.
    fn write_history(&mut self, rows: &[MetricsMinute]) {
        let options = &self.monitor.shared.options;
        let prune_due = self
            .last_prune
            .is_none_or(|at| at.elapsed() >= options.period);
        if rows.is_empty() && !prune_due {
            return;
        }
        let mut store = lock(&self.monitor.shared.store);
        if !rows.is_empty()
            && let Err(e) = store.write_metrics(rows)
        {
            tracing::warn!("monitor: cannot write {} history rows: {e}", rows.len());
        }
        if prune_due {
            self.last_prune = Some(Instant::now());
            let keep_ms = i64::try_from(options.history.as_millis()).unwrap_or(i64::MAX);
            let before = Timestamp(Timestamp::now().0.saturating_sub(keep_ms));
            if let Err(e) = store.prune_metrics(before) {
                tracing::warn!("monitor: cannot prune the metrics history: {e}");
            }
        }
    }
}

/// An agent step's stream-json file: `<state>/runs/<run>/<step>.<n>.stream.jsonl`.
fn stream_path(state_dir: &Path, run: &str, attempt: &StepAttempt) -> PathBuf {
    state_dir
        .join("runs")
        .join(run)
        .join(format!("{}.{}.stream.jsonl", attempt.name, attempt.attempt))
}
