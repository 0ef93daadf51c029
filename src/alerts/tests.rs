//! Dedupe, resolve, silence and outbox logic over a real state DB in a temp dir, with fake
//! sinks and an explicit clock.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::outbox::{self, backoff};
use super::*;
use crate::model::{AlertState, Change};

/// Records what it is sent; fails the first `fail` sends.
struct FakeSink {
    name: &'static str,
    fail: AtomicU32,
    got: Mutex<Vec<(String, Change)>>,
}

impl FakeSink {
    fn new(name: &'static str, fail: u32) -> Arc<FakeSink> {
        Arc::new(FakeSink {
            name,
            fail: AtomicU32::new(fail),
            got: Mutex::default(),
        })
    }
    fn got(&self) -> Vec<(String, Change)> {
        self.got.lock().unwrap().clone()
    }
}

impl Sink for FakeSink {
    fn name(&self) -> &str {
        self.name
    }
    fn send<'a>(
        &'a self,
        alert: &'a Alert,
        change: Change,
    ) -> BoxFuture<'a, std::result::Result<(), SinkError>> {
        let result = if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            Err(SinkError::Failed {
                sink: self.name.into(),
                reason: "scripted failure".into(),
            })
        } else {
            self.got.lock().unwrap().push((alert.key.clone(), change));
            Ok(())
        };
        Box::pin(std::future::ready(result))
    }
}

fn setup(sinks: Vec<Arc<dyn Sink>>) -> (tempfile::TempDir, Alerts) {
    let dir = tempfile::tempdir().expect("temp dir");
    let alerts = Alerts::open(&dir.path().join("state.db"), sinks).expect("open");
    (dir, alerts)
}

fn firing(rule: &str, run: &str, summary: &str) -> Firing {
    Firing {
        rule: rule.into(),
        run: run.into(),
        workflow: "wf".into(),
        severity: Severity::Warning,
        summary: summary.into(),
    }
}

fn evaluated(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

fn queued(alerts: &Alerts) -> Vec<(String, String, Change)> {
    alerts
        .store()
        .outbox()
        .unwrap()
        .into_iter()
        .map(|i| (i.sink, i.key, i.change))
        .collect()
}

fn two_sinks() -> Vec<Arc<dyn Sink>> {
    vec![FakeSink::new("a", 0), FakeSink::new("b", 0)]
}

#[test]
fn a_repeat_updates_the_alert_and_queues_nothing_new() {
    let (_dir, alerts) = setup(two_sinks());
    let first = alerts
        .observe(
            &evaluated(&[("stalled", "r1")]),
            &[firing("stalled", "r1", "idle 10m")],
        )
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].change, Some(Change::Firing));
    assert!(first[0].queued);
    assert_eq!(first[0].alert.key, "stalled/r1");
    assert_eq!(first[0].alert.workflow.as_deref(), Some("wf"));

    let again = alerts
        .observe(
            &evaluated(&[("stalled", "r1")]),
            &[firing("stalled", "r1", "idle 11m")],
        )
        .unwrap();
    assert_eq!(again[0].change, None, "a repeat is no change");
    assert!(!again[0].queued);

    let listed = alerts.alerts(false).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].count, 2);
    assert_eq!(listed[0].summary, "idle 11m");
    assert_eq!(listed[0].state, AlertState::Firing);
    assert_eq!(
        queued(&alerts),
        vec![
            ("a".into(), "stalled/r1".into(), Change::Firing),
            ("b".into(), "stalled/r1".into(), Change::Firing),
        ],
        "one row per sink, for the first firing only"
    );
}

#[test]
fn an_evaluated_key_that_stops_firing_resolves_and_others_stay() {
    let (_dir, alerts) = setup(vec![FakeSink::new("a", 0)]);
    alerts
        .observe(
            &evaluated(&[("mem", "r1"), ("mem", "r2")]),
            &[firing("mem", "r1", "90%"), firing("mem", "r2", "95%")],
        )
        .unwrap();
    // r2 was not evaluated this tick (its run is not being looked at): it stays firing.
    let updates = alerts.observe(&evaluated(&[("mem", "r1")]), &[]).unwrap();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].change, Some(Change::Resolved));
    assert!(updates[0].alert.resolved_at.is_some());
    let firing_now: Vec<String> = alerts
        .alerts(false)
        .unwrap()
        .into_iter()
        .map(|a| a.key)
        .collect();
    assert_eq!(firing_now, vec!["mem/r2".to_owned()]);
    assert_eq!(alerts.alerts(true).unwrap().len(), 2);
    assert_eq!(
        queued(&alerts).last().cloned(),
        Some(("a".into(), "mem/r1".into(), Change::Resolved))
    );
    // Resolving again changes nothing.
    assert!(
        alerts
            .observe(&evaluated(&[("mem", "r1")]), &[])
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        alerts.resolve("mem/r1"),
        Err(AlertsError::NoSuchAlert(_))
    ));
}

