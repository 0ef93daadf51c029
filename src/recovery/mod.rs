//! The policy side of restarting: what a failure was (`failure`), whether a run may start
//! (`requires`), when a failed step is retried, and where a restart from a checkpoint
//! begins. Pure decisions; the engine carries them out.

pub mod failure;
pub mod requires;

use std::collections::BTreeMap;

use crate::model::{FailureClass, RestartPoint, Run, StepState};
use crate::spec::{Step, Workflow};

/// The first step of `workflow` that `run` has not done: where a checkpoint taken now
/// would have a restart begin (a running or failed step is done again).
pub fn next_step(workflow: &Workflow, run: &Run) -> u32 {
    (0..workflow.steps.len() as u32)
        .find(|&index| !step_done(run, index))
        .unwrap_or(workflow.steps.len() as u32)
}

/// Whether step `index` counts as done: done by the checkpoint a restart began from, or
/// its latest attempt since then succeeded.
pub fn step_done(run: &Run, index: u32) -> bool {
    if run.restart.as_ref().is_some_and(|r| index < r.next_step) {
        return true;
    }
    run.steps.iter().any(|a| {
        a.index == index
            && a.state == StepState::Succeeded
            && run
                .restart
                .as_ref()
                .is_none_or(|r| r.counts(index, a.attempt))
    })
}

/// Where a restart from a checkpoint whose next step is `next_step` begins: every step
/// from there on starts over with a fresh attempt number.
pub fn restart_point(
    checkpoint: Option<u32>,
    next_step: u32,
    attempts_used: &BTreeMap<u32, u32>,
    steps: usize,
    sessions: BTreeMap<u32, String>,
) -> RestartPoint {
    RestartPoint {
        checkpoint,
        next_step,
        sessions,
        at: Some(crate::model::Timestamp::now()),
        first_attempts: (0..steps as u32)
            .map(|index| attempts_used.get(&index).copied().unwrap_or(0) + 1)
            .collect(),
    }
}

/// Whether a failed attempt is retried: its class is one the step's policy retries and
/// attempts remain. `attempts_so_far` counts this restart's attempts of the step. Returns
/// the retry's number (1 for the first retry).
pub fn retry_number(step: &Step, class: Option<FailureClass>, attempts_so_far: u32) -> Option<u32> {
    let class = class?;
    (step.retry.retries(class) && attempts_so_far < step.retry.max_attempts)
        .then_some(attempts_so_far)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn step(retry: &str) -> Step {
        let text = format!("name = \"wf\"\n[[step]]\nname = \"s\"\nrun = \"true\"\n{retry}");
        crate::spec::parse(&text, Path::new("/w.toml"))
            .expect("test workflow parses")
            .steps
            .remove(0)
    }

    #[test]
    fn only_listed_classes_are_retried_and_only_while_attempts_remain() {
        let s = step("[step.retry]\nmax_attempts = 3\n");
        assert_eq!(retry_number(&s, Some(FailureClass::Transient), 1), Some(1));
        assert_eq!(retry_number(&s, Some(FailureClass::Stalled), 2), Some(2));
        assert_eq!(retry_number(&s, Some(FailureClass::Transient), 3), None);
        assert_eq!(retry_number(&s, Some(FailureClass::Exit), 1), None);
        assert_eq!(retry_number(&s, None, 1), None);
        let default = step("");
        assert_eq!(
            retry_number(&default, Some(FailureClass::Transient), 1),
            None
        );
    }

    #[test]
    fn a_restart_point_starts_every_later_step_with_a_fresh_attempt() {
        let used = BTreeMap::from([(0, 1), (1, 3)]);
        let point = restart_point(Some(2), 1, &used, 3, BTreeMap::new());
        assert_eq!(point.first_attempts, vec![2, 4, 1]);
        assert!(
            point.counts(0, 1),
            "steps before the restart point are done"
        );
        assert!(!point.counts(1, 3));
        assert!(point.counts(1, 4));
    }
}
