//! The agent's own metrics: how long sampling and rule evaluation take, state-DB write
//! and kill latencies, kills by result and restarts by failure class. A few atomics and a
//! mutex are all this needs; the `prometheus`/`metrics` crates would bring a registry,
//! label hashing and their own exposition for six series, and the exposition has to be
//! ours anyway (per-run series from the monitor's snapshot).
//!
//! The agent records into one process-wide registry, [`global`]: there is one agent per
//! process, and the recording points (the store's transactions, the engine's kill and
//! restart paths, the monitor's and the rules' ticks) would otherwise all need a handle
//! threaded through their constructors. Tests make their own [`SelfMetrics`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use crate::model::{FailureClass, KillResult, Timestamp};
use crate::sync::lock;

/// Buckets (seconds) of the state-DB write latency: a WAL commit with
/// `synchronous=NORMAL` takes tens of microseconds to a few milliseconds.
pub const DB_WRITE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Buckets (seconds) of the kill latency, request to verified end: a cooperative step ends
/// in milliseconds; one that ignores SIGTERM takes the grace (default 10 s) and more; a
/// critical section can hold a kill off for minutes.
pub const KILL_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0,
];

/// A gauge holding an `f64` (its bits in an atomic); NaN means never set.
#[derive(Debug)]
pub struct Gauge(AtomicU64);

impl Gauge {
    fn new() -> Gauge {
        Gauge(AtomicU64::new(f64::NAN.to_bits()))
    }
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
    /// `None` until the first `set`.
    pub fn get(&self) -> Option<f64> {
        Some(f64::from_bits(self.0.load(Ordering::Relaxed))).filter(|v| !v.is_nan())
    }
}

/// A cumulative histogram with fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket, not cumulative (the last one is `+Inf`).
    counts: Vec<AtomicU64>,
    /// The sum as `f64` bits, updated by compare-and-swap.
    sum: AtomicU64,
}

/// A histogram as read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, cumulative count)`, ending with `(f64::INFINITY, count)`.
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub fn observe(&self, value: f64) {
        let index = self
            .bounds
            .iter()
            .position(|&bound| value <= bound)
            .unwrap_or(self.bounds.len());
        self.counts[index].fetch_add(1, Ordering::Relaxed);
        let mut current = self.sum.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(current) + value).to_bits();
            match self.sum.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
    }

    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(elapsed.as_secs_f64());
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.counts)
            .map(|(bound, count)| {
                cumulative += count.load(Ordering::Relaxed);
                (bound, cumulative)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            sum: f64::from_bits(self.sum.load(Ordering::Relaxed)),
            count: cumulative,
        }
    }
}

/// The agent's self-metrics registry.
#[derive(Debug)]
pub struct SelfMetrics {
    started: Instant,
    /// How long the monitor's last sampling tick took (set by the monitor).
    pub sampling_seconds: Gauge,
    /// How long the last evaluation of every rule against every run took (set by rules).
    pub rule_evaluation_seconds: Gauge,
    /// Each state-DB write transaction, begin to commit.
    pub db_write_seconds: Histogram,
    /// Each kill that ended (killed or failed), request to end: `KillRecord::total_ms`.
    pub kill_seconds: Histogram,
    kills: Mutex<BTreeMap<&'static str, u64>>,
    restarts: Mutex<BTreeMap<&'static str, u64>>,
    /// State-DB writes that could not begin or commit, since the agent started.
    db_write_failures: AtomicU64,
    /// Set while writes fail (until one commits), so a commit need not take the lock.
    db_writes_failing: AtomicBool,
    db_write_failure: Mutex<Option<DbWriteFailure>>,
}

/// State-DB writes are failing (a full disk, an I/O error): since when, how many, and the
/// latest error. Cleared by the next write that commits.
#[derive(Debug, Clone, PartialEq)]
pub struct DbWriteFailure {
    pub since: Timestamp,
    pub failures: u64,
    pub error: String,
}

/// Everything [`SelfMetrics`] holds, read at one moment (what the exposition renders).
#[derive(Debug, Clone, PartialEq)]
pub struct SelfMetricsSnapshot {
    pub uptime_seconds: f64,
    pub sampling_seconds: Option<f64>,
    pub rule_evaluation_seconds: Option<f64>,
    pub db_write_seconds: HistogramSnapshot,
    pub kill_seconds: HistogramSnapshot,
    /// By `KillResult::as_str`; every final result is present, 0 until it happens.
    pub kills_by_result: BTreeMap<String, u64>,
    /// By `FailureClass::as_str` (or "none"); every class present, 0 until it happens.
    pub restarts_by_failure_class: BTreeMap<String, u64>,
    pub db_write_failures: u64,
}

/// The kill results a kill can end with, exported from 0 so `rate()` sees the first one.
const KILL_RESULTS: [KillResult; 4] = [
    KillResult::Killed,
    KillResult::Failed,
    KillResult::Refused,
    KillResult::External,
];

/// The restart label of a run that failed without a class (e.g. failed before any step).
pub const NO_FAILURE_CLASS: &str = "none";

impl Default for SelfMetrics {
    fn default() -> SelfMetrics {
        SelfMetrics::new()
    }
}

