//! Refusals of mutating calls, as the audit trail keeps them: for the caller's role or for
//! input beyond its bounds, each is recorded with the caller's strings cut short, and at
//! most so many per caller (a token bucket each): beyond that they are counted, and the
//! next one stored says how many were not.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::error::InputError;
use super::types::RunArgs;
use super::{Caller, Ops, OpsError, Result};
use crate::auth::Role;
use crate::engine::ActionRequest;
use crate::quantity::truncated;

/// Refusals of one caller stored back to back before the rate applies.
const BURST: u32 = 20;
/// Then one more refusal stored per this long: a caller refused in a loop adds at most
/// 8640 records (of a few hundred bytes: strings are cut) a day.
const REFILL: Duration = Duration::from_secs(10);
/// Callers tracked at once; buckets back to full are forgotten first.
const CALLERS: usize = 1024;

/// How much of a caller's string a refusal's record keeps.
pub(super) const KEPT: usize = 128;

/// The per-caller token buckets.
#[derive(Default)]
pub(super) struct RefusalRate {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: u32,
    /// When the last token was added (or the bucket made).
    refilled: Instant,
    /// Refusals not stored since the last one that was.
    dropped: u64,
}

/// Whether a refusal is stored.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    /// Store it; `dropped` were not stored before it.
    Store { dropped: u64 },
    /// Count it only; `first` when it is the first since the last one stored.
    Drop { first: bool },
}

impl RefusalRate {
    fn admit(&self, caller: &str, now: Instant) -> Admit {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= CALLERS && !buckets.contains_key(caller) {
            buckets.retain(|_, b| {
                b.refill(now);
                b.tokens < BURST || b.dropped > 0
            });
            if buckets.len() >= CALLERS
                && let Some(oldest) = buckets
                    .iter()
                    .min_by_key(|(_, b)| b.refilled)
                    .map(|(k, _)| k.clone())
            {
                buckets.remove(&oldest);
            }
        }
        let bucket = buckets.entry(caller.to_owned()).or_insert(Bucket {
            tokens: BURST,
            refilled: now,
            dropped: 0,
        });
        bucket.refill(now);
        if bucket.tokens == 0 {
            bucket.dropped += 1;
            return Admit::Drop {
                first: bucket.dropped == 1,
            };
        }
        bucket.tokens -= 1;
        Admit::Store {
            dropped: std::mem::take(&mut bucket.dropped),
        }
    }
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled);
        let earned = elapsed.as_secs() / REFILL.as_secs();
        if earned == 0 {
            return;
        }
        self.tokens = u32::try_from(earned)
            .unwrap_or(u32::MAX)
            .saturating_add(self.tokens)
            .min(BURST);
        self.refilled = if self.tokens == BURST {
            now
        } else {
            // Earned tokens are whole REFILLs: keep the remainder for the next one.
            self.refilled + REFILL * u32::try_from(earned).unwrap_or(u32::MAX)
        };
    }
}

impl Ops {
    /// Allows a mutating call when the caller holds `needed` and `input` is within bounds.
    /// Otherwise the refusal is logged and audited through `audit` (given why, which quotes
    /// none of the caller's strings), within the caller's rate, and is the error.
    pub(super) fn admit(
        &self,
        caller: &Caller,
        needed: Role,
        action: &'static str,
        input: std::result::Result<(), InputError>,
        audit: impl FnOnce(&str) -> Result<()>,
    ) -> Result<()> {
        let refusal = match (caller.require(needed, action), input) {
            (Ok(()), Ok(())) => return Ok(()),
            (Err(denied), _) => OpsError::Denied(denied),
            (Ok(()), Err(input)) => OpsError::Input(input),
        };
        tracing::warn!(drover_event = "denied", "refused: {caller}: {refusal}");
        match self.refusals.admit(&caller.to_string(), Instant::now()) {
            Admit::Store { dropped: 0 } => audit(&refusal.to_string())?,
            Admit::Store { dropped } => {
                tracing::warn!(
                    drover_event = "refusals-dropped",
                    "{dropped} refusals from {caller} not stored"
                );
                audit(&format!(
                    "{refusal} ({dropped} earlier refusals from this caller were not stored)"
                ))?;
            }
            Admit::Drop { first } => {
                if first {
                    tracing::warn!(
                        drover_event = "refusals-dropped",
                        "refusals from {caller} come faster than {BURST} at once and one per {}s: counted, not stored",
                        REFILL.as_secs()
                    );
                }
            }
        }
        Err(refusal)
    }