#[test]
fn an_ended_run_has_all_its_alerts_resolved() {
    let (_dir, alerts) = setup(vec![FakeSink::new("a", 0)]);
    alerts
        .observe(
            &evaluated(&[]),
            &[
                firing("mem", "r1", "x"),
                firing("cost", "r1", "y"),
                firing("mem", "r2", "z"),
            ],
        )
        .unwrap();
    let resolved = alerts.resolve_run("r1").unwrap();
    assert_eq!(resolved.len(), 2);
    assert!(resolved.iter().all(|u| u.change == Some(Change::Resolved)));
    let left: Vec<String> = alerts
        .alerts(false)
        .unwrap()
        .into_iter()
        .map(|a| a.key)
        .collect();
    assert_eq!(left, vec!["mem/r2".to_owned()]);
    assert!(alerts.resolve_run("r1").unwrap().is_empty());
}

#[test]
fn a_firing_after_a_resolve_opens_a_new_alert() {
    let (_dir, alerts) = setup(vec![FakeSink::new("a", 0)]);
    alerts
        .raise("rules-load", Some("bad.rhai"), Severity::Critical, "syntax")
        .unwrap();
    let resolved = alerts.resolve("rules-load/bad.rhai").unwrap();
    assert_eq!(resolved.alert.state, AlertState::Resolved);
    let again = alerts
        .raise(
            "rules-load",
            Some("bad.rhai"),
            Severity::Critical,
            "syntax again",
        )
        .unwrap();
    assert_eq!(again.change, Some(Change::Firing));
    assert_eq!(again.alert.count, 1);
    assert_eq!(alerts.alerts(true).unwrap().len(), 2);
    let changes: Vec<Change> = queued(&alerts).into_iter().map(|(_, _, c)| c).collect();
    assert_eq!(
        changes,
        vec![Change::Firing, Change::Resolved, Change::Firing]
    );
}

fn silence(alerts: &Alerts, target: &str, duration: Duration) -> Silence {
    alerts
        .silence(&SilenceRequest {
            target: target.into(),
            duration,
            reason: "maintenance".into(),
            by: Requester {
                requested_by: "uid 0 via test".into(),
                uid: Some(0),
                role: Some("admin".into()),
                channel: "test".into(),
            },
        })
        .unwrap()
}

#[test]
fn a_silenced_rule_is_stored_not_queued_and_released_when_the_silence_ends() {
    let (_dir, alerts) = setup(vec![FakeSink::new("a", 0)]);
    let s = silence(&alerts, "cost", Duration::from_secs(3600));
    let update = alerts
        .observe(&evaluated(&[]), &[firing("cost", "r1", "$5")])
        .unwrap();
    assert!(!update[0].queued);
    assert_eq!(update[0].alert.silenced_until, Some(s.until));
    assert_eq!(alerts.alerts(false).unwrap().len(), 1, "stored");
    assert!(queued(&alerts).is_empty(), "not sent");
    // Another rule on the same run is not covered.
    alerts
        .observe(&evaluated(&[]), &[firing("stalled", "r1", "idle")])
        .unwrap();
    assert_eq!(queued(&alerts).len(), 1);

    let names = alerts.sink_names();
    let still = alerts
        .store()
        .release_alerts(&names, Timestamp::now())
        .unwrap();
    assert!(still.is_empty(), "the silence still holds");
    let later = Timestamp(s.until.0 + 1);
    let released = alerts.store().release_alerts(&names, later).unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].key, "cost/r1");
    assert_eq!(
        queued(&alerts).last().cloned(),
        Some(("a".into(), "cost/r1".into(), Change::Firing))
    );
    // Released once only.
    assert!(
        alerts
            .store()
            .release_alerts(&names, later)
            .unwrap()
            .is_empty()
    );

    // The silence is in the audit trail.
    let audit = alerts.store().actions(Some("cost")).unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "silence");
    assert!(
        audit[0].detail.contains("maintenance"),
        "{}",
        audit[0].detail
    );
}

#[test]
fn a_silenced_run_that_resolves_before_the_silence_ends_is_never_sent() {
    let (_dir, alerts) = setup(vec![FakeSink::new("a", 0)]);
    let s = silence(&alerts, "r9", Duration::from_secs(60));
    alerts
        .observe(&evaluated(&[]), &[firing("stalled", "r9", "idle")])
        .unwrap();
    alerts
        .observe(&evaluated(&[("stalled", "r9")]), &[])
        .unwrap();
    let names = alerts.sink_names();
    let later = Timestamp(s.until.0 + 1);
    assert!(
        alerts
            .store()
            .release_alerts(&names, later)
            .unwrap()
            .is_empty()
    );
    assert!(queued(&alerts).is_empty());
    assert_eq!(alerts.silences(false).unwrap().len(), 1);
}

