//! The store over a real SQLite file in a temp dir: lifecycles, restarts, reopening,
//! the metrics history and the write lock.

use std::collections::BTreeMap;
use std::time::Duration;

use rusqlite::Connection;

use super::*;
use crate::model::{
    ActionRecord, FailureClass, MetricsMinute, RestartPoint, Run, RunState, Severity, StepOutput,
    StepState, Timestamp,
};

#[test]
fn metrics_history_is_written_replaced_and_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = MetricsLog::open(&dir.path().join("state.db")).unwrap();
    let row = |minute: i64, samples: u64| MetricsMinute {
        run: "r1".into(),
        workflow: "w".into(),
        step: "s".into(),
        minute: Timestamp(minute),
        samples,
        cpu_avg: Some(12.5),
        cpu_max: Some(40.0),
        memory_max: Some(1 << 30),
        tasks_max: Some(3),
        io_read_bytes: None,
        io_write_bytes: None,
        output_bytes: 10,
        output_lines: 2,
        idle_max: 1.5,
        tokens_in: Some(100),
        tokens_out: None,
        cost_usd: Some(0.5),
    };
    store
        .write_metrics(&[row(60_000, 1), row(120_000, 60)])
        .unwrap();
    store.write_metrics(&[row(60_000, 59)]).unwrap();
    assert_eq!(
        store.metrics_history("r1").unwrap(),
        vec![row(60_000, 59), row(120_000, 60)]
    );
    assert_eq!(store.prune_metrics(Timestamp(120_000)).unwrap(), 1);
    assert_eq!(store.metrics_history("r1").unwrap(), vec![row(120_000, 60)]);
}

/// A write that reads before it writes waits out another connection's write; a
/// deferred transaction would fail at once (SQLITE_BUSY) once that one commits, since
/// its read saw the database before the commit.
#[test]
fn a_write_waits_for_another_connections_write_instead_of_failing() {
    let (dir, mut store) = temp_store();
    let other = Connection::open(dir.path().join("state.db")).expect("open");
    other
        .execute_batch("BEGIN IMMEDIATE; CREATE TABLE scratch (x);")
        .expect("the other connection's write");
    let committer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        other.execute_batch("COMMIT").expect("commit");
    });
    let alert = NewAlert {
        key: "rule/-".into(),
        rule: "rule",
        run: None,
        workflow: None,
        severity: Severity::Warning,
        summary: "s",
    };
    // Reads the firing alerts, then inserts: across the other connection's commit.
    store
        .observe_alerts(&[alert], &[], &[], Timestamp::now())
        .expect("the write waited for the other one");
    committer.join().expect("committer");
}

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("state.db")).expect("open");
    (dir, store)
}