    /// [`Ops::admit`] for a call whose refusal the action audit trail keeps as `audited`.
    pub(super) fn admit_action(
        &self,
        caller: &Caller,
        needed: Role,
        asks: &'static str,
        audited: Audited<'_>,
        input: std::result::Result<(), InputError>,
    ) -> Result<()> {
        self.admit(caller, needed, asks, input, |why| {
            let request = ActionRequest {
                run: truncated(audited.run, KEPT),
                by: caller.requester(),
                confirm: false,
            };
            let why = if audited.about.is_empty() {
                why.to_owned()
            } else {
                format!("{why} [{}]", truncated(audited.about, KEPT))
            };
            Ok(self.engine.refuse_action(&request, audited.action, &why)?)
        })
    }
}

impl Ops {
    /// `Run`'s admission (operator; bounded path and parameters), for `ops::run` and
    /// every door through it; a refusal is audited as the action "run".
    pub(super) fn admit_run(&self, caller: &Caller, args: &RunArgs) -> Result<()> {
        let audited = Audited {
            action: "run",
            run: "",
            about: &args.workflow_path,
        };
        self.admit_action(caller, Role::Operator, "start a run", audited, args.check())
    }
}

/// How the action audit trail names a refused call.
#[derive(Clone, Copy)]
pub(super) struct Audited<'a> {
    /// "run", "enter-critical", "raise-alert", "restart", …
    pub action: &'static str,
    /// The run it was about; empty for none.
    pub run: &'a str,
    /// Its subject when that is not a run (a workflow path, a label, a rule), kept cut
    /// short in the record's detail; empty for none.
    pub about: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_refused_in_a_loop_is_stored_at_the_rate_and_told_what_was_dropped() {
        let rate = RefusalRate::default();
        let start = Instant::now();
        for _ in 0..BURST {
            assert_eq!(rate.admit("uid 65534", start), Admit::Store { dropped: 0 });
        }
        assert_eq!(rate.admit("uid 65534", start), Admit::Drop { first: true });
        assert_eq!(rate.admit("uid 65534", start), Admit::Drop { first: false });
        // Another caller has a bucket of its own.
        assert_eq!(rate.admit("uid 1000", start), Admit::Store { dropped: 0 });
        let later = start + REFILL;
        assert_eq!(rate.admit("uid 65534", later), Admit::Store { dropped: 2 });
        assert_eq!(rate.admit("uid 65534", later), Admit::Drop { first: true });
        // A quiet caller's bucket fills up again, to the burst and no more.
        let much_later = later + REFILL * 1000;
        for _ in 0..BURST {
            assert!(matches!(
                rate.admit("uid 65534", much_later),
                Admit::Store { .. }
            ));
        }
        assert!(matches!(
            rate.admit("uid 65534", much_later),
            Admit::Drop { .. }
        ));
    }

    #[test]
    fn many_callers_do_not_grow_the_table_without_bound() {
        let rate = RefusalRate::default();
        let now = Instant::now();
        for uid in 0..(CALLERS * 3) {
            rate.admit(&format!("uid {uid}"), now);
            assert!(rate.buckets.lock().unwrap().len() <= CALLERS);
        }
        // Once their buckets are full again, they are forgotten.
        rate.admit("uid new", now + REFILL * BURST);
        assert_eq!(rate.buckets.lock().unwrap().len(), 1);
    }
}
