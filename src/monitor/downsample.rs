//! Downsampling of a run's 1 s samples into one history row per step and period (a minute
//! in the agent), the shape the state DB keeps for trends.

use crate::model::{MetricsMinute, Sample, Timestamp};

/// Accumulates one run's samples; hands back a finished row whenever the period or the
/// step changes, and the row in progress on [`Downsampler::finish`].
#[derive(Debug)]
pub struct Downsampler {
    period_ms: i64,
    current: Option<(MetricsMinute, f64, u64)>,
    /// Output totals (bytes, lines) at the end of the last row, per step, so each row
    /// counts only its own period's output.
    output_base: Option<(String, u64, u64)>,
    /// The totals of the latest sample: the next row's base once this row is finished.
    output_last: Option<(String, u64, u64)>,
}

fn max_opt<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b > a { b } else { a }),
        (a, b) => a.or(b),
    }
}

impl Downsampler {
    pub fn new(period: std::time::Duration) -> Downsampler {
        Downsampler {
            period_ms: i64::try_from(period.as_millis()).unwrap_or(60_000).max(1),
            current: None,
            output_base: None,
            output_last: None,
        }
    }

    /// Adds a sample taken at `at` of `step`, whose output totals are `output`
    /// (bytes, lines); returns the row of the previous period once it is complete.
    pub fn add(
        &mut self,
        run: &str,
        workflow: &str,
        step: &str,
        at: Timestamp,
        sample: &Sample,
        output: (u64, u64),
    ) -> Option<MetricsMinute> {
        let minute = Timestamp(at.0 - at.0.rem_euclid(self.period_ms));
        let finished = match &self.current {
            Some((row, ..)) if row.minute != minute || row.step != step => self.finish(),
            _ => None,
        };
        let base = match &self.output_base {
            Some((s, bytes, lines)) if s == step => (*bytes, *lines),
            _ => (0, 0),
        };
        let (row, cpu_sum, cpu_n) = self.current.get_or_insert_with(|| {
            (
                MetricsMinute {
                    run: run.to_owned(),
                    workflow: workflow.to_owned(),
                    step: step.to_owned(),
                    minute,
                    samples: 0,
                    cpu_avg: None,
                    cpu_max: None,
                    memory_max: None,
                    tasks_max: None,
                    io_read_bytes: None,
                    io_write_bytes: None,
                    output_bytes: 0,
                    output_lines: 0,
                    idle_max: 0.0,
                    tokens_in: None,
                    tokens_out: None,
                    cost_usd: None,
                },
                0.0,
                0,
            )
        });
        row.samples += 1;
        if let Some(cpu) = sample.cpu_percent {
            *cpu_sum += cpu;
            *cpu_n += 1;
            row.cpu_avg = Some(*cpu_sum / *cpu_n as f64);
            row.cpu_max = max_opt(row.cpu_max, Some(cpu));
        }
        row.memory_max = max_opt(row.memory_max, sample.memory_bytes);
        row.tasks_max = max_opt(row.tasks_max, sample.tasks);
        row.io_read_bytes = max_opt(row.io_read_bytes, sample.io_read_bytes);
        row.io_write_bytes = max_opt(row.io_write_bytes, sample.io_write_bytes);
        row.output_bytes = output.0.saturating_sub(base.0);
        row.output_lines = output.1.saturating_sub(base.1);
        row.idle_max = row.idle_max.max(sample.idle_secs);
        if let Some(agent) = &sample.agent {
            row.tokens_in = max_opt(row.tokens_in, Some(agent.tokens_in));
            row.tokens_out = max_opt(row.tokens_out, Some(agent.tokens_out));
            row.cost_usd = max_opt(row.cost_usd, Some(agent.cost_usd));
        }
        self.output_last = Some((step.to_owned(), output.0, output.1));
        finished
    }

    /// The row in progress, if any (the run ended, or its period is over).
    pub fn finish(&mut self) -> Option<MetricsMinute> {
        let (row, ..) = self.current.take()?;
        self.output_base = self.output_last.clone();
        Some(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample(cpu: f64, memory: u64, idle: f64) -> Sample {
        Sample {
            cpu_percent: Some(cpu),
            memory_bytes: Some(memory),
            idle_secs: idle,
            ..Sample::default()
        }
    }

    #[test]
    fn one_row_per_period_and_step() {
        let mut d = Downsampler::new(Duration::from_secs(60));
        let t = |s: i64| Timestamp(1_700_000_080_000 + s * 1000); // 20 s before a minute
        assert_eq!(
            d.add("r", "w", "a", t(0), &sample(10.0, 100, 1.0), (10, 1)),
            None
        );
        assert_eq!(
            d.add("r", "w", "a", t(1), &sample(30.0, 300, 2.0), (15, 2)),
            None
        );
        // The next minute begins: the first row is complete.
        let row = d
            .add("r", "w", "a", t(20), &sample(50.0, 200, 0.0), (20, 3))
            .expect("a row for the first minute");
        assert_eq!(row.minute, Timestamp(1_700_000_040_000));
        assert_eq!(
            (row.samples, row.cpu_avg, row.cpu_max),
            (2, Some(20.0), Some(30.0))
        );
        assert_eq!((row.memory_max, row.idle_max), (Some(300), 2.0));
        assert_eq!((row.output_bytes, row.output_lines), (15, 2));
        // Another step starts in the same minute: the row of the first step is complete,
        // and counts only this minute's output.
        let row = d
            .add("r", "w", "b", t(21), &sample(1.0, 1, 0.0), (4, 1))
            .expect("the row of step a");
        assert_eq!((row.step.as_str(), row.samples), ("a", 1));
        assert_eq!((row.output_bytes, row.output_lines), (5, 1));
        let row = d.finish().expect("the row in progress");
        assert_eq!((row.step.as_str(), row.output_bytes), ("b", 4));
        assert_eq!(d.finish(), None);
    }
}