impl SelfMetrics {
    pub fn new() -> SelfMetrics {
        SelfMetrics {
            started: Instant::now(),
            sampling_seconds: Gauge::new(),
            rule_evaluation_seconds: Gauge::new(),
            db_write_seconds: Histogram::new(DB_WRITE_BUCKETS),
            kill_seconds: Histogram::new(KILL_BUCKETS),
            kills: Mutex::new(KILL_RESULTS.iter().map(|r| (r.as_str(), 0)).collect()),
            restarts: Mutex::new(
                FailureClass::ALL
                    .iter()
                    .map(|c| c.as_str())
                    .chain([NO_FAILURE_CLASS])
                    .map(|c| (c, 0))
                    .collect(),
            ),
            db_write_failures: AtomicU64::new(0),
            db_writes_failing: AtomicBool::new(false),
            db_write_failure: Mutex::new(None),
        }
    }

    pub fn set_sampling_duration(&self, took: Duration) {
        self.sampling_seconds.set(took.as_secs_f64());
    }

    pub fn set_rule_evaluation_duration(&self, took: Duration) {
        self.rule_evaluation_seconds.set(took.as_secs_f64());
    }

    pub fn observe_db_write(&self, took: Duration) {
        self.db_write_seconds.observe_duration(took);
        // Read before the swap: a commit, the hot path, then writes nothing shared.
        if self.db_writes_failing.load(Ordering::Relaxed)
            && self.db_writes_failing.swap(false, Ordering::Relaxed)
            && let Some(failure) = lock(&self.db_write_failure).take()
        {
            tracing::info!(
                drover_event = "state-db-writable",
                "the state DB is written again after {} failed writes since {}",
                failure.failures,
                failure.since
            );
        }
    }

    /// A state-DB write could not begin or commit.
    pub fn db_write_failed(&self, error: &str) {
        self.db_write_failures.fetch_add(1, Ordering::Relaxed);
        let mut failure = lock(&self.db_write_failure);
        match failure.as_mut() {
            Some(failure) => {
                failure.failures += 1;
                error.clone_into(&mut failure.error);
            }
            None => {
                tracing::error!(
                    drover_event = "state-db-write-failed",
                    "the state DB cannot be written: {error}; what could not be recorded is tried again"
                );
                *failure = Some(DbWriteFailure {
                    since: Timestamp::now(),
                    failures: 1,
                    error: error.to_owned(),
                });
            }
        }
        self.db_writes_failing.store(true, Ordering::Relaxed);
    }

    /// Whether state-DB writes are failing now, and how.
    pub fn db_write_failure(&self) -> Option<DbWriteFailure> {
        lock(&self.db_write_failure).clone()
    }

    /// A kill reached `result`; `total_ms` (request to end) goes to the latency histogram
    /// when the kill was carried out (not for refusals or kills seen from outside).
    pub fn kill_ended(&self, result: KillResult, total_ms: Option<u64>) {
        *lock(&self.kills).entry(result.as_str()).or_default() += 1;
        if let (KillResult::Killed | KillResult::Failed, Some(ms)) = (result, total_ms) {
            self.kill_seconds.observe(ms as f64 / 1000.0);
        }
    }

    /// An operator restarted a run that had failed with `class`.
    pub fn restarted(&self, class: Option<FailureClass>) {
        let label = class.map_or(NO_FAILURE_CLASS, FailureClass::as_str);
        *lock(&self.restarts).entry(label).or_default() += 1;
    }

    pub fn snapshot(&self) -> SelfMetricsSnapshot {
        let owned = |map: &Mutex<BTreeMap<&'static str, u64>>| {
            lock(map)
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect()
        };
        SelfMetricsSnapshot {
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            sampling_seconds: self.sampling_seconds.get(),
            rule_evaluation_seconds: self.rule_evaluation_seconds.get(),
            db_write_seconds: self.db_write_seconds.snapshot(),
            kill_seconds: self.kill_seconds.snapshot(),
            kills_by_result: owned(&self.kills),
            restarts_by_failure_class: owned(&self.restarts),
            db_write_failures: self.db_write_failures.load(Ordering::Relaxed),
        }
    }
}

static GLOBAL: LazyLock<SelfMetrics> = LazyLock::new(SelfMetrics::new);

/// The agent's registry (see the module comment for why it is process-wide).
pub fn global() -> &'static SelfMetrics {
    &GLOBAL
}

/// Records how a state-DB write went into the agent's registry: what the agent's stores
/// are given as their write observer (`Store::observe_writes`).
pub fn record_db_write(outcome: Result<Duration, &rusqlite::Error>) {
    match outcome {
        Ok(took) => global().observe_db_write(took),
        Err(e) => global().db_write_failed(&e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_inf() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(0.5);
        h.observe(7.0);
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(0.1, 1), (1.0, 3), (f64::INFINITY, 4)]);
        assert_eq!(s.count, 4);
        assert!((s.sum - 8.05).abs() < 1e-9);
    }

    #[test]
    fn counters_start_at_zero_for_every_known_label() {
        let m = SelfMetrics::new();
        m.kill_ended(KillResult::Killed, Some(1500));
        m.kill_ended(KillResult::Refused, None);
        m.restarted(Some(FailureClass::Oom));
        m.restarted(None);
        let s = m.snapshot();
        assert_eq!(s.kills_by_result["killed"], 1);
        assert_eq!(s.kills_by_result["refused"], 1);
        assert_eq!(s.kills_by_result["external"], 0);
        assert_eq!(s.restarts_by_failure_class["oom"], 1);
        assert_eq!(s.restarts_by_failure_class["none"], 1);
        assert_eq!(s.restarts_by_failure_class["stalled"], 0);
        // Only carried-out kills are timed.
        assert_eq!(s.kill_seconds.count, 1);
        assert!((s.kill_seconds.sum - 1.5).abs() < 1e-9);
        assert_eq!(s.sampling_seconds, None);
    }
}
