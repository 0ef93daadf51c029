//! The outbox task: delivers queued alert changes to their sinks, oldest first per alert
//! and sink (a resolve never overtakes its firing), retrying a failure after a backoff
//! kept in the DB (`attempts`, `next_try_at`), so the next agent picks up where this one
//! stopped. A row is deleted once its sink has the change.

use std::time::Duration;

use super::Alerts;
use crate::model::Timestamp;

/// The first retry's wait; each further failure doubles it, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How long the task sleeps at most with nothing due: a silence that expires releases
/// its held-back changes within this.
const IDLE_WAKE: Duration = Duration::from_secs(5);

/// Rows handled per pass, so one pass cannot hold the DB for long.
const BATCH: usize = 100;

/// The wait after the `attempts`-th failed delivery (1 s, 2 s, 4 s … 5 min).
pub fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(31);
    FIRST_BACKOFF
        .saturating_mul(1u32 << doublings)
        .min(MAX_BACKOFF)
}

/// Runs until the runtime stops.
pub async fn deliver_forever(alerts: Alerts) {
    loop {
        let wait = match deliver_due(&alerts, Timestamp::now()).await {
            Ok(next) => next.map_or(IDLE_WAKE, |at| until(at).min(IDLE_WAKE)),
            Err(e) => {
                tracing::warn!(drover_event = "alert-outbox", "alert delivery: {e}");
                IDLE_WAKE
            }
        };
        // A change queued meanwhile wakes the task at once (Notify keeps one wake-up).
        tokio::select! {
            _ = alerts.inner.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn until(at: Timestamp) -> Duration {
    Duration::from_millis(u64::try_from(at.0.saturating_sub(Timestamp::now().0)).unwrap_or(0))
}

/// Queues the changes silences no longer hold back, then delivers what is due at `now`
/// (each row tried at most once: a failure waits for its backoff). Returns when the
/// earliest row still waiting is due.
pub async fn deliver_due(alerts: &Alerts, now: Timestamp) -> super::Result<Option<Timestamp>> {
    let names = alerts.sink_names();
    alerts.store().release_alerts(&names, now)?;
    // A delivered row may uncover the next change of its alert: go again while rows go.
    while deliver_batch(alerts, now).await? {}
    Ok(alerts.store().outbox_next_try()?)
}

/// Tries each due row once; true if any row left the outbox.
async fn deliver_batch(alerts: &Alerts, now: Timestamp) -> super::Result<bool> {
    let due = alerts.store().outbox_due(now, BATCH)?;
    let mut removed = false;
    for item in due {
        let Some(sink) = alerts.sink(&item.sink) else {
            // The sink is no longer configured (its [alerts] entry was removed): nobody
            // will ever take the row.
            tracing::warn!(
                drover_event = "alert-outbox",
                "dropping alert {} {} queued for sink {:?}, which is no longer configured",
                item.key,
                item.change.as_str(),
                item.sink
            );
            alerts.store().outbox_remove(item.id)?;
            removed = true;
            continue;
        };
        match sink.send_delivery(&item.alert, item.change, item.id).await {
            Ok(()) => {
                alerts.store().outbox_remove(item.id)?;
                removed = true;
                tracing::debug!(
                    drover_event = "alert-delivered",
                    "alert {} {} delivered to {} after {} failed attempts",
                    item.key,
                    item.change.as_str(),
                    item.sink,
                    item.attempts
                );
            }
            Err(e) => {
                let attempts = item.attempts.saturating_add(1);
                let wait = backoff(attempts);
                let next = Timestamp(
                    Timestamp::now()
                        .0
                        .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)),
                );
                alerts
                    .store()
                    .outbox_failed(item.id, attempts, next, &e.to_string())?;
                tracing::warn!(
                    drover_event = "alert-outbox",
                    "alert {} {} not delivered to {} (attempt {attempts}, next in {}): {e}",
                    item.key,
                    item.change.as_str(),
                    item.sink,
                    humantime::format_duration(wait)
                );
            }
        }
    }
    Ok(removed)
}
