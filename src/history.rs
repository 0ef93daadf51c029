//! `drover history`: runs, outcomes, durations, costs, kills and restarts per day (UTC),
//! reckoned from the rows the store returns. The arithmetic (days, quantiles) lives here,
//! above the store, so the store only selects.

use crate::model::{History, HistoryDay, Timestamp};
use crate::store::{StoreError, StoreReader};

const MILLIS_PER_DAY: i64 = 24 * 3600 * 1000;

/// `YYYY-MM-DD` of a day number since the epoch (civil-from-days, proleptic Gregorian).
fn day_name(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The `q` quantile (nearest rank) of sorted `values`.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Per-day history since `since` (to `now`), of `workflow` or of every workflow.
pub fn history(
    store: &StoreReader,
    workflow: Option<&str>,
    since: Timestamp,
    now: Timestamp,
) -> Result<History, StoreError> {
    let first = since.0.div_euclid(MILLIS_PER_DAY);
    let last = now.0.div_euclid(MILLIS_PER_DAY).max(first);
    let mut days: Vec<HistoryDay> = (first..=last)
        .map(|d| HistoryDay {
            day: day_name(d),
            ..HistoryDay::default()
        })
        .collect();
    let mut durations: Vec<Vec<f64>> = vec![Vec::new(); days.len()];
    let slot = |at: Timestamp| usize::try_from(at.0.div_euclid(MILLIS_PER_DAY) - first).ok();

    for run in store.runs_created_since(workflow, since)? {
        let Some(i) = slot(run.created_at).filter(|&i| i < days.len()) else {
            continue;
        };
        let day = &mut days[i];
        day.runs += 1;
        let ended_as = match run.state.as_str() {
            "succeeded" => Some(&mut day.succeeded),
            "failed" => Some(&mut day.failed),
            "killed" => Some(&mut day.killed),
            _ => None,
        };
        if let Some(count) = ended_as {
            *count += 1;
            if let Some(end) = run.ended_at {
                let start = run.started_at.unwrap_or(run.created_at);
                durations[i].push((end.0 - start.0).max(0) as f64 / 1000.0);
            }
            if run.state != "succeeded" {
                let class = run.failure_class.unwrap_or_else(|| "none".to_owned());
                *day.failure_classes.entry(class).or_default() += 1;
            }
        }
    }
    // Costs by the day their run was created.
    for (created, cost) in store.agent_costs_since(workflow, since)? {
        if let Some(day) = slot(created).and_then(|i| days.get_mut(i)) {
            day.cost_usd += cost;
        }
    }
    for at in store.kills_done_since(workflow, since)? {
        if let Some(day) = slot(at).and_then(|i| days.get_mut(i)) {
            day.kills += 1;
        }
    }
    for at in store.restarts_done_since(workflow, since)? {
        if let Some(day) = slot(at).and_then(|i| days.get_mut(i)) {
            day.restarts += 1;
        }
    }

    for (day, mut secs) in days.iter_mut().zip(durations) {
        secs.sort_by(f64::total_cmp);
        day.duration_p50_secs = quantile(&secs, 0.5);
        day.duration_p95_secs = quantile(&secs, 0.95);
        let ended = day.succeeded + day.failed + day.killed;
        day.success_rate = (ended > 0).then(|| day.succeeded as f64 / ended as f64);
    }
    Ok(History {
        workflow: workflow.map(str::to_owned),
        since,
        days,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{FailureClass, RunState, StepOutput, StepState, StreamReport};
    use crate::store::{AttemptEnd, NewAttempt, NewRun, Store, TEST_USER};

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("state.db")).expect("open");
        (dir, store)
    }

    #[test]
    fn history_counts_runs_costs_and_durations_per_day() {
        let (_dir, mut store) = temp_store();
        let params = BTreeMap::new();
        let mut run = |id: &str, workflow: &str, end: RunState, cost: Option<f64>| {
            store
                .create_run(&NewRun {
                    id,
                    workflow,
                    workflow_file: "/w.toml",
                    spec_json: "{}",
                    params: &params,
                    requested_by: "t",
                    user: &TEST_USER,
                })
                .unwrap();
            store
                .set_run_state(id, &[RunState::Pending], RunState::Running, "t", None)
                .unwrap();
            store
                .start_attempt(&NewAttempt {
                    run: id,
                    index: 0,
                    name: "s",
                    attempt: 1,
                    unit: "u",
                    log_path: "/l",
                    session_id: None,
                    note: None,
                })
                .unwrap();
            let report = cost.map(|c| StreamReport {
                result: Some(crate::model::ResultEvent {
                    total_cost_usd: Some(c),
                    ..Default::default()
                }),
                ..Default::default()
            });
            store
                .end_attempt(
                    id,
                    0,
                    1,
                    &AttemptEnd {
                        state: StepState::Succeeded,
                        exit_code: Some(0),
                        signal: None,
                        result: "success",
                        output: &StepOutput::default(),
                        failure: None,
                        agent: report.as_ref(),
                        log_cut: None,
                    },
                )
                .unwrap();
            if end == RunState::Failed {
                store.fail_run(id, Some(FailureClass::Oom), "oom").unwrap();
            } else {
                store
                    .set_run_state(id, &[RunState::Running], end, "t", None)
                    .unwrap();
            }
        };
        run("a", "wf", RunState::Succeeded, Some(0.25));
        run("b", "wf", RunState::Succeeded, Some(0.5));
        run("c", "wf", RunState::Failed, None);
        run("d", "other", RunState::Succeeded, Some(9.0));

        let now = Timestamp::now();
        let since = Timestamp(now.0 - 2 * MILLIS_PER_DAY);
        let all = history(&store, None, since, now).unwrap();
        assert_eq!(all.days.len(), 3, "{all:?}");
        let today = all.days.last().unwrap();
        assert_eq!(today.runs, 4);
        assert_eq!(today.succeeded, 3);
        assert!((today.cost_usd - 9.75).abs() < 1e-9, "{today:?}");
        assert_eq!(all.days[0].runs, 0);

        let wf = history(&store, Some("wf"), since, now).unwrap();
        let today = wf.days.last().unwrap();
        assert_eq!((today.runs, today.succeeded, today.failed), (3, 2, 1));
        assert_eq!(today.success_rate, Some(2.0 / 3.0));
        assert!((today.cost_usd - 0.75).abs() < 1e-9);
        assert_eq!(today.failure_classes.get("oom"), Some(&1));
        assert!(today.duration_p50_secs.is_some() && today.duration_p95_secs.is_some());
    }

    #[test]
    fn history_day_names_and_quantiles() {
        assert_eq!(day_name(0), "1970-01-01");
        assert_eq!(day_name(19_782), "2024-02-29");
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.95), Some(4.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