#[test]
fn a_resolve_during_a_silence_is_sent_once_it_ends_if_the_firing_was() {
    let (_dir, alerts) = setup(vec![FakeSink::new("a", 0)]);
    alerts
        .observe(&evaluated(&[]), &[firing("stalled", "r3", "idle")])
        .unwrap();
    let s = silence(&alerts, "stalled", Duration::from_secs(60));
    let update = alerts
        .observe(&evaluated(&[("stalled", "r3")]), &[])
        .unwrap();
    assert!(!update[0].queued);
    let names = alerts.sink_names();
    let released = alerts
        .store()
        .release_alerts(&names, Timestamp(s.until.0 + 1))
        .unwrap();
    assert_eq!(released.len(), 1);
    let changes: Vec<Change> = queued(&alerts).into_iter().map(|(_, _, c)| c).collect();
    assert_eq!(changes, vec![Change::Firing, Change::Resolved]);
}

#[test]
fn silences_need_a_target_and_a_duration() {
    let (_dir, alerts) = setup(vec![]);
    let mut request = SilenceRequest {
        target: " ".into(),
        duration: Duration::from_secs(1),
        reason: String::new(),
        by: Requester {
            requested_by: "t".into(),
            uid: None,
            role: None,
            channel: "test".into(),
        },
    };
    assert!(matches!(
        alerts.silence(&request),
        Err(AlertsError::InvalidArgument(_))
    ));
    request.target = "rule".into();
    request.duration = Duration::ZERO;
    assert!(matches!(
        alerts.silence(&request),
        Err(AlertsError::InvalidArgument(_))
    ));
}

#[test]
fn backoff_doubles_from_one_second_up_to_five_minutes() {
    let waits: Vec<u64> = (1..=11).map(|n| backoff(n).as_secs()).collect();
    assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    assert_eq!(backoff(0), Duration::from_secs(1));
    assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
}

#[tokio::test]
async fn delivery_retries_with_backoff_keeps_order_and_deletes_on_success() {
    let flaky = FakeSink::new("flaky", 2);
    let steady = FakeSink::new("steady", 0);
    let (_dir, alerts) = setup(vec![flaky.clone(), steady.clone()]);
    alerts
        .raise("r", Some("run1"), Severity::Info, "hello")
        .unwrap();
    alerts.resolve("r/run1").unwrap();

    let now = Timestamp::now();
    outbox::deliver_due(&alerts, now).await.unwrap();
    // The steady sink got both, in order; the flaky one failed its firing and so must not
    // have been handed the resolve.
    assert_eq!(
        steady.got(),
        vec![
            ("r/run1".into(), Change::Firing),
            ("r/run1".into(), Change::Resolved)
        ]
    );
    assert!(flaky.got().is_empty());
    let rows = alerts.store().outbox().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].attempts, 1);
    assert!(
        rows[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("scripted")
    );
    let wait = rows[0].next_try_at.0 - now.0;
    assert!(
        (900..=1500).contains(&wait),
        "first retry after ~1 s, got {wait} ms"
    );

    // Not due yet: nothing happens.
    outbox::deliver_due(&alerts, now).await.unwrap();
    assert_eq!(alerts.store().outbox().unwrap()[0].attempts, 1);

    // Second failure: the wait doubles.
    let t1 = rows[0].next_try_at;
    outbox::deliver_due(&alerts, t1).await.unwrap();
    let rows = alerts.store().outbox().unwrap();
    assert_eq!(rows[0].attempts, 2);
    let wait = rows[0].next_try_at.0 - Timestamp::now().0;
    assert!(
        (1500..=2100).contains(&wait),
        "second retry after ~2 s, got {wait} ms"
    );

    // Then it works: the firing once, and the resolve right after it, in the same pass.
    let next = outbox::deliver_due(&alerts, rows[0].next_try_at)
        .await
        .unwrap();
    assert_eq!(
        flaky.got(),
        vec![
            ("r/run1".into(), Change::Firing),
            ("r/run1".into(), Change::Resolved)
        ]
    );
    assert_eq!(next, None, "nothing left to deliver");
    assert!(alerts.store().outbox().unwrap().is_empty());
}

#[tokio::test]
async fn rows_for_a_sink_no_longer_configured_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    {
        let before = Alerts::open(&db, vec![FakeSink::new("gone", 0)]).unwrap();
        before.raise("r", None, Severity::Info, "x").unwrap();
    }
    let kept = FakeSink::new("kept", 0);
    let after = Alerts::open(&db, vec![kept.clone()]).unwrap();
    outbox::deliver_due(&after, Timestamp::now()).await.unwrap();
    assert!(after.store().outbox().unwrap().is_empty());
    assert!(kept.got().is_empty());
}