#[test]
fn run_and_attempt_lifecycle_is_recorded_once_per_transition() {
    let (_dir, mut store) = temp_store();
    let params = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
    store
        .create_run(&NewRun {
            id: "abc",
            workflow: "wf",
            workflow_file: "/w.toml",
            spec_json: "{}",
            params: &params,
            requested_by: "uid 0 (root)",
            user: &TEST_USER,
        })
        .unwrap();
    store
        .set_run_state(
            "abc",
            &[RunState::Pending],
            RunState::Running,
            "drover",
            None,
        )
        .unwrap();
    store
        .start_attempt(&NewAttempt {
            run: "abc",
            index: 0,
            name: "build",
            attempt: 1,
            unit: "drover-abc-build-1.scope",
            log_path: "/l",
            session_id: None,
            note: None,
        })
        .unwrap();
    store.attempt_running("abc", 0, 1, 42).unwrap();
    store
        .end_attempt(
            "abc",
            0,
            1,
            &AttemptEnd {
                state: StepState::Failed,
                exit_code: Some(3),
                signal: None,
                result: "exit-code",
                output: &StepOutput {
                    bytes: 5,
                    lines: 1,
                    last_output_at: None,
                },
                failure: None,
                agent: None,
                log_cut: None,
            },
        )
        .unwrap();
    store
        .set_run_state(
            "abc",
            &[RunState::Running],
            RunState::Failed,
            "drover",
            Some("step build failed"),
        )
        .unwrap();
    assert!(
        !store
            .set_run_state(
                "abc",
                &[RunState::Running],
                RunState::Succeeded,
                "drover",
                None
            )
            .unwrap(),
        "a finished run does not move again"
    );

    let (run, spec) = store.run("abc").unwrap().unwrap();
    assert_eq!(spec, "{}");
    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.params, params);
    assert_eq!(run.error.as_deref(), Some("step build failed"));
    assert!(run.started_at.is_some() && run.ended_at.is_some());
    assert_eq!(run.steps.len(), 1);
    assert_eq!(run.steps[0].exit_code, Some(3));
    assert_eq!(run.steps[0].pid, Some(42));
    assert_eq!(run.steps[0].state, StepState::Failed);
    assert_eq!(
        store.attempt("abc", 0, 1).unwrap(),
        Some(run.steps[0].clone())
    );
    assert_eq!(store.attempt("abc", 0, 2).unwrap(), None);
    assert_eq!(store.attempt("abc", 1, 1).unwrap(), None);

    let moves: Vec<String> = store
        .transitions("abc")
        .unwrap()
        .iter()
        .map(|t| format!("{}:{}", t.step.as_deref().unwrap_or("run"), t.to))
        .collect();
    assert_eq!(
        moves,
        [
            "run:pending",
            "run:running",
            "build:starting",
            "build:running",
            "build:failed",
            "run:failed"
        ]
    );
    assert!(store.unfinished_runs().unwrap().is_empty());
}

#[test]
fn a_restart_moves_an_ended_run_back_to_running_with_its_point_and_audit_record() {
    let (_dir, mut store) = temp_store();
    store
        .create_run(&NewRun {
            id: "r",
            workflow: "wf",
            workflow_file: "/w.toml",
            spec_json: "{}",
            params: &BTreeMap::new(),
            requested_by: "t",
            user: &TEST_USER,
        })
        .unwrap();
    assert!(
        store
            .fail_run("r", Some(FailureClass::Exit), "step a failed")
            .unwrap()
    );
    let (failed, _) = store.run("r").unwrap().unwrap();
    assert_eq!(failed.failure_class, Some(FailureClass::Exit));
    assert!(store.begin_restart("r", "uid 0 (root)", "asked").unwrap());
    assert!(
        !store.begin_restart("r", "uid 0 (root)", "again").unwrap(),
        "a restarting run is not restarted twice"
    );
    let point = RestartPoint {
        checkpoint: Some(2),
        next_step: 1,
        first_attempts: vec![2, 3],
        sessions: BTreeMap::from([(1, "s-1".to_owned())]),
        at: Some(Timestamp(5)),
    };
    let action = ActionRecord {
        id: 0,
        run: "r".into(),
        action: "restart".into(),
        requested_by: "uid 0 (root)".into(),
        uid: Some(0),
        role: Some("admin".into()),
        channel: "dbus".into(),
        at: Timestamp(6),
        result: "done".into(),
        checkpoint: Some(2),
        detail: "from checkpoint 2".into(),
        took_ms: 3,
    };
    let id = store.complete_restart("r", &point, &action).unwrap();
    let (run, _) = store.run("r").unwrap().unwrap();
    assert_eq!(run.state, RunState::Running);
    assert_eq!(run.restart, Some(point));
    assert_eq!(
        (run.error, run.failure_class, run.ended_at),
        (None, None, None)
    );
    let actions = store.actions(Some("r")).unwrap();
    assert_eq!(actions, [ActionRecord { id, ..action }]);
    let moves: Vec<String> = store
        .transitions("r")
        .unwrap()
        .into_iter()
        .map(|t| t.to)
        .collect();
    assert_eq!(moves, ["pending", "failed", "restarting", "running"]);
}

#[test]
fn reopening_keeps_everything_and_does_not_remigrate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let mut store = Store::open(&path).unwrap();
        store
            .create_run(&NewRun {
                id: "r1",
                workflow: "wf",
                workflow_file: "/w.toml",
                spec_json: "{}",
                params: &BTreeMap::new(),
                requested_by: "t",
                user: &TEST_USER,
            })
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.unfinished_runs().unwrap(), ["r1"]);
    assert_eq!(store.runs().unwrap().len(), 1);
    assert!(store.run("nope").unwrap().is_none());
}

#[test]
fn a_reader_queries_and_cannot_write() {
    let (dir, mut store) = temp_store();
    store
        .create_run(&NewRun {
            id: "r1",
            workflow: "wf",
            workflow_file: "/w.toml",
            spec_json: "{}",
            params: &BTreeMap::new(),
            requested_by: "t",
            user: &TEST_USER,
        })
        .unwrap();
    let reader = StoreReader::open(&dir.path().join("state.db")).unwrap();
    assert_eq!(reader.unfinished_runs().unwrap(), ["r1"]);
    let write = reader.conn.execute("DELETE FROM runs", []);
    assert!(write.is_err(), "a reader's connection is query-only");
}

#[test]
fn runs_are_paged_newest_first_by_a_keyset_filtered_in_sql() {
    let (_dir, mut store) = temp_store();
    let params = BTreeMap::new();
    // Seven runs; several are made within one millisecond, so the id breaks the ties.
    for (n, workflow) in ["a", "b", "a", "a", "b", "a", "a"].iter().enumerate() {
        let id = format!("r{n}");
        store
            .create_run(&NewRun {
                id: &id,
                workflow,
                workflow_file: "/w.toml",
                spec_json: "{}",
                params: &params,
                requested_by: "uid 0 (root)",
                user: &TEST_USER,
            })
            .unwrap();
    }
    for id in ["r1", "r4"] {
        store
            .set_run_state(id, &[RunState::Pending], RunState::Running, "drover", None)
            .unwrap();
    }
    let everything: Vec<String> = store.runs().unwrap().into_iter().map(|r| r.id).collect();
    let page = |states: &[RunState], workflow, after: Option<&Run>, limit| {
        store
            .runs_page(&RunQuery {
                states,
                workflow,
                after: after.map(|r| (r.created_at, r.id.as_str())),
                limit,
            })
            .unwrap()
    };
    let mut paged = Vec::new();
    let mut last: Option<Run> = None;
    loop {
        let runs = page(&[], None, last.as_ref(), 3);
        if runs.is_empty() {
            break;
        }
        paged.extend(runs.iter().map(|r| r.id.clone()));
        last = runs.last().cloned();
    }
    assert_eq!(paged.len(), 7, "{paged:?}");
    let mut newest_first = paged.clone();
    newest_first.sort_by_key(|id| {
        let run = store.run(id).unwrap().unwrap().0;
        (std::cmp::Reverse(run.created_at), std::cmp::Reverse(run.id))
    });
    assert_eq!(paged, newest_first);
    let mut sorted = everything.clone();
    sorted.sort();
    let mut seen = paged.clone();
    seen.sort();
    assert_eq!(seen, sorted, "every run once");

    let running: Vec<String> = page(&[RunState::Running], None, None, 10)
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(running.len(), 2);
    assert!(running.contains(&"r1".into()) && running.contains(&"r4".into()));
    let b_pending = page(&[RunState::Pending, RunState::Killed], Some("b"), None, 10);
    assert_eq!(
        b_pending.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        Vec::<&str>::new(),
        "b's runs are both running"
    );
    assert_eq!(page(&[], Some("a"), None, 10).len(), 5);
}
